"""The lot bridge: stores the events of a lot's gates exactly once,
acknowledges them only after commit, and answers fee queries with the
gates' own tariff engine. The MQTT contract: firmware/docs/mqtt.md; the
upstream link: firmware/docs/upstream.md; scaling and security:
firmware/docs/lot-server.md."""
import json
import logging
import queue
import re
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from parkgate import record, tariff
from parkgate_tools.lot.security import MAX_MESSAGE_BYTES
from parkgate_tools.lot.forwarder import Forwarder
from parkgate_tools.lot.store import LOCK_WAIT_S, DatabaseLocked, open_store

log = logging.getLogger("parkgate.bridge")

KEEPALIVE_S = 30
RECONNECT_MIN_DELAY_S = 0.5
RECONNECT_MAX_DELAY_S = 8
# Gate and lot ids are letters, digits and "-", so this level is never a gate.
SYNC_LEVEL = "_bridge"
# pg/<lot>/server/status: the lot server's presence, retained: {"on": 1, "t":
# unix seconds} while the bridge is live, {"on": 0} after it stopped (its
# own message) or died (its last will). "server" is therefore no gate id.
SERVER_LEVEL = "server"
PRESENCE_OFFLINE = b'{"on":0}'
PRESENCE_STOP_WAIT_S = 2
# Lane catch-up (down/catchup): a page holds at most CATCHUP_PAGE entries
# (store.py) and its JSON at most this many bytes, so that the gate can take
# it in one piece of heap: 8 entries with 16-byte plates, the largest seqs and
# times and 16-character gate ids come to about 990 bytes.
CATCHUP_MAX_BYTES = 1000
_REQUEST_MAX = 0xFFFF
_CURSOR_MAX = 2 ** 63 - 1
_ID = re.compile(r"[A-Za-z0-9-]+\Z")
_U32 = 0xFFFFFFFF
# One commit takes every batch waiting, up to these many (group commit).
GROUP_BATCHES = 512
GROUP_EVENTS = 8192
SESSION_EXPIRY_S = 7 * 86400   # MQTT 5 workers: as long as the broker's queue is sized for
_STOP = object()


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
    """Stores a lot's gate events exactly once, acks after commit, answers fee queries.

    db_path: a SQLite file or a ``postgresql://`` URL (store.open_store).
    store: a Store to use instead of opening db_path (tests inject one).
    username/password: MQTT credentials (security.provision_bridge_credentials);
    tls_ca: CA certificate file to connect with TLS.
    share_group: run as one of several workers of the lot sharing the load
    through the MQTT 5 shared subscription ``$share/<group>/pg/<lot>/+/up/#``
    (each message goes to one worker; the store's primary key keeps every
    event once whichever worker stores it).
    upstream: base URL of the central server; new events then also go into
    the outbox and a Forwarder sends them there (upstream_token: its bearer
    token; forwarder_options: keyword arguments for Forwarder).
    group_batches: at most this many batches per transaction (1: one
    commit per batch, the benchmark's baseline).
    lock_wait: seconds to wait for a SQLite database another worker or
    process holds locked, at start and at each commit, retrying and logging
    each attempt (store.Store); past it the constructor raises
    store.DatabaseLocked, or the batches waiting are not acknowledged.

    Messages are handled in arrival order by one writer thread, which
    stores all the event batches waiting in ONE transaction (group commit)
    and acknowledges each only after that commit.
    Fee queries that were queued by the broker while the bridge was away are
    not answered (their gates have long since charged offline, and request
    ids restart when a gate reboots): after each connect the bridge sends
    itself a sync message and answers fees only once it has come back.
    """

    def __init__(self, lot, broker_host, broker_port, db_path, tariff_path, client_id=None,
                 store=None, username=None, password=None, tls_ca=None, share_group=None,
                 upstream=None, upstream_token=None, forwarder_options=None,
                 group_batches=GROUP_BATCHES, lock_wait=LOCK_WAIT_S, clock=time.time):
        if not _ID.match(lot):
            raise ValueError("lot: %r is not letters, digits and -" % lot)
        if share_group is not None and not _ID.match(share_group):
            raise ValueError("share_group: %r is not letters, digits and -" % share_group)
        self.lot = lot
        self.clock = clock    # the lot server's time, given to gates that ask
        self.broker_host = broker_host
        self.broker_port = broker_port
        self.client_id = client_id or "parkgate-bridge-" + lot
        self.tariff = load_tariff(tariff_path)
        self._own_store = store is None
        self.store = open_store(db_path, lock_wait) if store is None else store
        self._use_stored_tariff()
        self.username, self.password, self.tls_ca = username, password, tls_ca
        self.share_group = share_group
        self._prefix = "pg/%s/" % lot
        if share_group is None:
            self._sync_topic = self._prefix + SYNC_LEVEL + "/up/sync"
            self._filters = [self._prefix + "+/up/#", self._prefix + "+/status"]
        else:
            self._sync_topic = "%s%s/sync/%s" % (self._prefix, SYNC_LEVEL, uuid.uuid4().hex)
            self._filters = ["$share/%s/%s" % (share_group, f)
                             for f in (self._prefix + "+/up/#", self._prefix + "+/status")]
            self._filters.append(self._sync_topic)
        self.forwarder = None
        if upstream:
            self.forwarder = Forwarder(self.store, lot, upstream, token=upstream_token,
                                       on_tariff=self._set_tariff,
                                       **(forwarder_options or {}))
        self._client = None
        self._sync_token = None
        self._live = threading.Event()
        self._queue = queue.Queue()
        self._writer = None
        self.group_batches = group_batches
        self.batches = 0       # batches committed (and acknowledged)
        self.events = 0        # events in those batches
        self.commits = 0       # transactions that stored them
        self.refused = 0       # messages refused as malformed (or oversize)
        self.oversize = 0      # of those, payloads over MAX_MESSAGE_BYTES, never parsed
        self.failed = 0        # batches not stored because the store failed
        self.catchups = 0      # catch-up pages sent
        self._presence_topic = self._prefix + SERVER_LEVEL + "/status"
        if share_group is not None:
            # Every worker hears the presence topic (not shared), so that a
            # live one puts "on" back after another worker's last will.
            self._filters.append(self._presence_topic)
        self._stopping = False

    def _use_stored_tariff(self):
        """A tariff taken from the central server earlier wins over the file
        if its version is higher."""
        text = self.store.setting("tariff")
        if text:
            try:
                stored = tariff.loads(text)
            except tariff.TariffError:
                return
            if stored.version > self.tariff.version:
                self.tariff = stored

    def _set_tariff(self, table):
        self.tariff = table
        log.info("fees now from tariff version %s", table.version)

    # ---- life cycle ----

    def start(self):
        """Connect in the background; reconnects by itself until stop().
        Once live, publishes the retained presence {"on": 1, "t": now} on
        pg/<lot>/server/status; its last will there is {"on": 0}."""
        self._stopping = False
        self._writer = threading.Thread(target=self._write_loop, daemon=True,
                                        name="bridge-writer-" + self.client_id)
        self._writer.start()
        v5 = self.share_group is not None
        if v5:
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                 protocol=mqtt.MQTTv5)
        else:
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                 clean_session=False)
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls_ca:
            client.tls_set(ca_certs=self.tls_ca)
        client.reconnect_delay_set(RECONNECT_MIN_DELAY_S, RECONNECT_MAX_DELAY_S)
        client.will_set(self._presence_topic, PRESENCE_OFFLINE, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        if v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = SESSION_EXPIRY_S
            client.connect_async(self.broker_host, self.broker_port, keepalive=KEEPALIVE_S,
                                 clean_start=False, properties=properties)
        else:
            client.connect_async(self.broker_host, self.broker_port, keepalive=KEEPALIVE_S)
        client.loop_start()
        if self.forwarder is not None:
            self.forwarder.start()

    def wait_live(self, timeout=10):
        """Wait until connected, subscribed and past the broker's backlog;
        True if so within timeout seconds."""
        return self._live.wait(timeout)

    @property
    def live(self):
        """True while connected and answering fee queries."""
        return self._live.is_set()

    def stop(self):
        """Disconnect, stop the network, writer and forwarder threads and
        close the store it opened. Batches not yet committed are not
        acknowledged: their gates send them again. Publishes the retained
        presence {"on": 0} first (disconnecting cleanly skips the will)."""
        self._stopping = True
        self._live.clear()
        if self._client is not None:
            if self._client.is_connected():
                info = self._client.publish(self._presence_topic, PRESENCE_OFFLINE, qos=1,
                                            retain=True)
                try:
                    info.wait_for_publish(PRESENCE_STOP_WAIT_S)
                except (RuntimeError, ValueError) as exc:
                    log.warning("presence offline not published: %s", exc)
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
        self._live.clear()
        if self._writer is not None:
            self._queue.put(_STOP)
            self._writer.join(30)
            self._writer = None
        if self.forwarder is not None:
            self.forwarder.stop()
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
        client.subscribe([(f, 1) for f in self._filters])

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
            if len(message.payload) > MAX_MESSAGE_BYTES:
                self.oversize += 1
                raise BadMessage("%d bytes, more than %d" % (len(message.payload),
                                                            MAX_MESSAGE_BYTES))
            self._dispatch(message.topic, message.payload)
        except BadMessage as exc:
            self.refused += 1
            log.warning("refused %s: %s", message.topic, exc)
        except Exception:  # never let one message stop the network thread
            log.exception("failed on %s", message.topic)

    # ---- messages (network thread: validate, then queue for the writer) ----

    def _dispatch(self, topic, payload):
        levels = topic.split("/")
        if topic == self._sync_topic:
            if payload.decode(errors="replace") == self._sync_token and not self._stopping:
                self._live.set()
                log.info("live: broker backlog delivered")
                self._publish_presence()
            return
        if topic == self._presence_topic:
            self._on_presence(payload)
            return
        gate, kind = levels[2], "/".join(levels[3:])
        if gate == SYNC_LEVEL:
            return   # another worker's sync
        if gate == SERVER_LEVEL:
            raise BadMessage("gate id %r is the lot server's" % gate)
        handler = {"up/events": self._on_events, "up/fee": self._on_fee,
                   "up/clock": self._on_clock, "up/catchup": self._on_catchup,
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
        self._queue.put(("events", gate, jid, events))

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
        # Whether it was queued by the broker is known only now, in order
        # with the sync message.
        self._queue.put(("fee", gate, (request, plate, colour, exit_time, gate_entry),
                         self._live.is_set()))

    def _on_clock(self, gate, message):
        """Answer a gate's time request at once (the gate judges the round
        trip); one queued by the broker while the bridge was away is stale."""
        request = message.get("r")
        if type(request) is not int:
            raise BadMessage("r: %r is not a request id" % (request,))
        if self._live.is_set():
            self._publish(gate, "down/clock", {"r": request, "t": int(self.clock())})

    def _on_status(self, gate, message):
        self._queue.put(("status", gate, message))

    def _on_catchup(self, gate, message):
        """A lane's request for the open sessions it missed: validated here,
        answered by the writer thread in order (after the batches before it
        are stored)."""
        values = []
        for key, high in (("r", _REQUEST_MAX), ("s", _U32), ("c", _CURSOR_MAX)):
            value = message.get(key)
            if type(value) is not int or not 0 <= value <= high:
                raise BadMessage("%s: %r is not an integer in 0..%d" % (key, value, high))
            values.append(value)
        self._queue.put(("catchup", gate, tuple(values), self._live.is_set()))

    def _publish_presence(self):
        client = self._client
        if client is not None:
            client.publish(self._presence_topic, _compact({"on": 1, "t": int(self.clock())}),
                           qos=1, retain=True)

    def _on_presence(self, payload):
        """The lot server's presence as the broker has it: when another
        worker's last will (or a stop) said offline while this one is live,
        say online again."""
        try:
            message = json.loads(payload) if payload else {}
        except ValueError:
            message = {}
        if isinstance(message, dict) and message.get("on") == 1:
            return
        if self._live.is_set() and not self._stopping:
            log.info("presence said offline while live: online again")
            self._publish_presence()

    # ---- the writer thread ----

    def _write_loop(self):
        while True:
            items = [self._queue.get()]
            events = len(items[0][3]) if items[0] is not _STOP and items[0][0] == "events" else 0
            while len(items) < self.group_batches and events < GROUP_EVENTS:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                items.append(item)
                if item is not _STOP and item[0] == "events":
                    events += len(item[3])
            batches, statuses = [], []
            for item in items:
                if item is _STOP:
                    self._commit(batches, statuses)
                    return
                if item[0] == "events":
                    batches.append(item[1:])
                elif item[0] == "status":
                    statuses.append(item[1:])
                else:
                    self._commit(batches, statuses)
                    batches, statuses = [], []
                    answer = self._answer_fee if item[0] == "fee" else self._answer_catchup
                    try:
                        answer(item[1], *item[2], live=item[3])
                    except BadMessage as exc:
                        self.refused += 1
                        log.warning("refused %s query of %s: %s", item[0], item[1], exc)
                    except Exception:
                        log.exception("%s query of %s failed", item[0], item[1])
            self._commit(batches, statuses)

    def _commit(self, batches, statuses):
        """Store batches [(gate, jid, events)] and statuses in one
        transaction, then ack each batch. If that fails and there were
        several, each is tried on its own, so one bad batch holds up no other."""
        if not batches and not statuses:
            return
        outbox = self.forwarder is not None
        try:
            counts = self.store.ingest_many(batches, statuses, outbox=outbox)
        except DatabaseLocked as exc:
            # The whole lock_wait has passed: one at a time would wait it
            # again for each. The gates send them again.
            self.failed += len(batches)
            log.error("%d batches and %d statuses not stored, not acknowledged: %s",
                      len(batches), len(statuses), exc)
            return
        except Exception:
            if len(batches) + len(statuses) > 1:
                for batch in batches:
                    self._commit([batch], [])
                for status in statuses:
                    self._commit([], [status])
                return
            self.failed += len(batches)
            for gate, jid, _ in batches:
                log.exception("batch gate=%s j=%d not stored, not acknowledged", gate, jid)
            if statuses:
                log.exception("status of %s not stored", statuses[0][0])
            return
        self.commits += 1
        for (gate, jid, events), inserted in zip(batches, counts):
            self.batches += 1
            self.events += len(events)
            # Only the seqs of the batch are committed: a batch with a hole
            # gets one ack per run, so an ack never covers an event not stored.
            for run_first, run_last in _runs(event.seq for event in events):
                self._publish(gate, "down/ack", {"j": jid, "f": run_first, "l": run_last})
            log.debug("batch gate=%s j=%d: %d events, %d new", gate, jid, len(events), inserted)
        if outbox and batches:
            self.forwarder.wake()

    def _answer_fee(self, gate, request, plate, colour, exit_time, gate_entry, live):
        if not live:
            log.info("fee query gate=%s r=%r not answered: queued while the bridge was away",
                     gate, request)
            return
        # The later of the stored entry and the one the gate knows: a later
        # entry the gate heard from a peer lane that the bridge has not
        # stored yet means the stored one belongs to an earlier stay.
        entry = self.store.open_entry(plate, exit_time)
        known = [t for t in (entry.time if entry else None, gate_entry) if t is not None]
        entry_time = max(known) if known else None
        table = self.tariff
        try:
            if entry_time is None:
                quote = tariff.quote_no_entry(table, exit_time, colour)
            else:
                member = self.store.is_member(plate, exit_time)
                quote = tariff.quote(table, entry_time, exit_time, colour, member=member)
        except tariff.TariffError as exc:
            raise BadMessage("no fee: %s" % exc)
        self._publish(gate, "down/fee", {"r": request, "p": plate, "fee": quote.fee,
                                         "tv": table.version, "et": entry_time})
        log.debug("fee gate=%s r=%r plate=%s et=%s (stored %s, gate %s) t=%d: %d", gate,
                  request, plate, entry_time, entry.time if entry else None, gate_entry,
                  exit_time, quote.fee)

    def _answer_catchup(self, gate, request, since, cursor, live):
        if not live:
            log.info("catch-up gate=%s r=%d not answered: queued while the bridge was away",
                     gate, request)
            return
        try:
            entries, next_cursor = self.store.open_entries_page(since, cursor)
        except ValueError as exc:
            raise BadMessage(str(exc))
        wires = []
        for row_id, entry_gate, event in entries:
            wire = record.to_wire(event)
            wire["g"] = entry_gate
            wires.append(wire)
        payload = _compact({"r": request, "e": wires, "c": next_cursor})
        while len(payload) > CATCHUP_MAX_BYTES and len(wires) > 1:
            # Long gate ids: fewer entries, the next page goes on after them.
            wires.pop()
            entries.pop()
            next_cursor = entries[-1][0]
            payload = _compact({"r": request, "e": wires, "c": next_cursor})
        self.catchups += 1
        self._publish_raw(gate, "down/catchup", payload)
        log.debug("catch-up gate=%s r=%d s=%d c=%d: %d entries, next %s", gate, request, since,
                  cursor, len(wires), next_cursor)

    def _publish_raw(self, gate, leaf, payload):
        client = self._client
        if client is not None:
            client.publish(self._prefix + gate + "/" + leaf, payload, qos=0)

    def _publish(self, gate, leaf, obj):
        client = self._client
        if client is not None:
            client.publish(self._prefix + gate + "/" + leaf, _compact(obj), qos=0)
