# Vzenith ("VZ") camera frames: the incremental parser, with
# frame.FrameParser's callback contract (the encoder the simulator and the
# tests use is parkgate_host.camera_frames.vz_frame).
#
# Frame, integers big-endian:
#   0    2  marker 0x56 0x5A ("VZ")
#   2    1  type: 0 data, 1 heartbeat
#   3    1  serial number, u8
#   4    4  body length L, u32 (data: 2..max_frame; heartbeat: 0..max_frame)
#   8    L  body: a JSON object in GBK, then optionally "\n" and an image
# L covers the whole body, image included (our reading of the vendor
# notes, see firmware/docs/lane.md). The JSON object ends where its braces
# balance and holds no raw control byte; what follows it is not buffered
# but hunted through for the next frame. A data body must begin with "{".
# JSON: {"PlateResult": {"license": "粤S7Y12C",
# "colorType": 1, "confidence": 98, "timeStamp": {"Timeval": {"sec": s,
# "usec": u}}, "isoffline": 0, ...}}, "PlateResult" at the top level or
# under "AlarmInfoPlate" / "result".
import json

from parkgate import frame, plate
from parkgate.compat import const
from parkgate.resync import Resync

# reject reason codes: frame's 0..5, then Vzenith's own
BAD_CRC = frame.BAD_CRC             # not used: VZ frames carry no CRC
BAD_LENGTH = frame.BAD_LENGTH       # length out of range, or JSON > max_body
BAD_VERSION = frame.BAD_VERSION     # not used
BAD_PAYLOAD = frame.BAD_PAYLOAD     # body not starting with "{", bad fields
TRUNCATED = frame.TRUNCATED
GARBAGE = frame.GARBAGE
BAD_TYPE = const(6)                 # type byte not 0 or 1
BAD_JSON = const(7)                 # JSON does not close, has a control byte, does not parse
NO_PLATE = const(8)                 # no PlateResult/license, or "_无_"
BAD_PLATE = const(9)                # license is not a plate (plate.PlateError)
REJECT_NAMES = frame.REJECT_NAMES + ("bad_type", "bad_json", "no_plate", "bad_plate")

TYPE_DATA = const(0)
TYPE_HEARTBEAT = const(1)
MAX_BODY = const(1024)              # JSON bytes buffered
MAX_FRAME = const(262144)           # largest body length accepted (image incl.)

MARK0 = const(0x56)                 # "V"
MARK1 = const(0x5A)                 # "Z"
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


def _flag(value):
    # isoffline as cameras may send it: 1 / true, or "1" / "true" (a
    # MicroPython bool is no int to isinstance)
    if value is True:
        return True
    if isinstance(value, str):
        return value in ("1", "true")
    return isinstance(value, int) and value != 0


class VzParser(Resync):
    """Incremental parser: feed() bytes split anywhere, get callbacks.

    on_plate(frame.PlateRead) for each good data frame, on_reject(reason,
    byte_count) for everything else; heartbeats are counted in
    `heartbeats`. A result the camera buffered and sends again after a
    reconnect (`isoffline` 1) comes as a read with `offline` True (the
    class default is False) and camera_time from its timeStamp: a replay
    to journal, not a car at the barrier.

    Every byte fed ends up in an accepted frame, a heartbeat or one reject's
    byte_count (once idle() has flushed). A candidate whose header or JSON
    fails is resynchronised from the byte after its marker (resync.Resync),
    so a good frame right behind a bad one is kept. The body after the JSON
    (an image) and a heartbeat's body are not buffered but hunted through
    for a start marker: a frame header in there cuts the body short (its
    bytes so far reported TRUNCATED, or with the frame's own reject).
    """

    def __init__(self, on_plate, on_reject, max_body=MAX_BODY, max_frame=MAX_FRAME):
        # header and JSON in one buffer, so a failed candidate's bytes can
        # be scanned again
        Resync.__init__(self, _HEADER + max_body, MARK0, MARK1, on_reject)
        self._on_plate = on_plate
        self.max_frame = max_frame
        self._len = 0           # body length L of the candidate
        # the candidate's JSON so far: brace depth, in a string, after a
        # backslash, after a GBK lead byte
        self._depth = 0
        self._instr = False
        self._esc = False
        self._trail = False
        # the tail: body bytes after the JSON, or a heartbeat's body
        self._tail = 0          # tail bytes still to come
        self._tail_seen = 0     # bytes to report with _tail_reason
        self._tail_reason = -1  # its frame's reject reason; -1: none
        self.frames = 0
        self.heartbeats = 0

    def idle(self):
        """The line went quiet: a candidate cut short is TRUNCATED (its
        bytes after the marker scanned again), so is a body still owed;
        pending garbage reported."""
        Resync.idle(self)
        self._end_tail()

    def _check(self, have):
        if have <= _HEADER + 1:
            self._check_header(have)
            return
        # a JSON byte, tracked until the braces balance
        b = self._buf[have - 1]
        trail = self._trail
        self._trail = False
        if trail and 0x40 <= b <= 0xFE and b != 0x7F:
            pass                     # the trail byte of a GBK code
        elif 0x81 <= b <= 0xFE:
            self._trail = True       # a GBK lead: skip its trail byte
        elif b < 0x20 and b != 0x09 and b != 0x0A and b != 0x0D:
            # JSON has no raw control bytes, a frame header does (type,
            # length): this candidate was cut short
            self._fail(BAD_JSON)
            return
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
                self._complete(have)
                return
        if have - _HEADER == self._len:
            self._fail(BAD_JSON)     # the body ended inside the JSON
        elif have == len(self._buf):
            self._fail(BAD_LENGTH)   # JSON longer than max_body

    def _check_header(self, have):
        buf = self._buf
        if have == 3:
            if buf[2] > TYPE_HEARTBEAT:
                self._fail(BAD_TYPE)
        elif have == _HEADER:
            n = (buf[4] << 24) | (buf[5] << 16) | (buf[6] << 8) | buf[7]
            if n > self.max_frame or (buf[2] == TYPE_DATA and n < 2):
                self._fail(BAD_LENGTH)
            elif buf[2] == TYPE_HEARTBEAT:
                self._end_tail()
                self.heartbeats += 1
                self._tail = n
                self._accept(_HEADER)
            else:
                self._len = n
        elif have == _HEADER + 1:
            if buf[_HEADER] != _OPEN:
                self._fail(BAD_PAYLOAD)
                return
            self._end_tail()        # a header inside a body cuts it short
            self._depth = 1
            self._instr = self._esc = self._trail = False

    def _complete(self, have):
        # the JSON is _buf[_HEADER:have]; the rest of the body is its tail
        reason, read = self._decode(have)
        self._tail = self._len - (have - _HEADER)
        if read is None:
            self._tail_reason = reason
            self._tail_seen = have
        self._accept(have)
        if read is None:
            if not self._tail:
                self._tail_done()
        else:
            self.frames += 1
            self._on_plate(read)

    def _decode(self, have):
        # (reason, None) or (0, PlateRead) from the buffered JSON
        try:
            obj = json.loads(plate.decode_gbk(self._buf, _HEADER, have, False))
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
                               sec, self._buf[3])
        if _flag(result.get("isoffline")):
            read.offline = True
        return 0, read

    def _discard(self, reason, count):
        # bytes in no frame: those still owed to a tail are its frame's
        tail = self._tail
        if tail:
            part = count if count < tail else tail
            self._tail = tail - part
            self._tail_seen += part
            if part == tail:
                self._tail_done()
            count -= part
            if not count:
                return
        self._reject(reason, count)

    def _tail_done(self):
        # the tail is complete: a rejected frame is reported whole
        if self._tail_reason >= 0:
            self._reject(self._tail_reason, self._tail_seen)
        self._tail_seen = 0
        self._tail_reason = -1

    def _end_tail(self):
        # a frame begins (or the line went quiet) while a tail is owed
        if self._tail:
            reason = self._tail_reason
            self._reject(TRUNCATED if reason < 0 else reason, self._tail_seen)
            self._tail = 0
            self._tail_seen = 0
            self._tail_reason = -1
