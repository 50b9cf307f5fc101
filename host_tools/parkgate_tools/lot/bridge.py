"""The lot bridge: stores the events of a lot's gates exactly once,
acknowledges them only after commit, and answers fee queries with the
gates' own tariff engine. This module holds the MQTT session and routes
each message: gate_messages.py checks what gates send, group_commit.py
stores it (one transaction for all that waits) and acks, answers.py works
out fees and catch-up pages, tariff_in_use.py picks the tariff. The MQTT
contract: firmware/docs/mqtt.md; the upstream link: firmware/docs/upstream.md;
scaling and security: firmware/docs/lot-server.md."""
import json
import logging
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from parkgate_tools.ids import check_id
from parkgate_tools.lot import answers, gate_messages
from parkgate_tools.lot.answers import CATCHUP_MAX_BYTES, compact
from parkgate_tools.lot.forwarder import Forwarder
from parkgate_tools.lot.gate_messages import BadMessage
from parkgate_tools.lot.group_commit import GROUP_BATCHES, QUEUE_MAX, GroupCommitWriter
from parkgate_tools.lot.security import BRIDGE_ROLE, MAX_MESSAGE_BYTES, PRESENCE_LEVEL
from parkgate_tools.lot.store import LOCK_WAIT_S, open_store
from parkgate_tools.lot.tariff_in_use import is_newer, load_tariff, stored_tariff

__all__ = ["Bridge", "BadMessage", "CATCHUP_MAX_BYTES", "GROUP_BATCHES", "QUEUE_MAX",
           "load_tariff"]

log = logging.getLogger("parkgate.bridge")

KEEPALIVE_S = 30
RECONNECT_MIN_DELAY_S = 0.5
RECONNECT_MAX_DELAY_S = 8
# Gate and lot ids are letters, digits and "-", so this level is never a gate.
SYNC_LEVEL = BRIDGE_ROLE
# pg/<lot>/server/status: the lot server's presence, retained: {"on": 1, "t":
# unix seconds} while the bridge is live, {"on": 0} after it stopped (its
# own message) or died (its last will). "server" is therefore no gate id.
SERVER_LEVEL = PRESENCE_LEVEL
PRESENCE_OFFLINE = b'{"on":0}'
PRESENCE_STOP_WAIT_S = 2
SESSION_EXPIRY_S = 7 * 86400   # MQTT 5 workers: as long as the broker's queue is sized for


class Bridge:
    """Stores a lot's gate events exactly once, acks after commit, answers fee queries.

    db_path: a SQLite file or a ``postgresql://`` URL (store.open_store).
    store: a Store of this lot to use instead of opening db_path (tests
    inject one). The bridge's store is of its lot: it reads and writes that
    lot's rows only, so several lots' bridges may share one database.
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
    queue_max: at most this many messages held for the writer; while it
    holds that many the bridge stops taking (group_commit.py): what comes
    is dropped unacknowledged and counted in ``dropped``, and the gates
    keep it in their journals and send it again.

    Messages are handled in arrival order by one writer thread, which
    stores all the event batches waiting in ONE transaction (group commit)
    and acknowledges each only after that commit. Fee and catch-up queries
    are answered by that thread too, in order, after the events before them
    are stored: while the database stalls they wait with them (or are
    dropped once the queue is full), and the gates charge offline after
    their fee_timeout_ms. The forwarder reads and writes through a
    connection of its own (store.open_reader) while running, not the
    writer's.
    Fee queries that were queued by the broker while the bridge was away are
    not answered (their gates have long since charged offline, and request
    ids restart when a gate reboots): after each connect the bridge sends
    itself a sync message and answers fees only once it has come back.
    """

    def __init__(self, lot, broker_host, broker_port, db_path, tariff_path, client_id=None,
                 store=None, username=None, password=None, tls_ca=None, share_group=None,
                 upstream=None, upstream_token=None, forwarder_options=None,
                 group_batches=GROUP_BATCHES, lock_wait=LOCK_WAIT_S, queue_max=QUEUE_MAX,
                 clock=time.time):
        check_id("lot", lot)
        if share_group is not None:
            check_id("share_group", share_group)
        self.lot = lot
        self.clock = clock    # the lot server's time, given to gates that ask
        self.broker_host = broker_host
        self.broker_port = broker_port
        self.client_id = client_id or "parkgate-bridge-" + lot
        self.tariff = load_tariff(tariff_path)
        self._own_store = store is None
        self.store = open_store(db_path, lot, lock_wait) if store is None else store
        if self.store.lot != lot:
            raise ValueError("store: of lot %r, not of this bridge's lot %r"
                             % (self.store.lot, lot))
        self._use_tariff(stored_tariff(self.store))
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
                                       on_tariff=self._use_tariff,
                                       **(forwarder_options or {}))
        self._client = None
        self._sync_token = None
        self._live = threading.Event()
        self._writer = GroupCommitWriter(
            self.store, self._publish, self._answer, counts=self,
            outbox=self.forwarder is not None,
            on_outbox=self.forwarder.wake if self.forwarder is not None else None,
            group_batches=group_batches, queue_max=queue_max)
        self.batches = 0       # batches committed (and acknowledged)
        self.events = 0        # events in those batches
        self.commits = 0       # transactions that stored them
        self.refused = 0       # messages refused as malformed (or oversize)
        self.oversize = 0      # of those, payloads over MAX_MESSAGE_BYTES, never parsed
        self.failed = 0        # batches not stored because the store failed
        self.dropped = 0       # messages not taken: the writer held queue_max (unacknowledged)
        self.catchups = 0      # catch-up pages sent
        self._presence_topic = self._prefix + SERVER_LEVEL + "/status"
        if share_group is not None:
            # Every worker hears the presence topic (not shared), so that a
            # live one puts "on" back after another worker's last will.
            self._filters.append(self._presence_topic)
        self._stopping = False

    def _use_tariff(self, table):
        """Answer fees from table from now on if it is newer than the one in
        use (tariff_in_use.is_newer): at start a table taken from the
        central server before, later each one the forwarder takes."""
        if table is not None and is_newer(table, self.tariff):
            self.tariff = table
            log.info("fees now from tariff version %s", table.version)

    # ---- life cycle ----

    def start(self):
        """Connect in the background; reconnects by itself until stop().
        Once live, publishes the retained presence {"on": 1, "t": now} on
        pg/<lot>/server/status; its last will there is {"on": 0}."""
        self._stopping = False
        self._writer.start("bridge-writer-" + self.client_id)
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
            self.forwarder.store = self.store.open_reader()   # its own connection
            self.forwarder.start()

    def wait_live(self, timeout=10):
        """Wait until connected, subscribed and past the broker's backlog;
        True if so within timeout seconds."""
        return self._live.wait(timeout)

    @property
    def queue_held(self):
        """(messages held for the writer now, the most held at once, queue_max)."""
        writer = self._writer
        return writer.held, writer.held_peak, writer.queue_max

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
        self._writer.stop()
        if self.forwarder is not None:
            self.forwarder.stop()
            if self.forwarder.store is not self.store:
                self.forwarder.store.close()
                self.forwarder.store = self.store
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
        handler(gate, gate_messages.gate_message(gate, payload))

    def _on_events(self, gate, message):
        self._writer.events(gate, *gate_messages.events_batch(gate, message))

    def _on_fee(self, gate, message):
        # Whether it was queued by the broker is known only now, in order
        # with the sync message.
        self._writer.query("fee", gate, gate_messages.fee_query(message), self._live.is_set())

    def _on_clock(self, gate, message):
        """Answer a gate's time request at once (the gate judges the round
        trip); one queued by the broker while the bridge was away is stale."""
        request = gate_messages.clock_request(message)
        if self._live.is_set():
            self._publish(gate, "down/clock", {"r": request, "t": int(self.clock())})

    def _on_status(self, gate, message):
        self._writer.status(gate, message)

    def _on_catchup(self, gate, message):
        """A lane's request for the open sessions it missed: checked here,
        answered by the writer thread in order (after the batches before it
        are stored)."""
        self._writer.query("catchup", gate, gate_messages.catchup_request(message),
                           self._live.is_set())

    def _publish_presence(self):
        client = self._client
        if client is not None:
            client.publish(self._presence_topic, compact({"on": 1, "t": int(self.clock())}),
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

    # ---- answers (the writer thread, in order) ----

    def _answer(self, kind, gate, args, live):
        """A fee or catch-up query of gate; one queued by the broker while the
        bridge was away (not live) is not answered: its gate has long since
        charged offline or asked again, and request ids restart at a reboot."""
        if not live:
            log.info("%s query gate=%s r=%r not answered: queued while the bridge was away",
                     kind, gate, args[0])
        elif kind == "fee":
            self._publish(gate, "down/fee", answers.fee_answer(self.store, self.tariff, gate,
                                                               *args))
        else:
            payload = answers.catchup_page(self.store, gate, *args)
            self.catchups += 1
            self._publish_raw(gate, "down/catchup", payload)

    def _publish_raw(self, gate, leaf, payload):
        client = self._client
        if client is not None:
            client.publish(self._prefix + gate + "/" + leaf, payload, qos=0)

    def _publish(self, gate, leaf, obj):
        self._publish_raw(gate, leaf, compact(obj))
