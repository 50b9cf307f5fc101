# The member list on flash (members.bin), looked up by binary search with
# seek/readinto into a 16-byte buffer: the list is never loaded into RAM.
# The host builds it and makes deltas (parkgate_host.member_lists). The
# gate keeps the deltas it installs as an overlay beside members.bin
# (members.ovl, below: parkgate.member_update writes it), so a delta needs
# no second copy of the list; MemberList(path, overlay) looks up both. One
# merge (parkgate.member_merge, a slice at a time) serves the host, the
# overlay and the compaction. See firmware/docs/members.md.
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
KEY_BYTES = const(7)        # the key: bytes 0..6 of a record
_SEED = const(0x5A5A5A5A)
NEVER = const(0xFFFFFF)     # valid until: never ends
BIT_BLACKLIST = const(0x800000)
BIT_WINDOW = const(0x400000)
_CHUNK = const(32)          # records per CRC read (512 bytes)
OP_REMOVE = const(0)
OP_PUT = const(1)
TRAILER = const(44)
LIST_MAGIC = b"PGML"
DELTA_MAGIC = b"PGMD"        # the first bytes of a delta, as against a whole list
OVERLAY_MAGIC = b"PGMO"


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


def _cmp(a, a_at, b, b_at):
    # compare the 7-byte keys a[a_at:] and b[b_at:]: -1, 0, 1
    for i in range(KEY_BYTES):
        x = a[a_at + i]
        y = b[b_at + i]
        if x != y:
            return -1 if x < y else 1
    return 0


def _u24(buf, at):
    return (buf[at] << 16) | (buf[at + 1] << 8) | buf[at + 2]


def _header(magic, version, count, crc):
    head = bytearray(HEADER)
    head[0:4] = magic
    head[4] = FORMAT
    head[5] = RECORD
    struct.pack_into(">III", head, 8, version, count, crc)
    struct.pack_into(">I", head, 20, crc32(memoryview(head)[0:20]) & 0xFFFFFFFF)
    return head


def _parse_header(head, magic):
    # (version, count, crc); MemberError if head is not a good header
    if len(head) < HEADER or bytes(head[0:4]) != magic:
        raise MemberError("not a %s file" % magic.decode())
    if head[4] != FORMAT or head[5] != RECORD:
        raise MemberError("format %d record size %d not supported" % (head[4], head[5]))
    version, count, crc = struct.unpack_from(">III", head, 8)
    if magic == LIST_MAGIC:
        if struct.unpack_from(">I", head, 20)[0] != crc32(memoryview(head)[0:20]) & 0xFFFFFFFF:
            raise MemberError("header CRC mismatch")
    return version, count, crc


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
        self._key = bytearray(KEY_BYTES)
        self._chg = bytearray(CHANGE)
        head = bytearray(HEADER)
        try:
            self._f.seek(0)
            if self._f.readinto(head) != HEADER:
                raise MemberError("member file too short")
            self.version, self.count, self._crc = _parse_header(head, LIST_MAGIC)
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
        if bytes(t[0:4]) != OVERLAY_MAGIC or t[4] != FORMAT or t[5] != RECORD or \
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
        if bits & BIT_WINDOW:
            w_start = (bits >> 11) & 0x7FF
            w_end = bits & 0x7FF
        record = (EPOCH + start * 60 if start else 0,
                  None if until == NEVER else EPOCH + until * 60,
                  w_start, w_end, bool(bits & BIT_BLACKLIST))
        if bits & BIT_BLACKLIST:
            return BLACKLISTED, record
        minute = (now - EPOCH) // 60
        # a clock before 2020 (not set) admits only open-ended members
        if (start and minute < start) or (until != NEVER and (minute >= until or minute < 0)):
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


def overlay_trailer(base_version, base_count, base_crc, version, count, crc, changes,
                    changes_crc):
    """The trailer that ends an overlay file (see the top of this file)."""
    t = bytearray(TRAILER)
    t[0:4] = OVERLAY_MAGIC
    t[4] = FORMAT
    t[5] = RECORD
    struct.pack_into(">IIIIIIII", t, 8, base_version, base_count, base_crc, version, count,
                     crc, changes, changes_crc)
    struct.pack_into(">I", t, 40, crc32(memoryview(t)[0:40]) & 0xFFFFFFFF)
    return t
