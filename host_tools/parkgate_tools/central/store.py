"""The central server's store, on PostgreSQL or SQLite through one URL (as
the lot store: ``postgresql://...`` or a SQLite path), with the same SQL for
both. The lot id is part of every key: events are stored once per (lot,
gate, jid, seq), corrections once per (lot, id), documents per (lot, name).

PostgreSQL connections take the lot store's bounds (lot/store/postgres.py:
connect timeout, keepalives, lock, statement and idle-in-transaction
timeouts); a small pool of them lets several lots post at once. SQLite is
one connection (WAL, synchronous=FULL) behind the pool of one."""
import queue
import sqlite3
import threading
import time
from contextlib import contextmanager

from parkgate import record
from parkgate_tools.lot.store import postgres as lot_pg
from parkgate_tools.lot.store.event_store import LOCK_WAIT_S, lock_wait_seconds
from parkgate_tools.lot.store.schema import ROWS_PER_INSERT, SETTLES_OWED, event_row

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        lot TEXT NOT NULL, gate TEXT NOT NULL, jid BIGINT NOT NULL, seq BIGINT NOT NULL,
        kind TEXT NOT NULL, time BIGINT NOT NULL, quality INTEGER NOT NULL,
        plate TEXT NOT NULL, colour INTEGER NOT NULL, confidence INTEGER NOT NULL,
        flags INTEGER NOT NULL, fee BIGINT, fee_source TEXT, tariff_version BIGINT,
        entry_time BIGINT, received_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (lot, gate, jid, seq))""",
    """CREATE TABLE IF NOT EXISTS corrections (
        lot TEXT NOT NULL, id TEXT NOT NULL, gate TEXT NOT NULL, jid BIGINT NOT NULL,
        seq BIGINT NOT NULL, action TEXT NOT NULL, amount BIGINT NOT NULL, note TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, received_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (lot, id))""",
    "CREATE INDEX IF NOT EXISTS corrections_by_event ON corrections (lot, gate, jid, seq)",
    """CREATE TABLE IF NOT EXISTS documents (
        lot TEXT NOT NULL, name TEXT NOT NULL,  -- 'tariff' or 'members'
        body TEXT NOT NULL, version BIGINT NOT NULL,
        PRIMARY KEY (lot, name))""",
    """CREATE TABLE IF NOT EXISTS lots (
        lot TEXT NOT NULL PRIMARY KEY, last_seen DOUBLE PRECISION NOT NULL,
        backlog BIGINT NOT NULL)  -- what the lot said it still had to send""",
)
_EVENT_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_CORRECTION = """INSERT INTO corrections VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (lot, id) DO NOTHING"""
_PUT_DOCUMENT = """INSERT INTO documents (lot, name, body, version) VALUES (?, ?, ?, ?)
    ON CONFLICT (lot, name) DO UPDATE SET body = excluded.body, version = excluded.version"""
_SEEN = """INSERT INTO lots (lot, last_seen, backlog) VALUES (?, ?, ?)
    ON CONFLICT (lot) DO UPDATE SET last_seen = excluded.last_seen, backlog = excluded.backlog"""
# Revenue is what exits charged (a fee source set) and did not leave owed,
# plus the first "collected" correction of each exit that did (by hand);
# owed is the fees of those exits no correction settled (the lot's rule,
# lot/store/schema.py CORRECTION_ACTIONS and SETTLES_OWED: collected by
# hand, waived, or paid at the plate's next visit).
_CHARGED = "x.kind = 'out' AND x.fee_source IN (%s)" % ", ".join(
    "'%s'" % name for name in record.FEE_SOURCE_NAMES.values() if name)
_OWED = "(x.flags & %d) <> 0" % record.FLAG_OWED
_SETTLED = """EXISTS (SELECT 1 FROM corrections s WHERE s.lot = x.lot AND s.gate = x.gate
    AND s.jid = x.jid AND s.seq = x.seq AND s.action IN ('%s'))""" % "', '".join(SETTLES_OWED)
_LOT_TOTALS = """SELECT x.lot, COUNT(*),
    COALESCE(SUM(CASE WHEN %s AND NOT %s THEN x.fee ELSE 0 END), 0),
    COALESCE(SUM(CASE WHEN %s AND %s AND NOT %s THEN x.fee ELSE 0 END), 0),
    MAX(x.received_at) FROM events x GROUP BY x.lot""" % (
    _CHARGED, _OWED, _CHARGED, _OWED, _SETTLED)
_BY_HAND = """SELECT x.lot, COALESCE(SUM(c.amount), 0) FROM corrections c
    JOIN events x ON x.lot = c.lot AND x.gate = c.gate AND x.jid = c.jid AND x.seq = c.seq
    WHERE c.action = 'collected' AND %s AND NOT EXISTS (SELECT 1 FROM corrections d
        WHERE d.lot = c.lot AND d.gate = c.gate AND d.jid = c.jid AND d.seq = c.seq
          AND d.action = 'collected' AND (d.created_at, d.id) < (c.created_at, c.id))
    GROUP BY x.lot""" % _OWED


def is_postgres(location):
    """True for a ``postgresql://`` or ``postgres://`` URL."""
    return location.startswith(("postgresql://", "postgres://"))


def _connect_pg(url, lock_wait):
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
    given = conninfo_to_dict(url)
    options = {k: v for k, v in lot_pg.CONNECTION_DEFAULTS.items() if k not in given}
    db = psycopg.connect(url, autocommit=True, **options)
    bounds = {"lock_timeout": lock_wait,
              "statement_timeout": max(lot_pg.STATEMENT_TIMEOUT_S, 2 * lock_wait),
              "idle_in_transaction_session_timeout": lot_pg.IDLE_IN_TRANSACTION_S}
    for name, seconds in bounds.items():
        db.execute("SET %s = %d" % (name, max(1, int(seconds * 1000))))
    return db


def _connect_sqlite(path, lock_wait):
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                         timeout=lock_wait)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


class CentralStore:
    """The central store at location (a SQLite path or a PostgreSQL URL).
    Thread-safe: each call takes a connection of the pool (PostgreSQL:
    pool_size of them, opened when first needed; SQLite: one). lock_wait:
    seconds a write waits for a lock (SQLite's busy timeout, PostgreSQL's
    lock_timeout)."""

    def __init__(self, location, lock_wait=LOCK_WAIT_S, pool_size=8):
        self.location = location
        self.backend = "postgresql" if is_postgres(location) else "sqlite"
        self.lock_wait = lock_wait_seconds(lock_wait)   # ValueError unless seconds >= 0
        self._param = "%s" if self.backend == "postgresql" else "?"
        self._pool = queue.LifoQueue()
        self._open = []
        self._opening = threading.Lock()
        self._size = pool_size if self.backend == "postgresql" else 1
        with self._transaction() as cur:
            if self.backend == "postgresql":   # several servers may start together
                cur.execute("SELECT pg_advisory_xact_lock(7240518)")
            for statement in SCHEMA:
                cur.execute(statement)

    def _new_connection(self):
        if self.backend == "postgresql":
            return _connect_pg(self.location, self.lock_wait)
        return _connect_sqlite(self.location, self.lock_wait)

    @contextmanager
    def _connection(self):
        try:
            db = self._pool.get_nowait()
        except queue.Empty:
            with self._opening:
                grow = len(self._open) < self._size
                if grow:
                    self._open.append(None)   # a place taken; the connection follows
            if not grow:
                db = self._pool.get()
            else:
                try:
                    db = self._new_connection()
                finally:
                    with self._opening:
                        self._open.remove(None)
                self._open.append(db)
        if getattr(db, "broken", False) or getattr(db, "closed", False):
            fresh = self._new_connection()   # the server dropped it: a new one
            with self._opening:
                self._open[self._open.index(db)] = fresh
            db = fresh
        try:
            yield db
        finally:
            self._pool.put(db)

    @contextmanager
    def _transaction(self):
        """A cursor in one transaction: committed at the end, rolled back on error."""
        with self._connection() as db:
            cur = db.cursor()
            cur.execute("BEGIN IMMEDIATE" if self.backend == "sqlite" else "BEGIN")
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                try:
                    cur.execute("ROLLBACK")
                except Exception:
                    db.close()
                raise

    def _sql(self, statement):
        return statement.replace("?", self._param)

    def _query(self, statement, params=()):
        with self._connection() as db:
            return [tuple(row) for row in db.execute(self._sql(statement), params).fetchall()]

    def close(self):
        """Close every connection."""
        for db in self._open:
            db.close()
        self._open.clear()

    # ---- writing ----

    def add_events(self, lot, events, backlog=None):
        """Store [(gate, jid, record.Event)] of the lot once each, in one
        transaction; returns how many were new. A row is the lot store's
        events row (schema.event_row) with the lot in front. backlog: what
        the lot says it has still to send (kept with the time, for the
        admin page)."""
        now = time.time()
        # in key order, so that two posts overlapping each other wait rather than deadlock
        rows = sorted({(gate, jid, event.seq): (lot,) + event_row(gate, jid, event, now)
                       for gate, jid, event in events}.items())
        rows = [row for _, row in rows]
        new = 0
        with self._transaction() as cur:
            for start in range(0, len(rows), ROWS_PER_INSERT):
                chunk = rows[start:start + ROWS_PER_INSERT]
                cur.execute(self._sql("INSERT INTO events VALUES %s ON CONFLICT (lot, gate, "
                                      "jid, seq) DO NOTHING" % ", ".join(
                                          [_EVENT_VALUES] * len(chunk))),
                            [value for row in chunk for value in row])
                new += cur.rowcount
            cur.execute(self._sql(_SEEN), (lot, now, backlog if backlog is not None else -1))
        return new

    def add_corrections(self, lot, corrections):
        """Store correction dicts of the lot once each (by id); returns how many were new."""
        now = time.time()
        new = 0
        with self._transaction() as cur:
            for c in corrections:
                cur.execute(self._sql(_INSERT_CORRECTION), (
                    lot, c["id"], c["g"], c["j"], c["s"], c["action"], c["amount"], c["note"],
                    c["at"], now))
                new += cur.rowcount
        return new

    def put_document(self, lot, name, body, version):
        """Keep the lot's tariff or member list (JSON text) with its version."""
        with self._transaction() as cur:
            cur.execute(self._sql(_PUT_DOCUMENT), (lot, name, body, version))

    # ---- reading ----

    def document(self, lot, name):
        """(JSON text, version) of the lot's tariff or members, else None."""
        rows = self._query("SELECT body, version FROM documents WHERE lot = ? AND name = ?",
                           (lot, name))
        return rows[0] if rows else None

    def events(self, lot):
        """The lot's stored events as (gate, jid, seq, kind, plate, fee), by identity."""
        return self._query("SELECT gate, jid, seq, kind, plate, fee FROM events WHERE lot = ? "
                           "ORDER BY gate, jid, seq", (lot,))

    def corrections(self, lot):
        """Every stored correction of the lot as (id, gate, jid, seq, action, amount)."""
        return self._query("SELECT id, gate, jid, seq, action, amount FROM corrections "
                           "WHERE lot = ? ORDER BY created_at, id", (lot,))

    def summary(self, lot):
        """{"events", "per_gate": {gate: {kind: n}}, "corrections"} of the lot."""
        counts = self._query("SELECT gate, kind, COUNT(*) FROM events WHERE lot = ? "
                             "GROUP BY gate, kind", (lot,))
        corrections = self._query("SELECT COUNT(*) FROM corrections WHERE lot = ?", (lot,))
        per_gate = {}
        for gate, kind, n in counts:
            per_gate.setdefault(gate, {"in": 0, "out": 0})[kind] = n
        return {"events": sum(n for _, _, n in counts), "per_gate": per_gate,
                "corrections": corrections[0][0]}

    def lots(self):
        """Every lot the server knows (posted, or given a document), by id, as
        dicts: lot, events, revenue (fees charged and not owed, and owed fees
        collected by hand, integer fen), owed (fees of exits let through
        unpaid that no correction settled), last_seen (time of the last
        events post, or None), backlog (the lot's outbox after it, or None)."""
        known = {}

        def entry(lot):
            return known.setdefault(lot, {"lot": lot, "events": 0, "revenue": 0, "owed": 0,
                                          "last_seen": None, "backlog": None})
        for lot, events, revenue, owed, last in self._query(_LOT_TOTALS):
            entry(lot).update(events=events, revenue=int(revenue), owed=int(owed),
                              last_seen=last)
        for lot, by_hand in self._query(_BY_HAND):
            entry(lot)["revenue"] += int(by_hand)
        for (lot,) in self._query("SELECT DISTINCT lot FROM documents"):
            entry(lot)
        for lot, last_seen, backlog in self._query("SELECT lot, last_seen, backlog FROM lots"):
            entry(lot)["last_seen"] = last_seen
            entry(lot)["backlog"] = backlog if backlog >= 0 else None
        return [known[lot] for lot in sorted(known)]
