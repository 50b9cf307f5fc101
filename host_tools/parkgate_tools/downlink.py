"""Signed messages from the lot server to one gate (firmware/docs/mqtt.md):
tariff tables and member lists; commands will use the same envelope."""
import base64
import json

from parkgate import members, sign, tariff


def tariff_envelope(key, gate, table_text):
    """The signed envelope carrying a tariff table to gate. The table is
    validated here first (TariffError names the field) and its own version
    is the envelope's version, so a gate refuses anything not newer."""
    table = tariff.loads(table_text)
    return sign.sign(key, "tariff", gate, table.version, table_text)


def members_envelope(key, gate, data):
    """The signed envelope carrying a member list file or a delta (bytes
    from parkgate.members.build / make_delta), base64 in the body; its
    version is the list's (a delta's new version)."""
    version = members.version_of(data)
    return sign.sign(key, "members", gate, version, base64.b64encode(data).decode())


def topic(lot, gate, kind):
    return "pg/%s/%s/down/%s" % (lot, gate, kind)


def publish(client, lot, gate, kind, envelope):
    """Publish an envelope with a paho client (QoS 1; the gate reports
    refusals on up/refused and shows what it applied in its status)."""
    payload = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
    return client.publish(topic(lot, gate, kind), payload, qos=1)
