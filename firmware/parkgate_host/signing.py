# Signing downlink envelopes, as the lot server does: the envelope and the
# bytes its MAC covers are parkgate.sign's, which the gate verifies with.
import binascii

from parkgate.sign import hmac_sha256, signed_bytes


def sign(key, kind, gate, version, body, expiry=0, part=None):
    """The envelope dict for body (str), signed with key (bytes). part:
    (index, count, payload size, payload SHA-256 hex) for one part of a
    payload sent in parts."""
    mac = hmac_sha256(key, signed_bytes(kind, gate, version, expiry, body, part))
    envelope = {"k": kind, "g": gate, "v": version, "x": expiry, "b": body,
                "s": binascii.hexlify(mac).decode()}
    if part is not None:
        envelope["i"], envelope["n"], envelope["z"], envelope["h"] = part
    return envelope
