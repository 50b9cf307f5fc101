"""Two bridge workers share a lot through an MQTT 5 shared subscription
($share/<group>/pg/<lot>/+/up/#) on a secured broker: simulated gates
(the load generator, each with its own credentials) retransmit often, so the
same batch reaches both workers; every event is stored exactly once (the
primary key), nothing is lost, and both workers did part of the work. On
SQLite and on PostgreSQL. A worker started while another holds the SQLite
write lock waits for it and goes live."""
import threading

from fixtures_mqtt import backend, broker, db_path, pg_server  # noqa: F401 (fixtures)
from fixtures_mqtt import LOT, TARIFF, WAIT_S, FakeGate, entry, fetch_all, wait_for
from parkgate_tools.bench.bridge import Worker
from parkgate_tools.lot.bridge import Bridge
from parkgate_tools.sim.broker import Broker
from parkgate_tools.sim.loadgen import LoadGen
from parkgate_tools.lot.store import Store

GATES = 40
EVENTS = 60


def test_two_workers_store_every_event_once(tmp_path, db_path):
    broker = Broker(str(tmp_path / "broker"), lot=LOT, gates=[])
    load = LoadGen(broker.host, broker.port, LOT, gates=GATES, events_per_gate=EVENTS,
                   credentials=broker.credentials, ack_timeout=0.05, ack_timeout_max=0.2)
    broker.gates = load.names
    broker.start()
    user, password = broker.bridge_credentials()
    workers = [Bridge(LOT, broker.host, broker.port, db_path, TARIFF,
                      client_id="parkgate-bridge-%s-%d" % (LOT, i), username=user,
                      password=password, share_group="workers") for i in range(2)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            assert worker.wait_live(WAIT_S), "worker %s not live" % worker.client_id
        report = load.run(timeout=60)
        assert report["complete"], report
        assert report["retransmits"] > 0, "the test wants retransmitted batches"
        summary = workers[0].store.summary()
        assert summary["rows"] == summary["identities"] == GATES * EVENTS
        assert len(summary["journals"]) == GATES
        assert all(j["count"] == EVENTS and j["missing"] == 0 for j in summary["journals"])
        rows = fetch_all(db_path, "SELECT COUNT(*), COUNT(DISTINCT plate) FROM events")
        assert rows[0][0] == GATES * EVENTS
        stored_batches = [w.batches for w in workers]
        assert all(n > 0 for n in stored_batches), stored_batches
        # more batches were stored than needed: the retransmissions, each
        # stored once whichever worker got it
        assert sum(stored_batches) >= report["batches"] - GATES
        assert sum(w.failed for w in workers) == 0
    finally:
        for worker in workers:
            worker.stop()
        broker.stop()


class HoldingStore(Store):
    """A SQLite Store whose commit, once hold is set, waits with its write
    transaction open (the events inserted) until release is set."""

    def __init__(self, path, lot):
        self.hold = False
        self.holding = threading.Event()
        self.release = threading.Event()
        super().__init__(path, lot)

    def _commit(self):
        if self.hold:
            self.hold = False
            self.holding.set()
            self.release.wait(3 * WAIT_S)
        super()._commit()


def test_a_worker_started_during_a_write_waits_for_the_lock(broker, tmp_path):  # noqa: F811
    """The first worker holds a write transaction open on the SQLite file
    (a batch inserted, not committed) while a second `parkgate bridge`
    starts: the second logs the lock and retries instead of exiting, goes
    live once the first commits, and then both store the load, every event
    once."""
    db = str(tmp_path / "lot.sqlite")
    store = HoldingStore(db, LOT)
    first = Bridge(LOT, broker.host, broker.port, db, TARIFF,
                   client_id="parkgate-bridge-%s-0" % LOT, share_group="workers", store=store)
    gate = second = None
    try:
        first.start()
        assert first.wait_live(WAIT_S), "first worker not live"
        gate = FakeGate(broker, LOT, "in-1")
        store.hold = True
        held = [entry(seq, "京A%05d" % seq, 1795564800 + seq) for seq in (1, 2, 3)]
        gate.publish("up/events", {"g": "in-1", "j": 7, "e": held})
        assert store.holding.wait(WAIT_S), "the first worker did not start its transaction"

        second = Worker(LOT, broker, db, 1, share="workers", extra=["-v", "--lock-wait", "30"],
                        client_id="parkgate-bridge-%s-1" % LOT)
        wait_for(lambda: second.logged("is locked (creating the schema): attempt 2")
                 or second.proc.poll() is not None, what="the second worker to retry the lock")
        assert second.proc.poll() is None, "".join(second.lines)
        assert not second.logged("live:")
        assert gate.received("down/ack") == []
        store.release.set()

        assert gate.expect("down/ack") == [b'{"j":7,"f":1,"l":3}']
        wait_for(lambda: second.logged("live:") or second.proc.poll() is not None,
                 what="the second worker to go live")
        assert second.logged("live:") and second.proc.poll() is None, "".join(second.lines)

        load = LoadGen(broker.host, broker.port, LOT, gates=10, events_per_gate=30,
                       ack_timeout=0.2, ack_timeout_max=1.0)
        report = load.run(timeout=60)
        assert report["complete"], report
        summary = store.summary()
        assert summary["rows"] == summary["identities"] == 3 + 10 * 30
        assert len(summary["journals"]) == 11
        assert all(j["missing"] == 0 for j in summary["journals"])
        assert fetch_all(db, "SELECT seq FROM events WHERE gate = 'in-1' ORDER BY seq") == [
            (1,), (2,), (3,)]
        assert first.batches > 0 and first.failed == 0
        assert second.logged("batch gate="), "the second worker stored nothing"
        assert not second.logged("not stored"), "".join(second.lines)
    finally:
        store.release.set()
        if second is not None:
            second.stop()
        if gate is not None:
            gate.close()
        first.stop()
        store.close()
