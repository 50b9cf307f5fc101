"""The lot store's tables and every SQL statement, written once in plain SQL
that SQLite and PostgreSQL both accept (ON CONFLICT DO NOTHING, RETURNING,
window functions; ``?`` placeholders, which the PostgreSQL store turns into
``%s``), and the one mapping between a gate's record.Event and an events row
(the central server stores the same row with its lot in front)."""
import collections

from parkgate import record

CATCHUP_PAGE = 8         # lane catch-up: open sessions per page (answers.CATCHUP_MAX_BYTES)
CATCHUP_SCAN = 2000      # lane catch-up: entries looked at per request, open or not

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
    # Exits let out unpaid (record.FLAG_OWED): the owed list's rows.
    # (SQLite picks it over events_by_kind_time only with kind in its key.)
    "CREATE INDEX IF NOT EXISTS events_owed ON events (kind, plate, time)"
    " WHERE (flags & %d) <> 0" % record.FLAG_OWED,
    # Sessions an operator closed by hand (a ghost: the car left unseen):
    # the entry, why, who and when. The entry no longer opens a session.
    """CREATE TABLE IF NOT EXISTS session_closes (
        gate TEXT NOT NULL,
        jid BIGINT NOT NULL,
        seq BIGINT NOT NULL,           -- the entry's identity
        reason TEXT NOT NULL,
        closed_by TEXT NOT NULL,
        closed_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (gate, jid, seq))""",
    """CREATE TABLE IF NOT EXISTS members (
        plate TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        valid_from BIGINT NOT NULL,
        valid_until BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL)""",
)

# What a correction does to the day's money (firmware/docs/lot-server.md,
# "Money"): collected adds its amount, refunded takes it off, waived and
# reviewed only close the flag. On an exit let out unpaid (FLAG_OWED) the
# first "collected" moves the fee from owed to collected (its amount; any
# later "collected" on it counts nothing) and "waived" forgives it.
CORRECTION_ACTIONS = {"collected": 1, "refunded": -1, "waived": 0, "reviewed": 0}
SETTLES_OWED = ("collected", "waived")

# After the tables (and after adding the id column to a table made before it).
ID_INDEXES = (
    "CREATE UNIQUE INDEX IF NOT EXISTS events_by_id ON events (id)",
    "CREATE INDEX IF NOT EXISTS events_by_kind_time ON events (kind, time, id)",
)

EVENT_COLUMNS = ("gate, jid, seq, kind, time, quality, plate, colour, confidence, flags, fee,"
                 " fee_source, tariff_version, entry_time, received_at")
EVENT_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
ROWS_PER_INSERT = 500   # 16 parameters a row, well under SQLite's 32,766

# Sessions (firmware/docs/mqtt.md, "Sessions"). An entry counts unless it
# is itself a read the passage input did not confirm (FLAG_NO_PASSAGE) or
# one such entry voids it: same gate, plate and time. An exit closes the
# plate's sessions entered at or before it unless it has FLAG_NO_PASSAGE
# (then it is only flagged for the operator). Replays (FLAG_REPLAY) count
# like any other event. An entry an operator closed (session_closes) opens
# none. The maximum stay (MAX_STAY_KEY) is a parameter of the queries.
_NO_PASSAGE = record.FLAG_NO_PASSAGE


def _live_entry(e):
    """SQL: the row aliased e is an entry that opens a session."""
    return ("{e}.kind = 'in' AND ({e}.flags & {np}) = 0 AND NOT EXISTS ("
            "SELECT 1 FROM events {e}_void WHERE {e}_void.plate = {e}.plate"
            " AND {e}_void.kind = 'in' AND {e}_void.time = {e}.time"
            " AND {e}_void.gate = {e}.gate AND ({e}_void.flags & {np}) <> 0)"
            " AND NOT EXISTS (SELECT 1 FROM session_closes {e}_closed"
            " WHERE {e}_closed.gate = {e}.gate AND {e}_closed.jid = {e}.jid"
            " AND {e}_closed.seq = {e}.seq)").format(e=e, np=_NO_PASSAGE)


def _closing_exit(x):
    """SQL: the row aliased x is an exit that closes sessions."""
    return "{x}.kind = 'out' AND ({x}.flags & {np}) = 0".format(x=x, np=_NO_PASSAGE)


# The settings key of the maximum stay in seconds (no row: no maximum).
MAX_STAY_KEY = "max_stay_s"
NO_MAX_STAY_S = 2 ** 40   # stands for "no maximum" in the queries' parameters

# The latest entry of the plate at or before the time, and at or after the
# earliest a stay may begin (the time less the maximum stay), with no exit
# of the same plate at or after it.
OPEN_ENTRY = """SELECT e.gate, e.jid, e.seq, e.time, e.colour FROM events e
    WHERE e.plate = ? AND e.time <= ? AND e.time >= ? AND %s
      AND NOT EXISTS (SELECT 1 FROM events x
                      WHERE x.plate = e.plate AND x.time >= e.time AND %s)
    ORDER BY e.time DESC, e.received_at DESC LIMIT 1""" % (_live_entry("e"), _closing_exit("x"))

# Lane catch-up. The position of the CATCHUP_SCAN-th entry after a
# position (time, id): the end of the window one request looks at.
ENTRY_WINDOW_END = """SELECT time, id FROM events
    WHERE kind = 'in' AND (time, id) > (?, ?)
    ORDER BY time, id LIMIT 1 OFFSET ?"""
# The open sessions in a window (time, id) in (start, end]: live entries no
# exit has closed and no later live entry of the plate (a re-entry) has
# replaced, oldest first.
OPEN_ENTRIES = """SELECT e.id, e.gate, e.seq, e.time, e.quality, e.plate, e.colour,
        e.confidence, e.flags FROM events e
    WHERE e.kind = 'in' AND (e.time, e.id) > (?, ?) AND (e.time, e.id) <= (?, ?) AND %s
      AND NOT EXISTS (SELECT 1 FROM events x
                      WHERE x.plate = e.plate AND x.time >= e.time AND %s)
      AND NOT EXISTS (SELECT 1 FROM events y
                      WHERE y.plate = e.plate AND (y.time, y.id) > (e.time, e.id) AND %s)
    ORDER BY e.time, e.id LIMIT ?""" % (_live_entry("e"), _closing_exit("x"), _live_entry("y"))
ROW_TIME = "SELECT time FROM events WHERE id = ?"
# Stale sessions: open entries older than the maximum stay (before the
# first parameter) that no exit closed and no later live entry of the
# plate replaced, oldest first. Not inside; an operator may close them.
STALE_ENTRIES = """SELECT e.gate, e.jid, e.seq, e.time, e.plate, e.colour, e.flags FROM events e
    WHERE e.kind = 'in' AND e.time < ? AND %s
      AND NOT EXISTS (SELECT 1 FROM events x
                      WHERE x.plate = e.plate AND x.time >= e.time AND %s)
      AND NOT EXISTS (SELECT 1 FROM events y
                      WHERE y.plate = e.plate AND y.time > e.time AND %s)
    ORDER BY e.time, e.gate, e.jid, e.seq LIMIT ?""" % (
    _live_entry("e"), _closing_exit("x"), _live_entry("y"))
STALE_FIELDS = ("gate", "jid", "seq", "time", "plate", "colour", "flags")
INSERT_CLOSE = """INSERT INTO session_closes (gate, jid, seq, reason, closed_by, closed_at)
    VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (gate, jid, seq) DO NOTHING RETURNING seq"""
SESSION_CLOSES = """SELECT c.gate, c.jid, c.seq, e.time, e.plate, c.reason, c.closed_by,
        c.closed_at FROM session_closes c
    JOIN events e ON e.gate = c.gate AND e.jid = c.jid AND e.seq = c.seq
    ORDER BY c.closed_at DESC LIMIT ?"""
CLOSED_IDS = "SELECT gate, jid, seq FROM session_closes"
# Whether a plate's entry at a time (as a gate knows it) was closed by hand.
CLOSED_AT = """SELECT 1 FROM session_closes c
    JOIN events e ON e.gate = c.gate AND e.jid = c.jid AND e.seq = c.seq
    WHERE e.plate = ? AND e.time = ? LIMIT 1"""
# Finding things (store/history.py).
PLATES_LIKE = "SELECT DISTINCT plate FROM events WHERE plate LIKE ? ORDER BY plate LIMIT ?"
PLATES_OF_LENGTH = "SELECT DISTINCT plate FROM events WHERE LENGTH(plate) = ?"
PLATE_EVENTS = """SELECT gate, jid, seq, kind, time, plate, colour, fee, fee_source, entry_time,
        flags FROM events WHERE plate = ? AND time >= ? AND time < ?
    ORDER BY time, gate, jid, seq"""
CLOSE_FIELDS = ("gate", "jid", "seq", "time", "plate", "reason", "closed_by", "closed_at")

UPSERT_STATUS = """INSERT INTO gates (gate, status, received_at) VALUES (?, ?, ?)
    ON CONFLICT (gate) DO UPDATE SET status = excluded.status,
                                     received_at = excluded.received_at"""

COUNTS = "SELECT gate, kind, COUNT(*) FROM events GROUP BY gate, kind ORDER BY gate, kind"
IDENTITIES = "SELECT COUNT(*) FROM (SELECT DISTINCT gate, jid, seq FROM events) AS ids"
EXITS = """SELECT fee_source, COUNT(*), COALESCE(SUM(fee), 0) FROM events
    WHERE kind = 'out' GROUP BY fee_source"""
JOURNALS = """SELECT gate, jid, COUNT(*), MIN(seq), MAX(seq) FROM events
    GROUP BY gate, jid ORDER BY gate, jid"""
# Each stored seq followed by a missing one: (gate, jid, seq, next stored seq).
GAPS = """SELECT gate, jid, seq, next_seq FROM (
        SELECT gate, jid, seq,
               LEAD(seq) OVER (PARTITION BY gate, jid ORDER BY seq) AS next_seq
        FROM events) AS runs
    WHERE next_seq > seq + 1 ORDER BY gate, jid, seq"""
STATUSES = "SELECT gate, status, received_at FROM gates ORDER BY gate"

OUTBOX_PENDING = """SELECT e.gate, e.jid, e.seq, e.kind, e.time, e.quality, e.plate, e.colour,
        e.confidence, e.flags, e.fee, e.fee_source, e.tariff_version, e.entry_time
    FROM outbox o JOIN events e ON e.gate = o.gate AND e.jid = o.jid AND e.seq = o.seq
    WHERE o.forwarded_at IS NULL ORDER BY o.queued_at, o.gate, o.jid, o.seq LIMIT ?"""
OUTBOX_MARK = """UPDATE outbox SET forwarded_at = ?
    WHERE gate = ? AND jid = ? AND seq = ? AND forwarded_at IS NULL"""
OUTBOX_COUNT = "SELECT COUNT(*) FROM outbox WHERE forwarded_at IS NULL"
CORRECTIONS_PENDING = """SELECT id, gate, jid, seq, action, amount, note, created_at
    FROM corrections WHERE forwarded_at IS NULL ORDER BY created_at, id LIMIT ?"""
CORRECTION_MARK = "UPDATE corrections SET forwarded_at = ? WHERE id = ? AND forwarded_at IS NULL"
CORRECTIONS = """SELECT id, gate, jid, seq, action, amount, note, created_at, forwarded_at
    FROM corrections ORDER BY created_at, id"""

DAY_EVENTS = """SELECT gate, jid, seq, kind, time, plate, colour, fee, fee_source, entry_time,
        flags FROM events WHERE time >= ? AND time < ? ORDER BY time, gate, jid, seq"""
# Plates inside at a moment: an entry before it, within the maximum stay,
# with no exit of the plate between that entry and the moment.
INSIDE_AT = """SELECT DISTINCT e.plate FROM events e
    WHERE e.time < ? AND e.time >= ? AND %s
      AND NOT EXISTS (SELECT 1 FROM events x WHERE x.plate = e.plate
                      AND x.time >= e.time AND x.time < ? AND %s)""" % (
    _live_entry("e"), _closing_exit("x"))
# Exits in a period with the stored entry of their stay (NULL: none stored).
EXITS_WITH_ENTRY = """SELECT x.gate, x.jid, x.seq, x.plate, x.colour, x.time, x.fee,
        x.fee_source, x.entry_time, x.flags,
        (SELECT MAX(e.time) FROM events e
         WHERE e.plate = x.plate AND e.time <= x.time AND e.time >= x.time - ? AND %s
           AND NOT EXISTS (SELECT 1 FROM events y WHERE y.plate = x.plate
                           AND y.time >= e.time AND y.time < x.time AND %s)) AS stored_entry
    FROM events x WHERE x.kind = 'out' AND x.time >= ? AND x.time < ?
    ORDER BY x.time, x.gate, x.jid, x.seq""" % (_live_entry("e"), _closing_exit("y"))
# Flag bits 0 (exit without entry) and 1 (re-entry) want an operator's look
# on any event, and on an exit bits 3 (let out unpaid, fee owed), 5 (a
# camera replay: the barrier did not open for it, no fee) and 6 (no car
# went through); bit 2 (member, no fee)
# does not, nor does a replayed or unconfirmed entry.
FLAGGED_ANY = record.FLAG_NO_ENTRY | record.FLAG_REENTRY
FLAGGED_EXIT = record.FLAG_REPLAY | record.FLAG_NO_PASSAGE | record.FLAG_OWED
FLAGGED = """SELECT gate, jid, seq, kind, time, plate, colour, fee, fee_source, entry_time,
        flags FROM events WHERE (flags & %d) <> 0 OR (kind = 'out' AND (flags & %d) <> 0)
    ORDER BY time DESC LIMIT ?""" % (FLAGGED_ANY, FLAGGED_EXIT)
EVENT = """SELECT gate, jid, seq, kind, time, plate, colour, fee, fee_source, entry_time,
        flags FROM events WHERE gate = ? AND jid = ? AND seq = ?"""
INSERT_CORRECTION = """INSERT INTO corrections (id, gate, jid, seq, action, amount, note,
        created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"""

# ---- money: collected, owed and corrected (CORRECTION_ACTIONS) ----
_OWED_EXIT = "{x}.kind = 'out' AND ({x}.flags & %d) <> 0" % record.FLAG_OWED


def _unsettled(x):
    """SQL: no correction has settled the owed exit aliased x (SETTLES_OWED)."""
    return ("NOT EXISTS (SELECT 1 FROM corrections s WHERE s.gate = {x}.gate"
            " AND s.jid = {x}.jid AND s.seq = {x}.seq AND s.action IN ('%s'))"
            % "', '".join(SETTLES_OWED)).format(x=x)


# Exits of a period collected at the gate (not owed), per fee source.
CHARGED_BETWEEN = """SELECT fee_source, COUNT(*), COALESCE(SUM(fee), 0) FROM events x
    WHERE x.kind = 'out' AND x.time >= ? AND x.time < ? AND NOT (%s)
    GROUP BY fee_source""" % _OWED_EXIT.format(x="x")
# Exits of a period let out unpaid and not settled: their count and fees.
OWED_BETWEEN = """SELECT COUNT(*), COALESCE(SUM(x.fee), 0) FROM events x
    WHERE x.time >= ? AND x.time < ? AND %s AND %s""" % (
    _OWED_EXIT.format(x="x"), _unsettled("x"))
# Corrections of a period's events: (collected by hand on owed exits, the
# rest of the corrections). Of the "collected" on one owed exit only the
# first (created_at, id) counts.
_FIRST_COLLECTED = """NOT EXISTS (SELECT 1 FROM corrections d WHERE d.gate = c.gate
        AND d.jid = c.jid AND d.seq = c.seq AND d.action = 'collected'
        AND (d.created_at, d.id) < (c.created_at, c.id))"""
CORRECTED_BETWEEN = """SELECT
        COALESCE(SUM(CASE WHEN c.action = 'collected' AND %s AND %s
                          THEN c.amount ELSE 0 END), 0),
        COALESCE(SUM(CASE WHEN c.action = 'collected' AND %s THEN 0 %s ELSE 0 END), 0)
    FROM corrections c JOIN events x ON x.gate = c.gate AND x.jid = c.jid AND x.seq = c.seq
    WHERE x.time >= ? AND x.time < ?""" % (
    _OWED_EXIT.format(x="x"), _FIRST_COLLECTED, _OWED_EXIT.format(x="x"),
    " ".join("WHEN c.action = '%s' THEN %d * c.amount" % (action, sign)
             for action, sign in sorted(CORRECTION_ACTIONS.items()) if sign))
# What each plate still owes: its owed exits no correction settled.
OWED_LIST = """SELECT x.plate, x.gate, x.jid, x.seq, x.time, x.entry_time, x.fee, x.fee_source
    FROM events x WHERE %s AND %s ORDER BY x.plate, x.time, x.gate, x.jid, x.seq""" % (
    _OWED_EXIT.format(x="x"), _unsettled("x"))
OWED_FIELDS = ("plate", "gate", "jid", "seq", "time", "entry_time", "fee", "fee_source")

IS_MEMBER = """SELECT 1 FROM members WHERE plate = ? AND valid_from <= ? AND ? < valid_until"""
UPSERT_SETTING = """INSERT INTO settings (key, value) VALUES (?, ?)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value"""

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
