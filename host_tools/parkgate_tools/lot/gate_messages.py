"""What gates send the lot bridge (firmware/docs/mqtt.md), checked on the
network thread before anything is queued: each function takes a message's
JSON object and returns the values the writer thread needs, or raises
BadMessage saying what is wrong."""
import json

from parkgate import record
from parkgate_tools.ids import is_id

U32_MAX = 0xFFFFFFFF
REQUEST_MAX = 0xFFFF        # catch-up request ids
CURSOR_MAX = 2 ** 63 - 1    # catch-up cursors: the store's row ids


class BadMessage(ValueError):
    """A payload the bridge refuses; the text says why."""


def gate_message(gate, payload):
    """The JSON object of a message from gate; BadMessage if the gate id is
    not an id (parkgate_tools.ids) or the payload not a JSON object."""
    if not is_id(gate):
        raise BadMessage("gate id %r is not letters, digits and -" % gate)
    try:
        message = json.loads(payload)
    except ValueError as exc:
        raise BadMessage("not JSON (%s)" % exc)
    if not isinstance(message, dict):
        raise BadMessage("not a JSON object")
    return message


def integer(message, key, high=U32_MAX, allow_none=False):
    """message[key], an int in 0..high (None too if allow_none)."""
    value = message.get(key)
    if value is None and allow_none:
        return None
    if type(value) is not int or not 0 <= value <= high:
        raise BadMessage("%s: %r is not an integer in 0..%d" % (key, value, high))
    return value


def events_batch(gate, message):
    """(jid, [record.Event]) of gate's up/events message."""
    if message.get("g") != gate:
        raise BadMessage("g: %r is not the topic's gate %r" % (message.get("g"), gate))
    jid = integer(message, "j")
    wires = message.get("e")
    if not isinstance(wires, list) or not wires:
        raise BadMessage("e: not a non-empty list")
    events = []
    for index, wire in enumerate(wires):
        try:
            events.append(record.from_wire(wire))
        except record.RecordError as exc:
            raise BadMessage("e[%d]: %s" % (index, exc))
    return jid, events


def fee_query(message):
    """(request, plate, colour, exit time, the entry time the gate knows or
    None) of an up/fee message."""
    request = message.get("r")
    if type(request) not in (int, str):
        raise BadMessage("r: %r is not a request id" % (request,))
    plate = message.get("p")
    if not isinstance(plate, str) or not plate:
        raise BadMessage("p: %r is not a plate" % (plate,))
    colour = message.get("c", 0)
    if type(colour) is not int or not 0 <= colour <= 255:
        raise BadMessage("c: %r is not a colour code" % (colour,))
    return (request, plate, colour, integer(message, "t"),
            integer(message, "et", allow_none=True) or None)


def clock_request(message):
    """The request id of an up/clock message."""
    request = message.get("r")
    if type(request) is not int:
        raise BadMessage("r: %r is not a request id" % (request,))
    return request


def catchup_request(message):
    """(request, since, cursor) of an up/catchup message."""
    return (integer(message, "r", REQUEST_MAX), integer(message, "s"),
            integer(message, "c", CURSOR_MAX))
