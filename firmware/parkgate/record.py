# Gate events: the journal body layout and the wire (JSON) form, defined once
# and imported by the gate and by the lot bridge.
import struct

from parkgate.compat import const

KIND_ENTRY = const(1)
KIND_EXIT = const(2)
KIND_NAMES = {KIND_ENTRY: "in", KIND_EXIT: "out"}
KIND_BY_NAME = {"in": KIND_ENTRY, "out": KIND_EXIT}

FEE_NONE = const(0)      # entries carry no fee
FEE_ONLINE = const(1)    # the lot bridge answered the fee query
FEE_OFFLINE = const(2)   # computed on the gate from its tariff and entry record
FEE_SOURCE_NAMES = {FEE_NONE: None, FEE_ONLINE: "on", FEE_OFFLINE: "off"}
FEE_SOURCE_BY_NAME = {None: FEE_NONE, "on": FEE_ONLINE, "off": FEE_OFFLINE}

FLAG_NO_ENTRY = const(1)  # exit without a matching entry record
FLAG_REENTRY = const(2)   # entry closed a session that was still open
FLAG_MEMBER = const(4)    # the plate was on the member list (no fee)
FLAG_OWED = const(8)      # the barrier opened without payment: the fee is owed
FLAG_NO_CLOCK = const(16)  # no trustworthy time: charged the no-entry fee
FLAG_REPLAY = const(32)    # the camera's offline buffer, sent again: the time is the
                           # camera's, the barrier did not open for it, no fee
FLAG_NO_PASSAGE = const(64)  # the passage input saw no car go through: on an entry,
                             # it voids the entry of that plate and time (no session);
                             # on an exit, it marks that exit for the operator

MAX_PLATE_BYTES = const(16)
MAX_BODY_BYTES = const(38)    # _HEAD_SIZE + MAX_PLATE_BYTES

# Journal body, big-endian, 22 bytes + plate:
#  0 u32 event time, unix seconds UTC
#  4 u8  clock quality (parkgate.clock.Q_*)
#  5 u8  plate colour code
#  6 u8  camera confidence 0-100
#  7 u8  flags (FLAG_*)
#  8 u32 fee in fen (exits)
# 12 u8  fee source (FEE_*)
# 13 u32 tariff version used (exits)
# 17 u32 entry time the fee was computed from, 0 = none
# 21 u8  plate length L
# 22 L   plate, UTF-8
_HEAD = ">IBBBBIBIIB"
_HEAD_SIZE = const(22)


class RecordError(ValueError):
    pass


class Event:
    """One entry or exit. seq is 0 until the journal has assigned it.

    Fields left at their class default (0) are not set on the instance:
    on MicroPython every attribute set grows the instance's dict, and an
    entry needs only the first seven."""
    colour = confidence = flags = fee = fee_source = tariff_version = entry_time = seq = 0

    def __init__(self, kind, time, quality, plate, colour=0, confidence=0, flags=0,
                 fee=0, fee_source=FEE_NONE, tariff_version=0, entry_time=0, seq=0):
        self.kind = kind
        self.time = time
        self.quality = quality
        self.plate = plate
        if colour:
            self.colour = colour
        if confidence:
            self.confidence = confidence
        if flags:
            self.flags = flags
        if fee:
            self.fee = fee
        if fee_source:
            self.fee_source = fee_source
        if tariff_version:
            self.tariff_version = tariff_version
        if entry_time:
            self.entry_time = entry_time
        if seq:
            self.seq = seq

    def __eq__(self, other):
        return isinstance(other, Event) and encode_body(self) == encode_body(other) \
            and self.kind == other.kind and self.seq == other.seq

    def __repr__(self):
        return "Event(%s seq=%d t=%d plate=%s fee=%d)" % (
            KIND_NAMES.get(self.kind, "?"), self.seq, self.time, self.plate, self.fee)


def encode_body_into(event, buf):
    """Write the journal body into buf (at least MAX_BODY_BYTES); returns its
    length. The gate's hot path: one allocation, the plate's UTF-8 bytes."""
    plate = event.plate.encode()
    n = len(plate)
    if not 0 < n <= MAX_PLATE_BYTES:
        raise RecordError("plate: %d bytes, 1..%d allowed" % (n, MAX_PLATE_BYTES))
    struct.pack_into(_HEAD, buf, 0, event.time, event.quality, event.colour, event.confidence,
                     event.flags, event.fee, event.fee_source, event.tariff_version,
                     event.entry_time, n)
    for i in range(n):
        buf[_HEAD_SIZE + i] = plate[i]
    return _HEAD_SIZE + n


def encode_body(event):
    buf = bytearray(MAX_BODY_BYTES)
    return bytes(buf[:encode_body_into(event, buf)])


def decode_body(kind, seq, body):
    if kind not in KIND_NAMES:
        raise RecordError("kind: unknown %d" % kind)
    if len(body) < _HEAD_SIZE:
        raise RecordError("body: %d bytes, shorter than the header" % len(body))
    (time, quality, colour, confidence, flags, fee, fee_source, tariff_version,
     entry_time, plate_len) = struct.unpack(_HEAD, bytes(body[:_HEAD_SIZE]))
    if len(body) != _HEAD_SIZE + plate_len:
        raise RecordError("body: plate length %d does not match" % plate_len)
    plate = str(bytes(body[_HEAD_SIZE:]), "utf-8")
    return Event(kind, time, quality, plate, colour, confidence, flags, fee, fee_source,
                 tariff_version, entry_time, seq)


def to_wire(event):
    """The JSON-able dict of an event (see firmware/docs/mqtt.md)."""
    wire = {"s": event.seq, "k": KIND_NAMES[event.kind], "t": event.time, "q": event.quality,
            "p": event.plate, "c": event.colour, "cf": event.confidence}
    if event.kind == KIND_EXIT:
        wire["fee"] = event.fee
        wire["fs"] = FEE_SOURCE_NAMES[event.fee_source]
        wire["tv"] = event.tariff_version
        wire["et"] = event.entry_time or None
        wire["fl"] = event.flags
    elif event.flags:
        wire["fl"] = event.flags
    return wire


def _int_field(wire, key, low, high, default=None):
    value = wire.get(key, default)
    if value is None or type(value) is not int or not low <= value <= high:
        raise RecordError("%s: %r is not an integer in %d..%d" % (key, value, low, high))
    return value


def from_wire(wire):
    """An Event from its wire dict; RecordError names the bad field."""
    if not isinstance(wire, dict):
        raise RecordError("event: not an object")
    kind = KIND_BY_NAME.get(wire.get("k"))
    if kind is None:
        raise RecordError("k: %r is not in/out" % wire.get("k"))
    plate = wire.get("p")
    if not isinstance(plate, str) or not 0 < len(plate.encode()) <= MAX_PLATE_BYTES:
        raise RecordError("p: %r is not a plate" % plate)
    event = Event(kind, _int_field(wire, "t", 0, 0xFFFFFFFF), _int_field(wire, "q", 0, 255), plate,
                  _int_field(wire, "c", 0, 255, 0), _int_field(wire, "cf", 0, 255, 0),
                  _int_field(wire, "fl", 0, 255, 0), seq=_int_field(wire, "s", 1, 0xFFFFFFFF))
    if kind == KIND_EXIT:
        event.fee = _int_field(wire, "fee", 0, 0xFFFFFFFF)
        source = wire.get("fs")
        if source not in FEE_SOURCE_BY_NAME:
            raise RecordError("fs: %r is not on/off" % source)
        event.fee_source = FEE_SOURCE_BY_NAME[source]
        event.tariff_version = _int_field(wire, "tv", 0, 0xFFFFFFFF, 0)
        entry_time = wire.get("et")
        event.entry_time = 0 if entry_time is None else _int_field(wire, "et", 0, 0xFFFFFFFF)
    return event
