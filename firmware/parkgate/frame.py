# Camera serial frame: the incremental parser (the encoder the simulator
# and the tests use is parkgate_host.camera_frames.pg_frame).
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
from parkgate.resync import GARBAGE, TRUNCATED, Resync

# reject reason codes, passed to on_reject(reason, byte_count); TRUNCATED (4)
# and GARBAGE (5) come from resync
BAD_CRC = const(0)
BAD_LENGTH = const(1)
BAD_VERSION = const(2)
BAD_PAYLOAD = const(3)
REJECT_NAMES = ("bad_crc", "bad_length", "bad_version", "bad_payload",
                "truncated", "garbage")

MAX_PAYLOAD = const(64)
VERSION = const(1)
MAX_PLATE = const(16)

MARK0 = const(0x50)         # "P"
MARK1 = const(0x47)         # "G"
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
    default (0, False) are not set on the instance: each attribute set grows
    its dict on the gate's heap.

    offline: True for a result the camera buffered while it could not send
    and sent again later (a Vzenith `isoffline` result): camera_time is when
    the car was read, not now, and the gate must not open for it."""
    colour = camera_time = 0
    offline = False

    def __init__(self, plate, colour, confidence, camera_time, seq):
        self.plate = plate
        if colour:
            self.colour = colour
        self.confidence = confidence
        if camera_time:
            self.camera_time = camera_time
        self.seq = seq

    def __repr__(self):
        return "PlateRead(%r, colour=%d, confidence=%d, camera_time=%d, seq=%d%s)" % (
            self.plate, self.colour, self.confidence, self.camera_time, self.seq,
            ", offline=True" if self.offline else "")


class FrameParser(Resync):
    """Incremental parser: feed() bytes split anywhere, get callbacks.

    on_plate(PlateRead) for each good frame, on_reject(reason, byte_count)
    for everything else. Every byte fed ends up counted exactly once: in an
    accepted frame or in one reject's byte_count (once idle() has flushed).
    A frame that fails is resynchronised from the byte after its marker
    (resync.Resync), so a good frame right behind a bad one is kept.
    Callbacks run inside feed(); the parser's state is settled before each
    call, but one that raises drops the rest of that feed()'s data.
    """

    def __init__(self, on_plate, on_reject):
        Resync.__init__(self, _FRAME_MAX, MARK0, MARK1, on_reject)
        self._on_plate = on_plate
        self._need = 0          # full frame length once the header is read
        self.frames = 0

    def _check(self, have):
        buf = self._buf
        if have == 3:
            if buf[2] != VERSION:
                self._fail(BAD_VERSION)
        elif have == _HEADER:
            n = (buf[4] << 8) | buf[5]
            if n < _MIN_PAYLOAD or n > MAX_PAYLOAD:
                self._fail(BAD_LENGTH)
            else:
                self._need = _HEADER + n + 2
        elif have == self._need:
            self._complete()

    def _complete(self):
        buf = self._buf
        need = self._need
        crc = _crc16_range(buf, 2, need - 2, 0xFFFF)
        if crc != (buf[need - 2] << 8) | buf[need - 1]:
            self._fail(BAD_CRC)
            return
        read = self._decode(need - 2)
        self._accept(need)
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
        plate = str(self._mv[_PLATE_AT:plate_end], "utf-8")
        return PlateRead(plate, colour, confidence, camera_time, buf[3])
