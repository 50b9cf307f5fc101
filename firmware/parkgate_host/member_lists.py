# Member lists as the host makes them: the whole file (build), the records
# (pack), and deltas (make_delta, applied with apply_delta / apply_delta_bytes
# through the gate's own merge, parkgate.member_merge). Works on MicroPython
# too, for small lists. Layouts: parkgate.members.
import struct
from binascii import crc32

from parkgate import plate as plates
from parkgate.member_merge import Merger
from parkgate.members import (BIT_BLACKLIST, BIT_WINDOW, CHANGE, DELTA_MAGIC, EPOCH, HEADER,
                              KEY_BYTES, LIST_MAGIC, NEVER, OP_PUT, OP_REMOVE, RECORD,
                              MemberError, _cmp, _header, _key_into, _parse_header)


def key_of(text):
    """The 7-byte key of a plate (normalised first)."""
    buf = bytearray(KEY_BYTES)
    _key_into(plates.normalise(text), buf)
    return bytes(buf)


def _put24(buf, at, value):
    buf[at] = (value >> 16) & 0xFF
    buf[at + 1] = (value >> 8) & 0xFF
    buf[at + 2] = value & 0xFF


def _from_minutes(t):
    # valid from: rounded up to the minute (never grants earlier)
    if t is None or t <= EPOCH:
        return 0
    return min((t - EPOCH + 59) // 60, NEVER - 1)


def _until_minutes(t):
    # valid until: rounded down to the minute (never grants later)
    if t is None:
        return NEVER
    if t <= EPOCH:
        return 0
    return min((t - EPOCH) // 60, NEVER - 1)


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
    bits = BIT_BLACKLIST if member.get("blacklist") else 0
    if window is not None:
        if (not isinstance(window, (list, tuple)) or len(window) != 2
                or not isinstance(window[0], int) or not isinstance(window[1], int)
                or not 0 <= window[0] <= 1439 or not 0 <= window[1] <= 1440
                or window[0] == window[1]):
            raise ValueError("window of %s must be [start 0..1439, end 0..1440], "
                             "start != end: %r" % (text, window))
        bits |= BIT_WINDOW | (window[0] << 11) | window[1]
    rec = bytearray(RECORD)
    _key_into(text, rec)
    _put24(rec, 7, _from_minutes(start))
    _put24(rec, 10, _until_minutes(until))
    _put24(rec, 13, bits)
    return text, bytes(rec)


def _records(members):
    # sorted unique records; ValueError on a duplicate plate or a key shared
    # by two plates (56 bits: about 1 in 10^8 for 50,000 members)
    packed = []
    for m in members:
        packed.append(pack(m))
    packed.sort(key=lambda p: p[1])
    for i in range(1, len(packed)):
        if packed[i][1][:KEY_BYTES] == packed[i - 1][1][:KEY_BYTES]:
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
    return bytes(_header(LIST_MAGIC, version, len(body) // RECORD,
                         crc32(body) & 0xFFFFFFFF)) + body


def version_of(data):
    """The list version a whole member file or a delta brings."""
    if bytes(data[0:4]) == DELTA_MAGIC:
        return _parse_header(data, DELTA_MAGIC)[1]
    return _parse_header(data, LIST_MAGIC)[0]


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
    base, new, changes = _parse_header(delta, DELTA_MAGIC)
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
    version, count, crc = _parse_header(head, LIST_MAGIC)
    base, new, changes, result_count, result_crc = _check_delta(delta)
    if version != base:
        raise MemberError("delta is for list version %d, this is %d" % (base, version))
    dst.write(_header(LIST_MAGIC, new, result_count, result_crc))
    written, out_crc = _merge(src, count, crc, dst, delta, changes)
    if written != result_count or out_crc != result_crc:
        raise MemberError("merged list differs from the delta's result")
    return new


def apply_delta_file(path, delta):
    """Apply a delta to the member file at path, writing path + ".new" and
    renaming it over path; returns the new version. The way a gate took a
    delta before the overlay (it needs a second copy of the list): the
    benchmark's baseline, and a check of the merge on a file.
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
    base = _parse_header(old, LIST_MAGIC)[0]
    ops = []
    for change in changes:
        if change.get("remove"):
            text = plates.normalise(change.get("plate"))
            ops.append((key_of(text), OP_REMOVE, text, bytes(RECORD - KEY_BYTES)))
        else:
            text, rec = pack(change)
            ops.append((rec[:KEY_BYTES], OP_PUT, text, rec[KEY_BYTES:]))
    ops.sort(key=lambda op: op[0])
    for i in range(1, len(ops)):
        if ops[i][0] == ops[i - 1][0]:
            raise ValueError("plate %s changed twice" % ops[i][2])
    body = b"".join(bytes([op[1]]) + op[0] + op[3] for op in ops)
    delta = bytearray(_header(DELTA_MAGIC, base, 0, 0)) + body
    struct.pack_into(">III", delta, 8, base, new_version, len(ops))
    src = io.BytesIO(old)
    src.seek(HEADER)
    dst = io.BytesIO()
    count, crc = _merge(src, _parse_header(old, LIST_MAGIC)[1], _parse_header(old, LIST_MAGIC)[2],
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
