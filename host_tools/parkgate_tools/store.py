"""The lot bridge's durable store: every gate event once, and each gate's
last status. All SQL lives in Store; the statements are plain SQL that
PostgreSQL accepts too (ON CONFLICT DO NOTHING, window functions), so a
PostgreSQL store needs only another connection and placeholder style."""
import collections
import json
import sqlite3
import threading
import time

from parkgate import record

Entry = collections.namedtuple("Entry", "gate jid seq time colour")
Entry.__doc__ = "An open entry: the stay a fee is computed from."

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        gate TEXT NOT NULL,
        jid BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        kind TEXT NOT NULL,            -- 'in' or 'out'
        time BIGINT NOT NULL,          -- unix seconds UTC, the gate's clock
        quality INTEGER NOT NULL,      -- parkgate.clock.Q_*
        plate TEXT NOT NULL,
        colour INTEGER NOT NULL,
        confidence INTEGER NOT NULL,
        flags INTEGER NOT NULL,
        fee BIGINT,                    -- exits: fen
        fee_source TEXT,               -- exits: 'on' bridge, 'off' gate
        tariff_version BIGINT,         -- exits
        entry_time BIGINT,             -- exits: NULL when no entry was found
        received_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (gate, jid, seq))""",
    "CREATE INDEX IF NOT EXISTS events_by_plate ON events (plate, kind, time)",
    """CREATE TABLE IF NOT EXISTS gates (
        gate TEXT PRIMARY KEY,
        status TEXT NOT NULL,          -- the last status message, JSON
        received_at DOUBLE PRECISION NOT NULL)""",
)

_INSERT_EVENT = """INSERT INTO events (gate, jid, seq, kind, time, quality, plate, colour,
        confidence, flags, fee, fee_source, tariff_version, entry_time, received_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (gate, jid, seq) DO NOTHING"""

# The latest entry of the plate at or before the time with no exit of the
# same plate at or after it.
_OPEN_ENTRY = """SELECT e.gate, e.jid, e.seq, e.time, e.colour FROM events e
    WHERE e.kind = 'in' AND e.plate = ? AND e.time <= ?
      AND NOT EXISTS (SELECT 1 FROM events x
                      WHERE x.kind = 'out' AND x.plate = e.plate AND x.time >= e.time)
    ORDER BY e.time DESC, e.received_at DESC LIMIT 1"""

_UPSERT_STATUS = """INSERT INTO gates (gate, status, received_at) VALUES (?, ?, ?)
    ON CONFLICT (gate) DO UPDATE SET status = excluded.status,
                                     received_at = excluded.received_at"""

_COUNTS = "SELECT gate, kind, COUNT(*) FROM events GROUP BY gate, kind ORDER BY gate, kind"
_IDENTITIES = "SELECT COUNT(*) FROM (SELECT DISTINCT gate, jid, seq FROM events) AS ids"
_EXITS = """SELECT fee_source, COUNT(*), COALESCE(SUM(fee), 0) FROM events
    WHERE kind = 'out' GROUP BY fee_source"""
_JOURNALS = """SELECT gate, jid, COUNT(*), MIN(seq), MAX(seq) FROM events
    GROUP BY gate, jid ORDER BY gate, jid"""
# Each stored seq followed by a missing one: (gate, jid, seq, next stored seq).
_GAPS = """SELECT gate, jid, seq, next_seq FROM (
        SELECT gate, jid, seq,
               LEAD(seq) OVER (PARTITION BY gate, jid ORDER BY seq) AS next_seq
        FROM events) AS runs
    WHERE next_seq > seq + 1 ORDER BY gate, jid, seq"""
_STATUSES = "SELECT gate, status, received_at FROM gates ORDER BY gate"


class Store:
    """SQLite (WAL, synchronous=FULL) behind the lot bridge. Thread-safe: one
    connection guarded by a lock, so any thread may call any method."""

    def __init__(self, path):
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        with self._lock:
            self._transaction(_create_schema)

    def close(self):
        """Close the connection; the store is unusable afterwards."""
        with self._lock:
            self._db.close()

    # ---- writing ----

    def ingest(self, gate, jid, events):
        """Store a batch of record.Event of one journal in one transaction,
        each identity (gate, jid, seq) at most once. Returns (first, last,
        inserted): the batch's lowest and highest seq and how many rows were
        new. Returns only after COMMIT; raises (having rolled back) if any
        part failed, in which case nothing of the batch is stored."""
        if not events:
            raise ValueError("ingest: empty batch")
        now = time.time()
        rows = [_event_row(gate, jid, event, now) for event in events]
        seqs = [event.seq for event in events]

        def insert(cur):
            inserted = 0
            for row in rows:
                cur.execute(_INSERT_EVENT, row)
                inserted += cur.rowcount
            return inserted

        with self._lock:
            inserted = self._transaction(insert)
        return min(seqs), max(seqs), inserted

    def record_status(self, gate, status):
        """Keep the gate's last status message (a dict)."""
        with self._lock:
            self._transaction(lambda cur: cur.execute(
                _UPSERT_STATUS, (gate, json.dumps(status, sort_keys=True), time.time())))

    # ---- reading ----

    def open_entry(self, plate, before_time):
        """The latest entry of plate at any gate of the lot at or before
        before_time that no exit has closed, as an Entry, else None."""
        with self._lock:
            row = self._db.execute(_OPEN_ENTRY, (plate, before_time)).fetchone()
        return Entry(*row) if row else None

    def statuses(self):
        """{gate: (last status dict, received_at unix seconds)}."""
        with self._lock:
            rows = self._db.execute(_STATUSES).fetchall()
        return {gate: (json.loads(status), at) for gate, status, at in rows}

    def summary(self):
        """Counts that show whether anything was lost or duplicated:
        rows and distinct identities, events per gate and kind, exits charged
        online ("on") and offline ("off") with their fee sums, and per
        journal (gate, jid) its count, max seq and the seqs missing below
        it (``gaps`` as [first, last] ranges, ``missing`` their total)."""
        with self._lock:
            counts = self._db.execute(_COUNTS).fetchall()
            identities = self._db.execute(_IDENTITIES).fetchone()[0]
            exits = self._db.execute(_EXITS).fetchall()
            journals = self._db.execute(_JOURNALS).fetchall()
            gap_rows = self._db.execute(_GAPS).fetchall()
        per_gate = {}
        for gate, kind, n in counts:
            per_gate.setdefault(gate, {"in": 0, "out": 0})[kind] = n
        charged = {"on": {"count": 0, "fees": 0}, "off": {"count": 0, "fees": 0}}
        for source, n, fees in exits:
            charged[source or "none"] = {"count": n, "fees": fees}
        gaps = {}
        for gate, jid, seq, next_seq in gap_rows:
            gaps.setdefault((gate, jid), []).append([seq + 1, next_seq - 1])
        journal_list = []
        for gate, jid, n, low, high in journals:
            ranges = ([[1, low - 1]] if low > 1 else []) + gaps.get((gate, jid), [])
            journal_list.append({"gate": gate, "jid": jid, "count": n, "max_seq": high,
                                 "missing": sum(b - a + 1 for a, b in ranges), "gaps": ranges})
        return {"rows": sum(n for _, _, n in counts), "identities": identities,
                "per_gate": per_gate, "exits": charged, "journals": journal_list}

    # ---- transactions ----

    def _transaction(self, work):
        """Run work(cursor) between BEGIN IMMEDIATE and COMMIT; roll back
        and re-raise on any error. Call with the lock held."""
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            result = work(cur)
            self._commit()
        except BaseException:
            if self._db.in_transaction:
                self._db.rollback()
            raise
        finally:
            cur.close()
        return result

    def _commit(self):
        """COMMIT; its own method so that tests can make it fail."""
        self._db.execute("COMMIT")


_FEE_SOURCES = {record.FEE_ONLINE: "on", record.FEE_OFFLINE: "off"}


def _create_schema(cur):
    for statement in SCHEMA:
        cur.execute(statement)


def _event_row(gate, jid, event, received_at):
    row = (gate, jid, event.seq, record.KIND_NAMES[event.kind], event.time, event.quality,
           event.plate, event.colour, event.confidence, event.flags)
    if event.kind == record.KIND_EXIT:
        return row + (event.fee, _FEE_SOURCES.get(event.fee_source), event.tariff_version,
                      event.entry_time or None, received_at)
    return row + (None, None, None, None, received_at)
