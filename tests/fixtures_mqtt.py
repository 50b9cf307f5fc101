"""Shared test fixtures: a real mosquitto on a free port (Broker), a lot
bridge on it, fake gates (raw paho clients), and the lot's database on
either backend: ``db_path`` is parametrized over SQLite and PostgreSQL (a
throwaway cluster started once per session by parkgate_tools.sim.pgserver, a
fresh database per test). conftest.py gives these fixtures to every test
module; the helpers (wait_for, FakeGate, entry, exit_, fetch_all, ...) are
imported from here."""
import json
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest

from parkgate import record
from parkgate_tools.lot.bridge import Bridge
from parkgate_tools.sim.broker import Broker
from parkgate_tools.sim.gate import DEFAULT_TARIFF
from parkgate_tools.sim.pgserver import PgServer
from parkgate_tools.sim.waiting import wait_until
from parkgate_tools.lot.store import PgStore, Store

LOT = "lot1"
TARIFF = DEFAULT_TARIFF
WAIT_S = 10
BACKENDS = ("sqlite", "postgresql")


def wait_for(predicate, timeout=WAIT_S, what="condition"):
    """Poll predicate until true; AssertionError naming what after timeout."""
    return wait_until(predicate, timeout, what, every=0.01, error=AssertionError)


def entry(seq, plate, t, colour=0):
    """The wire dict of an entry event."""
    return record.to_wire(record.Event(record.KIND_ENTRY, t, 5, plate, colour, 90, seq=seq))


def exit_(seq, plate, t, fee, source=record.FEE_ONLINE, entry_time=0, colour=0, flags=0):
    """The wire dict of an exit event."""
    return record.to_wire(record.Event(record.KIND_EXIT, t, 5, plate, colour, 90, flags, fee,
                                       source, 1, entry_time, seq=seq))


class FakeGate:
    """A raw paho client speaking for gate `gate`: publishes at QoS 0 like
    umqtt.simple and records every message on its own down/ topics."""

    def __init__(self, broker, lot, gate, credentials=None, tls_ca=None, wait=True):
        self.prefix = "pg/%s/%s/" % (lot, gate)
        self.gate = gate
        self._messages = []   # (leaf, payload bytes), in arrival order
        self.topics = []      # the full topic of every message received
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id="fake-%s-%s" % (gate, uuid.uuid4().hex[:8]))
        if credentials is not None:
            self.client.username_pw_set(*credentials)
        if tls_ca is not None:
            self.client.tls_set(ca_certs=tls_ca)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(self.prefix + "down/#", 0)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_disconnect = lambda c, u, f, rc, p: self._subscribed.clear()
        self.client.on_message = self._on_message
        self.client.connect_async(broker.host, broker.port, keepalive=10)
        self.client.loop_start()
        if wait:
            self.wait_connected()

    def wait_connected(self, timeout=WAIT_S):
        assert self._subscribed.wait(timeout), "fake gate %s did not subscribe" % self.gate

    def _on_message(self, client, userdata, message):
        self.topics.append(message.topic)
        with self._cond:
            self._messages.append((message.topic[len(self.prefix):], message.payload))
            self._cond.notify_all()

    def publish(self, leaf, payload, retain=False):
        """Publish payload (a dict is sent as JSON, bytes as they are) on
        the gate's leaf topic, e.g. "up/events"."""
        if not isinstance(payload, bytes):
            payload = json.dumps(payload)
        self.client.publish(self.prefix + leaf, payload, qos=0, retain=retain)

    def received(self, leaf):
        """Payloads received so far on the leaf topic, oldest first."""
        with self._cond:
            return self._received(leaf)

    def expect(self, leaf, count=1, timeout=WAIT_S):
        """Wait until `count` messages have arrived on leaf; returns them all."""
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self._received(leaf)) >= count, timeout)
            got = self._received(leaf)
        assert ok, "%s: %d of %d messages on %s: %r" % (self.gate, len(got), count, leaf, got)
        return got

    def _received(self, leaf):
        return [payload for got, payload in self._messages if got == leaf]

    def send_until_answered(self, leaf, payload, reply_leaf, timeout=WAIT_S, every=0.5):
        """Publish payload every `every` seconds, as a gate retransmits,
        until a new message arrives on reply_leaf; returns that message."""
        before = len(self.received(reply_leaf))
        deadline = time.monotonic() + timeout
        while True:
            self.publish(leaf, payload)
            with self._cond:
                if self._cond.wait_for(lambda: len(self._received(reply_leaf)) > before,
                                       every):
                    return self._received(reply_leaf)[before]
            if time.monotonic() > deadline:
                raise AssertionError("%s: no answer on %s within %ss" % (
                    self.gate, reply_leaf, timeout))

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path):
    """A mosquitto on a free port with its files in tmp_path/broker."""
    with Broker(str(tmp_path / "broker")) as running:
        yield running


_PG = {}


def shared_pg_server():
    """The session's PostgreSQL cluster, started on first use."""
    if "server" not in _PG:
        _PG["server"] = PgServer().start()
    return _PG["server"]


@pytest.fixture(scope="session")
def pg_server():
    """A throwaway PostgreSQL cluster for the whole session (the same one
    whichever module imports this fixture)."""
    yield shared_pg_server()
    server = _PG.pop("server", None)
    if server is not None:
        server.stop()


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each test that uses it runs once per store backend."""
    return request.param


@pytest.fixture
def db_path(backend, tmp_path, request):
    """The lot database: a SQLite file, or the URL of a new PostgreSQL database."""
    if backend == "sqlite":
        yield str(tmp_path / "lot.sqlite")
        return
    server = request.getfixturevalue("pg_server")
    name = "t_" + uuid.uuid4().hex[:16]
    url = server.create_database(name)
    yield url
    server.drop_database(name)


def is_pg(db):
    """True if db is a PostgreSQL URL."""
    return db.startswith("postgresql://")


def store_class(db):
    """Store or PgStore, whichever opens db."""
    return PgStore if is_pg(db) else Store


def fetch_all(db, sql, params=()):
    """Rows of a query (?-placeholders) run on its own connection to db."""
    if is_pg(db):
        import psycopg
        with psycopg.connect(db) as con:
            return [tuple(r) for r in con.execute(sql.replace("?", "%s"), params).fetchall()]
    import sqlite3
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


@pytest.fixture
def make_bridge(broker, db_path):
    """Factory: a started, live Bridge of LOT (keyword args go to Bridge)."""
    started = []

    def make(**kwargs):
        kwargs.setdefault("tariff_path", TARIFF)
        bridge = Bridge(LOT, broker.host, broker.port, db_path, **kwargs)
        bridge.start()
        started.append(bridge)
        assert bridge.wait_live(WAIT_S), "bridge did not go live"
        return bridge

    yield make
    for bridge in started:
        bridge.stop()


@pytest.fixture
def bridge(make_bridge):
    """A live Bridge of LOT on the test's broker and database."""
    return make_bridge()


@pytest.fixture
def gates(broker):
    """Factory: gates(name) -> a connected FakeGate of LOT."""
    made = []

    def make(name):
        gate = FakeGate(broker, LOT, name)
        made.append(gate)
        return gate

    yield make
    for gate in made:
        gate.close()
