# The member list on flash (members.bin), looked up by binary search with
# seek/readinto into a 16-byte buffer: the list is never loaded into RAM.
# The host builds it (build) and makes deltas (make_delta / apply_delta).
# The gate keeps the deltas it installs as an overlay beside members.bin
# (members.ovl, below: parkgate.member_update writes it), so a delta needs
# no second copy of the list; MemberList(path, overlay) looks up both. One
# merge (Merger, a slice at a time) serves the host, the overlay and the
# compaction. See firmware/docs/members.md.
#
# File, integers big-endian:
#   0   4  magic "PGML"
#   4   1  format 1
#   5   1  record size 16
#   6   2  0
#   8   4  list version (set by whoever builds the list)
#  12   4  record count N
#  16   4  CRC-32 of bytes 32 .. 32+16N (the records)
#  20   4  CRC-32 of bytes 0..19
#  24   8  0
#  32 16N  records, sorted by key (bytes 0..6), keys unique
# Record:
#   0   4  crc32(normalised plate, UTF-8)                 } 56-bit key
#   4   3  top 24 bits of crc32(plate, 0x5A5A5A5A)        }
#   7   3  valid from, minutes since 2020-01-01 UTC, u24; 0 = always
#  10   3  valid until (exclusive), minutes since 2020-01-01; FFFFFF = never
#  13   3  bit 23 blacklisted, bit 22 has a daily window,
#          bits 21..11 window start, 10..0 window end (local minutes)
# Delta (small, held in RAM), integers big-endian:
#   0   4  magic "PGMD"
#   4   1  format 1
#   5   1  record size 16
#   6   2  0
#   8   4  base list version (the file it applies to)
#  12   4  new list version
#  16   4  change count M
#  20   4  record count of the result
#  24   4  CRC-32 of the result's records
#  28   4  CRC-32 of bytes 32 .. 32+17M
#  32 17M  changes sorted by key, unique: op (0 remove, 1 put), record
# Overlay (members.ovl): the changes that turn members.bin into the list in
# use, then a trailer of TRAILER bytes, integers big-endian:
#   0   17M changes sorted by key, unique, as in a delta
#   17M 4   magic "PGMO"     +4 format 1   +5 record size 16   +6 2 bytes 0
#   +8  4   base version   +12 base record count   +16 base records' CRC
#           (members.bin's header: the overlay applies to that file only)
#   +20 4   list version   +24 list record count   +28 list records' CRC
#   +32 4   change count M     +36 CRC-32 of the changes
#   +40 4   CRC-32 of trailer bytes 0..39
import struct
from binascii import crc32

from parkgate import plate as plates
from parkgate.compat import const

UNKNOWN = const(0)
MEMBER = const(1)
EXPIRED = const(2)          # outside valid from .. until (not yet, or no more)
OUTSIDE_WINDOW = const(3)
BLACKLISTED = const(4)
STATUS_NAMES = ("unknown", "member", "expired", "outside_window", "blacklisted")

EPOCH = const(1577836800)   # 2020-01-01T00:00:00Z, unix seconds
FORMAT = const(1)
RECORD = const(16)
HEADER = const(32)
CHANGE = const(17)
_KEY = const(7)
_SEED = const(0x5A5A5A5A)
_NEVER = const(0xFFFFFF)
_BLACKLIST = const(0x800000)
_WINDOW = const(0x400000)
_CHUNK = const(32)          # records per read/write in a merge (512 bytes)
OP_REMOVE = const(0)
OP_PUT = const(1)
TRAILER = const(44)
_MAGIC = b"PGML"
_DELTA_MAGIC = b"PGMD"
_OVERLAY_MAGIC = b"PGMO"
LIST_MAGIC = _MAGIC
DELTA_MAGIC = _DELTA_MAGIC   # the first bytes of a delta, as against a whole list


class MemberError(ValueError):
    pass


def _bisect(f, start, size, count, buf, key_at, key):
    """Binary search of count sorted records of size bytes from start in
    file f, each read into buf (its key at key_at): the index of key's
    record, left in buf, or -1."""
    lo = 0
    hi = count
    while lo < hi:
        mid = (lo + hi) >> 1
        f.seek(start + mid * size)
        f.readinto(buf)
        c = _cmp(buf, key_at, key, 0)
        if c == 0:
            return mid
        if c < 0:
            lo = mid + 1
        else:
            hi = mid
    return -1


def _key_into(text, buf):
    # the 7-byte key of a normalised plate into buf[0:7]
    data = text.encode()
    a = crc32(data) & 0xFFFFFFFF
    b = crc32(data, _SEED) & 0xFFFFFFFF
    buf[0] = (a >> 24) & 0xFF
    buf[1] = (a >> 16) & 0xFF
    buf[2] = (a >> 8) & 0xFF
    buf[3] = a & 0xFF
    buf[4] = (b >> 24) & 0xFF
    buf[5] = (b >> 16) & 0xFF
    buf[6] = (b >> 8) & 0xFF


def key_of(text):
    """The 7-byte key of a plate (normalised first)."""
    buf = bytearray(_KEY)
    _key_into(plates.normalise(text), buf)
    return bytes(buf)


def _cmp(a, a_at, b, b_at):
    # compare the 7-byte keys a[a_at:] and b[b_at:]: -1, 0, 1
    for i in range(_KEY):
        x = a[a_at + i]
        y = b[b_at + i]
        if x != y:
            return -1 if x < y else 1
    return 0


def _u24(buf, at):
    return (buf[at] << 16) | (buf[at + 1] << 8) | buf[at + 2]


def _put24(buf, at, value):
    buf[at] = (value >> 16) & 0xFF
    buf[at + 1] = (value >> 8) & 0xFF
    buf[at + 2] = value & 0xFF


def _from_minutes(t):
    # valid from: rounded up to the minute (never grants earlier)
    if t is None or t <= EPOCH:
        return 0
    return min((t - EPOCH + 59) // 60, _NEVER - 1)


def _until_minutes(t):
    # valid until: rounded down to the minute (never grants later)
    if t is None:
        return _NEVER
    if t <= EPOCH:
        return 0
    return min((t - EPOCH) // 60, _NEVER - 1)


def _int_or_none(value, name):
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ValueError("%s must be unix seconds or None" % name)
    return value


def pack(member):
    """(normalised plate, 16-byte record) of a member dict {"plate",
    "from", "until", "window": [start, end] or None, "blacklist"}."""
    if not isinstance(member, dict):
        raise ValueError("member must be a dict")
    text = plates.normalise(member.get("plate"))
    start = _int_or_none(member.get("from"), "from")
    until = _int_or_none(member.get("until"), "until")
    window = member.get("window")
    bits = _BLACKLIST if member.get("blacklist") else 0
    if window is not None:
        if (not isinstance(window, (list, tuple)) or len(window) != 2
                or not isinstance(window[0], int) or not isinstance(window[1], int)
                or not 0 <= window[0] <= 1439 or not 0 <= window[1] <= 1440
                or window[0] == window[1]):
            raise ValueError("window of %s must be [start 0..1439, end 0..1440], "
                             "start != end: %r" % (text, window))
        bits |= _WINDOW | (window[0] << 11) | window[1]
    rec = bytearray(RECORD)
    _key_into(text, rec)
    _put24(rec, 7, _from_minutes(start))
    _put24(rec, 10, _until_minutes(until))
    _put24(rec, 13, bits)
    return text, bytes(rec)


def _header(magic, version, count, crc):
    head = bytearray(HEADER)
    head[0:4] = magic
    head[4] = FORMAT
    head[5] = RECORD
    struct.pack_into(">III", head, 8, version, count, crc)
    struct.pack_into(">I", head, 20, crc32(memoryview(head)[0:20]) & 0xFFFFFFFF)
    return head


def _records(members):
    # sorted unique records; ValueError on a duplicate plate or a key shared
    # by two plates (56 bits: about 1 in 10^8 for 50,000 members)
    packed = []
    for m in members:
        packed.append(pack(m))
    packed.sort(key=lambda p: p[1])
    for i in range(1, len(packed)):
        if packed[i][1][:_KEY] == packed[i - 1][1][:_KEY]:
            a, b = packed[i - 1][0], packed[i][0]
            if a == b:
                raise ValueError("plate %s listed twice" % a)
            raise ValueError("plates %s and %s share a key" % (a, b))
    return [p[1] for p in packed]


def build(members, version):
    """The whole member file as bytes."""
    if not isinstance(version, int) or not 0 <= version <= 0xFFFFFFFF:
        raise ValueError("version must be a u32")
    body = b"".join(_records(members))
    return bytes(_header(_MAGIC, version, len(body) // RECORD,
                         crc32(body) & 0xFFFFFFFF)) + body


def _parse_header(head, magic):
    # (version, count, crc); MemberError if head is not a good header
    if len(head) < HEADER or bytes(head[0:4]) != magic:
        raise MemberError("not a %s file" % magic.decode())
    if head[4] != FORMAT or head[5] != RECORD:
        raise MemberError("format %d record size %d not supported" % (head[4], head[5]))
    version, count, crc = struct.unpack_from(">III", head, 8)
    if magic == _MAGIC:
        if struct.unpack_from(">I", head, 20)[0] != crc32(memoryview(head)[0:20]) & 0xFFFFFFFF:
            raise MemberError("header CRC mismatch")
    return version, count, crc


def version_of(data):
    """The list version a whole member file or a delta brings."""
    if bytes(data[0:4]) == _DELTA_MAGIC:
        return _parse_header(data, _DELTA_MAGIC)[1]
    return _parse_header(data, _MAGIC)[0]


def _open(path_or_file):
    # (file, True if opened here) for a path or a binary file object
    if isinstance(path_or_file, str):
        return open(path_or_file, "rb"), True
    return path_or_file, False


def _crc_of(f, at, length):
    # CRC-32 of length bytes of f from at, read in 512-byte pieces
    buf = bytearray(_CHUNK * RECORD)
    mv = memoryview(buf)
    f.seek(at)
    crc = 0
    while length:
        n = min(length, len(buf))
        if f.readinto(mv[0:n]) != n:
            raise MemberError("file cut short")
        crc = crc32(mv[0:n], crc)
        length -= n
    return crc & 0xFFFFFFFF


class MemberList:
    """Lookups in a member file, given a path or a binary file object
    (kept open; close() when done). With overlay (a path or file of an
    overlay made for this very file) the lookups, version and count are
    those of the file with the overlay's changes applied."""

    def __init__(self, path_or_file, overlay=None):
        self._ov = None
        self._ov_own = False
        self._f, self._own = _open(path_or_file)
        self._rec = bytearray(RECORD)
        self._key = bytearray(_KEY)
        self._chg = bytearray(CHANGE)
        head = bytearray(HEADER)
        try:
            self._f.seek(0)
            if self._f.readinto(head) != HEADER:
                raise MemberError("member file too short")
            self.version, self.count, self._crc = _parse_header(head, _MAGIC)
        except Exception:
            self.close()
            raise
        self.base_version = self.version    # members.bin's header
        self.base_count = self.count
        self.base_crc = self._crc
        self.crc = self._crc        # of the list's records (with the overlay's changes)
        self.changes = 0            # the overlay's change count and their CRC
        self.changes_crc = 0
        self.overlaid = False
        if overlay is not None:
            try:
                self._open_overlay(overlay)
            except Exception:
                self.close()
                raise

    def _open_overlay(self, overlay):
        self._ov, self._ov_own = _open(overlay)
        f = self._ov
        end = f.seek(0, 2)
        t = bytearray(TRAILER)
        if end is None or end < TRAILER:
            raise MemberError("overlay too short")
        f.seek(end - TRAILER)
        if f.readinto(t) != TRAILER:
            raise MemberError("overlay too short")
        (bv, bc, bcrc, version, count, crc, changes, ov_crc,
         own) = struct.unpack_from(">IIIIIIIII", t, 8)
        if bytes(t[0:4]) != _OVERLAY_MAGIC or t[4] != FORMAT or t[5] != RECORD or \
                own != crc32(memoryview(t)[0:40]) & 0xFFFFFFFF:
            raise MemberError("not an overlay")
        if changes * CHANGE + TRAILER != end:
            raise MemberError("overlay of %d changes is %d bytes" % (changes, end))
        if bv != self.version or bc != self.count or bcrc != self._crc:
            raise MemberError("overlay is for list version %d (%d members), the file is "
                              "version %d (%d members)" % (bv, bc, self.version, self.count))
        self.version = version
        self.count = count
        self.crc = crc
        self.changes = changes
        self.changes_crc = ov_crc
        self.overlaid = True

    def close(self):
        ov = self._ov
        self._ov = None
        try:
            if self._own:
                self._f.close()
        finally:
            if ov is not None and self._ov_own:
                ov.close()

    def verify(self):
        """Check the records against the header's CRC and an overlay's
        changes against its trailer (reads both in 512-byte pieces);
        MemberError if they differ."""
        self.verify_records()
        self.verify_changes()

    def verify_records(self):
        if _crc_of(self._f, HEADER, self.base_count * RECORD) != self._crc:
            raise MemberError("member file CRC mismatch")

    def verify_changes(self):
        if self._ov is not None and \
                _crc_of(self._ov, 0, self.changes * CHANGE) != self.changes_crc:
            raise MemberError("overlay CRC mismatch")

    def _find_change(self, key):
        # the index of key's change in the overlay (its op in self._chg), or -1
        return _bisect(self._ov, 0, CHANGE, self.changes, self._chg, 1, key)

    def find(self, text):
        """True if the normalised plate's record was read into self._rec."""
        key = self._key
        _key_into(text, key)
        rec = self._rec
        if self._ov is not None:
            at = self._find_change(key)
            if at >= 0:
                if self._chg[0] != OP_PUT:
                    return False
                self._ov.seek(at * CHANGE + 1)
                self._ov.readinto(rec)
                return True
        return _bisect(self._f, HEADER, RECORD, self.base_count, rec, 0, key) >= 0

    def lookup(self, text, now, utc_offset_minutes=0):
        """(status, record) of a plate at unix time now; record is None for
        UNKNOWN, else (valid_from, valid_until, window_start, window_end,
        blacklisted): unix seconds (valid_from 0: always, valid_until None:
        never ends), local minutes (-1, -1: no window)."""
        try:
            text = plates.normalise(text)
        except plates.PlateError:
            return UNKNOWN, None
        if not self.find(text):
            return UNKNOWN, None
        rec = self._rec
        start = _u24(rec, 7)
        until = _u24(rec, 10)
        bits = _u24(rec, 13)
        w_start = w_end = -1
        if bits & _WINDOW:
            w_start = (bits >> 11) & 0x7FF
            w_end = bits & 0x7FF
        record = (EPOCH + start * 60 if start else 0,
                  None if until == _NEVER else EPOCH + until * 60,
                  w_start, w_end, bool(bits & _BLACKLIST))
        if bits & _BLACKLIST:
            return BLACKLISTED, record
        minute = (now - EPOCH) // 60
        # a clock before 2020 (not set) admits only open-ended members
        if (start and minute < start) or (until != _NEVER and (minute >= until or minute < 0)):
            return EXPIRED, record
        if w_start >= 0:
            local = (minute + utc_offset_minutes) % 1440
            if w_start < w_end:
                inside = w_start <= local < w_end
            else:
                inside = local >= w_start or local < w_end
            if not inside:
                return OUTSIDE_WINDOW, record
        return MEMBER, record


class _Run:
    # Entries of one size read from a file a chunk of 32 at a time; the CRC
    # of every byte read so far.
    def __init__(self, f, count, size):
        self.f = f
        self.left = count
        self.size = size
        self.buf = bytearray(_CHUNK * size)
        self.mv = memoryview(self.buf)
        self.n = self.i = 0
        self.crc = 0
        self.reads = 0

    def fill(self):
        # True if an entry is at self.i (reading the next chunk if needed)
        if self.i < self.n:
            return True
        if not self.left:
            return False
        k = min(self.left, _CHUNK)
        nb = k * self.size
        if self.f.readinto(self.mv[0:nb]) != nb:
            raise MemberError("member file cut short" if self.size == RECORD
                              else "changes cut short")
        self.crc = crc32(self.mv[0:nb], self.crc)
        self.left -= k
        self.n = k
        self.i = 0
        self.reads += 1
        return True


class _Mem:
    # readinto() over bytes in RAM from an offset: a delta held whole
    def __init__(self, data, at):
        self._mv = memoryview(data)
        self._at = at

    def readinto(self, buf):
        n = min(len(buf), len(self._mv) - self._at)
        buf[0:n] = self._mv[self._at:self._at + n]
        self._at += n
        return n


class Merger:
    """The sorted records of a member file (base, positioned at its first
    record, count of them) merged with up to two sorted change streams
    (older, newer: files positioned at their first change; on a key both
    change, newer wins), a slice at a time: step() reads at most one chunk
    of 32 base records and handles at most 32 changes, and returns False
    once all is merged. Outputs, each a file or None: out_records gets the
    resulting records, out_changes the combined changes (less any removal
    of a key the base does not have). It counts and CRCs the result
    (count, crc), the combined changes (changes, changes_crc) and every
    input (base_crc, older_crc, newer_crc), and checks that newer is
    sorted and its ops known (MemberError)."""

    def __init__(self, base, count, older=None, older_count=0, newer=None, newer_count=0,
                 out_records=None, out_changes=None):
        self._base = _Run(base, count, RECORD)
        self._older = _Run(older, older_count, CHANGE) if older is not None else None
        self._newer = _Run(newer, newer_count, CHANGE) if newer is not None else None
        self._out_records = out_records
        self._out_changes = out_changes
        self._prev = bytearray(_KEY)
        self._has_prev = False
        self.count = 0
        self._crc = 0
        self.changes = 0
        self._changes_crc = 0
        self.done = False

    @property
    def crc(self):
        return self._crc & 0xFFFFFFFF

    @property
    def changes_crc(self):
        return self._changes_crc & 0xFFFFFFFF

    @property
    def base_crc(self):
        return self._base.crc & 0xFFFFFFFF

    @property
    def older_crc(self):
        return self._older.crc & 0xFFFFFFFF if self._older is not None else 0

    @property
    def newer_crc(self):
        return self._newer.crc & 0xFFFFFFFF if self._newer is not None else 0

    def _pass(self, j):
        # base records i .. j-1 go to the result unchanged
        base = self._base
        mv = base.mv[base.i * RECORD:j * RECORD]
        self._crc = crc32(mv, self._crc)
        self.count += j - base.i
        if self._out_records is not None:
            self._out_records.write(mv)
        base.i = j

    def _first_not_below(self, key, at):
        # the first record of the base chunk from i whose key >= key[at:at+7]
        base = self._base
        buf = base.buf
        lo = base.i
        hi = base.n
        while lo < hi:
            mid = (lo + hi) >> 1
            if _cmp(buf, mid * RECORD, key, at) < 0:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def step(self):
        if self.done:
            return False
        base = self._base
        older = self._older
        newer = self._newer
        reads = base.reads
        budget = _CHUNK
        while budget:
            run = None
            has_old = older is not None and older.fill()
            has_new = newer is not None and newer.fill()
            if has_old and has_new:
                c = _cmp(older.buf, older.i * CHANGE + 1, newer.buf, newer.i * CHANGE + 1)
                if c == 0:
                    older.i += 1            # the newer change replaces it
                run = older if c < 0 else newer
            elif has_old:
                run = older
            elif has_new:
                run = newer
            # the base records before the change's key (all, if none is left)
            while True:
                if base.i == base.n:
                    if not base.left:
                        break
                    if base.reads != reads:
                        return True         # one chunk read per slice
                    base.fill()
                if run is None:
                    self._pass(base.n)
                    continue
                j = self._first_not_below(run.buf, run.i * CHANGE + 1)
                if j > base.i:
                    self._pass(j)
                if j < base.n:
                    break
            if run is None:
                self.done = True
                return False
            buf = run.buf
            at = run.i * CHANGE
            op = buf[at]
            if op > OP_PUT:
                raise MemberError("delta op %d unknown" % op)
            if run is newer:
                prev = self._prev
                if self._has_prev and _cmp(prev, 0, buf, at + 1) >= 0:
                    raise MemberError("delta changes not sorted")
                for t in range(_KEY):
                    prev[t] = buf[at + 1 + t]
                self._has_prev = True
            present = base.i < base.n and _cmp(base.buf, base.i * RECORD, buf, at + 1) == 0
            if present:
                base.i += 1
            if op == OP_PUT:
                rec = run.mv[at + 1:at + CHANGE]
                self._crc = crc32(rec, self._crc)
                self.count += 1
                if self._out_records is not None:
                    self._out_records.write(rec)
            if self._out_changes is not None and (op == OP_PUT or present):
                change = run.mv[at:at + CHANGE]
                self._out_changes.write(change)
                self._changes_crc = crc32(change, self._changes_crc)
                self.changes += 1
            run.i += 1
            budget -= 1
        return True


def overlay_trailer(base_version, base_count, base_crc, version, count, crc, changes,
                    changes_crc):
    """The trailer that ends an overlay file (see the top of this file)."""
    t = bytearray(TRAILER)
    t[0:4] = _OVERLAY_MAGIC
    t[4] = FORMAT
    t[5] = RECORD
    struct.pack_into(">IIIIIIII", t, 8, base_version, base_count, base_crc, version, count,
                     crc, changes, changes_crc)
    struct.pack_into(">I", t, 40, crc32(memoryview(t)[0:40]) & 0xFFFFFFFF)
    return t


def _merge(src, count, src_crc, dst, delta, changes):
    """Stream the count records of src (positioned at the first) merged
    with the delta's sorted changes into dst; returns (records written,
    their CRC). MemberError if src's records do not match src_crc."""
    m = Merger(src, count, newer=_Mem(delta, HEADER), newer_count=changes, out_records=dst)
    while m.step():
        pass
    if m.base_crc != src_crc:
        raise MemberError("member file CRC mismatch")
    return m.count, m.crc


def _check_delta(delta):
    # (base, new version, changes, result count, result CRC) of a good delta
    base, new, changes = _parse_header(delta, _DELTA_MAGIC)
    count, result_crc, body_crc = struct.unpack_from(">III", delta, 20)
    end = HEADER + changes * CHANGE
    if len(delta) != end:
        raise MemberError("delta length %d, expected %d" % (len(delta), end))
    if crc32(memoryview(delta)[HEADER:end]) & 0xFFFFFFFF != body_crc:
        raise MemberError("delta CRC mismatch")
    for j in range(changes):
        at = HEADER + j * CHANGE
        if delta[at] > OP_PUT:
            raise MemberError("delta op %d unknown" % delta[at])
        if j and _cmp(delta, at - CHANGE + 1, delta, at + 1) >= 0:
            raise MemberError("delta changes not sorted")
    return base, new, changes, count, result_crc


def _apply(src, dst, delta):
    # src at offset 0: check, write the new header, merge
    head = bytearray(HEADER)
    if src.readinto(head) != HEADER:
        raise MemberError("member file too short")
    version, count, crc = _parse_header(head, _MAGIC)
    base, new, changes, result_count, result_crc = _check_delta(delta)
    if version != base:
        raise MemberError("delta is for list version %d, this is %d" % (base, version))
    dst.write(_header(_MAGIC, new, result_count, result_crc))
    written, out_crc = _merge(src, count, crc, dst, delta, changes)
    if written != result_count or out_crc != result_crc:
        raise MemberError("merged list differs from the delta's result")
    return new


def apply_delta_file(path, delta):
    """On the gate: apply a delta to the member file at path, writing
    path + ".new" and renaming it over path; returns the new version.
    Nothing is loaded beyond two 512-byte buffers and the delta. On any
    error the old file stays and MemberError (or OSError) is raised."""
    import os
    tmp = path + ".new"
    with open(path, "rb") as src:
        try:
            with open(tmp, "wb") as dst:
                version = _apply(src, dst, delta)
        except Exception:
            try:
                os.remove(tmp)
            except OSError:
                pass
            raise
    os.rename(tmp, path)
    return version


# --- host side (works on MicroPython too, for small lists) -------------

def _read(old):
    if isinstance(old, str):
        with open(old, "rb") as f:
            return f.read()
    return bytes(old)


def make_delta(old, changes, new_version):
    """A delta turning the member file old (bytes or a path) into the list
    with changes applied: each change a member dict (added or replaced) or
    {"plate": p, "remove": True}."""
    import io
    old = _read(old)
    base = _parse_header(old, _MAGIC)[0]
    ops = []
    for change in changes:
        if change.get("remove"):
            text = plates.normalise(change.get("plate"))
            ops.append((key_of(text), OP_REMOVE, text, bytes(RECORD - _KEY)))
        else:
            text, rec = pack(change)
            ops.append((rec[:_KEY], OP_PUT, text, rec[_KEY:]))
    ops.sort(key=lambda op: op[0])
    for i in range(1, len(ops)):
        if ops[i][0] == ops[i - 1][0]:
            raise ValueError("plate %s changed twice" % ops[i][2])
    body = b"".join(bytes([op[1]]) + op[0] + op[3] for op in ops)
    delta = bytearray(_header(_DELTA_MAGIC, base, 0, 0)) + body
    struct.pack_into(">III", delta, 8, base, new_version, len(ops))
    src = io.BytesIO(old)
    src.seek(HEADER)
    dst = io.BytesIO()
    count, crc = _merge(src, _parse_header(old, _MAGIC)[1], _parse_header(old, _MAGIC)[2],
                        dst, delta, len(ops))
    struct.pack_into(">IIII", delta, 16, len(ops), count, crc,
                     crc32(body) & 0xFFFFFFFF)
    return bytes(delta)


def apply_delta_bytes(old, delta):
    """The member file (bytes) that applying delta to old (bytes) gives."""
    import io
    dst = io.BytesIO()
    _apply(io.BytesIO(_read(old)), dst, delta)
    return dst.getvalue()


def apply_delta(old, changes, new_version):
    """On the host: the new member file (bytes) for old (bytes or a path)
    with changes applied, through the same merge as the gate."""
    old = _read(old)
    return apply_delta_bytes(old, make_delta(old, changes, new_version))
