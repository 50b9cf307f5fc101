"""The store's methods on SQLite and on PostgreSQL, same schema, same
answers: group commits, the outbox, corrections, members, settings, the
operator page's queries, and two stores (two workers) writing one database.
On SQLite only: waiting, logged and bounded, for a lock another connection
holds. (Databases made before: test_store_upgrades.py; accounts and the
audit log: test_store_accounts.py.)"""
import logging
import sqlite3
import threading

import pytest

from fixtures_mqtt import backend, db_path, pg_server  # noqa: F401 (fixtures)
from fixtures_mqtt import LOT, WAIT_S, entry, exit_, fetch_all, store_class, wait_for
from parkgate import record
from parkgate_tools.lot.store import DatabaseLocked, PgStore, Store, open_store

T0 = 1795564800


def ev(wire):
    return record.from_wire(wire)


@pytest.fixture
def store(db_path):
    opened = store_class(db_path)(db_path, LOT)
    yield opened
    opened.close()


def test_open_store_picks_the_backend(db_path):
    opened = open_store(db_path, LOT)
    try:
        assert isinstance(opened, PgStore if db_path.startswith("postgresql://") else Store)
        assert opened.backend == ("postgresql" if isinstance(opened, PgStore) else "sqlite")
    finally:
        opened.close()


def test_group_commit_stores_each_identity_once(store, db_path):
    batches = [("in-1", 1, [ev(entry(s, "A%d" % s, T0 + s)) for s in (1, 2, 3)]),
               ("in-1", 1, [ev(entry(s, "A%d" % s, T0 + s)) for s in (2, 3, 4)]),   # overlap
               ("out-1", 9, [ev(exit_(1, "A1", T0 + 99, 300))])]
    counts = store.ingest_many(batches, statuses=[("in-1", {"on": 1}), ("in-1", {"on": 0})],
                               outbox=True)
    assert counts == [3, 1, 1]
    assert store.ingest_many(batches) == [0, 0, 0]
    assert fetch_all(db_path, "SELECT gate, jid, seq FROM events ORDER BY gate, jid, seq") == [
        ("in-1", 1, 1), ("in-1", 1, 2), ("in-1", 1, 3), ("in-1", 1, 4), ("out-1", 9, 1)]
    assert store.statuses()["in-1"][0] == {"on": 0}


def test_a_failed_group_stores_nothing(store, db_path):
    store.ingest("in-1", 1, [ev(entry(1, "A1", T0))])
    bad = record.Event(record.KIND_ENTRY, T0, 5, "B1", seq=2)
    bad.quality = "not a number" if store.backend == "postgresql" else None   # NOT NULL / type
    with pytest.raises(Exception):
        store.ingest_many([("in-1", 1, [ev(entry(3, "A3", T0))]), ("in-1", 1, [bad])],
                          outbox=True)
    assert fetch_all(db_path, "SELECT seq FROM events") == [(1,)]
    assert store.outbox_pending() == []
    assert store.ingest("in-1", 1, [ev(entry(3, "A3", T0))]) == (3, 3, 1)   # still usable


def test_outbox_holds_new_rows_until_marked_forwarded(store):
    store.ingest("in-1", 1, [ev(entry(s, "A%d" % s, T0 + s)) for s in (1, 2, 3)], outbox=True)
    store.ingest("in-1", 1, [ev(entry(3, "A3", T0 + 3))], outbox=True)    # not new: not again
    store.ingest("in-1", 1, [ev(entry(4, "A4", T0 + 4))])                 # outbox off
    pending = store.outbox_pending()
    assert [(r["gate"], r["jid"], r["seq"]) for r in pending] == [
        ("in-1", 1, 1), ("in-1", 1, 2), ("in-1", 1, 3)]
    assert pending[0]["plate"] == "A1" and pending[0]["quality"] == 5
    assert store.outbox_pending(limit=2) == pending[:2]
    store.mark_forwarded(identities=[("in-1", 1, 1), ("in-1", 1, 2)])
    assert [r["seq"] for r in store.outbox_pending()] == [3]
    assert store.outbox_backlog() == 1


def test_corrections_are_rows_of_their_own(store, db_path):
    store.ingest("out-1", 2, [ev(exit_(1, "A1", T0, 2000, flags=1))])
    correction = store.add_correction("out-1", 2, 1, "refunded", 1500, "entry found by hand",
                                      "ann")
    with pytest.raises(ValueError):
        store.add_correction("out-1", 2, 99, "refunded", 1, "", "ann")   # no such event
    with pytest.raises(ValueError):
        store.add_correction("out-1", 2, 1, "deleted", 1, "", "ann")     # no such action
    assert [(c["id"], c["action"], c["amount"]) for c in store.corrections()] == [
        (correction, "refunded", 1500)]
    assert fetch_all(db_path, "SELECT fee, flags FROM events") == [(2000, 1)]   # untouched
    assert [c["id"] for c in store.corrections_pending()] == [correction]
    store.mark_forwarded(corrections=[correction])
    assert store.corrections_pending() == []


def test_members_and_settings(store):
    store.replace_members([{"p": "A1", "name": "x", "from": T0, "until": T0 + 100},
                           {"p": "B2"}])
    assert store.is_member("A1", T0 + 50) and not store.is_member("A1", T0 + 100)
    assert store.is_member("B2", T0) and not store.is_member("C3", T0)
    store.replace_members([{"p": "C3"}])
    assert not store.is_member("B2", T0) and store.is_member("C3", T0)
    assert store.setting("tariff") is None
    store.set_setting("tariff", "{}")
    store.set_setting("tariff", "{\"v\": 2}")
    assert store.setting("tariff") == "{\"v\": 2}"


def test_page_queries(store):
    store.ingest("in-1", 1, [ev(entry(1, "A1", T0)), ev(entry(2, "B2", T0 + 10)),
                             ev(entry(3, "A1", T0 + 500))])
    store.ingest("out-1", 2, [ev(exit_(1, "A1", T0 + 100, 100, entry_time=T0)),
                              ev(exit_(2, "C3", T0 + 200, 2000, record.FEE_OFFLINE, flags=1)),
                              ev(exit_(3, "M4", T0 + 300, 0, record.FEE_OFFLINE, flags=4))])
    assert store.inside_at(T0 + 50) == {"A1", "B2"}
    assert store.inside_at(T0 + 150) == {"B2"}
    assert store.inside_at(T0 + 600) == {"A1", "B2"}
    exits = store.exits_with_entries(T0, T0 + 1000)
    assert [(x["plate"], x["stored_entry"]) for x in exits] == [
        ("A1", T0), ("C3", None), ("M4", None)]
    assert [e["seq"] for e in store.events_between(T0 + 10, T0 + 200)] == [2, 1]
    # bit 2 (a member, no fee) is not a flag for the operator
    assert [(f["gate"], f["flags"]) for f in store.flagged()] == [("out-1", 1)]


def test_two_stores_write_one_database_concurrently(db_path):
    """Two workers' stores on one database, overlapping batches: every
    identity once, nothing lost."""
    cls = store_class(db_path)
    stores = [cls(db_path, LOT), cls(db_path, LOT)]
    errors = []

    def work(store, offset):
        try:
            for first in range(1, 200, 8):
                events = [ev(entry(s, "P%d" % s, T0 + s)) for s in range(first, first + 8)]
                store.ingest_many([("in-1", 1, events), ("w-%d" % offset, 1, events)],
                                  outbox=True)
        except Exception as exc:   # noqa: BLE001 (reported below)
            errors.append(exc)
    threads = [threading.Thread(target=work, args=(s, i)) for i, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert errors == []
        summary = stores[0].summary()
        assert summary["rows"] == summary["identities"] == 3 * 200
        assert stores[0].outbox_backlog() == 3 * 200
    finally:
        for store in stores:
            store.close()


def hold_write_lock(path):
    """A plain connection to the SQLite file holding its write lock."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    return con


def test_opening_a_new_file_waits_for_the_write_lock(tmp_path, caplog):
    """Two workers starting on a new file: the one that finds the other
    switching it to WAL fails at once inside SQLite (no busy wait there),
    so the store retries, logs it, and opens once the lock is free."""
    caplog.set_level(logging.WARNING, logger="parkgate.store")
    path = str(tmp_path / "new.sqlite")
    holder = hold_write_lock(path)
    opened, errors = [], []

    def open_it():
        try:
            opened.append(Store(path, LOT, lock_wait=WAIT_S))
        except Exception as exc:   # noqa: BLE001 (reported below)
            errors.append(exc)
    thread = threading.Thread(target=open_it)
    thread.start()
    try:
        wait_for(lambda: "is locked (opening it): attempt 2" in caplog.text or errors,
                 what="the store to retry")
        assert errors == [] and opened == []
    finally:
        holder.rollback()
        holder.close()
        thread.join(WAIT_S)
    assert errors == [] and len(opened) == 1
    store = opened[0]
    try:
        assert fetch_all(path, "PRAGMA journal_mode") == [("wal",)]
        assert store.ingest("in-1", 1, [ev(entry(1, "A1", T0))]) == (1, 1, 1)
    finally:
        store.close()
    assert path in caplog.text


def test_a_lock_held_past_lock_wait_is_named(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="parkgate.store")
    path = str(tmp_path / "lot.sqlite")
    store = Store(path, LOT, lock_wait=1.5)
    holder = hold_write_lock(path)
    try:
        with pytest.raises(DatabaseLocked) as raised:
            Store(path, LOT, lock_wait=1.5)
        text = str(raised.value)
        assert path in text and "locked by another connection (creating the schema)" in text
        with pytest.raises(DatabaseLocked, match="locked by another connection"):
            store.ingest("in-1", 1, [ev(entry(1, "A1", T0))])
        assert "(writing): attempt 1, retrying" in caplog.text
    finally:
        holder.rollback()
        holder.close()
    try:
        assert store.ingest("in-1", 1, [ev(entry(1, "A1", T0))]) == (1, 1, 1)
    finally:
        store.close()
    with pytest.raises(ValueError):
        Store(path, LOT, lock_wait=-1)


# ---- sessions: the record flags FLAG_NO_PASSAGE and FLAG_REPLAY ----

NO_PASSAGE = record.FLAG_NO_PASSAGE
REPLAY = record.FLAG_REPLAY


def flagged_entry(seq, plate, t, flags):
    return ev(dict(entry(seq, plate, t), fl=flags))


def test_a_no_passage_entry_voids_the_entry_of_its_gate_plate_and_time(store, db_path):
    store.ingest("in-1", 1, [ev(entry(1, "A1", T0)), ev(entry(2, "B2", T0 + 5)),
                             ev(entry(3, "C3", T0 + 7))])
    void = [flagged_entry(4, "A1", T0, NO_PASSAGE),        # voids in-1's A1 at T0
            flagged_entry(5, "B2", T0 + 6, NO_PASSAGE),    # another time: voids nothing
            flagged_entry(6, "D4", T0 + 8, NO_PASSAGE)]    # no entry to void: opens nothing
    assert store.ingest("in-1", 1, void) == (4, 6, 3)
    assert store.ingest("in-1", 1, void) == (4, 6, 0)      # stored once, like every event
    store.ingest("in-2", 1, [flagged_entry(1, "C3", T0 + 7, NO_PASSAGE)])   # another gate
    assert fetch_all(db_path, "SELECT COUNT(*) FROM events") == [(7,)]
    assert store.inside_at(T0 + 100) == {"B2", "C3"}
    assert store.open_entry("A1", T0 + 100) is None
    assert store.open_entry("D4", T0 + 100) is None
    assert store.open_entry("C3", T0 + 100)[:3] == ("in-1", 1, 3)
    entries, cursor = store.open_entries_page(0)
    assert [(gate, e.plate) for _, gate, e in entries] == [("in-1", "B2"), ("in-1", "C3")]
    assert cursor is None
    # nothing billed from a voided entry: its exit finds no stored entry
    store.ingest("out-1", 1, [ev(exit_(1, "A1", T0 + 600, 2000, flags=1))])
    assert [x["stored_entry"] for x in store.exits_with_entries(T0, T0 + 1000)] == [None]
    # an unconfirmed entry wants no operator's look
    assert [f["plate"] for f in store.flagged()] == ["A1"]


def test_a_no_passage_exit_is_flagged_and_closes_nothing(store):
    store.ingest("in-1", 1, [ev(entry(1, "A1", T0))])
    store.ingest("out-1", 1, [ev(exit_(1, "A1", T0 + 100, 100, entry_time=T0,
                                       flags=NO_PASSAGE))])
    assert store.inside_at(T0 + 200) == {"A1"}
    assert store.open_entry("A1", T0 + 200)[:3] == ("in-1", 1, 1)
    assert [e.plate for _, _, e in store.open_entries_page(0)[0]] == ["A1"]
    assert [(f["gate"], f["kind"], f["flags"]) for f in store.flagged()] == [
        ("out-1", "out", NO_PASSAGE)]
    # the real exit later closes the session, and finds its entry
    store.ingest("out-1", 1, [ev(exit_(2, "A1", T0 + 300, 100, entry_time=T0))])
    assert store.inside_at(T0 + 400) == set()
    assert [x["stored_entry"] for x in store.exits_with_entries(T0, T0 + 1000)] == [T0, T0]
    # a no-passage exit before any entry opens nothing
    store.ingest("out-1", 1, [ev(exit_(3, "B2", T0 + 500, 0, flags=NO_PASSAGE | 1))])
    assert store.inside_at(T0 + 600) == set()


def test_replays_are_entries_and_exits_like_any_other(store):
    store.ingest("in-1", 1, [flagged_entry(1, "A1", T0, REPLAY)])
    assert store.inside_at(T0 + 1) == {"A1"}
    assert store.open_entry("A1", T0 + 1)[:3] == ("in-1", 1, 1)
    replayed_exit = record.Event(record.KIND_EXIT, T0 + 100, 2, "A1", flags=REPLAY,
                                 fee_source=record.FEE_NONE, seq=1)
    assert record.from_wire(record.to_wire(replayed_exit)) == replayed_exit
    assert record.to_wire(replayed_exit)["fs"] is None
    store.ingest("out-1", 1, [ev(record.to_wire(replayed_exit))])
    assert store.inside_at(T0 + 200) == set()
    assert store.summary()["exits"]["none"] == {"count": 1, "fees": 0}
    # the replayed exit (no fee, the barrier did not open for it) is flagged;
    # the replayed entry is not
    assert [(f["kind"], f["flags"]) for f in store.flagged()] == [("out", REPLAY)]


# ---- lane catch-up pages ----

def all_pages(store, since, **kwargs):
    """Every page from cursor 0 to the last: [(entries, cursor)]."""
    pages, cursor = [], 0
    while True:
        entries, cursor = store.open_entries_page(since, cursor, **kwargs)
        pages.append((entries, cursor))
        if cursor is None:
            return pages
        assert len(pages) < 100


def test_catchup_pages_are_exact_when_many_entries_share_one_second(store):
    # 30 entries in one second from two gates, interleaved batches, and some
    # entries before and after it; some closed, one voided, one replaced by
    # a re-entry.
    store.ingest("in-1", 1, [ev(entry(1, "OLD", T0 - 10))])
    for first in range(0, 30, 5):
        gate = "in-1" if first % 10 == 0 else "in-2"
        store.ingest(gate, 1, [ev(entry(100 + s, "S%02d" % s, T0))
                               for s in range(first, first + 5)])
    store.ingest("in-1", 1, [ev(entry(200, "LATE", T0 + 1)), ev(entry(201, "S03", T0 + 2)),
                             flagged_entry(202, "S04", T0, NO_PASSAGE)])
    store.ingest("in-2", 1, [flagged_entry(203, "S12", T0, NO_PASSAGE)])   # S12 is in-1.s
    store.ingest("out-1", 1, [ev(exit_(s, "S%02d" % s, T0 + 5, 100)) for s in (1, 2, 20)])
    store.ingest("out-1", 1, [ev(exit_(9, "S09", T0 + 5, 100, flags=NO_PASSAGE))])
    expected = (["S%02d" % s for s in range(30) if s not in (1, 2, 3, 4, 20)]
                + ["LATE", "S03"])
    pages = all_pages(store, T0)
    assert [len(entries) for entries, _ in pages] == [8, 8, 8, 3]
    assert all(cursor == entries[-1][0] for entries, cursor in pages[:-1])
    got = [(gate, e.plate) for entries, _ in pages for _, gate, e in entries]
    assert [plate for _, plate in got] == expected
    assert [gate for gate, _ in got] == [
        "in-1" if plate in ("LATE", "S03") or int(plate[1:]) // 5 % 2 == 0 else "in-2"
        for plate in expected]
    first_entry = pages[0][0][0][2]
    assert (first_entry.kind, first_entry.time, first_entry.seq, first_entry.quality,
            first_entry.confidence) == (record.KIND_ENTRY, T0, 100, 5, 90)
    # since: at or after it
    assert [e.plate for entries, _ in all_pages(store, T0 + 1) for _, _, e in entries] == [
        "LATE", "S03"]
    assert [e.plate for _, _, e in store.open_entries_page(T0 - 10)[0]][:2] == ["OLD", "S00"]
    assert store.open_entries_page(T0 + 3) == ([], None)
    # a cursor taken before rows were added still pages exactly: the new
    # entries that sort after it come on later pages
    entries, cursor = store.open_entries_page(T0)
    store.ingest("in-2", 2, [ev(entry(1, "NEW", T0 + 1))])
    rest = [e.plate for entries, _ in all_pages_from(store, T0, cursor) for _, _, e in entries]
    assert rest == expected[8:-1] + ["NEW", "S03"]


def all_pages_from(store, since, cursor):
    pages = []
    while cursor is not None:
        entries, cursor = store.open_entries_page(since, cursor)
        pages.append((entries, cursor))
    return pages


def test_catchup_bounds_the_entries_looked_at_per_request(store):
    store.ingest("in-1", 1, [ev(entry(s, "P%02d" % s, T0 + s)) for s in range(1, 21)])
    store.ingest("out-1", 1, [ev(exit_(s, "P%02d" % s, T0 + 100, 100)) for s in range(1, 16)])
    pages = all_pages(store, 0, limit=3, scan=6)
    # 6 entries looked at per request: the first two windows hold only
    # closed sessions, the third the five open ones (page of 3, then 2)
    assert [[e.plate for _, _, e in entries] for entries, _ in pages] == [
        [], [], ["P16", "P17", "P18"], ["P19", "P20"]]
    assert [c is None for _, c in pages] == [False, False, False, True]


def test_catchup_refuses_a_cursor_that_is_no_row(store):
    store.ingest("in-1", 1, [ev(entry(1, "A1", T0))])
    with pytest.raises(ValueError, match="not a stored row id"):
        store.open_entries_page(0, 12345)


def test_rows_get_ids_in_insertion_order(store, db_path):
    store.ingest_many([("in-1", 1, [ev(entry(s, "A%d" % s, T0)) for s in (1, 2)]),
                       ("in-2", 1, [ev(entry(1, "B1", T0))])])
    store.ingest("in-1", 1, [ev(entry(s, "A%d" % s, T0)) for s in (2, 3)])   # 2 again
    rows = fetch_all(db_path, "SELECT id, gate, seq FROM events ORDER BY id")
    assert [(gate, seq) for _, gate, seq in rows] == [
        ("in-1", 1), ("in-1", 2), ("in-2", 1), ("in-1", 3)]
    assert len({row_id for row_id, _, _ in rows}) == 4 and all(r[0] for r in rows)
