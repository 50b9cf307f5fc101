# Signed downlink messages: tariff tables, member lists and commands from the
# lot server carry an HMAC-SHA256 made with the gate's own key. Written once
# here; the lot server signs with this module and the gate checks with it.
#
# Envelope (JSON): {"k": kind, "g": gate id, "v": version, "x": expiry,
#                   "b": body text, "s": hex HMAC}
# The MAC covers "k\ng\nv\nx\n" followed by the body's UTF-8 bytes, so a
# message cannot be moved to another gate, kind or version. "v" only grows:
# a gate refuses a version it has already applied (replay) or an older one
# (stale). "x" is a unix time after which a command must not run (0: never
# expires; tables do not expire).
import binascii
import hashlib

_BLOCK = 64   # SHA-256 block size


class SignatureError(ValueError):
    pass


def _sha256(*parts):
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.digest()


def hmac_sha256(key, message):
    if len(key) > _BLOCK:
        key = _sha256(key)
    key = key + bytes(_BLOCK - len(key))
    inner = bytes(b ^ 0x36 for b in key)
    outer = bytes(b ^ 0x5C for b in key)
    return _sha256(outer, _sha256(inner, message))


def equal(a, b):
    """Constant-time comparison of two byte strings."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0


def _signed_bytes(kind, gate, version, expiry, body):
    return ("%s\n%s\n%d\n%d\n" % (kind, gate, version, expiry)).encode() + body.encode()


def sign(key, kind, gate, version, body, expiry=0):
    """The envelope dict for body (str), signed with key (bytes)."""
    mac = hmac_sha256(key, _signed_bytes(kind, gate, version, expiry, body))
    return {"k": kind, "g": gate, "v": version, "x": expiry, "b": body,
            "s": binascii.hexlify(mac).decode()}


def verify(key, envelope, kind, gate, applied_version, now=None):
    """Check an envelope meant for this gate; returns its body.
    Raises SignatureError naming what is wrong."""
    if not isinstance(envelope, dict):
        raise SignatureError("not an envelope")
    version = envelope.get("v")
    expiry = envelope.get("x", 0)
    body = envelope.get("b")
    mac_hex = envelope.get("s")
    if type(version) is not int or type(expiry) is not int or not isinstance(body, str):
        raise SignatureError("malformed envelope")
    if not isinstance(mac_hex, str) or len(mac_hex) != 64:
        raise SignatureError("unsigned")
    if envelope.get("k") != kind or envelope.get("g") != gate:
        raise SignatureError("for %s/%s, not %s/%s" % (
            envelope.get("k"), envelope.get("g"), kind, gate))
    try:
        mac = binascii.unhexlify(mac_hex)
    except ValueError:
        raise SignatureError("unsigned")
    if not equal(mac, hmac_sha256(key, _signed_bytes(kind, gate, version, expiry, body))):
        raise SignatureError("bad signature")
    if version <= applied_version:
        raise SignatureError("stale: version %d, %d applied" % (version, applied_version))
    if expiry and now is not None and now > expiry:
        raise SignatureError("expired %d s ago" % (now - expiry))
    return body
