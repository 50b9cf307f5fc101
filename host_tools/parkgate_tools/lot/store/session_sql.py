"""The SQL of the lot's sessions and of finding things (store/sessions.py,
store/history.py), in the dialect of schema.py. Each statement takes the
store's lot as a parameter of its outer query; each correlated subquery
matches its outer row's lot, so no lot's rows ever reach another's session.

Sessions (firmware/docs/mqtt.md, "Sessions"). An entry counts unless it is
itself a read the passage input did not confirm (FLAG_NO_PASSAGE) or one
such entry voids it: same gate, plate and time. An exit closes the plate's
sessions entered at or before it unless it has FLAG_NO_PASSAGE (then it is
only flagged for the operator). Replays (FLAG_REPLAY) count like any other
event. An entry an operator closed (session_closes) opens none. The maximum
stay (MAX_STAY_KEY) is a parameter of the queries."""
from parkgate import record

_NO_PASSAGE = record.FLAG_NO_PASSAGE


def _live_entry(e):
    """SQL: the row aliased e is an entry that opens a session."""
    return ("{e}.kind = 'in' AND ({e}.flags & {np}) = 0 AND NOT EXISTS ("
            "SELECT 1 FROM events {e}_void WHERE {e}_void.lot = {e}.lot"
            " AND {e}_void.plate = {e}.plate"
            " AND {e}_void.kind = 'in' AND {e}_void.time = {e}.time"
            " AND {e}_void.gate = {e}.gate AND ({e}_void.flags & {np}) <> 0)"
            " AND NOT EXISTS (SELECT 1 FROM session_closes {e}_closed"
            " WHERE {e}_closed.lot = {e}.lot AND {e}_closed.gate = {e}.gate"
            " AND {e}_closed.jid = {e}.jid AND {e}_closed.seq = {e}.seq)"
            ).format(e=e, np=_NO_PASSAGE)


def _closing_exit(x, e):
    """SQL: the row aliased x is an exit of the lot of the row aliased e
    that closes sessions."""
    return "{x}.lot = {e}.lot AND {x}.kind = 'out' AND ({x}.flags & {np}) = 0".format(
        x=x, e=e, np=_NO_PASSAGE)


# The settings key of the maximum stay in seconds (no row: no maximum).
MAX_STAY_KEY = "max_stay_s"
NO_MAX_STAY_S = 2 ** 40   # stands for "no maximum" in the queries' parameters

# The latest entry of the plate at or before the time, and at or after the
# earliest a stay may begin (the time less the maximum stay), with no exit
# of the same plate at or after it. (lot, plate, time, earliest)
OPEN_ENTRY = """SELECT e.gate, e.jid, e.seq, e.time, e.colour FROM events e
    WHERE e.lot = ? AND e.plate = ? AND e.time <= ? AND e.time >= ? AND %s
      AND NOT EXISTS (SELECT 1 FROM events x
                      WHERE x.plate = e.plate AND x.time >= e.time AND %s)
    ORDER BY e.time DESC, e.received_at DESC LIMIT 1""" % (
    _live_entry("e"), _closing_exit("x", "e"))

# Lane catch-up. The position of the CATCHUP_SCAN-th entry after a
# position (time, id): the end of the window one request looks at.
# (lot, time, id, offset)
ENTRY_WINDOW_END = """SELECT time, id FROM events
    WHERE lot = ? AND kind = 'in' AND (time, id) > (?, ?)
    ORDER BY time, id LIMIT 1 OFFSET ?"""
# The open sessions in a window (time, id) in (start, end]: live entries no
# exit has closed and no later live entry of the plate (a re-entry) has
# replaced, oldest first. (lot, start time, start id, end time, end id, limit)
OPEN_ENTRIES = """SELECT e.id, e.gate, e.seq, e.time, e.quality, e.plate, e.colour,
        e.confidence, e.flags FROM events e
    WHERE e.lot = ? AND e.kind = 'in' AND (e.time, e.id) > (?, ?)
      AND (e.time, e.id) <= (?, ?) AND %s
      AND NOT EXISTS (SELECT 1 FROM events x
                      WHERE x.plate = e.plate AND x.time >= e.time AND %s)
      AND NOT EXISTS (SELECT 1 FROM events y WHERE y.lot = e.lot
                      AND y.plate = e.plate AND (y.time, y.id) > (e.time, e.id) AND %s)
    ORDER BY e.time, e.id LIMIT ?""" % (
    _live_entry("e"), _closing_exit("x", "e"), _live_entry("y"))
ROW_TIME = "SELECT time FROM events WHERE lot = ? AND id = ?"
# Stale sessions: open entries older than the maximum stay (before the
# time parameter) that no exit closed and no later live entry of the
# plate replaced, oldest first. Not inside; an operator may close them.
# (lot, before, limit)
STALE_ENTRIES = """SELECT e.gate, e.jid, e.seq, e.time, e.plate, e.colour, e.flags FROM events e
    WHERE e.lot = ? AND e.kind = 'in' AND e.time < ? AND %s
      AND NOT EXISTS (SELECT 1 FROM events x
                      WHERE x.plate = e.plate AND x.time >= e.time AND %s)
      AND NOT EXISTS (SELECT 1 FROM events y WHERE y.lot = e.lot
                      AND y.plate = e.plate AND y.time > e.time AND %s)
    ORDER BY e.time, e.gate, e.jid, e.seq LIMIT ?""" % (
    _live_entry("e"), _closing_exit("x", "e"), _live_entry("y"))
STALE_FIELDS = ("gate", "jid", "seq", "time", "plate", "colour", "flags")
INSERT_CLOSE = """INSERT INTO session_closes (lot, gate, jid, seq, reason, closed_by, closed_at)
    VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (lot, gate, jid, seq) DO NOTHING RETURNING seq"""
SESSION_CLOSES = """SELECT c.gate, c.jid, c.seq, e.time, e.plate, c.reason, c.closed_by,
        c.closed_at FROM session_closes c
    JOIN events e ON e.lot = c.lot AND e.gate = c.gate AND e.jid = c.jid AND e.seq = c.seq
    WHERE c.lot = ? ORDER BY c.closed_at DESC LIMIT ?"""
CLOSE_FIELDS = ("gate", "jid", "seq", "time", "plate", "reason", "closed_by", "closed_at")
CLOSED_IDS = "SELECT gate, jid, seq FROM session_closes WHERE lot = ?"
# Whether a plate's entry at a time (as a gate knows it) was closed by hand.
CLOSED_AT = """SELECT 1 FROM session_closes c
    JOIN events e ON e.lot = c.lot AND e.gate = c.gate AND e.jid = c.jid AND e.seq = c.seq
    WHERE c.lot = ? AND e.plate = ? AND e.time = ? LIMIT 1"""

# Plates inside at a moment: an entry before it, within the maximum stay,
# with no exit of the plate between that entry and the moment.
# (lot, moment, earliest, moment)
INSIDE_AT = """SELECT DISTINCT e.plate FROM events e
    WHERE e.lot = ? AND e.time < ? AND e.time >= ? AND %s
      AND NOT EXISTS (SELECT 1 FROM events x WHERE x.plate = e.plate
                      AND x.time >= e.time AND x.time < ? AND %s)""" % (
    _live_entry("e"), _closing_exit("x", "e"))
# Exits in a period with the stored entry of their stay (NULL: none stored).
# (maximum stay, lot, start, end)
EXITS_WITH_ENTRY = """SELECT x.gate, x.jid, x.seq, x.plate, x.colour, x.time, x.fee,
        x.fee_source, x.entry_time, x.flags,
        (SELECT MAX(e.time) FROM events e
         WHERE e.lot = x.lot AND e.plate = x.plate AND e.time <= x.time
           AND e.time >= x.time - ? AND %s
           AND NOT EXISTS (SELECT 1 FROM events y WHERE y.plate = x.plate
                           AND y.time >= e.time AND y.time < x.time AND %s)) AS stored_entry
    FROM events x WHERE x.lot = ? AND x.kind = 'out' AND x.time >= ? AND x.time < ?
    ORDER BY x.time, x.gate, x.jid, x.seq""" % (_live_entry("e"), _closing_exit("y", "x"))

# Finding things (store/history.py).
PLATES_LIKE = """SELECT DISTINCT plate FROM events WHERE lot = ? AND plate LIKE ?
    ORDER BY plate LIMIT ?"""
PLATES_OF_LENGTH = "SELECT DISTINCT plate FROM events WHERE lot = ? AND LENGTH(plate) = ?"
PLATE_EVENTS = """SELECT gate, jid, seq, kind, time, plate, colour, fee, fee_source, entry_time,
        flags FROM events WHERE lot = ? AND plate = ? AND time >= ? AND time < ?
    ORDER BY time, gate, jid, seq"""
