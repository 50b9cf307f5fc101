# The member list on flash (members.bin), looked up by binary search with
# seek/readinto into a 16-byte buffer: the list is never loaded into RAM.
# The host builds it (build) and makes deltas (make_delta / apply_delta);
# the gate applies a delta by a streaming merge into members.bin.new and a
# rename (apply_delta_file). See firmware/docs/lane.md.
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
_MAGIC = b"PGML"
_DELTA_MAGIC = b"PGMD"
DELTA_MAGIC = _DELTA_MAGIC   # the first bytes of a delta, as against a whole list


class MemberError(ValueError):
    pass


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


class MemberList:
    """Lookups in a member file, given a path or a binary file object
    (kept open; close() when done)."""

    def __init__(self, path_or_file):
        if isinstance(path_or_file, str):
            self._f = open(path_or_file, "rb")
            self._own = True
        else:
            self._f = path_or_file
            self._own = False
        self._rec = bytearray(RECORD)
        self._key = bytearray(_KEY)
        head = bytearray(HEADER)
        self._f.seek(0)
        if self._f.readinto(head) != HEADER:
            raise MemberError("member file too short")
        self.version, self.count, self._crc = _parse_header(head, _MAGIC)

    def close(self):
        if self._own:
            self._f.close()

    def verify(self):
        """Check the records against the header's CRC (reads the whole file
        in 512-byte pieces); MemberError if they differ."""
        buf = bytearray(_CHUNK * RECORD)
        mv = memoryview(buf)
        f = self._f
        f.seek(HEADER)
        left = self.count * RECORD
        crc = 0
        while left:
            n = min(left, len(buf))
            if f.readinto(mv[0:n]) != n:
                raise MemberError("member file cut short")
            crc = crc32(mv[0:n], crc)
            left -= n
        if crc & 0xFFFFFFFF != self._crc:
            raise MemberError("member file CRC mismatch")

    def find(self, text):
        """True if the normalised plate's record was read into self._rec."""
        key = self._key
        _key_into(text, key)
        rec = self._rec
        f = self._f
        lo = 0
        hi = self.count
        while lo < hi:
            mid = (lo + hi) >> 1
            f.seek(HEADER + mid * RECORD)
            f.readinto(rec)
            c = _cmp(rec, 0, key, 0)
            if c == 0:
                return True
            if c < 0:
                lo = mid + 1
            else:
                hi = mid
        return False

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


def _merge(src, count, src_crc, dst, delta, changes):
    """Stream the count records of src (positioned at the first) merged
    with the delta's sorted changes into dst; returns (records written,
    their CRC). MemberError if src's records do not match src_crc."""
    inb = bytearray(_CHUNK * RECORD)
    outb = bytearray(_CHUNK * RECORD)
    inv = memoryview(inb)
    outv = memoryview(outb)
    in_n = in_i = 0
    left = count
    out_n = 0
    written = 0
    crc_in = 0
    crc_out = 0
    j = 0
    while True:
        if in_i == in_n and left:
            k = min(left, _CHUNK)
            if src.readinto(inv[0:k * RECORD]) != k * RECORD:
                raise MemberError("member file cut short")
            crc_in = crc32(inv[0:k * RECORD], crc_in)
            left -= k
            in_n = k
            in_i = 0
        if in_i < in_n:
            if j < changes:
                c = _cmp(inb, in_i * RECORD, delta, HEADER + j * CHANGE + 1)
            else:
                c = -1
        elif j < changes:
            c = 1
        else:
            break
        if c < 0:
            o = out_n * RECORD
            outv[o:o + RECORD] = inv[in_i * RECORD:in_i * RECORD + RECORD]
            out_n += 1
            in_i += 1
        else:
            at = HEADER + j * CHANGE
            if delta[at] == OP_PUT:
                o = out_n * RECORD
                outv[o:o + RECORD] = delta[at + 1:at + CHANGE]
                out_n += 1
            j += 1
            if c == 0:
                in_i += 1
        if out_n == _CHUNK:
            dst.write(outb)
            crc_out = crc32(outb, crc_out)
            written += out_n
            out_n = 0
    if out_n:
        dst.write(outv[0:out_n * RECORD])
        crc_out = crc32(outv[0:out_n * RECORD], crc_out)
        written += out_n
    if crc_in & 0xFFFFFFFF != src_crc:
        raise MemberError("member file CRC mismatch")
    return written, crc_out & 0xFFFFFFFF


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
