"""What the lot's web application takes from a request, checked: the body
(Content-Length required, numeric and at most MAX_BODY before a byte is
read), the url-encoded form or JSON object in it, and each field and query
parameter by its own rule (FIELDS). Anything else is a BadRequest (400) or
TooLarge (413) whose text says what is wrong."""
import json
import re
import urllib.parse

from parkgate_tools.ids import is_id
from parkgate_tools.lot.store import CORRECTION_ACTIONS
from parkgate_tools.lot.web.money_text import fen_from_yuan

MAX_BODY = 64 * 1024        # a pushed tariff table is the largest form
MAX_FIELDS = 16
MAX_NOTE_CHARS = 500
MAX_PLATE_QUERY_CHARS = 32
MAX_PAGE = 10 ** 6
U32 = 0xFFFFFFFF
# What a person may record: "settled" is the bridge's (an owed fee paid at
# the plate's next visit), never offered on the page.
OFFERED_ACTIONS = tuple(sorted(a for a in CORRECTION_ACTIONS if a != "settled"))
_DAY = re.compile(r"\A\d{4}-\d{2}-\d{2}\Z")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class BadRequest(ValueError):
    """A request refused with status (400) and this text."""
    status = 400


class TooLarge(BadRequest):
    """A body over MAX_BODY: refused (413) before it is read."""
    status = 413


async def read_body(request, limit=MAX_BODY):
    """The request's body, at most limit bytes: BadRequest if Content-Length
    is missing or not a number, TooLarge if it says more than limit (both
    before reading), BadRequest if the body is longer than it said."""
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise BadRequest("Content-Length: %s (a number of bytes is needed)" % (
            "missing" if length is None else repr(length[:20])))
    if int(length) > limit:
        raise TooLarge("body of %s bytes: at most %d" % (length[:20], limit))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > int(length):
            raise BadRequest("body longer than its Content-Length")
    return bytes(body)


def parse_form(body):
    """{name: value} of a url-encoded body; BadRequest if it is not UTF-8,
    holds more than MAX_FIELDS fields, or a field twice."""
    try:
        pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                                       max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("form: %s" % exc) from None
    form = {}
    for name, value in pairs:
        if name in form:
            raise BadRequest("form: field %r given twice" % name[:40])
        form[name] = value
    return form


def parse_json(body):
    """The JSON object of a body; BadRequest if it is none."""
    try:
        doc = json.loads(body or b"{}")
    except ValueError as exc:
        raise BadRequest("not JSON (%s)" % exc) from None
    if not isinstance(doc, dict):
        raise BadRequest("not a JSON object")
    return doc


# ---- the fields ----

def gate(value):
    if not isinstance(value, str) or not is_id(value):
        raise BadRequest("gate: %r is not a gate id" % (str(value)[:40],))
    return value


def _u32(name, value):
    if type(value) is str and value.isdigit() and len(value) <= 10:
        value = int(value)
    if type(value) is not int or not 0 <= value <= U32:
        raise BadRequest("%s: %r is not a number from 0 to %d" % (name, str(value)[:20], U32))
    return value


def jid(value):
    return _u32("jid", value)


def seq(value):
    return _u32("seq", value)


def action(value):
    if value not in OFFERED_ACTIONS:
        raise BadRequest("action: %r is not one of %s" % (str(value)[:40],
                                                          ", ".join(OFFERED_ACTIONS)))
    return value


def amount(value):
    """Yuan as typed (a form) to fen."""
    try:
        return fen_from_yuan(value)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def amount_fen(value):
    """Fen as a JSON integer."""
    if type(value) is not int or not 0 <= value <= U32:
        raise BadRequest("amount_fen: %r is not a fen amount" % (str(value)[:20],))
    return value


def _text(name, value, required):
    if not isinstance(value, str):
        raise BadRequest("%s: not text" % name)
    value = value.strip()
    if len(value) > MAX_NOTE_CHARS or _CONTROL.search(value):
        raise BadRequest("%s: at most %d characters, no control characters" % (
            name, MAX_NOTE_CHARS))
    if required and not value:
        raise BadRequest("%s: say why" % name)
    return value


def note(value):
    return _text("note", value, required=False)


def reason(value):
    return _text("reason", value, required=True)


def tariff_text(value):
    if not isinstance(value, str) or not value.strip():
        raise BadRequest("tariff: empty (paste the table's JSON)")
    return value


FIELDS = {"gate": gate, "jid": jid, "seq": seq, "action": action, "amount": amount,
          "amount_fen": amount_fen, "note": note, "reason": reason, "tariff": tariff_text}


JSON_INTS = ("jid", "seq", "amount_fen")   # numbers in a JSON body, never strings


def fields(given, required, optional=(), json_body=False):
    """{name: checked value} of the fields named (FIELDS' rules; an optional
    one missing is left out); BadRequest for one missing, one not allowed
    here, or a value its rule refuses. json_body: JSON_INTS must be JSON
    integers."""
    for name in JSON_INTS if json_body else ():
        if name in given and type(given[name]) is not int:
            raise BadRequest("%s: %r is not an integer" % (name, str(given[name])[:20]))
    unknown = set(given) - set(required) - set(optional)
    if unknown:
        raise BadRequest("unexpected field %s" % ", ".join(sorted(repr(n[:40]) for n in unknown)))
    checked = {}
    for name in tuple(required) + tuple(optional):
        if name in given:
            checked[name] = FIELDS[name](given[name])
        elif name in required:
            raise BadRequest("%s: missing" % name)
    return checked


# ---- query parameters ----

def day(query, name):
    """A YYYY-MM-DD parameter, or None when absent or empty."""
    value = query.get(name, "")
    if not value:
        return None
    if not _DAY.match(value):
        raise BadRequest("%s: %r is not a day (YYYY-MM-DD)" % (name, value[:20]))
    return value


def page_number(query):
    value = query.get("page", "1")
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise BadRequest("page: %r is not a page number" % value[:20])
    return int(value)


def plate_query(query):
    value = query.get("plate", "").strip()
    if len(value) > MAX_PLATE_QUERY_CHARS or _CONTROL.search(value):
        raise BadRequest("plate: at most %d characters" % MAX_PLATE_QUERY_CHARS)
    return value
