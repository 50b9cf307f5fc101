"""The lot bridge's durable store: every gate event once, each gate's last
status, the outbox of rows still to forward to the central server, the
operator's corrections, and the members and tariff taken from upstream.

All SQL lives here and is written once: plain SQL that SQLite and
PostgreSQL both accept (ON CONFLICT DO NOTHING, RETURNING, window
functions). ``Store`` is SQLite; ``PgStore`` is PostgreSQL with the same
schema and methods; ``open_store`` picks one from a path or a
``postgresql://`` URL.

Waiting on SQLite's write lock follows one rule, ``Store._retry_locked``:
opening the file, creating the schema and every write transaction retry a
locked database, logging each attempt, for at most ``lock_wait`` seconds,
then raise DatabaseLocked."""
import collections
import json
import logging
import sqlite3
import threading
import time
import uuid

from parkgate import record

log = logging.getLogger("parkgate.store")

LOCK_WAIT_S = 10.0       # default bound on waiting for a locked SQLite database
CATCHUP_PAGE = 8         # lane catch-up: open sessions per page (bridge.CATCHUP_MAX_BYTES)
CATCHUP_SCAN = 2000      # lane catch-up: entries looked at per request, open or not
_I64_MAX = 2 ** 63 - 1
_BUSY_SLICE_S = 1.0      # SQLite's own busy wait within one attempt
_RETRY_FIRST_S = 0.05    # pause after the first locked attempt, doubling
_RETRY_MAX_S = 1.0
_SQLITE_BUSY = getattr(sqlite3, "SQLITE_BUSY", 5)


class DatabaseLocked(sqlite3.OperationalError):
    """A SQLite database stayed locked by another connection for longer
    than the store's lock_wait; the text names the file and what was being
    done."""


def _is_busy(exc):
    """True if exc is SQLite's "database is locked" (SQLITE_BUSY)."""
    if isinstance(exc, DatabaseLocked) or not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)   # Python 3.11+
    if code is not None:
        return code & 0xFF == _SQLITE_BUSY
    return "database is locked" in str(exc)


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
        id BIGINT,                     -- the store's row id, in insertion order (catch-up cursor)
        PRIMARY KEY (gate, jid, seq))""",
    "CREATE INDEX IF NOT EXISTS events_by_plate ON events (plate, kind, time)",
    "CREATE INDEX IF NOT EXISTS events_by_time ON events (time)",
    """CREATE TABLE IF NOT EXISTS gates (
        gate TEXT PRIMARY KEY,
        status TEXT NOT NULL,          -- the last status message, JSON
        received_at DOUBLE PRECISION NOT NULL)""",
    # Events still to forward upstream, written in the ingest transaction.
    """CREATE TABLE IF NOT EXISTS outbox (
        gate TEXT NOT NULL,
        jid BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        queued_at DOUBLE PRECISION NOT NULL,
        forwarded_at DOUBLE PRECISION, -- set after the central server's 2xx
        PRIMARY KEY (gate, jid, seq))""",
    "CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (queued_at) WHERE forwarded_at IS NULL",
    # Corrections never edit an event: each is a row of its own, and its
    # own outbox entry (forwarded_at).
    """CREATE TABLE IF NOT EXISTS corrections (
        id TEXT PRIMARY KEY,
        gate TEXT NOT NULL,
        jid BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        action TEXT NOT NULL,          -- see CORRECTION_ACTIONS
        amount BIGINT NOT NULL,        -- fen
        note TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        forwarded_at DOUBLE PRECISION)""",
    "CREATE INDEX IF NOT EXISTS corrections_by_event ON corrections (gate, jid, seq)",
    """CREATE TABLE IF NOT EXISTS members (
        plate TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        valid_from BIGINT NOT NULL,
        valid_until BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL)""",
)

# What a correction does to the day's revenue: collected adds its amount,
# refunded takes it off, waived and reviewed only close the flag.
CORRECTION_ACTIONS = {"collected": 1, "refunded": -1, "waived": 0, "reviewed": 0}

# After the tables (and after adding the id column to a table made before it).
_ID_INDEXES = (
    "CREATE UNIQUE INDEX IF NOT EXISTS events_by_id ON events (id)",
    "CREATE INDEX IF NOT EXISTS events_by_kind_time ON events (kind, time, id)",
)

_EVENT_COLUMNS = ("gate, jid, seq, kind, time, quality, plate, colour, confidence, flags, fee,"
                  " fee_source, tariff_version, entry_time, received_at")
_EVENT_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_ROWS_PER_INSERT = 500   # 16 parameters a row, well under SQLite's 32,766

# Sessions (firmware/docs/mqtt.md, "Sessions"). An entry counts unless it
# is itself a read the passage input did not confirm (FLAG_NO_PASSAGE) or
# one such entry voids it: same gate, plate and time. An exit closes the
# plate's sessions entered at or before it unless it has FLAG_NO_PASSAGE
# (then it is only flagged for the operator). Replays (FLAG_REPLAY) count
# like any other event.
_NO_PASSAGE = record.FLAG_NO_PASSAGE


def _live_entry(e):
    """SQL: the row aliased e is an entry that opens a session."""
    return ("{e}.kind = 'in' AND ({e}.flags & {np}) = 0 AND NOT EXISTS ("
            "SELECT 1 FROM events {e}_void WHERE {e}_void.plate = {e}.plate"
            " AND {e}_void.kind = 'in' AND {e}_void.time = {e}.time"
            " AND {e}_void.gate = {e}.gate AND ({e}_void.flags & {np}) <> 0)"
            ).format(e=e, np=_NO_PASSAGE)


def _closing_exit(x):
    """SQL: the row aliased x is an exit that closes sessions."""
    return "{x}.kind = 'out' AND ({x}.flags & {np}) = 0".format(x=x, np=_NO_PASSAGE)


# The latest entry of the plate at or before the time with no exit of the
# same plate at or after it.
_OPEN_ENTRY = """SELECT e.gate, e.jid, e.seq, e.time, e.colour FROM events e
    WHERE e.plate = ? AND e.time <= ? AND %s
      AND NOT EXISTS (SELECT 1 FROM events x
                      WHERE x.plate = e.plate AND x.time >= e.time AND %s)
    ORDER BY e.time DESC, e.received_at DESC LIMIT 1""" % (_live_entry("e"), _closing_exit("x"))

# Lane catch-up. The position of the CATCHUP_SCAN-th entry after a
# position (time, id): the end of the window one request looks at.
_ENTRY_WINDOW_END = """SELECT time, id FROM events
    WHERE kind = 'in' AND (time, id) > (?, ?)
    ORDER BY time, id LIMIT 1 OFFSET ?"""
# The open sessions in a window (time, id) in (start, end]: live entries no
# exit has closed and no later live entry of the plate (a re-entry) has
# replaced, oldest first.
_OPEN_ENTRIES = """SELECT e.id, e.gate, e.seq, e.time, e.quality, e.plate, e.colour,
        e.confidence, e.flags FROM events e
    WHERE e.kind = 'in' AND (e.time, e.id) > (?, ?) AND (e.time, e.id) <= (?, ?) AND %s
      AND NOT EXISTS (SELECT 1 FROM events x
                      WHERE x.plate = e.plate AND x.time >= e.time AND %s)
      AND NOT EXISTS (SELECT 1 FROM events y
                      WHERE y.plate = e.plate AND (y.time, y.id) > (e.time, e.id) AND %s)
    ORDER BY e.time, e.id LIMIT ?""" % (_live_entry("e"), _closing_exit("x"), _live_entry("y"))
_ROW_TIME = "SELECT time FROM events WHERE id = ?"

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

_OUTBOX_PENDING = """SELECT e.gate, e.jid, e.seq, e.kind, e.time, e.quality, e.plate, e.colour,
        e.confidence, e.flags, e.fee, e.fee_source, e.tariff_version, e.entry_time
    FROM outbox o JOIN events e ON e.gate = o.gate AND e.jid = o.jid AND e.seq = o.seq
    WHERE o.forwarded_at IS NULL ORDER BY o.queued_at, o.gate, o.jid, o.seq LIMIT ?"""
_OUTBOX_MARK = """UPDATE outbox SET forwarded_at = ?
    WHERE gate = ? AND jid = ? AND seq = ? AND forwarded_at IS NULL"""
_OUTBOX_COUNT = "SELECT COUNT(*) FROM outbox WHERE forwarded_at IS NULL"
_CORRECTIONS_PENDING = """SELECT id, gate, jid, seq, action, amount, note, created_at
    FROM corrections WHERE forwarded_at IS NULL ORDER BY created_at, id LIMIT ?"""
_CORRECTION_MARK = "UPDATE corrections SET forwarded_at = ? WHERE id = ? AND forwarded_at IS NULL"
_CORRECTIONS = """SELECT id, gate, jid, seq, action, amount, note, created_at, forwarded_at
    FROM corrections ORDER BY created_at, id"""

_DAY_EVENTS = """SELECT gate, jid, seq, kind, time, plate, colour, fee, fee_source, entry_time,
        flags FROM events WHERE time >= ? AND time < ? ORDER BY time, gate, jid, seq"""
# Plates inside at a moment: an entry before it with no exit of the plate
# between that entry and the moment.
_INSIDE_AT = """SELECT DISTINCT e.plate FROM events e
    WHERE e.time < ? AND %s
      AND NOT EXISTS (SELECT 1 FROM events x WHERE x.plate = e.plate
                      AND x.time >= e.time AND x.time < ? AND %s)""" % (
    _live_entry("e"), _closing_exit("x"))
# Exits in a period with the stored entry of their stay (NULL: none stored).
_EXITS_WITH_ENTRY = """SELECT x.gate, x.jid, x.seq, x.plate, x.colour, x.time, x.fee,
        x.fee_source, x.entry_time, x.flags,
        (SELECT MAX(e.time) FROM events e
         WHERE e.plate = x.plate AND e.time <= x.time AND %s
           AND NOT EXISTS (SELECT 1 FROM events y WHERE y.plate = x.plate
                           AND y.time >= e.time AND y.time < x.time AND %s)) AS stored_entry
    FROM events x WHERE x.kind = 'out' AND x.time >= ? AND x.time < ?
    ORDER BY x.time, x.gate, x.jid, x.seq""" % (_live_entry("e"), _closing_exit("y"))
# Flag bits 0 (exit without entry) and 1 (re-entry) want an operator's look
# on any event, and on an exit bits 5 (a camera replay: the barrier did not
# open for it, no fee) and 6 (no car went through); bit 2 (member, no fee)
# does not, nor does a replayed or unconfirmed entry.
FLAGGED_ANY = record.FLAG_NO_ENTRY | record.FLAG_REENTRY
FLAGGED_EXIT = record.FLAG_REPLAY | record.FLAG_NO_PASSAGE
_FLAGGED = """SELECT gate, jid, seq, kind, time, plate, colour, fee, fee_source, entry_time,
        flags FROM events WHERE (flags & %d) <> 0 OR (kind = 'out' AND (flags & %d) <> 0)
    ORDER BY time DESC LIMIT ?""" % (FLAGGED_ANY, FLAGGED_EXIT)
_EVENT = """SELECT gate, jid, seq, kind, time, plate, colour, fee, fee_source, entry_time,
        flags FROM events WHERE gate = ? AND jid = ? AND seq = ?"""
_INSERT_CORRECTION = """INSERT INTO corrections (id, gate, jid, seq, action, amount, note,
        created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"""
_IS_MEMBER = """SELECT 1 FROM members WHERE plate = ? AND valid_from <= ? AND ? < valid_until"""
_UPSERT_SETTING = """INSERT INTO settings (key, value) VALUES (?, ?)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value"""

EVENT_FIELDS = ("gate", "jid", "seq", "kind", "time", "plate", "colour", "fee", "fee_source",
                "entry_time", "flags")


class Store:
    """SQLite (WAL, synchronous=FULL) behind the lot bridge. Thread-safe: one
    connection guarded by a lock, so any thread may call any method; several
    processes may share the file (each write transaction is BEGIN
    IMMEDIATE).

    lock_wait: seconds to wait for a database another connection holds
    locked, when opening it (journal mode, schema) and at each write
    transaction: each locked attempt is logged (file, what, attempt, wait)
    and retried; once lock_wait has passed, DatabaseLocked. 0: give up at
    the first locked attempt. SQLite only (PostgreSQL waits in the server)."""

    backend = "sqlite"
    _BEGIN = "BEGIN IMMEDIATE"

    def __init__(self, path, lock_wait=LOCK_WAIT_S):
        if type(lock_wait) not in (int, float) or not 0 <= lock_wait < float("inf"):
            raise ValueError("lock_wait: %r is not a number of seconds >= 0" % (lock_wait,))
        self.path = path
        self.lock_wait = float(lock_wait)
        self._lock = threading.Lock()
        self._sql_cache = {}
        self._db = None
        self._busy_ms = self._busy_ms_for(self.lock_wait)
        with self._lock:
            self._retry_locked("opening it", self._open)
            self._transaction(self._create_schema, "creating the schema")

    def _open(self):
        self._db = self._connect()

    def _connect(self):
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=%d" % self._busy_ms)
            # On a new file this takes the write lock and fails at once,
            # without SQLite's busy wait, if another connection holds it.
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
        except BaseException:
            db.close()
            raise
        return db

    def close(self):
        """Close the connection; the store is unusable afterwards."""
        with self._lock:
            self._db.close()

    # ---- writing ----

    def ingest(self, gate, jid, events, outbox=False):
        """Store a batch of record.Event of one journal in one transaction,
        each identity (gate, jid, seq) at most once. Returns (first, last,
        inserted): the batch's lowest and highest seq and how many rows were
        new. Returns only after COMMIT; raises (having rolled back) if any
        part failed, in which case nothing of the batch is stored.
        outbox: also queue the new rows for forwarding upstream."""
        if not events:
            raise ValueError("ingest: empty batch")
        inserted = self.ingest_many([(gate, jid, events)], outbox=outbox)[0]
        seqs = [event.seq for event in events]
        return min(seqs), max(seqs), inserted

    def ingest_many(self, batches, statuses=(), outbox=False):
        """Store several batches [(gate, jid, [record.Event])] and gate
        statuses [(gate, dict)] in ONE transaction (one commit, one fsync
        for all of them). Returns the number of new rows of each batch.
        All or nothing: raises, having rolled back, if any part failed."""
        now = time.time()
        rows = {}
        for gate, jid, events in batches:
            for event in events:
                rows.setdefault((gate, jid, event.seq), _event_row(gate, jid, event, now))
        status_rows = {gate: (gate, json.dumps(status, sort_keys=True), now)
                       for gate, status in statuses}

        def write(cur):
            new = self._insert_events(cur, list(rows.values()))
            if outbox and new:
                self._insert_outbox(cur, new, now)
            for row in status_rows.values():
                cur.execute(self._sql(_UPSERT_STATUS), row)
            return new

        with self._lock:
            new = set(self._transaction(write))
        counts = []
        for gate, jid, events in batches:
            seqs = {event.seq for event in events}
            counts.append(sum(1 for seq in seqs if (gate, jid, seq) in new))
            new.difference_update((gate, jid, seq) for seq in seqs)
        return counts

    def _insert_events(self, cur, rows):
        """Multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING the new identities."""
        new = []
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = self._with_ids(cur, rows[start:start + _ROWS_PER_INSERT])
            columns, one = _EVENT_COLUMNS, _EVENT_VALUES
            if len(chunk[0]) > len(_EVENT_COLUMNS.split(",")):
                columns, one = columns + ", id", one[:-1] + ", ?)"
            values = ", ".join([one] * len(chunk))
            sql = "INSERT INTO events (%s) VALUES %s ON CONFLICT (gate, jid, seq) DO NOTHING " \
                  "RETURNING gate, jid, seq" % (columns, values)
            cur.execute(self._sql(sql), [value for row in chunk for value in row])
            new.extend(tuple(found) for found in cur.fetchall())
        return new

    def _with_ids(self, cur, rows):
        """The rows with their row ids appended: SQLite numbers them after
        the highest stored, inside the write transaction (BEGIN IMMEDIATE:
        one writer at a time, so no two rows get one id); a row that turns
        out to be stored already leaves a gap, which is harmless."""
        cur.execute("SELECT COALESCE(MAX(id), 0) FROM events")
        base = cur.fetchone()[0]
        return [row + (base + i,) for i, row in enumerate(rows, 1)]

    def _insert_outbox(self, cur, identities, now):
        for start in range(0, len(identities), _ROWS_PER_INSERT):
            chunk = identities[start:start + _ROWS_PER_INSERT]
            values = ", ".join(["(?, ?, ?, ?)"] * len(chunk))
            sql = "INSERT INTO outbox (gate, jid, seq, queued_at) VALUES %s " \
                  "ON CONFLICT (gate, jid, seq) DO NOTHING" % values
            cur.execute(self._sql(sql), [v for ident in chunk for v in ident + (now,)])

    def record_status(self, gate, status):
        """Keep the gate's last status message (a dict)."""
        self.ingest_many([], statuses=[(gate, status)])

    def add_correction(self, gate, jid, seq, action, amount, note):
        """Record an operator's correction of the stored event (gate, jid,
        seq) as a row of its own (the event is never edited); it is
        forwarded upstream like an event. Returns its id. ValueError if the
        event is not stored or the action or amount is not valid."""
        if action not in CORRECTION_ACTIONS:
            raise ValueError("action: %r is not one of %s" % (action, sorted(CORRECTION_ACTIONS)))
        if type(amount) is not int or not 0 <= amount <= 0xFFFFFFFF:
            raise ValueError("amount: %r is not a fen amount" % (amount,))
        correction_id = uuid.uuid4().hex

        def write(cur):
            cur.execute(self._sql(_EVENT), (gate, jid, seq))
            if cur.fetchone() is None:
                raise ValueError("no stored event %s/%s/%s" % (gate, jid, seq))
            cur.execute(self._sql(_INSERT_CORRECTION), (correction_id, gate, jid, seq, action,
                                                        amount, str(note)[:500], time.time()))
        with self._lock:
            self._transaction(write)
        return correction_id

    def replace_members(self, members):
        """Replace the member list with [{"p": plate, "name", "from", "until"}]."""
        def write(cur):
            cur.execute("DELETE FROM members")
            for m in members:
                cur.execute(self._sql("INSERT INTO members (plate, name, valid_from, valid_until)"
                                      " VALUES (?, ?, ?, ?) ON CONFLICT (plate) DO NOTHING"),
                            (m["p"], m.get("name", ""), m.get("from", 0),
                             m.get("until", 0xFFFFFFFF)))
        with self._lock:
            self._transaction(write)

    def set_setting(self, key, value):
        """Keep a text value under key (e.g. the tariff taken from upstream)."""
        with self._lock:
            self._transaction(lambda cur: cur.execute(self._sql(_UPSERT_SETTING), (key, value)))

    def mark_forwarded(self, identities=(), corrections=()):
        """Mark outbox rows [(gate, jid, seq)] and correction ids as
        forwarded, in one transaction: call only after the central server's 2xx."""
        now = time.time()

        def write(cur):
            for ident in identities:
                cur.execute(self._sql(_OUTBOX_MARK), (now,) + tuple(ident))
            for correction_id in corrections:
                cur.execute(self._sql(_CORRECTION_MARK), (now, correction_id))
        with self._lock:
            self._transaction(write)

    # ---- reading ----

    def _query(self, sql, params=()):
        with self._lock:
            return self._db.execute(self._sql(sql), params).fetchall()

    def open_entry(self, plate, before_time):
        """The latest entry of plate at any gate of the lot at or before
        before_time that no exit has closed and none voided, as an Entry,
        else None."""
        rows = self._query(_OPEN_ENTRY, (plate, before_time))
        return Entry(*rows[0]) if rows else None

    def open_entries_page(self, since, cursor=0, limit=CATCHUP_PAGE, scan=CATCHUP_SCAN):
        """One page of lane catch-up (firmware/docs/mqtt.md): the lot's open
        sessions entered at or after since, from any gate, oldest first by
        (time, row id), after the entry whose row id is cursor (0: from the
        start). Looks at no more than `scan` entries after that position,
        open or not, so one request costs at most that much.

        Returns (entries, next_cursor): up to limit (row id, gate,
        record.Event) and the cursor of the next page, or None when there is
        none. A page may be short, even empty, with a cursor: the scan
        window ended first. ValueError if cursor is not a stored row id."""
        start = (since, 0)
        if cursor:
            rows = self._query(_ROW_TIME, (cursor,))
            if not rows:
                raise ValueError("c: %r is not a stored row id" % (cursor,))
            start = max(start, (rows[0][0], cursor))
        end = self._query(_ENTRY_WINDOW_END, start + (scan - 1,))
        window_end = tuple(end[0]) if end else (_I64_MAX, _I64_MAX)
        rows = self._query(_OPEN_ENTRIES, start + window_end + (limit + 1,))
        entries = [(row_id, gate, record.Event(record.KIND_ENTRY, t, quality, plate, colour,
                                               confidence, flags, seq=seq))
                   for row_id, gate, seq, t, quality, plate, colour, confidence, flags in rows]
        if len(entries) > limit:
            entries = entries[:limit]
            return entries, entries[-1][0]
        return entries, (window_end[1] if end else None)

    def statuses(self):
        """{gate: (last status dict, received_at unix seconds)}."""
        return {gate: (json.loads(status), at) for gate, status, at in self._query(_STATUSES)}

    def is_member(self, plate, at):
        """True if plate is a member (parks free) at unix time at."""
        return bool(self._query(_IS_MEMBER, (plate, at, at)))

    def setting(self, key, default=None):
        """The text kept under key, else default."""
        rows = self._query("SELECT value FROM settings WHERE key = ?", (key,))
        return rows[0][0] if rows else default

    def outbox_pending(self, limit=500):
        """Up to limit events not yet forwarded, oldest first, as dicts
        (EVENT_FIELDS less received_at, plus quality and confidence)."""
        keys = ("gate", "jid", "seq", "kind", "time", "quality", "plate", "colour",
                "confidence", "flags", "fee", "fee_source", "tariff_version", "entry_time")
        return [dict(zip(keys, row)) for row in self._query(_OUTBOX_PENDING, (limit,))]

    def outbox_backlog(self):
        """How many events wait to be forwarded."""
        return self._query(_OUTBOX_COUNT)[0][0]

    def corrections_pending(self, limit=500):
        """Corrections not yet forwarded, oldest first, as dicts."""
        keys = ("id", "gate", "jid", "seq", "action", "amount", "note", "created_at")
        return [dict(zip(keys, row)) for row in self._query(_CORRECTIONS_PENDING, (limit,))]

    def corrections(self):
        """Every correction, oldest first, as dicts."""
        keys = ("id", "gate", "jid", "seq", "action", "amount", "note", "created_at",
                "forwarded_at")
        return [dict(zip(keys, row)) for row in self._query(_CORRECTIONS)]

    def events_between(self, start, end):
        """Events with start <= time < end, in time order, as dicts of EVENT_FIELDS."""
        return [dict(zip(EVENT_FIELDS, row)) for row in self._query(_DAY_EVENTS, (start, end))]

    def inside_at(self, moment):
        """The plates inside at unix time moment (entered, not yet out;
        voided entries and unconfirmed exits do not count)."""
        return {row[0] for row in self._query(_INSIDE_AT, (moment, moment))}

    def exits_with_entries(self, start, end):
        """Exits with start <= time < end as dicts, each with stored_entry:
        the time of the stored entry of its stay, or None."""
        keys = ("gate", "jid", "seq", "plate", "colour", "time", "fee", "fee_source",
                "entry_time", "flags", "stored_entry")
        return [dict(zip(keys, row)) for row in self._query(_EXITS_WITH_ENTRY, (start, end))]

    def flagged(self, limit=200):
        """The most recent events flagged for the operator, as dicts: no
        entry or re-entry, and exits that were camera replays or that no car
        went through (FLAGGED_ANY, FLAGGED_EXIT)."""
        return [dict(zip(EVENT_FIELDS, row)) for row in self._query(_FLAGGED, (limit,))]

    def summary(self):
        """Counts that show whether anything was lost or duplicated:
        rows and distinct identities, events per gate and kind, exits charged
        online ("on") and offline ("off") with their fee sums, and per
        journal (gate, jid) its count, max seq and the seqs missing below
        it (``gaps`` as [first, last] ranges, ``missing`` their total)."""
        counts, identities, exits, journals, gap_rows = [
            self._query(sql) for sql in (_COUNTS, _IDENTITIES, _EXITS, _JOURNALS, _GAPS)]
        identities = identities[0][0]
        per_gate = {}
        for gate, kind, n in counts:
            per_gate.setdefault(gate, {"in": 0, "out": 0})[kind] = n
        charged = {"on": {"count": 0, "fees": 0}, "off": {"count": 0, "fees": 0}}
        for source, n, fees in exits:
            charged[source or "none"] = {"count": n, "fees": int(fees)}
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

    def _sql(self, statement):
        """The statement in this backend's placeholder style."""
        return statement

    def _create_schema(self, cur):
        for statement in SCHEMA:
            cur.execute(statement)
        cur.execute("PRAGMA table_info(events)")
        if "id" not in [column[1] for column in cur.fetchall()]:
            # A file made before row ids: number its rows in insertion order.
            cur.execute("ALTER TABLE events ADD COLUMN id BIGINT")
            cur.execute("UPDATE events SET id = rowid")
        for statement in _ID_INDEXES:
            cur.execute(statement)

    def _retry_locked(self, what, work):
        """work() again while it meets a locked SQLite database, logging
        each attempt, for at most lock_wait seconds; then DatabaseLocked
        naming the file and what (e.g. "creating the schema"). Other errors
        are raised at once. The one rule for waiting on SQLite's lock."""
        start = time.monotonic()
        pause, attempt = _RETRY_FIRST_S, 1
        try:
            while True:
                try:
                    return work()
                except sqlite3.OperationalError as exc:
                    if not _is_busy(exc):
                        raise
                    waited = time.monotonic() - start
                    left = self.lock_wait - waited
                    if left <= 0:
                        raise DatabaseLocked(
                            "SQLite database %s is locked by another connection (%s): gave up "
                            "after %d attempts in %.1f s (lock wait %.1f s)"
                            % (self.path, what, attempt, waited, self.lock_wait)) from exc
                    pause = min(pause, left)
                    log.warning("SQLite database %s is locked (%s): attempt %d, retrying in "
                                "%.2f s (%.1f s of %.1f s waited)", self.path, what, attempt,
                                pause, waited, self.lock_wait)
                    time.sleep(pause)
                    pause, attempt = min(pause * 2, _RETRY_MAX_S), attempt + 1
                    # SQLite's own wait in the next attempt ends within the bound.
                    self._set_busy_ms(self._busy_ms_for(
                        self.lock_wait - (time.monotonic() - start)))
        finally:
            if attempt > 1:
                self._set_busy_ms(self._busy_ms_for(self.lock_wait))

    @staticmethod
    def _busy_ms_for(seconds):
        return int(max(0.0, min(_BUSY_SLICE_S, seconds)) * 1000)

    def _set_busy_ms(self, ms):
        """SQLite's busy wait for the next attempts, and for connections opened later."""
        self._busy_ms = ms
        if isinstance(self._db, sqlite3.Connection):
            self._db.execute("PRAGMA busy_timeout=%d" % ms)

    def _transaction(self, work, what="writing"):
        """Run work(cursor) between BEGIN and COMMIT; roll back and re-raise
        on any error, but run it again (_retry_locked) while the database is
        locked. Call with the lock held."""
        return self._retry_locked(what, lambda: self._attempt(work))

    def _attempt(self, work):
        """One transaction of work(cursor): COMMIT, or ROLLBACK and raise."""
        cur = self._db.cursor()
        try:
            cur.execute(self._BEGIN)
            result = work(cur)
            self._commit()
        except BaseException:
            self._rollback()
            raise
        finally:
            cur.close()
        return result

    def _rollback(self):
        if self._db.in_transaction:
            self._db.rollback()

    def _commit(self):
        """COMMIT; its own method so that tests can make it fail."""
        self._db.execute("COMMIT")


class PgStore(Store):
    """The same store on PostgreSQL: url is a libpq connection string
    (``postgresql://user@/db?host=/socket/dir&port=5432``). One connection
    in autocommit mode with explicit BEGIN/COMMIT, guarded by a lock; it is
    opened again after the server dropped it. Needs psycopg 3."""

    backend = "postgresql"
    _BEGIN = "BEGIN"

    def _connect(self):
        import psycopg
        return psycopg.connect(self.path, autocommit=True)

    def _sql(self, statement):
        converted = self._sql_cache.get(statement)
        if converted is None:
            converted = self._sql_cache[statement] = statement.replace("?", "%s")
        return converted

    def _create_schema(self, cur):
        # Several workers may start together: one creates, the others wait.
        cur.execute("SELECT pg_advisory_xact_lock(7240517)")
        for statement in SCHEMA:
            cur.execute(statement)
        # Row ids come from a sequence (workers insert concurrently); a
        # database made before row ids gets the column, numbered.
        cur.execute("ALTER TABLE events ADD COLUMN IF NOT EXISTS id BIGINT")
        cur.execute("""SELECT column_default FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name = 'events'
              AND column_name = 'id'""")
        if cur.fetchone()[0] is None:
            cur.execute("CREATE SEQUENCE IF NOT EXISTS events_id_seq OWNED BY events.id")
            cur.execute("ALTER TABLE events ALTER COLUMN id SET DEFAULT nextval('events_id_seq')")
            cur.execute("UPDATE events SET id = nextval('events_id_seq') WHERE id IS NULL")
        for statement in _ID_INDEXES:
            cur.execute(statement)

    def _with_ids(self, cur, rows):
        return rows    # the column's default, nextval('events_id_seq')

    def _reconnect_if_lost(self):
        if self._db.closed or self._db.broken:
            self._db.close()
            self._db = self._connect()

    def _attempt(self, work):
        self._reconnect_if_lost()
        return super()._attempt(work)

    def _query(self, sql, params=()):
        with self._lock:
            self._reconnect_if_lost()
            return self._db.execute(self._sql(sql), params).fetchall()

    def _rollback(self):
        if not self._db.closed:
            try:
                self._db.execute("ROLLBACK")
            except Exception:
                self._db.close()   # broken: reconnect at the next call


def open_store(location, lock_wait=LOCK_WAIT_S):
    """A PgStore for a ``postgresql://`` or ``postgres://`` URL, else a
    SQLite Store at the path (lock_wait: see Store)."""
    if location.startswith(("postgresql://", "postgres://")):
        return PgStore(location, lock_wait)
    return Store(location, lock_wait)


def _event_row(gate, jid, event, received_at):
    row = (gate, jid, event.seq, record.KIND_NAMES[event.kind], event.time, event.quality,
           event.plate, event.colour, event.confidence, event.flags)
    if event.kind == record.KIND_EXIT:
        return row + (event.fee, _FEE_SOURCES.get(event.fee_source), event.tariff_version,
                      event.entry_time or None, received_at)
    return row + (None, None, None, None, received_at)


_FEE_SOURCES = {record.FEE_ONLINE: "on", record.FEE_OFFLINE: "off"}
