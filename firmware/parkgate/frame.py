# Camera serial frame: encoder (for the simulator) and incremental parser.
#
# Frame, integers big-endian:
#   0    2  start marker 0x50 0x47 ("PG")
#   2    1  version, 0x01
#   3    1  sequence number, u8, wraps
#   4    2  payload length N, 7 <= N <= MAX_PAYLOAD
#   6    N  payload
#   6+N  2  CRC-16/CCITT-FALSE over bytes 2 .. 6+N-1
# Payload:
#   0    1  plate colour code 0..7
#   1    1  confidence 0..100
#   2    4  camera time, u32 unix seconds UTC, 0 = no clock
#   6    1  plate length L, 1..16
#   7    L  plate, UTF-8
# See firmware/docs/camera-frame.md.
from parkgate.compat import const

# reject reason codes, passed to on_reject(reason, byte_count)
BAD_CRC = const(0)
BAD_LENGTH = const(1)
BAD_VERSION = const(2)
BAD_PAYLOAD = const(3)
TRUNCATED = const(4)
GARBAGE = const(5)
REJECT_NAMES = ("bad_crc", "bad_length", "bad_version", "bad_payload",
                "truncated", "garbage")

MAX_PAYLOAD = const(64)
VERSION = const(1)
MAX_PLATE = const(16)

_MARK0 = const(0x50)
_MARK1 = const(0x47)
_HEADER = const(6)          # marker, version, seq, length
_MIN_PAYLOAD = const(7)     # colour, confidence, time, plate length
_PLATE_AT = const(13)       # frame offset of the plate bytes
_FRAME_MAX = const(72)      # _HEADER + MAX_PAYLOAD + 2 CRC bytes


def _nibble_table():
    # CRC-16 (poly 0x1021) of each 4-bit value placed in the top nibble
    table = []
    for nibble in range(16):
        crc = nibble << 12
        for _ in range(4):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_NIBBLE = _nibble_table()


def _crc16_range(data, start, end, crc):
    table = _CRC_NIBBLE
    for i in range(start, end):
        b = data[i]
        crc = ((crc << 4) & 0xFFFF) ^ table[(crc >> 12) ^ (b >> 4)]
        crc = ((crc << 4) & 0xFFFF) ^ table[(crc >> 12) ^ (b & 0x0F)]
    return crc


def crc16(data, crc=0xFFFF):
    """CRC-16/CCITT-FALSE of data; pass a previous result as crc to continue."""
    return _crc16_range(data, 0, len(data), crc)


def _utf8_valid(data, i, end):
    # strict UTF-8 (RFC 3629), so both runtimes accept the same plates:
    # MicroPython's own decoder lets overlong forms and surrogates through
    while i < end:
        b = data[i]
        i += 1
        if b < 0x80:
            continue
        if b < 0xC2:
            return False
        if b < 0xE0:
            more, low, high = 1, 0x80, 0xBF
        elif b < 0xF0:
            more = 2
            low = 0xA0 if b == 0xE0 else 0x80
            high = 0x9F if b == 0xED else 0xBF
        elif b < 0xF5:
            more = 3
            low = 0x90 if b == 0xF0 else 0x80
            high = 0x8F if b == 0xF4 else 0xBF
        else:
            return False
        if i + more > end or not low <= data[i] <= high:
            return False
        for k in range(i + 1, i + more):
            if data[k] & 0xC0 != 0x80:
                return False
        i += more
    return True


class PlateRead:
    """One plate result decoded from a camera frame. Fields at their class
    default (0) are not set on the instance: each attribute set grows its
    dict on the gate's heap."""
    colour = camera_time = 0

    def __init__(self, plate, colour, confidence, camera_time, seq):
        self.plate = plate
        if colour:
            self.colour = colour
        self.confidence = confidence
        if camera_time:
            self.camera_time = camera_time
        self.seq = seq

    def __repr__(self):
        return "PlateRead(%r, colour=%d, confidence=%d, camera_time=%d, seq=%d)" % (
            self.plate, self.colour, self.confidence, self.camera_time, self.seq)


def _in_range(value, low, high):
    return isinstance(value, int) and low <= value <= high


def encode(seq, plate, colour=0, confidence=100, camera_time=0):
    """One complete frame as bytes; ValueError if a field is out of range."""
    if not isinstance(plate, str):
        raise ValueError("plate must be a str")
    text = plate.encode("utf-8")
    if not _in_range(len(text), 1, MAX_PLATE):
        raise ValueError("plate must be 1..16 UTF-8 bytes")
    if not _in_range(seq, 0, 0xFF):
        raise ValueError("seq must be 0..255")
    if not _in_range(colour, 0, 7):
        raise ValueError("colour must be 0..7")
    if not _in_range(confidence, 0, 100):
        raise ValueError("confidence must be 0..100")
    if not _in_range(camera_time, 0, 0xFFFFFFFF):
        raise ValueError("camera_time must be a u32")
    n = _MIN_PAYLOAD + len(text)
    frame = bytearray(_HEADER + n + 2)
    frame[0] = _MARK0
    frame[1] = _MARK1
    frame[2] = VERSION
    frame[3] = seq
    frame[4] = n >> 8
    frame[5] = n & 0xFF
    frame[6] = colour
    frame[7] = confidence
    for k in range(4):
        frame[8 + k] = (camera_time >> (24 - 8 * k)) & 0xFF
    frame[12] = len(text)
    frame[_PLATE_AT:_PLATE_AT + len(text)] = text
    crc = _crc16_range(frame, 2, _HEADER + n, 0xFFFF)
    frame[_HEADER + n] = crc >> 8
    frame[_HEADER + n + 1] = crc & 0xFF
    return bytes(frame)


class FrameParser:
    """Incremental parser: feed() bytes split anywhere, get callbacks.

    on_plate(PlateRead) for each good frame, on_reject(reason, byte_count)
    for everything else. Every byte fed ends up counted exactly once: in an
    accepted frame or in one reject's byte_count (once idle() has flushed).
    Callbacks run inside feed(); the parser's state is settled before each
    call, but one that raises drops the rest of that feed()'s data.
    """

    def __init__(self, on_plate, on_reject):
        self._on_plate = on_plate
        self._on_reject = on_reject
        # _buf[0:_end] holds bytes not yet accepted or dropped; the candidate
        # frame starts at _buf[0] (always 0x50 when _end > 0). _buf[0:_have]
        # has been checked; _buf[_have:_end] waits to be scanned again after
        # a false start was dropped.
        self._buf = bytearray(_FRAME_MAX)
        self._end = 0
        self._have = 0
        self._need = 0          # full frame length once the header is read
        self._skipped = 0       # garbage bytes not reported yet
        self.frames = 0
        self.rejects = 0

    def feed(self, data):
        buf = self._buf
        for i in range(len(data)):
            b = data[i]
            end = self._end
            if end == 0 and b != _MARK0:
                self._skipped += 1      # hunting for a start marker
                continue
            buf[end] = b
            self._end = end + 1
            self._scan()

    def idle(self):
        """The line went quiet: drop a partial frame as TRUNCATED, rescanning
        its bytes after the marker for a complete frame; report pending
        garbage (a trailing lone 0x50 included)."""
        while self._end >= 2:
            self._drop_false_start(TRUNCATED)
            self._scan()
        if self._end == 1:
            self._skipped += 1
            self._drop_before(1)
        self._report_garbage()

    def _scan(self):
        buf = self._buf
        while self._have < self._end:
            have = self._have + 1
            self._have = have
            if have == 2:
                if buf[1] != _MARK1:
                    # lone 0x50: garbage up to the next possible marker
                    cut = self._next_start(1)
                    self._skipped += cut
                    self._drop_before(cut)
                else:
                    self._report_garbage()
            elif have == 3:
                if buf[2] != VERSION:
                    self._drop_false_start(BAD_VERSION)
            elif have == _HEADER:
                n = (buf[4] << 8) | buf[5]
                if n < _MIN_PAYLOAD or n > MAX_PAYLOAD:
                    self._drop_false_start(BAD_LENGTH)
                else:
                    self._need = _HEADER + n + 2
            elif have == self._need:
                self._complete()

    def _complete(self):
        buf = self._buf
        need = self._need
        crc = _crc16_range(buf, 2, need - 2, 0xFFFF)
        if crc != (buf[need - 2] << 8) | buf[need - 1]:
            self._drop_false_start(BAD_CRC)
            return
        read = self._decode(need - 2)
        cut = self._next_start(need)
        self._skipped += cut - need
        self._drop_before(cut)
        if read is None:
            self._reject(BAD_PAYLOAD, need)
        else:
            self.frames += 1
            self._on_plate(read)

    def _decode(self, payload_end):
        # the CRC is good; frame offsets: 3 seq, 6 colour, 7 confidence,
        # 8..11 camera time, 12 plate length L, 13.. plate
        buf = self._buf
        colour = buf[6]
        confidence = buf[7]
        length = buf[12]
        plate_end = _PLATE_AT + length
        if (plate_end != payload_end or length < 1 or length > MAX_PLATE
                or colour > 7 or confidence > 100
                or not _utf8_valid(buf, _PLATE_AT, plate_end)):
            return None
        camera_time = (buf[8] << 24) | (buf[9] << 16) | (buf[10] << 8) | buf[11]
        plate = str(memoryview(buf)[_PLATE_AT:plate_end], "utf-8")
        return PlateRead(plate, colour, confidence, camera_time, buf[3])

    def _drop_false_start(self, reason):
        # The marker at _buf[0] did not begin a good frame: reject it together
        # with the bytes up to the next 0x50, which is scanned again.
        cut = self._next_start(2)
        self._drop_before(cut)
        self._reject(reason, cut)

    def _next_start(self, i):
        # index of the first 0x50 at or after i, else _end
        buf = self._buf
        end = self._end
        while i < end and buf[i] != _MARK0:
            i += 1
        return i

    def _drop_before(self, cut):
        # discard _buf[0:cut], move the rest to the front (byte loop: the
        # regions overlap), and start a new candidate there
        buf = self._buf
        kept = self._end - cut
        for k in range(kept):
            buf[k] = buf[cut + k]
        self._end = kept
        self._have = 0
        self._need = 0

    def _report_garbage(self):
        if self._skipped:
            count = self._skipped
            self._skipped = 0
            self._reject(GARBAGE, count)

    def _reject(self, reason, count):
        self.rejects += 1
        self._on_reject(reason, count)
