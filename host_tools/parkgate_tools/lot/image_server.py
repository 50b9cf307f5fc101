"""The lot's image server (issue #16, firmware/docs/ota.md "Delivery"): a
thread with its own MQTT session on the lot's broker that offers each
gate the image its plan names (lot/ota_plan.py), answers the gate's asks
for chunks with signed frames (parkgate_host.ota_signing), sends the
reboot command when the plan says, and moves each plan by the gate's
status. Wire (fixed, firmware/docs/ota.md):

  pg/L/G/down/image   the offer, JSON envelope, QoS 1, not retained
  pg/L/G/up/image     the gate's ask {"v": version, "i": chunk index}
  pg/L/G/down/chunk   one binary chunk frame
  pg/L/G/down/reboot  signed envelope kind "reboot", body the version
  pg/L/G/status       fw, ota [v, done, total, dl|ck|staged|trial], rb"""
import hashlib
import json
import logging
import os
import threading
import time
import types
import uuid

import paho.mqtt.client as mqtt

from parkgate_host import ota_signing, signing
from parkgate_tools.lot.ota_plan import FINISHED
from parkgate_tools.lot.push_state import PushState

log = logging.getLogger("parkgate.image_server")

CHUNK = 512
ASK_MAX_BYTES = 64          # {"v":1073741823,"i":4095} is 25 bytes
OFFER_EVERY_S = 30          # at most one offer per gate in this time
REBOOT_AGAIN_S = 120        # a gate still staged this long after the reboot: send again
QUIET_WINDOW_S = 3600       # "HH:MM": the reboot is sent within the hour from HH:MM
TICK_S = 0.2


def due(at, now, utc_offset_minutes, window=QUIET_WINDOW_S):
    """True if a reboot planned at `at` ("now" or "HH:MM" lot local time)
    is due at unix time now: "now" always, "HH:MM" within window s after it."""
    if at == "now":
        return True
    if not isinstance(at, str) or len(at) != 5 or at[2] != ":":
        return False
    local = (int(now) + utc_offset_minutes * 60) % 86400
    start = int(at[:2]) * 3600 + int(at[3:]) * 60
    return (local - start) % 86400 < window


class ImageServer(threading.Thread):
    """ImageServer(lot, host, port, gate_key, images, plan): gate_key(gate)
    -> that gate's key (bytes; an exception for a gate not of the lot),
    images an ImageStore, plan an OtaPlan. login: (user, password) or None;
    clock: unix time (the quiet hour); next_command(gate) -> the reboot
    command's version (default: PushState's counter in the plan folder's
    parent, i.e. the lot's state/ with a lot config's folders)."""

    def __init__(self, lot, host, port, gate_key, images, plan, login=None, clock=time.time,
                 utc_offset_minutes=480, next_command=None, client_id=None):
        super().__init__(name="image-server-%s" % lot, daemon=True)
        self.lot, self.host, self.port = lot, host, port
        self.gate_key, self.images, self.plan = gate_key, images, plan
        self.clock, self.utc_offset_minutes = clock, utc_offset_minutes
        if next_command is None:
            state = types.SimpleNamespace(state_dir=os.path.dirname(os.path.abspath(plan.folder)))
            next_command = PushState(state).next_command
        self.next_command = next_command
        self.prefix = "pg/%s/" % lot
        self.statuses = {}      # gate -> last status dict
        self.offered = {}       # (gate, version) -> monotonic time of the last offer
        self.served = 0         # chunk frames sent
        self.dropped = 0        # asks dropped
        self._cache = {}        # version -> (bytes, sha digest), held once
        self._plans = {}
        self._stamp = None
        self._lock = threading.RLock()
        self._halt = threading.Event()
        self._wake = threading.Event()
        self.connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or (
            "%s._ota-%s" % (lot, uuid.uuid4().hex[:8])))
        if login is not None:
            self.client.username_pw_set(*login)
        self.client.reconnect_delay_set(1, 30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda c, u, f, code, p: self.connected.clear()
        self.client.on_message = self._on_message

    # ---- the session ----
    def start(self):
        """Connect in the background and run until stop(); returns self."""
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        super().start()
        return self

    def stop(self):
        self._halt.set()
        self._wake.set()
        self.client.disconnect()
        self.client.loop_stop()
        if self.is_alive():
            self.join(5)

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.warning("broker refused the image server: %s", reason_code)
            return
        client.subscribe([(self.prefix + "+/up/image", 1), (self.prefix + "+/status", 1)])
        self.connected.set()
        self._wake.set()

    def _publish(self, gate, leaf, payload):
        return self.client.publish(self.prefix + gate + "/down/" + leaf, payload, qos=1)

    def _on_message(self, client, userdata, message):
        levels = message.topic.split("/")
        if len(levels) < 4:
            return
        gate, leaf = levels[2], "/".join(levels[3:])
        try:
            if leaf == "up/image":
                self._ask(gate, message.payload)
            elif leaf == "status":
                self._status(gate, message.payload)
        except Exception:      # never let one message end the network thread
            log.exception("image server: %s from %s", leaf, gate)

    # ---- the images, held once ----
    def image(self, version):
        """(bytes, sha256 digest) of a stored image, read and hashed once."""
        with self._lock:
            held = self._cache.get(version)
            if held is None:
                data = self.images.read(version)
                held = self._cache[version] = (data, hashlib.sha256(data).digest())
                log.info("image %d held: %d bytes", version, len(data))
            return held

    def _plan_of(self, gate):
        with self._lock:
            return self._plans.get(gate)

    # ---- asks ----
    def _drop(self, gate, why):
        self.dropped += 1
        log.warning("ask from %s dropped: %s", gate, why)

    def _ask(self, gate, payload):
        if len(payload) > ASK_MAX_BYTES:
            return self._drop(gate, "%d bytes" % len(payload))
        try:
            ask = json.loads(payload)
            version, index = ask["v"], ask["i"]
        except (ValueError, TypeError, KeyError):
            return self._drop(gate, "not an ask: %r" % payload[:ASK_MAX_BYTES])
        if type(version) is not int or type(index) is not int:
            return self._drop(gate, "not an ask: %r" % payload)
        try:
            key = self.gate_key(gate)
        except Exception as exc:   # ConfigError, KeyError: not a gate of the lot
            return self._drop(gate, "unknown gate (%s)" % exc)
        plan = self._plan_of(gate) or self.plan.plan(gate)
        if plan is None or plan["version"] != version or plan["state"] in FINISHED:
            return self._drop(gate, "version %d is not planned for it" % version)
        try:
            data, sha = self.image(version)
        except ValueError as exc:
            return self._drop(gate, str(exc))
        if not 0 <= index < (len(data) + CHUNK - 1) // CHUNK:
            return self._drop(gate, "chunk %d of version %d out of range" % (index, version))
        self._publish(gate, "chunk", ota_signing.frame(key, gate, version, data, sha, index,
                                                       CHUNK))
        self.served += 1

    # ---- statuses ----
    def _status(self, gate, payload):
        try:
            status = json.loads(payload) if payload else {}
        except ValueError:
            return
        if not isinstance(status, dict):
            return
        with self._lock:
            self.statuses[gate] = status
            if gate in self._plans:
                moved = self.plan.heard(gate, status)
                if moved is not None:
                    self._plans[gate] = moved
        self._wake.set()

    # ---- the loop: offers and reboots ----
    def run(self):
        while not self._halt.is_set():
            self._wake.wait(TICK_S)
            self._wake.clear()
            if self._halt.is_set():
                break
            try:
                self._reload()
                if self.connected.is_set():
                    for gate in list(self._plans):
                        self._act(gate)
            except Exception:
                log.exception("image server")

    def _reload(self):
        stamp = self.plan.stamp()
        if stamp == self._stamp:
            return
        with self._lock:
            self._stamp = stamp
            plans = self.plan.plans()
            for gate, plan in plans.items():
                old = self._plans.get(gate)
                if old is None or old.get("offered_at") != plan.get("offered_at") or \
                        old["version"] != plan["version"]:
                    self.offered.pop((gate, plan["version"]), None)   # a new plan: offer now
                status = self.statuses.get(gate)
                if status is not None:
                    plan = self.plan.heard(gate, status) or plan
                plans[gate] = plan
            self._plans = plans
            wanted = {p["version"] for p in plans.values() if p["state"] not in FINISHED}
            for version in set(self._cache) - wanted:
                del self._cache[version]          # no plan serves it any more

    def _act(self, gate):
        plan = self._plan_of(gate)
        if plan is None or plan["state"] in FINISHED:
            return
        version = plan["version"]
        status = self.statuses.get(gate, {})
        ota = status.get("ota")
        under_way = isinstance(ota, list) and len(ota) == 4 and ota[0] == version
        seen = bool(status)
        online = status.get("on") == 1
        stale_rb = plan.get("forced") and plan["state"] == "offered"   # forced anew
        if not under_way and status.get("fw") != version and \
                (status.get("rb") != version or stale_rb) and \
                (online or not seen) and plan["state"] in ("offered", "downloading"):
            self._offer(gate, version)
        if plan["state"] == "rebooting" and under_way and ota[3] == "staged" and \
                self.clock() - (plan.get("reboot_sent_at") or 0) > REBOOT_AGAIN_S:
            plan = self.plan.set_state(gate, "staged")
        if plan["state"] == "staged" and under_way and ota[3] == "staged" and online and \
                due(plan["reboot"], self.clock(), self.utc_offset_minutes):
            self._reboot(gate, version)

    def _offer(self, gate, version):
        now = time.monotonic()
        last = self.offered.get((gate, version))
        if last is not None and now - last < OFFER_EVERY_S:
            return
        try:
            data, _ = self.image(version)
            envelope = ota_signing.offer(self.gate_key(gate), gate, version, data, CHUNK)
        except Exception as exc:
            log.warning("no offer of %d to %s: %s", version, gate, exc)
            self.offered[(gate, version)] = now
            return
        self.offered[(gate, version)] = now
        self._publish(gate, "image", envelope)
        log.info("offer of version %d to %s", version, gate)

    def _reboot(self, gate, version):
        envelope = signing.sign(self.gate_key(gate), "reboot", gate, self.next_command(gate),
                                str(version))
        self._publish(gate, "reboot", json.dumps(envelope))
        with self._lock:
            self._plans[gate] = self.plan.set_state(gate, "rebooting",
                                                    reboot_sent_at=int(self.clock()))
        log.info("reboot into version %d sent to %s", version, gate)
