"""A secured lot broker: per-gate credentials and an ACL that keeps each gate
to its own topics, no anonymous clients, random passwords kept private,
credentials added while running, and the TLS listener."""
import json
import os
import socket
import stat
import threading

import paho.mqtt.client as mqtt
import pytest

from fixtures_mqtt import LOT, TARIFF, WAIT_S, FakeGate, entry, wait_for
from parkgate_tools.lot import security
from parkgate_tools.lot.bridge import Bridge
from parkgate_tools.sim.broker import Broker

T0 = 1795564800


@pytest.fixture
def secured(tmp_path):
    """A secured broker for gates in-1 and in-2 with a live bridge."""
    broker = Broker(str(tmp_path / "broker"), lot=LOT, gates=["in-1", "in-2"],
                    lot_dir=str(tmp_path / "lot"))
    broker.start()
    user, password = broker.bridge_credentials()
    bridge = Bridge(LOT, broker.host, broker.port, str(tmp_path / "lot.sqlite"), TARIFF,
                    username=user, password=password)
    bridge.start()
    made = []
    try:
        assert bridge.wait_live(WAIT_S), "bridge did not go live on the secured broker"

        def gate(name, credentials):
            made.append(FakeGate(broker, LOT, name, credentials=credentials))
            return made[-1]
        yield broker, bridge, gate
    finally:
        for fake in made:
            fake.close()
        bridge.stop()
        broker.stop()


def first_reason_code(client, broker, callback, packet):
    """The reason code of the first `callback` (on_connect: CONNACK,
    on_publish: PUBACK) the client gets once connected to broker."""
    done = threading.Event()
    result = []
    setattr(client, callback, lambda c, u, first, rc, p: (result.append(rc), done.set()))
    client.connect_async(broker.host, broker.port)
    client.loop_start()
    try:
        assert done.wait(WAIT_S), "no %s" % packet
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0]


def connect_code(broker, username, password, tls_ca=None):
    """The CONNACK reason code a client with these credentials gets."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="probe-%s" % username)
    if username is not None:
        client.username_pw_set(username, password)
    if tls_ca:
        client.tls_set(ca_certs=tls_ca)
    return first_reason_code(client, broker, "on_connect", "CONNACK")


def test_a_gate_cannot_publish_or_read_as_another_gate(secured):
    broker, bridge, gate = secured
    intruder = gate("in-1", broker.credentials("in-1"))
    # in-1's client tries to speak for in-2, and to listen to in-2's downlink
    intruder.client.subscribe("pg/%s/in-2/down/#" % LOT, 0)
    spoofed = {"g": "in-2", "j": 66, "e": [entry(1, "假A00001", T0)]}
    intruder.client.publish("pg/%s/in-2/up/events" % LOT, json.dumps(spoofed), qos=0)
    intruder.client.publish("pg/%s/in-2/status" % LOT, '{"on":1,"backlog":0}', qos=0,
                            retain=True)
    # its own topic works, and the bridge handles messages in order: once
    # this ack is here, the spoofed batch would have been stored before it
    own = intruder.send_until_answered("up/events", {"g": "in-1", "j": 7,
                                                     "e": [entry(1, "京A00001", T0)]},
                                       "down/ack")
    assert own == b'{"j":7,"f":1,"l":1}'
    summary = bridge.store.summary()
    assert summary["per_gate"] == {"in-1": {"in": 1, "out": 0}}
    assert "in-2" not in bridge.store.statuses()
    # the real in-2 is acknowledged; in-1 does not get in-2's ack
    real = gate("in-2", broker.credentials("in-2"))
    assert real.send_until_answered("up/events", {"g": "in-2", "j": 3,
                                                  "e": [entry(1, "沪B00002", T0)]},
                                    "down/ack") == b'{"j":3,"f":1,"l":1}'
    intruder.send_until_answered("up/events", {"g": "in-1", "j": 7,
                                               "e": [entry(2, "京A00002", T0)]}, "down/ack")
    assert all(topic.startswith("pg/%s/in-1/" % LOT) for topic in intruder.topics), \
        intruder.topics
    assert bridge.store.summary()["per_gate"]["in-2"] == {"in": 1, "out": 0}
    assert ("in-2", 66) not in {(j["gate"], j["jid"]) for j in bridge.store.summary()["journals"]}
    # an MQTT 5 client with in-1's credentials is told so: PUBACK "not authorized"
    assert puback_code(broker, broker.credentials("in-1"), "pg/%s/in-2/up/events" % LOT,
                       json.dumps(spoofed)).getName() == "Not authorized"
    assert not puback_code(broker, broker.credentials("in-1"), "pg/%s/in-1/up/events" % LOT,
                           json.dumps({"g": "in-1", "j": 7, "e": [entry(1, "京A00001", T0)]})
                           ).is_failure


def puback_code(broker, credentials, topic, payload):
    """The PUBACK reason code an MQTT 5 client with credentials gets for a QoS 1 publish."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="probe5-" + topic[-12:],
                         protocol=mqtt.MQTTv5)
    client.username_pw_set(*credentials)
    client.on_connect = lambda c, u, f, rc, p: c.publish(topic, payload, qos=1)
    return first_reason_code(client, broker, "on_publish", "PUBACK")


def test_anonymous_wrong_and_unknown_credentials_are_refused(secured):
    broker, _, _ = secured
    user, password = broker.credentials("in-1")
    assert not connect_code(broker, user, password).is_failure
    assert connect_code(broker, None, None).is_failure
    assert connect_code(broker, user, password + "x").is_failure
    assert connect_code(broker, "%s.in-9" % LOT, password).is_failure


def test_a_gate_added_while_running_can_connect(secured):
    broker, _, _ = secured
    user, password = security.provision_gate_credentials(broker.lot_dir, LOT, "out-1")
    assert connect_code(broker, user, password).is_failure     # not in the broker's files yet
    assert broker.add_gate("out-1") == (user, password)
    wait_for(lambda: not connect_code(broker, user, password).is_failure,
             what="the broker to reload its password file")


def test_secrets_are_random_private_and_stable(tmp_path):
    lot_dir = str(tmp_path / "lot")
    first = security.provision_gate_credentials(lot_dir, "L1", "in-1")
    other = security.provision_gate_credentials(lot_dir, "L1", "in-2")
    assert first[0] == "L1.in-1" and len(first[1]) >= 20 and first[1] != other[1]
    assert security.provision_gate_credentials(lot_dir, "L1", "in-1") == first
    rotated = security.provision_gate_credentials(lot_dir, "L1", "in-1", rotate=True)
    assert rotated[0] == first[0] and rotated[1] != first[1]
    path = security.secrets_path(lot_dir)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with pytest.raises(ValueError):
        security.provision_gate_credentials(lot_dir, "L2", "in-1")   # another lot's file
    with pytest.raises(ValueError):
        security.provision_gate_credentials(lot_dir, "L1", "in/1")
    passwd, acl = str(tmp_path / "passwd"), str(tmp_path / "acl")
    assert security.write_broker_auth(lot_dir, passwd, acl) == 2
    text = open(passwd).read()
    assert rotated[1] not in text and other[1] not in text and "L1.in-1:$7$101$" in text
    assert stat.S_IMODE(os.stat(passwd).st_mode) == 0o600
    rules = open(acl).read()
    assert ("user L1.in-2\ntopic write pg/L1/in-2/up/#\ntopic write pg/L1/in-2/status\n"
            "topic read pg/L1/in-2/down/#\ntopic read pg/L1/+/up/events\n") in rules


def test_tls_listener(tmp_path):
    broker = Broker(str(tmp_path / "broker"), lot=LOT, gates=["in-1"], tls=True)
    broker.start()
    user, password = broker.bridge_credentials()
    bridge = Bridge(LOT, broker.host, broker.port, str(tmp_path / "lot.sqlite"), TARIFF,
                    username=user, password=password, tls_ca=broker.ca_path)
    bridge.start()
    gate = None
    try:
        assert bridge.wait_live(WAIT_S)
        gate = FakeGate(broker, LOT, "in-1", credentials=broker.credentials("in-1"),
                        tls_ca=broker.ca_path)
        assert gate.send_until_answered("up/events", {"g": "in-1", "j": 1,
                                                      "e": [entry(1, "京A00001", T0)]},
                                        "down/ack") == b'{"j":1,"f":1,"l":1}'
        # plain MQTT on the TLS port gets no CONNACK: the server wants a handshake
        with socket.create_connection((broker.host, broker.port), timeout=2) as sock:
            sock.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
            try:
                reply = sock.recv(4)
            except (socket.timeout, ConnectionResetError):
                reply = b""
            assert not reply.startswith(b"\x20")
    finally:
        if gate is not None:
            gate.close()
        bridge.stop()
        broker.stop()


def test_gates_may_read_the_lot_servers_presence_and_only_the_bridge_writes_it():
    rules = security.acl_text("L1", ["in-2"])
    bridge_part, gate_part = rules.split("user L1.in-2")
    assert "topic readwrite pg/L1/server/status" in bridge_part
    assert "topic read pg/L1/server/status" in gate_part
    assert "write pg/L1/server" not in gate_part


def test_the_image_server_role_reads_asks_and_writes_offers_chunks_and_reboots(secured):
    """_ota (the image server of `parkgate lot run`) may read up/image and
    write down/image, down/chunk, down/reboot; _ops and a gate may not."""
    broker, _, _ = secured
    push = security.provision_server_credentials(broker.lot_dir, LOT, security.OTA_ROLE)
    ops = security.provision_server_credentials(broker.lot_dir, LOT, security.OPS_ROLE)
    broker.reload_auth()
    wait_for(lambda: not connect_code(broker, *push).is_failure, what="reload")
    wait_for(lambda: not connect_code(broker, *ops).is_failure, what="reload")
    for leaf in ("image", "chunk", "reboot"):
        topic = "pg/%s/in-1/down/%s" % (LOT, leaf)
        assert not puback_code(broker, push, topic, b"x").is_failure, leaf
        assert puback_code(broker, ops, topic, b"x").getName() == "Not authorized", leaf
        assert puback_code(broker, broker.credentials("in-2"), topic,
                           b"x").getName() == "Not authorized", leaf
    rules = security.acl_text(LOT, ["in-1"])
    push_part = rules.split("user %s._ota" % LOT)[1].split("user ")[0]
    assert "topic read pg/%s/+/up/image" % LOT in push_part
    assert "down/tariff" not in push_part and "down/open" not in push_part
    for role in ("_push", "_ops"):
        assert "down/chunk" not in rules.split("user %s.%s" % (LOT, role))[1].split("user ")[0]
    ops_part = rules.split("user %s._ops" % LOT)[1].split("user ")[0]
    assert "up/image" not in ops_part and "down/chunk" not in ops_part
