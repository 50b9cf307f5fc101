# Signing firmware images for a gate, as the lot server does: the offer is a
# parkgate.sign envelope (parkgate_host.signing), the chunk frames carry the
# MAC parkgate.ota checks (parkgate.ota.frame_mac, on parkgate.sign's HMAC).
# The byte layouts: parkgate.ota and firmware/docs/ota.md "Delivery". Runs on
# CPython and on the MicroPython unix port alike.
import binascii
import hashlib
import json
import struct

from parkgate import ota
from parkgate_host import signing


def _check(version, image_bytes, chunk):
    if type(version) is not int or not 0 <= version <= ota.VERSION_MAX:
        raise ValueError("version %r: an int 0..%d" % (version, ota.VERSION_MAX))
    if not image_bytes:
        raise ValueError("an empty image")
    if chunk < ota.CHUNK_MIN or chunk > ota.CHUNK_MAX or ota.BLOCK % chunk:
        raise ValueError("chunk of %d bytes: 64..512 dividing 4096" % chunk)


def offer(key, gate, version, image_bytes, chunk=512):
    """The signed offer (JSON envelope bytes, kind "image") of image_bytes
    as version for gate, signed with that gate's key (bytes); its body is
    "<version> <size> <sha256 hex> <chunk>"."""
    _check(version, image_bytes, chunk)
    sha_hex = binascii.hexlify(hashlib.sha256(image_bytes).digest()).decode()
    body = "%d %d %s %d" % (version, len(image_bytes), sha_hex, chunk)
    return json.dumps(signing.sign(key, ota.KIND, gate, version, body)).encode()


def frame(key, gate, version, image_bytes, sha, index, chunk=512):
    """The chunk frame (bytes) of chunk index of image_bytes, sha its
    32-byte SHA-256 (hashed once by the caller, not per frame)."""
    count = (len(image_bytes) + chunk - 1) // chunk
    if type(index) is not int or not 0 <= index < count:
        raise ValueError("chunk index %r: 0..%d" % (index, count - 1))
    data = image_bytes[index * chunk:(index + 1) * chunk]
    head = ota.MAGIC + struct.pack("<I", version) + sha[0:4] + \
        struct.pack("<IH", index, len(data))
    return head + data + ota.frame_mac(key, ota.gate_line(gate), head, sha, data)


def chunks(key, gate, version, image_bytes, chunk=512, start=0):
    """Yield the chunk frames (bytes) of image_bytes from chunk index start
    on, each with its HMAC (gate key) over the gate id, the version, the
    index, the whole image's SHA-256 and the data (frame())."""
    _check(version, image_bytes, chunk)
    sha = hashlib.sha256(image_bytes).digest()
    count = (len(image_bytes) + chunk - 1) // chunk
    for index in range(start, count):
        yield frame(key, gate, version, image_bytes, sha, index, chunk)
