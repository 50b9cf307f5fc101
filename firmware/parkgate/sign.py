# Signed downlink messages: tariff tables, member lists and commands from the
# lot server carry an HMAC-SHA256 made with the gate's own key. Written once
# here: the gate checks with this module, the lot server signs with
# parkgate_host.signing, which builds on it.
#
# Envelope (JSON): {"k": kind, "g": gate id, "v": version, "x": expiry,
#                   "b": body text, "s": hex HMAC}
# The MAC covers "k\ng\nv\nx\n" followed by the body's UTF-8 bytes, so a
# message cannot be moved to another gate, kind or version. "v" only grows:
# a gate refuses a version it has already applied (replay) or an older one
# (stale). "x" is a unix time after which a command must not run (0: never
# expires; tables do not expire).
#
# A payload too large for one message (a member list) goes in parts: each
# part's envelope adds "i" (part index from 0), "n" (part count), "z" (the
# whole payload's size in bytes) and "h" (hex SHA-256 of the whole payload),
# and its MAC covers "k\ng\nv\nx\n" then "i/n/z/h\n" then the body, so a
# part cannot be moved to another place, payload or version. (A body with
# no part fields never holds a newline where a part line would be: kind
# "members" bodies are base64.)
import binascii
import hashlib

_BLOCK = 64   # SHA-256 block size


class SignatureError(ValueError):
    pass


def _sha256(*parts):
    h = hashlib.sha256()
    for part in parts:
        try:
            h.update(part)   # a str is hashed in place on MicroPython (its UTF-8 bytes)
        except TypeError:
            h.update(part.encode())   # CPython
    return h.digest()


def hmac_sha256(key, *message):
    """The HMAC of message, or of its parts one after the other (hashed
    where they are, not joined first: a part of a member list is 640
    base64 characters on a fragmented heap)."""
    if len(key) > _BLOCK:
        key = _sha256(key)
    key = key + bytes(_BLOCK - len(key))
    inner = bytes(b ^ 0x36 for b in key)
    outer = bytes(b ^ 0x5C for b in key)
    return _sha256(outer, _sha256(inner, *message))


def equal(a, b):
    """Constant-time comparison of two byte strings."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0


def _signed_head(kind, gate, version, expiry, part):
    # the signed bytes before the body
    head = "%s\n%s\n%d\n%d\n" % (kind, gate, version, expiry)
    if part is not None:
        head += "%d/%d/%d/%s\n" % part
    return head.encode()


def signed_bytes(kind, gate, version, expiry, body, part=None):
    return _signed_head(kind, gate, version, expiry, part) + body.encode()


def _is_hex64(text):
    if not isinstance(text, str) or len(text) != 64:
        return False
    for ch in text:
        if ch not in "0123456789abcdef":
            return False
    return True


def part_of(envelope):
    """(index, count, size, sha256 hex) of a part envelope; SignatureError
    if its part fields are missing or malformed."""
    i = envelope.get("i")
    n = envelope.get("n")
    z = envelope.get("z")
    h = envelope.get("h")
    if type(i) is not int or type(n) is not int or type(z) is not int or \
            i < 0 or n < 1 or z < 0 or not _is_hex64(h):
        raise SignatureError("malformed part fields (i, n, z, h)")
    return i, n, z, h


def verify(key, envelope, kind, gate, applied_version, now=None, part=False):
    """Check an envelope meant for this gate; returns its body. part=True:
    it must be a part envelope (see part_of), its part fields signed too.
    Raises SignatureError naming what is wrong."""
    if not isinstance(envelope, dict):
        raise SignatureError("not an envelope")
    version = envelope.get("v")
    expiry = envelope.get("x", 0)
    body = envelope.get("b")
    mac_hex = envelope.get("s")
    if type(version) is not int or type(expiry) is not int or not isinstance(body, str):
        raise SignatureError("malformed envelope")
    fields = part_of(envelope) if part else None
    if not isinstance(mac_hex, str) or len(mac_hex) != 64:
        raise SignatureError("unsigned")
    if envelope.get("k") != kind or envelope.get("g") != gate:
        raise SignatureError("for %s/%s, not %s/%s" % (
            envelope.get("k"), envelope.get("g"), kind, gate))
    try:
        mac = binascii.unhexlify(mac_hex)
    except ValueError:
        raise SignatureError("unsigned")
    if not equal(mac, hmac_sha256(key, _signed_head(kind, gate, version, expiry, fields), body)):
        raise SignatureError("bad signature")
    if version <= applied_version:
        raise SignatureError("stale: version %d, %d applied" % (version, applied_version))
    if expiry and now is not None and now > expiry:
        raise SignatureError("expired %d s ago" % (now - expiry))
    return body
