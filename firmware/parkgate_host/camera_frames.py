# What a camera sends, for the simulator and the tests: frames in the two
# formats the gate parses, built from the same layouts and tables as the
# parsers (parkgate.frame, parkgate.vzenith; firmware/docs/camera-frame.md).
from parkgate import frame, plate, vzenith
from parkgate.frame import MAX_PLATE
from parkgate_host.plates import encode_gbk


def crc16(data, crc=0xFFFF):
    """CRC-16/CCITT-FALSE of data; pass a previous result as crc to continue."""
    return frame._crc16_range(data, 0, len(data), crc)


def _in_range(value, low, high):
    return isinstance(value, int) and low <= value <= high


def pg_frame(seq, plate_text, colour=0, confidence=100, camera_time=0):
    """One complete PG frame as bytes; ValueError if a field is out of range."""
    if not isinstance(plate_text, str):
        raise ValueError("plate must be a str")
    text = plate_text.encode("utf-8")
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
    n = 7 + len(text)                 # payload: colour, confidence, time, length, plate
    out = bytearray(6 + n + 2)        # header, payload, CRC
    out[0] = frame.MARK0
    out[1] = frame.MARK1
    out[2] = frame.VERSION
    out[3] = seq
    out[4] = n >> 8                   # payload length, u16 big-endian
    out[5] = n & 0xFF
    out[6] = colour
    out[7] = confidence
    for k in range(4):                # camera time, u32 big-endian
        out[8 + k] = (camera_time >> (24 - 8 * k)) & 0xFF
    out[12] = len(text)
    out[13:13 + len(text)] = text
    crc = frame._crc16_range(out, 2, 6 + n, 0xFFFF)   # over version .. payload
    out[6 + n] = crc >> 8
    out[6 + n + 1] = crc & 0xFF
    return bytes(out)


def color_type_of(colour):
    """Project colour -> Vzenith colorType; 5..7 have none: 0 (unknown).
    The inverse of vzenith.colour_of."""
    return colour + 1 if 0 <= colour <= 4 else 0


def vz_frame(serial, plate_text, colour=0, confidence=100, sec=0, heartbeat=False,
             offline=False, image=b""):
    """One Vzenith frame as bytes, the JSON in GBK through plate's table (so
    this runs on MicroPython too); ValueError if a field is out of range."""
    if not isinstance(serial, int) or not 0 <= serial <= 0xFF:
        raise ValueError("serial must be 0..255")
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
        body = encode_gbk(
            '{"PlateResult":{"license":"%s","colorType":%d,"confidence":%d,'
            '"direction":0,"triggerType":1,"isoffline":%d,'
            '"timeStamp":{"Timeval":{"sec":%d,"usec":0}}}}'
            % (text, color_type_of(colour), confidence, 1 if offline else 0, sec))
        if image:
            body += b"\n" + bytes(image)
    n = len(body)
    head = bytearray(8)
    head[0] = vzenith.MARK0
    head[1] = vzenith.MARK1
    head[2] = vzenith.TYPE_HEARTBEAT if heartbeat else vzenith.TYPE_DATA
    head[3] = serial
    for k in range(4):                # body length, u32 big-endian
        head[4 + k] = (n >> (24 - 8 * k)) & 0xFF
    return bytes(head) + body
