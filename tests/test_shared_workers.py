"""Two bridge workers share a lot through an MQTT 5 shared subscription
($share/<group>/pg/<lot>/+/up/#) on a secured broker: simulated gates
(the load generator, each with its own credentials) retransmit often, so the
same batch reaches both workers; every event is stored exactly once (the
primary key), nothing is lost, and both workers did part of the work. On
SQLite and on PostgreSQL."""
from fixtures_mqtt import backend, db_path, pg_server  # noqa: F401 (fixtures)
from fixtures_mqtt import LOT, TARIFF, WAIT_S, fetch_all
from parkgate_tools.bridge import Bridge
from parkgate_tools.broker import Broker
from parkgate_tools.loadgen import LoadGen

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
