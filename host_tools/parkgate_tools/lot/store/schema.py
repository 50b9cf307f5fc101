"""The lot store's tables and its SQL statements (those of sessions and
finding things: session_sql.py; of accounts: accounts.py; of debts:
debts.py), written once in plain SQL that SQLite and PostgreSQL both accept
(ON CONFLICT DO NOTHING, RETURNING, window functions; ``?`` placeholders,
which the PostgreSQL store turns into ``%s``), and the one mapping between
a gate's record.Event and an events row (the store and the central server
store that row with its lot in front).

Many lots may share one database: every table's first column is ``lot``,
the first part of its primary key and of every index but the events row
ids' (unique in the database), and every statement filters on it (a
parameter of the outer query; each correlated subquery matches its outer
row's lot: tests/test_two_lots.py checks each statement). LOT_TABLES names
the tables of SCHEMA (before_lots.py migrates those it finds without the
lot column). Row ids of events and audit rows are numbered across lots."""
import collections
import re

from parkgate import record

CATCHUP_PAGE = 8         # lane catch-up: open sessions per page (answers.CATCHUP_MAX_BYTES)
CATCHUP_SCAN = 2000      # lane catch-up: entries looked at per request, open or not

Entry = collections.namedtuple("Entry", "gate jid seq time colour")
Entry.__doc__ = "An open entry: the stay a fee is computed from."

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        lot TEXT NOT NULL,             -- every table: the lot's id, first in its keys
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
        id BIGINT,                     -- the store's row id, in insertion order (catch-up
                                       -- cursor), unique in the database across lots
        PRIMARY KEY (lot, gate, jid, seq))""",
    "CREATE INDEX IF NOT EXISTS events_by_plate ON events (lot, plate, kind, time)",
    "CREATE INDEX IF NOT EXISTS events_by_time ON events (lot, time)",
    """CREATE TABLE IF NOT EXISTS gates (
        lot TEXT NOT NULL,
        gate TEXT NOT NULL,
        status TEXT NOT NULL,          -- the last status message, JSON
        received_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (lot, gate))""",
    # Events still to forward upstream, written in the ingest transaction.
    """CREATE TABLE IF NOT EXISTS outbox (
        lot TEXT NOT NULL,
        gate TEXT NOT NULL,
        jid BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        queued_at DOUBLE PRECISION NOT NULL,
        forwarded_at DOUBLE PRECISION, -- set after the central server's 2xx
        PRIMARY KEY (lot, gate, jid, seq))""",
    "CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (lot, queued_at)"
    " WHERE forwarded_at IS NULL",
    # Corrections never edit an event: each is a row of its own, and its
    # own outbox entry (forwarded_at).
    """CREATE TABLE IF NOT EXISTS corrections (
        lot TEXT NOT NULL,
        id TEXT NOT NULL,
        gate TEXT NOT NULL,
        jid BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        action TEXT NOT NULL,          -- see CORRECTION_ACTIONS
        amount BIGINT NOT NULL,        -- fen
        note TEXT NOT NULL,
        made_by TEXT NOT NULL DEFAULT '',  -- the user who recorded it ('': before accounts)
        created_at DOUBLE PRECISION NOT NULL,
        forwarded_at DOUBLE PRECISION,
        PRIMARY KEY (lot, id))""",
    "CREATE INDEX IF NOT EXISTS corrections_by_event ON corrections (lot, gate, jid, seq)",
    # Exits let out unpaid (record.FLAG_OWED): the owed list's rows.
    # (SQLite picks it over events_by_kind_time only with kind in its key.)
    "CREATE INDEX IF NOT EXISTS events_owed ON events (lot, kind, plate, time)"
    " WHERE (flags & %d) <> 0" % record.FLAG_OWED,
    # Sessions an operator closed by hand (a ghost: the car left unseen):
    # the entry, why, who and when. The entry no longer opens a session.
    """CREATE TABLE IF NOT EXISTS session_closes (
        lot TEXT NOT NULL,
        gate TEXT NOT NULL,
        jid BIGINT NOT NULL,
        seq BIGINT NOT NULL,           -- the entry's identity
        reason TEXT NOT NULL,
        closed_by TEXT NOT NULL,
        closed_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (lot, gate, jid, seq))""",
    """CREATE TABLE IF NOT EXISTS members (
        lot TEXT NOT NULL,
        plate TEXT NOT NULL,
        name TEXT NOT NULL,
        valid_from BIGINT NOT NULL,
        valid_until BIGINT NOT NULL,
        PRIMARY KEY (lot, plate))""",
    """CREATE TABLE IF NOT EXISTS settings (
        lot TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (lot, key))""",
    # The lot's accounts (store/accounts.py): argon2 hashes, never passwords.
    """CREATE TABLE IF NOT EXISTS users (
        lot TEXT NOT NULL,
        name TEXT NOT NULL,
        role TEXT NOT NULL,            -- ROLES
        password_hash TEXT NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0,
        created_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (lot, name))""",
    # Who did what (store/accounts.py): rows are only ever added.
    """CREATE TABLE IF NOT EXISTS audit (
        lot TEXT NOT NULL,
        id BIGINT NOT NULL,            -- increasing in the order written, across lots
        at DOUBLE PRECISION NOT NULL,
        who TEXT NOT NULL,
        action TEXT NOT NULL,
        detail TEXT NOT NULL,          -- JSON object
        PRIMARY KEY (lot, id))""",
    "CREATE INDEX IF NOT EXISTS audit_by_time ON audit (lot, at)",
)
# Every table of SCHEMA, each with its lot column.
LOT_TABLES = ("events", "gates", "outbox", "corrections", "session_closes", "members",
              "settings", "users", "audit")

# What a correction does to the day's money (firmware/docs/lot-server.md,
# "Money"): collected adds its amount, refunded takes it off, waived and
# reviewed only close the flag. On an exit let out unpaid (FLAG_OWED) the
# first "collected" moves the fee from owed to collected (its amount; any
# later "collected" on it counts nothing) and "waived" forgives it;
# "settled" (store/debts.py, by the bridge only) says the plate paid it at
# its next visit, in that exit's fee: it closes the debt and counts nothing
# itself, so no fen is counted twice.
CORRECTION_ACTIONS = {"collected": 1, "refunded": -1, "waived": 0, "reviewed": 0,
                      "settled": 0}
SETTLES_OWED = ("collected", "waived", "settled")

# After the tables (and after adding the id column to a table made before it).
ID_INDEXES = (
    "CREATE UNIQUE INDEX IF NOT EXISTS events_by_id ON events (id)",
    "CREATE INDEX IF NOT EXISTS events_by_kind_time ON events (lot, kind, time, id)",
)
INDEX_NAMES = tuple(re.search(r"INDEX IF NOT EXISTS (\w+)", statement).group(1)
                    for statement in SCHEMA + ID_INDEXES if " INDEX " in statement)

EVENT_COLUMNS = ("lot, gate, jid, seq, kind, time, quality, plate, colour, confidence, flags, fee,"
                 " fee_source, tariff_version, entry_time, received_at")
EVENT_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
ROWS_PER_INSERT = 500   # 17 parameters a row, well under SQLite's 32,766

# Every statement below takes the lot as a parameter; the lot's own rows only.
UPSERT_STATUS = """INSERT INTO gates (lot, gate, status, received_at) VALUES (?, ?, ?, ?)
    ON CONFLICT (lot, gate) DO UPDATE SET status = excluded.status,
                                          received_at = excluded.received_at"""

COUNTS = """SELECT gate, kind, COUNT(*) FROM events WHERE lot = ?
    GROUP BY gate, kind ORDER BY gate, kind"""
IDENTITIES = """SELECT COUNT(*) FROM (SELECT DISTINCT gate, jid, seq FROM events
    WHERE lot = ?) AS ids"""
EXITS = """SELECT fee_source, COUNT(*), COALESCE(SUM(fee), 0) FROM events
    WHERE lot = ? AND kind = 'out' GROUP BY fee_source"""
JOURNALS = """SELECT gate, jid, COUNT(*), MIN(seq), MAX(seq) FROM events WHERE lot = ?
    GROUP BY gate, jid ORDER BY gate, jid"""
# Each stored seq followed by a missing one: (gate, jid, seq, next stored seq).
GAPS = """SELECT gate, jid, seq, next_seq FROM (
        SELECT gate, jid, seq,
               LEAD(seq) OVER (PARTITION BY gate, jid ORDER BY seq) AS next_seq
        FROM events WHERE lot = ?) AS runs
    WHERE next_seq > seq + 1 ORDER BY gate, jid, seq"""
STATUSES = "SELECT gate, status, received_at FROM gates WHERE lot = ? ORDER BY gate"

OUTBOX_PENDING = """SELECT e.gate, e.jid, e.seq, e.kind, e.time, e.quality, e.plate, e.colour,
        e.confidence, e.flags, e.fee, e.fee_source, e.tariff_version, e.entry_time
    FROM outbox o JOIN events e
      ON e.lot = o.lot AND e.gate = o.gate AND e.jid = o.jid AND e.seq = o.seq
    WHERE o.lot = ? AND o.forwarded_at IS NULL
    ORDER BY o.queued_at, o.gate, o.jid, o.seq LIMIT ?"""
OUTBOX_MARK = """UPDATE outbox SET forwarded_at = ?
    WHERE lot = ? AND gate = ? AND jid = ? AND seq = ? AND forwarded_at IS NULL"""
OUTBOX_COUNT = "SELECT COUNT(*) FROM outbox WHERE lot = ? AND forwarded_at IS NULL"
CORRECTIONS_PENDING = """SELECT id, gate, jid, seq, action, amount, note, created_at
    FROM corrections WHERE lot = ? AND forwarded_at IS NULL ORDER BY created_at, id LIMIT ?"""
CORRECTION_MARK = """UPDATE corrections SET forwarded_at = ?
    WHERE lot = ? AND id = ? AND forwarded_at IS NULL"""
CORRECTION_FIELDS = ("id", "gate", "jid", "seq", "action", "amount", "note", "made_by",
                     "created_at", "forwarded_at")
CORRECTIONS = """SELECT %s FROM corrections WHERE lot = ?
    ORDER BY created_at, id""" % ", ".join(CORRECTION_FIELDS)

DAY_EVENTS = """SELECT gate, jid, seq, kind, time, plate, colour, fee, fee_source, entry_time,
        flags FROM events WHERE lot = ? AND time >= ? AND time < ?
    ORDER BY time, gate, jid, seq"""
# Flag bits 0 (exit without entry) and 1 (re-entry) want an operator's look
# on any event, and on an exit bits 3 (let out unpaid, fee owed), 5 (a
# camera replay: the barrier did not open for it, no fee) and 6 (no car
# went through); bit 2 (member, no fee)
# does not, nor does a replayed or unconfirmed entry.
FLAGGED_ANY = record.FLAG_NO_ENTRY | record.FLAG_REENTRY
FLAGGED_EXIT = record.FLAG_REPLAY | record.FLAG_NO_PASSAGE | record.FLAG_OWED
FLAGGED = """SELECT gate, jid, seq, kind, time, plate, colour, fee, fee_source, entry_time,
        flags FROM events
    WHERE lot = ? AND ((flags & %d) <> 0 OR (kind = 'out' AND (flags & %d) <> 0))
    ORDER BY time DESC LIMIT ?""" % (FLAGGED_ANY, FLAGGED_EXIT)
EVENT = """SELECT gate, jid, seq, kind, time, plate, colour, fee, fee_source, entry_time,
        flags FROM events WHERE lot = ? AND gate = ? AND jid = ? AND seq = ?"""
INSERT_CORRECTION = """INSERT INTO corrections (lot, id, gate, jid, seq, action, amount, note,
        made_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""

# ---- money: collected, owed and corrected (CORRECTION_ACTIONS) ----
_OWED_EXIT = "{x}.kind = 'out' AND ({x}.flags & %d) <> 0" % record.FLAG_OWED


def _unsettled(x):
    """SQL: no correction has settled the owed exit aliased x (SETTLES_OWED)."""
    return ("NOT EXISTS (SELECT 1 FROM corrections s WHERE s.lot = {x}.lot"
            " AND s.gate = {x}.gate AND s.jid = {x}.jid AND s.seq = {x}.seq"
            " AND s.action IN ('%s'))" % "', '".join(SETTLES_OWED)).format(x=x)


# Exits of a period collected at the gate (not owed), per fee source.
CHARGED_BETWEEN = """SELECT fee_source, COUNT(*), COALESCE(SUM(fee), 0) FROM events x
    WHERE x.lot = ? AND x.kind = 'out' AND x.time >= ? AND x.time < ? AND NOT (%s)
    GROUP BY fee_source""" % _OWED_EXIT.format(x="x")
# Exits of a period let out unpaid and not settled: their count and fees.
OWED_BETWEEN = """SELECT COUNT(*), COALESCE(SUM(x.fee), 0) FROM events x
    WHERE x.lot = ? AND x.time >= ? AND x.time < ? AND %s AND %s""" % (
    _OWED_EXIT.format(x="x"), _unsettled("x"))
# Corrections of a period's events: (collected by hand on owed exits, the
# rest of the corrections). Of the "collected" on one owed exit only the
# first (created_at, id) counts.
_FIRST_COLLECTED = """NOT EXISTS (SELECT 1 FROM corrections d WHERE d.lot = c.lot
        AND d.gate = c.gate AND d.jid = c.jid AND d.seq = c.seq AND d.action = 'collected'
        AND (d.created_at, d.id) < (c.created_at, c.id))"""
CORRECTED_BETWEEN = """SELECT
        COALESCE(SUM(CASE WHEN c.action = 'collected' AND %s AND %s
                          THEN c.amount ELSE 0 END), 0),
        COALESCE(SUM(CASE WHEN c.action = 'collected' AND %s THEN 0 %s ELSE 0 END), 0)
    FROM corrections c JOIN events x
      ON x.lot = c.lot AND x.gate = c.gate AND x.jid = c.jid AND x.seq = c.seq
    WHERE c.lot = ? AND x.time >= ? AND x.time < ?""" % (
    _OWED_EXIT.format(x="x"), _FIRST_COLLECTED, _OWED_EXIT.format(x="x"),
    " ".join("WHEN c.action = '%s' THEN %d * c.amount" % (action, sign)
             for action, sign in sorted(CORRECTION_ACTIONS.items()) if sign))
# What each plate still owes: its owed exits no correction settled.
OWED_LIST = """SELECT x.plate, x.gate, x.jid, x.seq, x.time, x.entry_time, x.fee, x.fee_source
    FROM events x WHERE x.lot = ? AND %s AND %s
    ORDER BY x.plate, x.time, x.gate, x.jid, x.seq""" % (
    _OWED_EXIT.format(x="x"), _unsettled("x"))
OWED_FIELDS = ("plate", "gate", "jid", "seq", "time", "entry_time", "fee", "fee_source")

IS_MEMBER = """SELECT 1 FROM members
    WHERE lot = ? AND plate = ? AND valid_from <= ? AND ? < valid_until"""
DELETE_MEMBERS = "DELETE FROM members WHERE lot = ?"
INSERT_MEMBER = """INSERT INTO members (lot, plate, name, valid_from, valid_until)
    VALUES (?, ?, ?, ?, ?) ON CONFLICT (lot, plate) DO NOTHING"""
SETTING = "SELECT value FROM settings WHERE lot = ? AND key = ?"
UPSERT_SETTING = """INSERT INTO settings (lot, key, value) VALUES (?, ?, ?)
    ON CONFLICT (lot, key) DO UPDATE SET value = excluded.value"""
# The newest stored event of a gate (by row id: the order stored).
LATEST_EVENT = """SELECT jid, seq, received_at FROM events WHERE lot = ? AND gate = ?
    ORDER BY id DESC LIMIT 1"""

EVENT_FIELDS = ("gate", "jid", "seq", "kind", "time", "plate", "colour", "fee", "fee_source",
                "entry_time", "flags")
OUTBOX_FIELDS = ("gate", "jid", "seq", "kind", "time", "quality", "plate", "colour",
                 "confidence", "flags", "fee", "fee_source", "tariff_version", "entry_time")


def event_row(gate, jid, event, received_at):
    """The events row (EVENT_COLUMNS) of a record.Event of journal jid of gate."""
    row = (gate, jid, event.seq, record.KIND_NAMES[event.kind], event.time, event.quality,
           event.plate, event.colour, event.confidence, event.flags)
    if event.kind == record.KIND_EXIT:
        return row + (event.fee, record.FEE_SOURCE_NAMES.get(event.fee_source),
                      event.tariff_version, event.entry_time or None, received_at)
    return row + (None, None, None, None, received_at)


def row_event(row):
    """The record.Event of an events row as a dict of OUTBOX_FIELDS (event_row reversed)."""
    return record.Event(record.KIND_BY_NAME[row["kind"]], row["time"], row["quality"],
                        row["plate"], row["colour"], row["confidence"], row["flags"],
                        row["fee"] or 0, record.FEE_SOURCE_BY_NAME[row["fee_source"]],
                        row["tariff_version"] or 0, row["entry_time"] or 0, seq=row["seq"])
