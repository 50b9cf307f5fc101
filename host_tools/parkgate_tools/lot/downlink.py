"""Signed messages from the lot server to one gate (firmware/docs/mqtt.md):
tariff tables and member lists; commands will use the same envelope."""
import base64
import hashlib
import json

from parkgate import tariff
from parkgate_host import member_lists, signing

# Payload bytes in one member part: its envelope (with a gate id of up to 32
# characters and every number at its widest) stays under ENVELOPE_MAX bytes,
# which a gate parses in its 64 KiB heap beside everything else.
PART_BYTES = 480
ENVELOPE_MAX = 900


def tariff_envelope(key, gate, table_text):
    """The signed envelope carrying a tariff table to gate. The table is
    validated here first (TariffError names the field) and its own version
    is the envelope's version, so a gate refuses anything not newer."""
    table = tariff.loads(table_text)
    return signing.sign(key, "tariff", gate, table.version, table_text)


def members_envelope(key, gate, data):
    """One signed envelope carrying a whole member file or a delta (bytes
    from parkgate_host.member_lists build / make_delta), base64 in the body:
    the single-message form, for payloads of up to about 1 KB. Gates that
    install through parkgate.member_update take members_parts() instead."""
    version = member_lists.version_of(data)
    return signing.sign(key, "members", gate, version, base64.b64encode(data).decode())


def members_parts(key, gate, data, part_bytes=PART_BYTES):
    """The signed part envelopes (parkgate.sign, parkgate.member_update)
    carrying a whole member file or a delta (bytes from member_lists.build or
    member_lists.make_delta) to gate, in order: part i holds bytes
    [i * part_bytes, (i + 1) * part_bytes) in base64, and every part names
    the part count, the payload's size and its SHA-256. The version is the
    list's (a delta's new version). ValueError if a part's envelope would
    exceed ENVELOPE_MAX bytes (a gate id too long for part_bytes)."""
    version = member_lists.version_of(data)
    if not 64 <= part_bytes <= 600:
        raise ValueError("part_bytes must be 64..600")
    digest = hashlib.sha256(data).hexdigest()
    n = max(1, (len(data) + part_bytes - 1) // part_bytes)
    parts = []
    for i in range(n):
        body = base64.b64encode(data[i * part_bytes:(i + 1) * part_bytes]).decode()
        envelope = signing.sign(key, "members", gate, version, body,
                                part=(i, n, len(data), digest))
        size = len(encode(envelope))
        if size > ENVELOPE_MAX:
            raise ValueError("part %d of %d is %d bytes, more than %d" % (
                i, n, size, ENVELOPE_MAX))
        parts.append(envelope)
    return parts


def topic(lot, gate, kind):
    return "pg/%s/%s/down/%s" % (lot, gate, kind)


def encode(envelope):
    """The payload bytes of an envelope as published."""
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()


def publish(client, lot, gate, kind, envelope):
    """Publish an envelope with a paho client (QoS 1; the gate reports
    refusals on up/refused and shows what it applied in its status)."""
    return client.publish(topic(lot, gate, kind), encode(envelope), qos=1)


def publish_parts(client, lot, gate, parts, timeout=5):
    """Publish the parts of members_parts() in order on down/members, each
    waited for (QoS 1: the broker keeps their order). Sending them all
    again is harmless: the gate takes a repeated part as already had."""
    for envelope in parts:
        publish(client, lot, gate, "members", envelope).wait_for_publish(timeout)
