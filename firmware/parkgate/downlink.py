# What the gate takes from the broker, checked at the boundary: a size cap
# per kind, then the type and range of every field the gate will use. A
# message that fails raises Refused with the reason the gate publishes on
# up/refused; nothing behind this module sees a malformed message. Pure.
import json

from parkgate.compat import const

_U32 = 0xFFFFFFFF           # not const(): a long int on the 32-bit port
FEE_MAX = const(100000000)   # fen: one million yuan, far beyond any stay
MAX_PLATE_BYTES = const(16)
CATCHUP_PAGE_MAX = const(16)   # entries per catch-up page the gate takes
PEER_BATCH_MAX = const(32)     # events per batch heard from another lane

# Kinds, by the last level of their topic (peer events and the lot server's
# presence come from other topics; the gate names them itself).
ACK = "ack"
FEE = "fee"
PAID = "paid"
CLOCK = "clock"
TARIFF = "tariff"
MEMBERS = "members"
OPEN = "open"
SETCLOCK = "setclock"   # a signed ask to take the lot server's time now
CATCHUP = "catchup"
EVENTS = "events"
PRESENCE = "presence"
IMAGE = "image"         # an OTA offer (parkgate.ota_lane)
CHUNK = "chunk"         # a binary chunk frame of an image: not JSON
REBOOT = "reboot"       # a signed command to boot the staged image


def _max_bytes(kind):
    # Bytes a payload of each kind may have (a function: a table would be a
    # dict on the heap). Signed tables are the largest (a tariff of 3 KB in
    # its envelope); the broker caps every message at 4 KB.
    if kind == TARIFF:
        return 4096
    if kind == CATCHUP or kind == EVENTS:
        return 1536
    if kind == MEMBERS:
        return 1024
    if kind == CHUNK:
        return 600       # parkgate.ota.FRAME_MAX, 562, with room
    if kind == OPEN or kind == SETCLOCK or kind == IMAGE or kind == REBOOT:
        return 512
    if kind == FEE:
        return 256
    return 128   # ack, paid, clock, presence


class Refused(ValueError):
    pass


def _int(message, key, low, high, optional=False):
    value = message.get(key)
    if value is None and optional:
        return None
    if type(value) is not int or not low <= value <= high:
        raise Refused("%s: %r is not an integer in %d..%d" % (key, value, low, high))
    return value


def _text(message, key, max_bytes):
    value = message.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= max_bytes or \
            len(value.encode()) > max_bytes:
        raise Refused("%s: %r is not a string of 1..%d bytes" % (key, value, max_bytes))
    return value


def _list(message, key, max_items):
    value = message.get(key)
    if not isinstance(value, list) or len(value) > max_items:
        raise Refused("%s: not a list of at most %d" % (key, max_items))
    return value


def _ack(m):
    _int(m, "j", 0, _U32)
    _int(m, "f", 0, _U32)
    _int(m, "l", 0, _U32)


def _fee(m):
    _int(m, "r", 0, _U32)
    _text(m, "p", MAX_PLATE_BYTES)
    _int(m, "fee", 0, FEE_MAX)
    _int(m, "tv", 0, _U32, True)
    _int(m, "et", 0, _U32, True)


def _paid(m):
    _text(m, "p", MAX_PLATE_BYTES)
    _int(m, "fee", 0, FEE_MAX)


def _clock(m):
    _int(m, "r", 0, 0xFFFF)
    _int(m, "t", 0, _U32)


def _envelope(m):
    # parkgate.sign checks the rest (kind, gate, signature, version order).
    _int(m, "v", 0, _U32)
    _int(m, "x", 0, _U32, True)
    if not isinstance(m.get("b"), str):
        raise Refused("b: an envelope needs a body")


def _catchup(m):
    _int(m, "r", 0, 0xFFFF)
    _list(m, "e", CATCHUP_PAGE_MAX)
    _int(m, "c", 0, 0x3FFFFFFFFFFFFFFF, True)   # the lot store's row id


def _events(m):
    _text(m, "g", 32)
    _list(m, "e", PEER_BATCH_MAX)


def _presence(m):
    _int(m, "on", 0, 1)


def _chunk(m):
    pass     # binary: parkgate.ota.Download.accept checks every byte


_CHECKS = {ACK: _ack, FEE: _fee, PAID: _paid, CLOCK: _clock, TARIFF: _envelope,
           MEMBERS: _envelope, OPEN: _envelope, SETCLOCK: _envelope, CATCHUP: _catchup, EVENTS: _events,
           PRESENCE: _presence, IMAGE: _envelope, CHUNK: _chunk, REBOOT: _envelope}


def kind_of(leaf):
    """The kind a down/ topic's last level names, or None."""
    return leaf if leaf in _CHECKS and leaf not in (EVENTS, PRESENCE) else None


def decode(kind, payload):
    """The JSON object a payload of a kind holds (a chunk: the payload
    itself); Refused says why not (a payload the heap cannot parse too).
    check() its fields next."""
    most = _max_bytes(kind)
    if len(payload) > most:
        raise Refused("%d bytes, at most %d" % (len(payload), most))
    if kind == CHUNK:
        return payload   # the frame's bytes as they came, never decoded
    try:
        message = json.loads(payload)
    except ValueError:
        raise Refused("not JSON")
    except MemoryError:
        raise Refused("%d bytes do not fit the heap" % len(payload))
    if not isinstance(message, dict):
        raise Refused("not a JSON object")
    return message


def check(kind, message):
    """Refused unless every field of a decoded message the gate uses has
    its type and range."""
    _CHECKS[kind](message)
