"""The lot server bounded under load: a database that stalls while gates keep
sending (the bridge's ingest queue stays within its bound, fees come from
the gates' offline path, every event is stored once afterwards, the page
still answers), and the bounds on PostgreSQL sessions (lock_timeout,
statement_timeout, connect_timeout, keepalives)."""
import socket
import sqlite3
import threading
import time

import psycopg
import pytest

from fixtures_mqtt import wait_for
from parkgate import tariff
from parkgate_tools.lot.bridge import Bridge
from parkgate_tools.lot.operator_page import OperatorPage
from parkgate_tools.lot.store import DatabaseLocked, PgStore, Store
from parkgate_tools.sim.gate import DEFAULT_TARIFF
from parkgate_tools.sim.loadgen import LoadGen
from web_client import logged_in

LOT = "st"
QUEUE_MAX = 16        # messages the bridge may hold for its writer (the bound under test)
LOCK_WAIT_S = 4.0     # the bridge's wait for the locked database, per commit
STALL_S = 12.0        # how long another connection holds the write lock
LOAD_GATES, LOAD_EVENTS = 30, 60


def test_a_stalled_database_under_load(sim_lot, caplog):
    """Another connection holds the SQLite write lock for STALL_S while 30
    simulated gates send 1,800 events and two firmware gates let cars in
    and out. The bridge holds at most QUEUE_MAX messages (it drops the rest
    unacknowledged), the exits during the stall are charged by the exit
    gate's offline path (no answer within fee_timeout_ms), the page
    answers at once from its own connection, and afterwards every event is
    stored exactly once and fees are answered online again."""
    lot = sim_lot(LOT, rate=60, bridge=False)
    lot.bridge = Bridge(LOT, lot.broker.host, lot.broker.port, lot.db, DEFAULT_TARIFF,
                        queue_max=QUEUE_MAX, lock_wait=LOCK_WAIT_S, clock=lot.clock.now)
    lot.bridge.start()
    assert lot.bridge.wait_live(10)
    page = OperatorPage(lot.bridge.store, LOT, lambda: lot.bridge.tariff,
                        clock=lot.clock.now).start()
    try:
        reader = logged_in(page, lot.bridge.store, "att", "attendant")
        entry_gate, exit_gate = lot.gate("s-in", "in"), lot.gate("s-out", "out")
        exit_gate.wait_line(r"LINK up", 10)
        entry_gate.send_plate("京A00001")
        lot.wait_stored("s-in", 1)
        time.sleep(0.5)                          # the exit lane hears the entry

        holder = sqlite3.connect(lot.db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")       # the stall: the write lock, held
        stalled_at = time.monotonic()
        load = LoadGen(lot.broker.host, lot.broker.port, LOT, gates=LOAD_GATES,
                       events_per_gate=LOAD_EVENTS, prefix="lg", ack_timeout=1.0,
                       ack_timeout_max=2.0)
        report = {}
        runner = threading.Thread(target=lambda: report.update(load.run(timeout=90)))
        runner.start()
        entry_gate.send_plate("京B00002")
        entry_gate.wait_line(r"EVENT in seq=2", 5)
        time.sleep(2.5)
        asked_at = time.monotonic()
        summary = reader.get_json("api/summary")   # not behind the writer
        page_s = time.monotonic() - asked_at
        for seq, plate in enumerate(("京A00001", "京B00002"), 1):
            exit_gate.send_plate(plate)
            exit_gate.wait_line(r"EVENT out seq=%d" % seq, 10)
        held_during = lot.bridge.queue_held
        assert time.monotonic() - stalled_at < STALL_S, "the exits came after the stall"
        wait_for(lambda: time.monotonic() - stalled_at >= STALL_S, STALL_S + 1, "the stall")
        holder.rollback()
        holder.close()

        runner.join(100)
        assert report["complete"], report
        entry_gate.send_plate("京C00003")       # a fee answer again once the store is back
        entry_gate.wait_line(r"EVENT in seq=3", 5)
        time.sleep(0.5)
        exit_gate.send_plate("京C00003")
        exit_gate.wait_line(r"EVENT out seq=3", 10)
        lot.wait_stored("s-in", 3, 30)
        lot.wait_stored("s-out", 3, 30)
    finally:
        page.stop()

    # Memory: never more than QUEUE_MAX messages held, though the stall
    # lasted long enough for several times that many to come.
    held, peak, bound = lot.bridge.queue_held
    assert bound == QUEUE_MAX and peak <= QUEUE_MAX and held_during[1] <= QUEUE_MAX
    assert lot.bridge.dropped > QUEUE_MAX, "the stall never filled the queue"
    # Commits gave up after LOCK_WAIT_S (of batches, counted in failed, or of
    # statuses only: which the stalled transactions held depends on timing)
    assert lot.bridge.failed > 0 or any("not stored, not acknowledged" in r.getMessage()
                                        for r in caplog.records), "no commit gave up"
    # Behind the writer it would wait out a LOCK_WAIT_S attempt (5.5 s when tried).
    assert page_s < LOCK_WAIT_S / 2, "the page waited %.1f s behind the stalled writer" % page_s
    assert summary["lot"] == LOT
    # Fees during the stall: the exit gate's own tariff; after it: the bridge's.
    table = tariff.loads(open(DEFAULT_TARIFF, encoding="utf-8").read())
    entries = {e["plate"]: e["t"] for e in entry_gate.events()}
    exits = exit_gate.events()
    assert [(e["plate"], e["src"]) for e in exits] == [
        ("京A00001", "off"), ("京B00002", "off"), ("京C00003", "on")]
    assert len(exit_gate.lines(r"FEE offline plate=.*: fee timeout")) == 2
    for e in exits:
        assert e["et"] == entries[e["plate"]]
        assert e["fee"] == tariff.quote(table, entries[e["plate"]], e["t"]).fee
    # Exactly once: every event of every gate, no gap, no duplicate.
    summary = lot.bridge.store.summary()
    expected = LOAD_GATES * LOAD_EVENTS + 3 + 3
    assert summary["rows"] == summary["identities"] == expected
    assert all(j["missing"] == 0 for j in summary["journals"])
    assert summary["per_gate"]["s-out"] == {"in": 0, "out": 3}


def test_postgresql_sessions_are_bounded(pg_server):
    """Each session has a lock_timeout of lock_wait, a statement_timeout
    and keepalives; a table lock held past lock_wait fails the write with
    DatabaseLocked (rolled back, nothing stored), while the page's own
    session reads on."""
    name = "stall_%d" % int(time.time() * 1000)
    url = pg_server.create_database(name)
    store = PgStore(url, LOT, lock_wait=1.5)
    reader = store.open_reader()
    try:
        db = store._db
        assert db.execute("SHOW lock_timeout").fetchone()[0] == "1500ms"
        assert db.execute("SHOW statement_timeout").fetchone()[0] == "30s"
        assert db.execute("SHOW idle_in_transaction_session_timeout").fetchone()[0] == "1min"
        parameters = db.info.get_parameters()
        assert (parameters["connect_timeout"], parameters["keepalives"],
                parameters["keepalives_idle"]) == ("10", "1", "30")
        with psycopg.connect(url) as holder:
            holder.execute("LOCK TABLE gates IN EXCLUSIVE MODE")    # writes wait, reads not
            started = time.monotonic()
            with pytest.raises(DatabaseLocked, match="locked by another session"):
                store.record_status("in-1", {"on": 1})
            assert 1.4 < time.monotonic() - started < 5
            assert reader.statuses() == {}
        store.record_status("in-1", {"on": 1})
        assert list(reader.statuses()) == ["in-1"]
    finally:
        reader.close()
        store.close()
        pg_server.drop_database(name)


def test_a_postgresql_server_that_never_answers_is_given_up_on():
    """connect_timeout (a URL's own value wins over the store's 10 s)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)       # takes the connection, never says a word
    try:
        url = "postgresql://nobody@127.0.0.1:%d/lot?connect_timeout=2" % (
            silent.getsockname()[1])
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            PgStore(url, LOT)
        assert time.monotonic() - started < 6
    finally:
        silent.close()


def test_the_sqlite_reader_reads_while_another_connection_writes(tmp_path):
    """open_reader: WAL, so a read neither waits for a held write lock nor
    for the writer store's own lock."""
    store = Store(str(tmp_path / "lot.sqlite"), LOT, lock_wait=0.5)
    reader = store.open_reader()
    holder = sqlite3.connect(store.path, isolation_level=None)
    try:
        assert reader._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        store.record_status("in-1", {"on": 1})
        holder.execute("BEGIN IMMEDIATE")
        with store._lock:                       # the writer busy in a transaction
            started = time.monotonic()
            assert list(reader.statuses()) == ["in-1"]
            assert time.monotonic() - started < 0.5
        with pytest.raises(DatabaseLocked):
            store.record_status("in-2", {"on": 1})
    finally:
        holder.close()
        reader.close()
        store.close()


def test_the_page_stays_small_and_shares_its_snapshots(tmp_path):
    """A day of 250 flagged exits lists the latest FLAGGED_SHOWN (all are
    counted); readers that ask together get one snapshot, worked out in the
    page's own process."""
    from parkgate import record
    from parkgate_tools.lot.operator_page import FLAGGED_SHOWN
    from parkgate_tools.sim.loadgen import START_TIME
    store = Store(str(tmp_path / "lot.sqlite"), LOT)
    store.ingest("out-1", 1, [record.Event(
        record.KIND_EXIT, START_TIME + seq, 5, "京A%05d" % seq, 0, 90, record.FLAG_NO_ENTRY,
        2000, record.FEE_OFFLINE, 1, 0, seq=seq) for seq in range(1, 251)])
    page = OperatorPage(store, LOT, lambda: None, clock=lambda: START_TIME + 3600).start()
    try:
        shots = []
        readers = [threading.Thread(target=lambda: shots.append(page.snapshot()))
                   for _ in range(4)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(30)
        assert len(shots) == 4 and len({id(shot) for shot in shots}) <= 2
        shot = shots[0]
        assert (len(shot["flagged"]), shot["flagged_total"], shot["open_flags"]) == (
            FLAGGED_SHOWN, 250, 250)
        assert shot["flagged"][-1]["seq"] == 250
        assert page._worker.proc.poll() is None          # the page's own process
    finally:
        page.stop()
        store.close()
