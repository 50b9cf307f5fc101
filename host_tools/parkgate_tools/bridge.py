"""The lot bridge: stores the events of a lot's gates exactly once,
acknowledges them only after commit, and answers fee queries with the
gates' own tariff engine. The MQTT contract: firmware/docs/mqtt.md."""
import json
import logging
import re
import threading
import uuid

import paho.mqtt.client as mqtt

from parkgate import record, tariff
from parkgate_tools.store import Store

log = logging.getLogger("parkgate.bridge")

KEEPALIVE_S = 30
RECONNECT_MIN_DELAY_S = 0.5
RECONNECT_MAX_DELAY_S = 8
# Gate and lot ids are letters, digits and "-", so this level is never a gate.
SYNC_LEVEL = "_bridge"
_ID = re.compile(r"[A-Za-z0-9-]+\Z")
_U32 = 0xFFFFFFFF


class BadMessage(ValueError):
    """A payload the bridge refuses; the text says why."""


def load_tariff(path):
    """The tariff.Tariff in the file at path (raises tariff.TariffError)."""
    with open(path, "rb") as f:
        return tariff.loads(f.read())


def _compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _runs(seqs):
    """Contiguous [first, last] runs of a collection of ints, ascending."""
    runs = []
    for seq in sorted(set(seqs)):
        if runs and seq == runs[-1][1] + 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    return runs


def _u32(message, key, allow_none=False):
    value = message.get(key)
    if value is None and allow_none:
        return None
    if type(value) is not int or not 0 <= value <= _U32:
        raise BadMessage("%s: %r is not an integer in 0..%d" % (key, value, _U32))
    return value


class Bridge:
    """Subscribes to a lot's gate topics, stores events exactly once, acks after commit, answers fees.

    store: a Store to use instead of opening db_path (tests inject one).
    Fee queries that were queued by the broker while the bridge was away are
    not answered (their gates have long since charged offline, and request
    ids restart when a gate reboots): after each connect the bridge sends
    itself a sync message and answers fees only once it has come back.
    """

    def __init__(self, lot, broker_host, broker_port, db_path, tariff_path, client_id=None,
                 store=None):
        if not _ID.match(lot):
            raise ValueError("lot: %r is not letters, digits and -" % lot)
        self.lot = lot
        self.broker_host = broker_host
        self.broker_port = broker_port
        self.client_id = client_id or "parkgate-bridge-" + lot
        self.tariff = load_tariff(tariff_path)
        self._own_store = store is None
        self.store = Store(db_path) if store is None else store
        self._prefix = "pg/%s/" % lot
        self._sync_topic = self._prefix + SYNC_LEVEL + "/up/sync"
        self._client = None
        self._sync_token = None
        self._live = threading.Event()
        self.batches = 0       # batches committed (and acknowledged)
        self.refused = 0       # messages refused as malformed
        self.failed = 0        # batches not stored because the store failed

    # ---- life cycle ----

    def start(self):
        """Connect in the background; reconnects by itself until stop()."""
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             clean_session=False)
        client.reconnect_delay_set(RECONNECT_MIN_DELAY_S, RECONNECT_MAX_DELAY_S)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        client.connect_async(self.broker_host, self.broker_port, keepalive=KEEPALIVE_S)
        client.loop_start()

    def wait_live(self, timeout=10):
        """Wait until connected, subscribed and past the broker's backlog;
        True if so within timeout seconds."""
        return self._live.wait(timeout)

    @property
    def live(self):
        """True while connected and answering fee queries."""
        return self._live.is_set()

    def stop(self):
        """Disconnect, stop the network thread and close the store it opened."""
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
        self._live.clear()
        if self._own_store:
            self.store.close()

    # ---- connection callbacks (paho network thread) ----

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.warning("broker %s:%d refused the connection: %s",
                        self.broker_host, self.broker_port, reason_code)
            return
        log.info("connected to %s:%d (session present: %s)", self.broker_host,
                 self.broker_port, flags.session_present)
        client.subscribe([(self._prefix + "+/up/#", 1), (self._prefix + "+/status", 1)])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        if any(code.is_failure for code in reason_codes):
            log.error("subscription refused: %s", reason_codes)
            return
        self._sync_token = uuid.uuid4().hex
        client.publish(self._sync_topic, self._sync_token, qos=1)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._live.clear()
        self._sync_token = None
        log.log(logging.WARNING if reason_code.is_failure else logging.INFO,
                "disconnected from %s:%d: %s", self.broker_host, self.broker_port, reason_code)

    def _on_message(self, client, userdata, message):
        try:
            self._dispatch(message.topic, message.payload)
        except BadMessage as exc:
            self.refused += 1
            log.warning("refused %s: %s", message.topic, exc)
        except Exception:  # never let one message stop the network thread
            log.exception("failed on %s", message.topic)

    # ---- messages ----

    def _dispatch(self, topic, payload):
        levels = topic.split("/")
        if topic == self._sync_topic:
            if payload.decode(errors="replace") == self._sync_token:
                self._live.set()
                log.info("live: broker backlog delivered")
            return
        gate, kind = levels[2], "/".join(levels[3:])
        handler = {"up/events": self._on_events, "up/fee": self._on_fee,
                   "status": self._on_status}.get(kind)
        if handler is None:
            log.debug("ignored %s", topic)
            return
        if kind == "status" and not payload:
            return  # a retained status being cleared
        if not _ID.match(gate):
            raise BadMessage("gate id %r is not letters, digits and -" % gate)
        try:
            message = json.loads(payload)
        except ValueError as exc:
            raise BadMessage("not JSON (%s)" % exc)
        if not isinstance(message, dict):
            raise BadMessage("not a JSON object")
        handler(gate, message)

    def _on_events(self, gate, message):
        if message.get("g") != gate:
            raise BadMessage("g: %r is not the topic's gate %r" % (message.get("g"), gate))
        jid = _u32(message, "j")
        wires = message.get("e")
        if not isinstance(wires, list) or not wires:
            raise BadMessage("e: not a non-empty list")
        events = []
        for index, wire in enumerate(wires):
            try:
                events.append(record.from_wire(wire))
            except record.RecordError as exc:
                raise BadMessage("e[%d]: %s" % (index, exc))
        try:
            first, last, inserted = self.store.ingest(gate, jid, events)
        except Exception:
            self.failed += 1
            log.exception("batch gate=%s j=%d not stored, not acknowledged", gate, jid)
            return
        self.batches += 1
        # Only the seqs of the batch are committed: a batch with a hole gets
        # one ack per run, so an ack never covers an event not stored.
        for run_first, run_last in _runs(event.seq for event in events):
            self._publish(gate, "down/ack", {"j": jid, "f": run_first, "l": run_last})
        log.debug("batch gate=%s j=%d seq %d..%d: %d new, %d already stored",
                  gate, jid, first, last, inserted, len(events) - inserted)

    def _on_fee(self, gate, message):
        request = message.get("r")
        if type(request) not in (int, str):
            raise BadMessage("r: %r is not a request id" % (request,))
        plate = message.get("p")
        if not isinstance(plate, str) or not plate:
            raise BadMessage("p: %r is not a plate" % (plate,))
        colour = message.get("c", 0)
        if type(colour) is not int or not 0 <= colour <= 255:
            raise BadMessage("c: %r is not a colour code" % (colour,))
        exit_time = _u32(message, "t")
        gate_entry = _u32(message, "et", allow_none=True) or None
        if not self._live.is_set():
            log.info("fee query gate=%s r=%r not answered: queued while the bridge was away",
                     gate, request)
            return
        # The later of the stored entry and the one the gate knows: a later
        # entry the gate heard from a peer lane that the bridge has not
        # stored yet means the stored one belongs to an earlier stay.
        entry = self.store.open_entry(plate, exit_time)
        known = [t for t in (entry.time if entry else None, gate_entry) if t is not None]
        entry_time = max(known) if known else None
        try:
            if entry_time is None:
                quote = tariff.quote_no_entry(self.tariff, exit_time, colour)
            else:
                quote = tariff.quote(self.tariff, entry_time, exit_time, colour)
        except tariff.TariffError as exc:
            raise BadMessage("no fee: %s" % exc)
        self._publish(gate, "down/fee", {"r": request, "p": plate, "fee": quote.fee,
                                         "tv": self.tariff.version, "et": entry_time})
        log.debug("fee gate=%s r=%r plate=%s et=%s (stored %s, gate %s) t=%d: %d", gate,
                  request, plate, entry_time, entry.time if entry else None, gate_entry,
                  exit_time, quote.fee)

    def _on_status(self, gate, message):
        self.store.record_status(gate, message)

    def _publish(self, gate, leaf, obj):
        self._client.publish(self._prefix + gate + "/" + leaf, _compact(obj), qos=0)
