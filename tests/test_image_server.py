"""The lot's image server (lot/image_server.py) on a real mosquitto, with a
fake gate of paho whose every offer and chunk frame goes through the gate's
own core (parkgate.ota.parse_offer, Download on a slot in memory) and whose
reboot command goes through parkgate.sign.verify."""
import hashlib
import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from fixtures_mqtt import wait_for
from flashdev import FlashDevice, Partition
from parkgate import sign
from parkgate.ota import Download, OtaError, parse_offer
from parkgate.ota_record import Progress
from parkgate_tools.lot import image_server
from parkgate_tools.lot.image_server import ImageServer, due
from parkgate_tools.lot.images import ImageStore
from parkgate_tools.lot.ota_plan import OtaPlan

LOT = "lot1"
KEYS = {"g1": bytes(range(32)), "g2": bytes(range(1, 33))}
BLOCKS = 16
IMAGE = bytes((i * 7 + i // 251) & 0xFF for i in range(2 * 4096 + 700))   # 3 blocks, 18 chunks


class Slot(Partition):
    def set_boot(self):
        pass


class GateOfPaho:
    """A gate speaking the wire contract, its core the gate's own."""

    def __init__(self, broker, tmp_path, gate="g1", running=1, ask=True):
        self.gate, self.running, self.ask_chunks = gate, running, ask
        self.key = KEYS[gate]
        self.prefix = "pg/%s/%s/" % (LOT, gate)
        self.slot = Slot(FlashDevice(None, 4096, BLOCKS), 0, BLOCKS)
        self.progress = Progress(str(tmp_path / ("%s.rec" % gate)))
        self.download = None
        self.offers, self.refused, self.reboots = [], [], []
        self.staged = False
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gate-" + gate)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(self.prefix + "down/#", 1)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()

    def status(self, **fields):
        doc = {"on": 1, "fw": self.running, "ota": None, "rb": None}
        doc.update(fields)
        self.client.publish(self.prefix + "status", json.dumps(doc), qos=1, retain=True)

    def ask(self, version, index):
        self.client.publish(self.prefix + "up/image", json.dumps({"v": version, "i": index}))

    def _on_message(self, client, userdata, message):
        leaf = message.topic[len(self.prefix):]
        with self.lock:
            try:
                getattr(self, "_" + leaf.split("/")[1])(message.payload)
            except OtaError as exc:
                self.refused.append((leaf, str(exc)))

    def _image(self, payload):
        offer = parse_offer(self.key, payload, self.gate, self.running, BLOCKS * 4096)
        self.download = Download(self.slot, offer, self.progress)
        self.status(ota=[offer.version, 0, offer.blocks, "dl"])
        # counted after its status went out: a test that waits for the offer
        # and then sends a status of its own sends it after this one
        self.offers.append(offer.version)
        if self.ask_chunks:
            self.ask(offer.version, self.download.next_index())

    def _chunk(self, payload):
        left = self.download.accept(payload)
        o = self.download.offer
        if left:
            if self.ask_chunks:        # ask=False: the test asks for each chunk
                self.ask(o.version, self.download.next_index())
        elif self.download.verify():
            self.staged = True
            self.status(ota=[o.version, o.blocks, o.blocks, "staged"])

    def _reboot(self, payload):
        body = sign.verify(self.key, json.loads(payload), "reboot", self.gate, 0)
        self.reboots.append(body)

    def slot_sha(self, size):
        buf = bytearray(size)
        for block in range((size + 4095) // 4096):
            piece = memoryview(buf)[block * 4096:min(size, (block + 1) * 4096)]
            self.slot.readblocks(block, piece, 0)
        return hashlib.sha256(buf).hexdigest()

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def lot(broker, tmp_path):
    """(images, plan, start(**kwargs) -> a started ImageServer)."""
    images = ImageStore(str(tmp_path / "state" / "images"))
    plan = OtaPlan(str(tmp_path / "state" / "ota"))
    made = []

    def start(**kwargs):
        server = ImageServer(LOT, broker.host, broker.port, KEYS.__getitem__, images, plan,
                             **kwargs).start()
        made.append(server)
        assert server.connected.wait(10)
        return server
    yield images, plan, start
    for server in made:
        server.stop()


@pytest.fixture
def gate(broker, tmp_path):
    made = []

    def make(**kwargs):
        made.append(GateOfPaho(broker, tmp_path, **kwargs))
        return made[-1]
    yield make
    for g in made:
        g.close()


def test_a_whole_image_is_delivered_and_its_sha256_matches(lot, gate):
    images, plan, start = lot
    images.add(IMAGE, 7)
    reads = []
    read = images.read
    images.read = lambda version: reads.append(version) or read(version)
    g = gate()
    g.status()
    server = start()
    began = time.monotonic()
    plan.offer(["g1"], 7, "manual")
    wait_for(lambda: g.staged, what="image staged")
    took = time.monotonic() - began
    assert g.refused == [] and g.offers == [7]
    assert g.slot_sha(len(IMAGE)) == hashlib.sha256(IMAGE).hexdigest()
    assert server.served == 18
    assert reads == [7], "the image read (and hashed) once, not per chunk"
    wait_for(lambda: plan.plan("g1")["state"] == "staged", what="plan staged")
    time.sleep(0.5)
    assert g.reboots == [], "manual: no reboot command"
    print("18 chunks delivered in %.3f s: %.0f chunks/s" % (took, 18 / took))


def test_asks_for_a_wrong_version_index_or_gate_are_dropped(lot, gate, broker):
    images, plan, start = lot
    images.add(IMAGE, 7)
    images.add(b"other", 8)
    g = gate(ask=False)
    g.status()
    server = start()
    plan.offer(["g1"], 7, "manual")
    wait_for(lambda: g.offers == [7], what="offer")
    for version, index in ((8, 0), (6, 0), (7, 18), (7, -1)):
        g.ask(version, index)
    g.client.publish(g.prefix + "up/image", b'{"v":7,"i":0,"pad":"' + b"x" * 80 + b'"}')
    g.client.publish("pg/%s/g9/up/image" % LOT, json.dumps({"v": 7, "i": 0}))
    g.client.publish("pg/%s/g2/up/image" % LOT, json.dumps({"v": 7, "i": 0}))  # no plan
    wait_for(lambda: server.dropped == 7, what="7 asks dropped")
    assert server.served == 0
    g.ask(7, 0)
    wait_for(lambda: server.served == 1, what="a good ask answered")
    assert g.download.next_index() == 1 and g.refused == []


def test_offer_resent_when_the_gate_comes_back_not_after_a_rollback(lot, gate, monkeypatch):
    monkeypatch.setattr(image_server, "OFFER_EVERY_S", 0.5)
    images, plan, start = lot
    images.add(IMAGE, 7)
    g = gate(ask=False)
    g.status(on=0)
    start()
    plan.offer(["g1"], 7, "now")
    time.sleep(1.5)
    assert g.offers == [], "not offered to a gate offline"
    g.status()
    wait_for(lambda: g.offers == [7], what="offered once online")
    time.sleep(1.2)
    assert g.offers == [7], "not again while the gate shows the download"
    g.status(ota=None)                               # came back, the download lost
    wait_for(lambda: g.offers == [7, 7], what="offered again")
    g.status(rb=7)
    wait_for(lambda: plan.plan("g1")["state"] == "rolled back", what="rolled back")
    assert plan.plan("g1")["rolled_back"] == [7]
    g.status(on=0)
    g.status()
    time.sleep(1.5)
    assert g.offers == [7, 7], "never offered again after its rollback"
    with pytest.raises(ValueError):
        plan.offer(["g1"], 7, "now")
    plan.offer(["g1"], 7, "now", force=True)         # the operator's explicit choice
    wait_for(lambda: g.offers == [7, 7, 7], what="offered again when forced")
    # offered, or already downloading: the gate shows the download at once
    assert plan.plan("g1")["state"] in ("offered", "downloading")
    assert plan.plan("g1")["rolled_back"] == []


def test_reboot_now_sent_once_staged_and_never_before(lot, gate):
    images, plan, start = lot
    images.add(IMAGE, 7)
    g = gate(ask=False)
    g.status()
    start(next_command=lambda gate: 5)
    plan.offer(["g1"], 7, "now")
    wait_for(lambda: g.offers == [7], what="offer")
    g.status(ota=[7, 1, 3, "dl"])
    time.sleep(1)
    assert g.reboots == [] and plan.plan("g1")["state"] == "downloading"
    g.status(ota=[7, 3, 3, "staged"])
    wait_for(lambda: g.reboots == ["7"], what="reboot command")
    assert plan.plan("g1")["state"] == "rebooting"
    g.status(fw=7, ota=[7, 0, 0, "trial"])
    wait_for(lambda: plan.plan("g1")["running"] == 7, what="running 7")
    assert plan.plan("g1")["state"] == "rebooting", "on trial: not proven yet"
    g.status(fw=7, ota=None)
    wait_for(lambda: plan.plan("g1")["state"] == "running", what="running")
    assert g.reboots == ["7"]


def test_reboot_held_until_the_quiet_hour(lot, gate):
    images, plan, start = lot
    images.add(IMAGE, 7)
    g = gate(ask=False)
    g.status()
    now = [1795564800]           # 08:00 at UTC+8
    start(clock=lambda: now[0], utc_offset_minutes=480)
    plan.offer(["g1"], 7, "03:30")
    wait_for(lambda: g.offers == [7], what="offer")
    g.status(ota=[7, 3, 3, "staged"])
    wait_for(lambda: plan.plan("g1")["state"] == "staged", what="staged")
    time.sleep(1)
    assert g.reboots == []
    now[0] += 19 * 3600 + 29 * 60                 # 03:29 the next day
    time.sleep(1)
    assert g.reboots == []
    now[0] += 60                                  # 03:30
    wait_for(lambda: len(g.reboots) == 1, what="reboot at the quiet hour")


def test_due():
    t = 1795564800                  # 00:00 UTC = 08:00 at UTC+8
    assert due("now", t, 480)
    assert due("08:00", t, 480) and due("07:01", t, 480) and not due("06:59", t, 480)
    assert not due("08:01", t, 480) and not due("23:00", t, 480)
    assert due("00:00", t, 0) and due("23:30", t, 0) and not due("22:59", t, 0)
    assert not due("23:30", t, 0, window=60)
    assert not due("manual", t, 480)


def test_metrics_show_the_image_server(lot):
    from types import SimpleNamespace
    from parkgate_tools.lot import health
    _, _, start = lot
    server = start()
    server.served, server.dropped = 5, 2
    doc = health.metrics(SimpleNamespace(config=SimpleNamespace(lot=LOT), images=server,
                                         started=time.monotonic(), waiting_for=None,
                                         bridge=None, keeper=None))
    assert doc["image_server"] == {"served": 5, "dropped": 2, "connected": 1}
