"""The lot bridge's upstream link to the central server: idempotent storing
on the far side, rows marked forwarded only after a 2xx, tariff and members
taken from it, and real gates (the firmware in the simulator, with their own
broker credentials) running while the central server is down for a long
stretch and the bridge restarts: every event reaches it exactly once."""
import json
import time
import urllib.error
import urllib.request

import pytest

from fixtures_mqtt import broker, gates  # noqa: F401 (fixtures)
from fixtures_mqtt import LOT, TARIFF, WAIT_S, entry, wait_for
from parkgate_tools.lot.bridge import Bridge
from parkgate_tools.lot.store import Store
from parkgate_tools.lot.tariff_in_use import store_tariff, stored_tariff
from parkgate_tools.sim.broker import Broker
from parkgate_tools.central.server import CentralServer
from parkgate_tools.sim.gate import SimClock, SimGate

T0 = 1795564800
FAST = {"backoff_min": 0.1, "backoff_max": 0.5, "timeout": 2.0, "sync_every": 0.3}
TOKEN = "lot-token"        # the lot's token on the central server the tests run


@pytest.fixture
def central(tmp_path):
    server = CentralServer(str(tmp_path / "central.sqlite"),
                           tokens={LOT: TOKEN, "other": "other-token"}).start()
    yield server
    server.close()


def post(url, body, token=None):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    if token:
        request.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(request, timeout=WAIT_S) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def upstream_event(gate, jid, wire):
    return dict(wire, g=gate, j=jid)


def test_central_stores_each_event_once_and_refuses_bad_input(central):
    url = central.url + "/v1/lots/%s/events" % LOT
    batch = {"events": [upstream_event("in-1", 7, entry(s, "A%d" % s, T0 + s)) for s in (1, 2)]}
    assert post(url, batch)[0] == 401   # no token: refused (it used to take anything)
    assert post(url, batch, TOKEN) == (200, {"stored": 2, "duplicates": 0})
    assert post(url, batch, TOKEN) == (200, {"stored": 0, "duplicates": 2})
    assert post(central.url + "/v1/lots/other/events", batch,
                "other-token")[1]["stored"] == 2   # another lot
    assert central.store.summary(LOT)["events"] == 2
    bad = {"events": [upstream_event("in-1", 7, dict(entry(3, "A3", T0), k="sideways"))]}
    code, answer = post(url, bad, TOKEN)
    assert code == 400 and "k: 'sideways'" in answer["error"]
    assert post(url, {"events": [dict(entry(4, "A4", T0), j=7)]}, TOKEN)[0] == 400   # no gate
    central.tokens = {LOT: "s3cret"}
    assert post(url, batch)[0] == 401
    assert post(url, batch, token="s3cret")[0] == 200


def test_rows_are_marked_forwarded_only_after_a_2xx(broker, gates, central, tmp_path):
    central.tokens = {LOT: "right"}
    bridge = Bridge(LOT, broker.host, broker.port, str(tmp_path / "lot.sqlite"), TARIFF,
                    upstream=central.url, upstream_token="wrong", forwarder_options=FAST)
    bridge.start()
    try:
        assert bridge.wait_live(WAIT_S)
        gate = gates("in-1")
        gate.publish("up/events", {"g": "in-1", "j": 7,
                                   "e": [entry(s, "A%d" % s, T0 + s) for s in (1, 2, 3)]})
        gate.expect("down/ack")
        wait_for(lambda: bridge.forwarder.failures >= 3, what="refused forwarding attempts")
        assert "HTTP 401" in bridge.forwarder.last_error
        assert bridge.store.outbox_backlog() == 3
        assert central.store.summary(LOT)["events"] == 0
        bridge.forwarder.token = "right"
        wait_for(lambda: bridge.store.outbox_backlog() == 0, what="the outbox to drain")
        assert [(x["lot"], x["events"], x["backlog"]) for x in central.store.lots()] == [
            (LOT, 3, 0)]   # the lot says what it still has to send
        assert [r[:3] for r in central.store.events(LOT)] == [
            ("in-1", 7, 1), ("in-1", 7, 2), ("in-1", 7, 3)]
        # corrections go up the same way, once
        correction = bridge.store.add_correction("in-1", 7, 2, "reviewed", 0, "checked",
                                                  "ann")
        bridge.forwarder.wake()
        wait_for(lambda: central.store.corrections(LOT), what="the correction upstream")
        assert central.store.corrections(LOT) == [(correction, "in-1", 7, 2, "reviewed", 0)]
    finally:
        bridge.stop()


def test_tariff_and_members_come_from_central(broker, gates, central, tmp_path):
    doc = json.load(open(TARIFF, encoding="utf-8"))
    doc.update(version=2, examples=[])
    doc["plans"]["all"]["bands"][0]["tiers"][0]["unit_price"] = 300
    central.set_tariff(LOT, json.dumps(doc))
    central.set_members(LOT, [{"p": "京M00001", "name": "monthly pass", "from": T0 - 86400,
                               "until": T0 + 86400}])
    bridge = Bridge(LOT, broker.host, broker.port, str(tmp_path / "lot.sqlite"), TARIFF,
                    upstream=central.url, upstream_token=TOKEN, forwarder_options=FAST)
    bridge.start()
    try:
        assert bridge.wait_live(WAIT_S)
        wait_for(lambda: bridge.tariff.version == 2 and bridge.store.setting("members_version"),
                 what="tariff and members from the central server")
        lane = gates("out-1")
        for request, plate in ((1, "京M00001"), (2, "京N00002")):
            lane.publish("up/fee", {"r": request, "p": plate, "c": 0, "t": T0 + 3600,
                                    "et": T0})
        answers = [json.loads(a) for a in lane.expect("down/fee", 2)]
        # the member parks free; 60 min = 2 started half hours at the new 3 yuan
        assert [(a["p"], a["fee"], a["tv"]) for a in answers] == [
            ("京M00001", 0, 2), ("京N00002", 600, 2)]
    finally:
        bridge.stop()
    # a restarted bridge keeps the newer tariff it stored, with no central server
    central.stop()
    again = Bridge(LOT, broker.host, broker.port, str(tmp_path / "lot.sqlite"), TARIFF)
    try:
        assert again.tariff.version == 2
    finally:
        again.store.close()


def test_the_higher_tariff_version_wins(tmp_path):
    """One rule (tariff_in_use.is_newer) for the tariff fees are answered
    from: a table from the central server is kept only if newer than the one
    kept, and a bridge answers from the higher of its file and that table."""
    doc = json.load(open(TARIFF, encoding="utf-8"))
    base = doc["version"]
    text = {v: json.dumps(dict(doc, version=v, examples=[])) for v in (base + 1, base + 2)}
    db = str(tmp_path / "lot.sqlite")
    store = Store(db, LOT)
    try:
        assert store_tariff(store, text[base + 2]).version == base + 2
        assert store_tariff(store, text[base + 1]) is None     # older: not kept
        assert store_tariff(store, text[base + 2]) is None     # the same: nothing new
        assert stored_tariff(store).version == base + 2
    finally:
        store.close()
    newer_file = tmp_path / "tariff.json"
    newer_file.write_text(json.dumps(dict(doc, version=base + 3, examples=[])),
                          encoding="utf-8")
    for tariff_path, version in ((TARIFF, base + 2), (str(newer_file), base + 3)):
        bridge = Bridge(LOT, "127.0.0.1", 1883, db, tariff_path)
        try:
            assert bridge.tariff.version == version
        finally:
            bridge.store.close()


def test_central_down_for_a_long_stretch_with_real_gates(tmp_path, central):
    """Entry and exit lanes running the firmware, each logging in with its
    own credentials; the central server is down from the first car until
    after the last, and the bridge restarts meanwhile."""
    lot_dir = str(tmp_path / "lot")
    broker = Broker(str(tmp_path / "broker"), lot=LOT, gates=["gate-in", "gate-out"],
                    lot_dir=lot_dir)
    broker.start()
    db = str(tmp_path / "lot.sqlite")
    user, password = broker.bridge_credentials()

    def make_bridge():
        made = Bridge(LOT, broker.host, broker.port, db, TARIFF, username=user,
                      password=password, upstream=central.url, upstream_token=TOKEN,
                      forwarder_options=FAST)
        made.start()
        return made
    bridge = make_bridge()
    clock = SimClock(T0, 600)
    lanes = {}
    try:
        for name, direction in (("gate-in", "in"), ("gate-out", "out")):
            gate_user, gate_password = broker.credentials(name)
            lane = SimGate(str(tmp_path), name, LOT, direction, broker.port, clock,
                           site_extra={"backoff_max_ms": 1000, "mqtt_user": gate_user,
                                       "mqtt_password": gate_password})
            lane.provision()
            lanes[direction] = lane.start()
        for lane in lanes.values():
            lane.wait_line(r"LINK up", 15)
        assert bridge.wait_live(WAIT_S)
        central.stop()
        plates = ["粤U%05d" % i for i in range(20)]
        for i, plate in enumerate(plates):
            lanes["in"].send_plate(plate)
            time.sleep(0.1)
            if i >= 4:
                lanes["out"].send_plate(plates[i - 4])
                time.sleep(0.1)
            if i == 10:   # the bridge restarts while the central server is away
                bridge.stop()
                bridge = make_bridge()
        for plate in plates[-4:]:
            lanes["out"].send_plate(plate)
            time.sleep(0.1)
        lanes["in"].wait_line(r"EVENT in ", 10, count=20)
        lanes["out"].read_until_journaled(plates, 30)   # the cars queued past its bound
        lanes["out"].wait_line(r"EVENT out ", 10, count=20)
        wait_for(lambda: bridge.store.summary()["rows"] == 40, 30, "40 events at the bridge")
        assert bridge.forwarder.failures > 0 and bridge.store.outbox_backlog() == 40
        assert central.store.summary(LOT)["events"] == 0
        central.start()
        wait_for(lambda: bridge.store.outbox_backlog() == 0, 30, "the outbox to drain")
        lot_ids = {(j["gate"], j["jid"], s) for j in bridge.store.summary()["journals"]
                   for s in range(1, j["max_seq"] + 1)}
        rows = central.store.events(LOT)
        assert len(rows) == len({r[:3] for r in rows}) == 40
        assert {r[:3] for r in rows} == lot_ids
        assert sorted(r[4] for r in rows if r[3] == "in") == sorted(plates)
        assert sorted(r[4] for r in rows if r[3] == "out") == sorted(plates)
    finally:
        for lane in lanes.values():
            lane.stop()
        bridge.stop()
        broker.stop()


