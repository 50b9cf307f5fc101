# Vzenith ("VZ") camera frames: encoder (for the simulator) and incremental
# parser with frame.FrameParser's callback contract.
#
# Frame, integers big-endian:
#   0    2  marker 0x56 0x5A ("VZ")
#   2    1  type: 0 data, 1 heartbeat
#   3    1  serial number, u8
#   4    4  body length L, u32 (data: 2..max_frame; heartbeat: 0..max_frame)
#   8    L  body: a JSON object in GBK, then optionally "\n" and an image
# L covers the whole body, image included (our reading of the vendor
# notes, see firmware/docs/lane.md). The JSON object ends where its braces
# balance; what follows it is skipped without being buffered. A data body
# must begin with "{". JSON: {"PlateResult": {"license": "粤S7Y12C",
# "colorType": 1, "confidence": 98, "timeStamp": {"Timeval": {"sec": s,
# "usec": u}}, "isoffline": 0, ...}}, "PlateResult" at the top level or
# under "AlarmInfoPlate" / "result".
import json

from parkgate import frame, plate
from parkgate.compat import const

# reject reason codes: frame's 0..5, then Vzenith's own
BAD_CRC = frame.BAD_CRC             # not used: VZ frames carry no CRC
BAD_LENGTH = frame.BAD_LENGTH       # length out of range, or JSON > max_body
BAD_VERSION = frame.BAD_VERSION     # not used
BAD_PAYLOAD = frame.BAD_PAYLOAD     # body not starting with "{", bad fields
TRUNCATED = frame.TRUNCATED
GARBAGE = frame.GARBAGE
BAD_TYPE = const(6)                 # type byte not 0 or 1
BAD_JSON = const(7)                 # JSON does not close or does not parse
NO_PLATE = const(8)                 # no PlateResult/license, or "_无_"
BAD_PLATE = const(9)                # license is not a plate (plate.PlateError)
REJECT_NAMES = frame.REJECT_NAMES + ("bad_type", "bad_json", "no_plate", "bad_plate")

TYPE_DATA = const(0)
TYPE_HEARTBEAT = const(1)
MAX_BODY = const(1024)              # JSON bytes buffered
MAX_FRAME = const(262144)           # largest body length accepted (image incl.)

_MARK0 = const(0x56)
_MARK1 = const(0x5A)
_HEADER = const(8)
_OPEN = const(0x7B)                 # "{"
_CLOSE = const(0x7D)                # "}"
_QUOTE = const(0x22)
_BACKSLASH = const(0x5C)

# Vzenith colorType -> project colour code (0 blue, 1 yellow, 2 white,
# 3 black, 4 green, 5 yellow-green, 6 gradient, 7 other). Vzenith: 0
# unknown, 1 blue, 2 yellow, 3 white, 4 black, 5 green (assumed, see
# firmware/docs/lane.md); anything else is 7.
_COLOURS = b"\x07\x00\x01\x02\x03\x04"


def colour_of(color_type):
    if isinstance(color_type, int) and 0 <= color_type < len(_COLOURS):
        return _COLOURS[color_type]
    return 7


def color_type_of(colour):
    # project colour -> Vzenith colorType; 5..7 have none: 0 (unknown)
    return colour + 1 if 0 <= colour <= 4 else 0


def _u8(value, name):
    if not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise ValueError("%s must be 0..255" % name)


def encode(serial, plate_text, colour=0, confidence=100, sec=0, heartbeat=False,
           offline=False, image=b""):
    """One frame as bytes, the JSON in GBK through plate's table (so this
    runs on MicroPython too); ValueError if a field is out of range."""
    _u8(serial, "serial")
    if heartbeat:
        body = b""
    else:
        text = plate.normalise(plate_text)
        if not isinstance(colour, int) or not 0 <= colour <= 7:
            raise ValueError("colour must be 0..7")
        if not isinstance(confidence, int) or not 0 <= confidence <= 100:
            raise ValueError("confidence must be 0..100")
        if not isinstance(sec, int) or not 0 <= sec <= 0xFFFFFFFF:
            raise ValueError("sec must be a u32")
        body = plate.encode_gbk(
            '{"PlateResult":{"license":"%s","colorType":%d,"confidence":%d,'
            '"direction":0,"triggerType":1,"isoffline":%d,'
            '"timeStamp":{"Timeval":{"sec":%d,"usec":0}}}}'
            % (text, color_type_of(colour), confidence, 1 if offline else 0, sec))
        if image:
            body += b"\n" + bytes(image)
    n = len(body)
    head = bytearray(_HEADER)
    head[0] = _MARK0
    head[1] = _MARK1
    head[2] = TYPE_HEARTBEAT if heartbeat else TYPE_DATA
    head[3] = serial
    for k in range(4):
        head[4 + k] = (n >> (24 - 8 * k)) & 0xFF
    return bytes(head) + body


def _find_result(obj):
    # the PlateResult dict: top level, or under AlarmInfoPlate / result
    for _ in range(3):
        if not isinstance(obj, dict):
            return None
        found = obj.get("PlateResult")
        if isinstance(found, dict):
            return found
        obj = obj.get("AlarmInfoPlate", obj.get("result"))
    return None


class VzParser:
    """Incremental parser: feed() bytes split anywhere, get callbacks.

    on_plate(frame.PlateRead) for each good data frame (with an extra
    attribute `offline`: the camera buffered it), on_reject(reason,
    byte_count) for everything else; heartbeats are counted in
    `heartbeats`. Every byte fed ends up in an accepted frame, a heartbeat
    or one reject's byte_count (once idle() has flushed).
    """

    def __init__(self, on_plate, on_reject, max_body=MAX_BODY, max_frame=MAX_FRAME):
        self._on_plate = on_plate
        self._on_reject = on_reject
        self.max_frame = max_frame
        # header phase: _hdr[0:_end] holds the candidate (header and the
        # first body byte), _hdr[0] == "V" when _end > 0; _hdr[0:_have]
        # has been checked (as in frame.FrameParser)
        self._hdr = bytearray(_HEADER + 1)
        self._end = 0
        self._have = 0
        self._skipped = 0
        # body phase (_left > 0): JSON bytes go to _body
        self._body = bytearray(max_body)
        self._left = 0
        self._total = 0         # header + body length of the frame
        self._heartbeat = False
        self._serial = 0
        self._reset_body()
        self.frames = 0
        self.rejects = 0
        self.heartbeats = 0

    def _reset_body(self):
        self._left = 0
        self._blen = 0
        self._depth = 0
        self._instr = False
        self._esc = False
        self._trail = False
        self._closed = False
        self._over = False

    def feed(self, data):
        hdr = self._hdr
        for i in range(len(data)):
            b = data[i]
            if self._left:
                self._body_byte(b)
                continue
            end = self._end
            if end == 0 and b != _MARK0:
                self._skipped += 1
                continue
            hdr[end] = b
            self._end = end + 1
            self._scan()

    def idle(self):
        """The line went quiet: a frame cut short is TRUNCATED (its header
        bytes after the marker scanned again); pending garbage reported."""
        if self._left:
            count = self._total - self._left
            self._reset_body()
            self._reject(TRUNCATED, count)
            return
        while self._end >= 2:
            self._drop_false_start(TRUNCATED)
            self._scan()
            if self._left:          # a heartbeat with a body started
                self.idle()
                return
        if self._end == 1:
            self._skipped += 1
            self._drop_before(1)
        self._report_garbage()

    def _scan(self):
        hdr = self._hdr
        while self._have < self._end and not self._left:
            have = self._have + 1
            self._have = have
            if have == 2:
                if hdr[1] != _MARK1:
                    cut = self._next_start(1)
                    self._skipped += cut
                    self._drop_before(cut)
                else:
                    self._report_garbage()
            elif have == 3:
                if hdr[2] > TYPE_HEARTBEAT:
                    self._drop_false_start(BAD_TYPE)
            elif have == _HEADER:
                n = (hdr[4] << 24) | (hdr[5] << 16) | (hdr[6] << 8) | hdr[7]
                if n > self.max_frame or (hdr[2] == TYPE_DATA and n < 2):
                    self._drop_false_start(BAD_LENGTH)
                elif hdr[2] == TYPE_HEARTBEAT:
                    self._drop_before(_HEADER)
                    if n:
                        self._start_body(n, True)
                    else:
                        self.heartbeats += 1
            elif have == _HEADER + 1:
                if hdr[_HEADER] != _OPEN:
                    self._drop_false_start(BAD_PAYLOAD)
                else:
                    n = (hdr[4] << 24) | (hdr[5] << 16) | (hdr[6] << 8) | hdr[7]
                    self._drop_before(_HEADER + 1)
                    self._start_body(n, False)
                    self._body_byte(_OPEN)

    def _start_body(self, n, heartbeat):
        self._reset_body()
        self._left = n
        self._total = _HEADER + n
        self._over = heartbeat      # a heartbeat's body is not buffered
        self._closed = heartbeat
        self._heartbeat = heartbeat

    def _body_byte(self, b):
        # one byte of the body: buffered and tracked until the JSON closes
        if not self._closed and not self._over:
            blen = self._blen
            if blen >= len(self._body):
                self._over = True
            else:
                self._body[blen] = b
                self._blen = blen + 1
                trail = self._trail
                self._trail = False
                if trail and 0x40 <= b <= 0xFE and b != 0x7F:
                    pass                     # the trail byte of a GBK code
                elif 0x81 <= b <= 0xFE:
                    self._trail = True       # a GBK lead: skip its trail byte
                elif self._instr:
                    if self._esc:
                        self._esc = False
                    elif b == _BACKSLASH:
                        self._esc = True
                    elif b == _QUOTE:
                        self._instr = False
                elif b == _QUOTE:
                    self._instr = True
                elif b == _OPEN:
                    self._depth += 1
                elif b == _CLOSE:
                    self._depth -= 1
                    if self._depth == 0:
                        self._closed = True
        self._left -= 1
        if self._left == 0:
            self._finish()

    def _finish(self):
        total = self._total
        if self._heartbeat:
            self._reset_body()
            self.heartbeats += 1
            return
        if self._over:
            self._reset_body()
            self._reject(BAD_LENGTH, total)
            return
        if not self._closed:
            self._reset_body()
            self._reject(BAD_JSON, total)
            return
        reason, read = self._decode()
        self._reset_body()
        if read is None:
            self._reject(reason, total)
        else:
            self.frames += 1
            self._on_plate(read)

    def _decode(self):
        # (reason, None) or (0, PlateRead) from the buffered JSON
        try:
            obj = json.loads(plate.decode_gbk(self._body, 0, self._blen, False))
        except (ValueError, RuntimeError):    # RuntimeError: nested too deep
            return BAD_JSON, None
        result = _find_result(obj)
        if result is None:
            return NO_PLATE, None
        text = result.get("license")
        if not isinstance(text, str) or text.strip("_ ") in ("", "无"):
            return NO_PLATE, None
        try:
            text = plate.normalise(text)
        except plate.PlateError:
            return BAD_PLATE, None
        confidence = result.get("confidence", 0)
        if not isinstance(confidence, int) or not 0 <= confidence <= 100:
            return BAD_PAYLOAD, None
        sec = 0
        stamp = result.get("timeStamp")
        if isinstance(stamp, dict):
            val = stamp.get("Timeval")
            if isinstance(val, dict):
                sec = val.get("sec", 0)
        if not isinstance(sec, int) or not 0 <= sec <= 0xFFFFFFFF:
            sec = 0
        read = frame.PlateRead(text, colour_of(result.get("colorType")), confidence,
                               sec, self._serial)
        read.offline = bool(result.get("isoffline", 0))
        return 0, read

    def _drop_false_start(self, reason):
        cut = self._next_start(2)
        self._drop_before(cut)
        self._reject(reason, cut)

    def _next_start(self, i):
        hdr = self._hdr
        end = self._end
        while i < end and hdr[i] != _MARK0:
            i += 1
        return i

    def _drop_before(self, cut):
        hdr = self._hdr
        if cut >= _HEADER:
            self._serial = hdr[3]
        kept = self._end - cut
        for k in range(kept):
            hdr[k] = hdr[cut + k]
        self._end = kept
        self._have = 0

    def _report_garbage(self):
        if self._skipped:
            count = self._skipped
            self._skipped = 0
            self._reject(GARBAGE, count)

    def _reject(self, reason, count):
        self.rejects += 1
        self._on_reject(reason, count)
