"""The downlink tests' set-up, one place for test_downlink and
test_downlink_fuzz_sim: a simulated lot (a real mosquitto, the lot bridge
if asked for), the gate under test provisioned (with the downlink key if
given) and linked, and an Operator standing for the lot server, which
pushes downlink messages and collects what the gate refuses. The conftest
fixture ``downlink_lane`` builds one and closes it after the test."""
import binascii
import json
import threading

import paho.mqtt.client as mqtt

from parkgate_tools.lot import downlink
from parkgate_tools.sim.lot import SimLot

WAIT_S = 10


class Operator:
    """A paho client standing for the lot server on gate's topics (gate "+":
    every gate of lot): publishes downlink messages and collects what the
    gate publishes on up/refused (refused, oldest first) and its last
    status."""

    def __init__(self, broker, lot, gate="+"):
        self.lot = lot
        self.refused = []
        self.status = {}
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        prefix = "pg/%s/%s/" % (lot, gate)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id="operator-%s-%s" % (lot, gate.strip("+")))
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [(prefix + "up/refused", 1), (prefix + "status", 1)])
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(WAIT_S), "the operator did not subscribe"

    def _on_message(self, client, userdata, message):
        with self._cond:
            payload = json.loads(message.payload)
            if message.topic.endswith("/up/refused"):
                self.refused.append(payload)
            else:
                self.status = payload
            self._cond.notify_all()

    @property
    def count(self):
        """How many refusals have come."""
        with self._cond:
            return len(self.refused)

    @property
    def reasons(self):
        """The why of every refusal, oldest first."""
        with self._cond:
            return [refusal.get("why") for refusal in self.refused]

    def wait(self, predicate, what, timeout=WAIT_S):
        """Wait until predicate() holds; AssertionError naming what after timeout."""
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise AssertionError("timed out waiting for " + what)

    def push(self, gate, kind, envelope):
        """Publish a signed envelope on gate's down/<kind>, as the lot server does."""
        downlink.publish(self.client, self.lot, gate, kind, envelope).wait_for_publish(5)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


class DownlinkLane:
    """A SimLot in workdir (bridge=False: the broker only), its gate
    `gate` booted and linked, and an Operator on that gate's topics that
    has seen its first status (tariff version 1).

    key: the gate's downlink key (bytes; None: a gate without one).
    site_extra, clock, attendant, ...: go to SimLot.gate."""

    def __init__(self, workdir, lot, gate, direction, key=None, bridge=False, rate=60,
                 site=None, site_extra=None, **gate_options):
        self.lot = SimLot(workdir, lot, rate=rate, site=site or {}, bridge=bridge)
        self.operator = None
        try:
            site_extra = dict(site_extra or {})
            if key is not None:
                site_extra["key"] = binascii.hexlify(key).decode()
            self.gate = self.lot.gate(gate, direction, site_extra=site_extra, **gate_options)
            self.gate.wait_line(r"LINK up", WAIT_S)
            self.operator = Operator(self.lot.broker, lot, gate)
            self.operator.wait(lambda: self.operator.status.get("tv") == 1, "the gate's status")
        except BaseException:
            self.close()
            raise

    @property
    def broker(self):
        return self.lot.broker

    @property
    def clock(self):
        return self.lot.clock

    def close(self):
        if self.operator is not None:
            self.operator.close()
            self.operator = None
        self.lot.stop()
