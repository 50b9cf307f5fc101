"""Lot and gate ids: letters, digits and "-". The one rule; the lot bridge,
the broker credentials, the central server and the field tools import it.

An id goes into MQTT topics (``pg/<lot>/<gate>/...``), broker user names
(``<lot>.<gate>``, ``<lot>._bridge``: "." and "_" never occur in an id, so no
gate can be named like another user) and the central server's URL paths.
The gate firmware does not check ids: the field tools check a site config
before it goes to a gate."""
import re

ID_PATTERN = "[A-Za-z0-9-]+"    # one id, for patterns that hold one (URL paths)
ID_RULE = "letters, digits and -"
_ID = re.compile(ID_PATTERN + r"\Z")


def is_id(value):
    """True if value is a str of one or more ASCII letters, digits and "-"."""
    return isinstance(value, str) and _ID.match(value) is not None


def check_id(what, value, error=ValueError):
    """value if it is an id, else raise error("<what>: <value> is not letters,
    digits and -")."""
    if not is_id(value):
        raise error("%s: %r is not %s" % (what, value, ID_RULE))
    return value
