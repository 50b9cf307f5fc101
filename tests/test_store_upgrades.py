"""Lot databases made by earlier versions, opened by this one, on SQLite and
on PostgreSQL: one made before row ids gets them, numbered in insertion
order; one made before lots (no lot column) is migrated in one transaction,
its rows becoming the opening store's lot, and a migration that fails
leaves it as it was."""
import sqlite3

import pytest

from fixtures_mqtt import backend, db_path, pg_server  # noqa: F401 (fixtures)
from fixtures_mqtt import LOT, entry, fetch_all, is_pg, store_class
from parkgate import record
from parkgate_tools.lot.store import schema
from test_store_backends import T0, ev

OLD_EVENTS_TABLE = """CREATE TABLE events (
    gate TEXT NOT NULL, jid BIGINT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL,
    time BIGINT NOT NULL, quality INTEGER NOT NULL, plate TEXT NOT NULL,
    colour INTEGER NOT NULL, confidence INTEGER NOT NULL, flags INTEGER NOT NULL,
    fee BIGINT, fee_source TEXT, tariff_version BIGINT, entry_time BIGINT,
    received_at DOUBLE PRECISION NOT NULL%s, PRIMARY KEY (gate, jid, seq))"""
# The other tables as they were before lots (events: OLD_EVENTS_TABLE with id).
BEFORE_LOTS = (
    "CREATE INDEX events_by_plate ON events (plate, kind, time)",
    "CREATE INDEX events_by_time ON events (time)",
    "CREATE UNIQUE INDEX events_by_id ON events (id)",
    """CREATE TABLE gates (gate TEXT PRIMARY KEY, status TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE outbox (gate TEXT NOT NULL, jid BIGINT NOT NULL, seq BIGINT NOT NULL,
        queued_at DOUBLE PRECISION NOT NULL, forwarded_at DOUBLE PRECISION,
        PRIMARY KEY (gate, jid, seq))""",
    "CREATE INDEX outbox_pending ON outbox (queued_at) WHERE forwarded_at IS NULL",
    """CREATE TABLE corrections (id TEXT PRIMARY KEY, gate TEXT NOT NULL, jid BIGINT NOT NULL,
        seq BIGINT NOT NULL, action TEXT NOT NULL, amount BIGINT NOT NULL, note TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, forwarded_at DOUBLE PRECISION)""",
    """CREATE TABLE session_closes (gate TEXT NOT NULL, jid BIGINT NOT NULL,
        seq BIGINT NOT NULL, reason TEXT NOT NULL, closed_by TEXT NOT NULL,
        closed_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (gate, jid, seq))""",
    """CREATE TABLE members (plate TEXT PRIMARY KEY, name TEXT NOT NULL,
        valid_from BIGINT NOT NULL, valid_until BIGINT NOT NULL)""",
    "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # A lot's day: two entries, an exit paid online, an owed exit collected
    # by hand, a ghost closed, a member, a setting and one row to forward.
    "INSERT INTO events VALUES ('in-1', 1, 1, 'in', %d, 5, 'A1', 0, 90, 0, NULL, NULL, NULL,"
    " NULL, 0, 1)" % T0,
    "INSERT INTO events VALUES ('in-1', 1, 2, 'in', %d, 5, 'G2', 0, 90, 0, NULL, NULL, NULL,"
    " NULL, 0, 2)" % T0,
    "INSERT INTO events VALUES ('out-1', 2, 1, 'out', %d, 5, 'A1', 0, 90, 0, 1000, 'on', 1,"
    " %d, 0, 3)" % (T0 + 3600, T0),
    "INSERT INTO events VALUES ('out-1', 2, 2, 'out', %d, 5, 'C3', 0, 90, %d, 700, 'off', 1,"
    " NULL, 0, 4)" % (T0 + 3700, record.FLAG_OWED | record.FLAG_NO_ENTRY),
    "INSERT INTO corrections VALUES ('c1', 'out-1', 2, 2, 'collected', 700, 'booth', 5, NULL)",
    "INSERT INTO session_closes VALUES ('in-1', 1, 2, 'towed', 'operator', 6)",
    "INSERT INTO gates VALUES ('in-1', '{\"on\": 1}', 7)",
    "INSERT INTO outbox VALUES ('out-1', 2, 2, 8, NULL)",
    "INSERT INTO members VALUES ('M9', 'staff', 0, 4294967295)",
    "INSERT INTO settings VALUES ('tariff', '{\"v\": 1}')",
)


def run_sql(db, statements):
    """Run the statements on a connection of their own to db, then commit."""
    if is_pg(db):
        import psycopg
        with psycopg.connect(db, autocommit=True) as con:
            for statement in statements:
                con.execute(statement)
        return
    con = sqlite3.connect(db)
    with con:
        for statement in statements:
            con.execute(statement)
    con.close()


def test_a_database_made_before_row_ids_gets_them(db_path):
    run_sql(db_path, [OLD_EVENTS_TABLE % ""] + [
        "INSERT INTO events VALUES ('in-1', 1, %d, 'in', %d, 5, 'P%d', 0, 90, 0, NULL, NULL,"
        " NULL, NULL, 0)" % (s, T0, s) for s in (2, 1, 3)])
    opened = store_class(db_path)(db_path, LOT)
    try:
        rows = fetch_all(db_path, "SELECT id, seq FROM events ORDER BY id")
        assert [seq for _, seq in rows] == [2, 1, 3] and rows[0][0] >= 1
        opened.ingest("in-1", 1, [ev(entry(4, "P4", T0))])
        entries, cursor = opened.open_entries_page(0, limit=3)
        assert [e.seq for _, _, e in entries] == [2, 1, 3] and cursor == entries[-1][0]
        assert [e.seq for _, _, e in opened.open_entries_page(0, cursor)[0]] == [4]
    finally:
        opened.close()
    reopened = store_class(db_path)(db_path, LOT)     # opening again changes nothing
    reopened.close()
    assert fetch_all(db_path, "SELECT id, seq FROM events ORDER BY id")[:3] == rows


def lot_columns(db):
    """{table: True if it has a lot column} of the tables there are."""
    found = {}
    for table in schema.LOT_TABLES:
        if is_pg(db):
            columns = [row[0] for row in fetch_all(
                db, "SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = current_schema() AND table_name = ?", (table,))]
        else:
            columns = [row[1] for row in fetch_all(db, "PRAGMA table_info(%s)" % table)]
        if columns:
            found[table] = "lot" in columns
    return found


def test_a_database_made_before_lots_becomes_the_opening_lots(db_path):
    run_sql(db_path, (OLD_EVENTS_TABLE % ", id BIGINT",) + BEFORE_LOTS)
    store = store_class(db_path)(db_path, "old-lot")
    try:
        assert lot_columns(db_path) == dict.fromkeys(schema.LOT_TABLES, True)
        for table in schema.LOT_TABLES[:7]:     # every row of every table is the lot's now
            assert fetch_all(db_path, "SELECT DISTINCT lot FROM %s" % table) == [("old-lot",)]
        assert store.money(T0 - 60, T0 + 86400) == {
            "online": (1, 1000), "offline": (0, 0), "by_hand": 700, "collected": 1700,
            "owed": (0, 0), "corrected": 0}
        assert store.inside_at(T0 + 60) == {"A1"}                 # G2 was closed by hand
        assert [c["reason"] for c in store.session_closes()] == ["towed"]
        assert [(c["id"], c["made_by"]) for c in store.corrections()] == [("c1", "")]
        assert store.statuses() == {"in-1": ({"on": 1}, 7)}
        assert [(r["gate"], r["seq"]) for r in store.outbox_pending()] == [("out-1", 2)]
        assert store.is_member("M9", T0) and store.setting("tariff") == '{"v": 1}'
        # Row ids are kept (lane catch-up cursors) and new rows follow them.
        store.ingest("in-1", 1, [ev(entry(3, "N3", T0 + 60))])
        assert fetch_all(db_path, "SELECT seq, id FROM events WHERE gate = 'in-1'"
                                  " ORDER BY id") == [(1, 1), (2, 2), (3, 5)]
        other = store_class(db_path)(db_path, "new-lot")       # another lot sees none of it
        try:
            assert other.summary()["rows"] == 0 and other.corrections() == []
            assert other.statuses() == {} and not other.is_member("M9", T0)
        finally:
            other.close()
    finally:
        store.close()
    again = store_class(db_path)(db_path, "new-lot")     # migrated once: nothing moves
    again.close()
    assert fetch_all(db_path, "SELECT DISTINCT lot FROM events") == [("old-lot",)]


def test_a_failed_migration_leaves_the_database_as_it_was(db_path):
    run_sql(db_path, (OLD_EVENTS_TABLE % ", id BIGINT",) + BEFORE_LOTS)
    before = fetch_all(db_path, "SELECT * FROM events ORDER BY id")

    class FailsMidway(store_class(db_path)):
        def _set_aside(self, cur, table):
            super()._set_aside(cur, table)
            if table == "members":
                raise RuntimeError("disk full (test)")

    with pytest.raises(RuntimeError, match="disk full"):
        FailsMidway(db_path, "old-lot")
    assert lot_columns(db_path) == {table: False for table in schema.LOT_TABLES[:7]}
    assert fetch_all(db_path, "SELECT * FROM events ORDER BY id") == before
    store = store_class(db_path)(db_path, "old-lot")        # and migrates next time
    store.close()
    assert fetch_all(db_path, "SELECT COUNT(*) FROM events WHERE lot = 'old-lot'") == [(4,)]
