"""The lot store's sessions (firmware/docs/mqtt.md, "Sessions"; ghost cars:
firmware/docs/lot-server.md): the open entry a fee is computed from, the
lane catch-up pages, the plates inside, the exits with their stored entry,
the maximum stay, stale sessions and the sessions an operator closed, all
of the store's lot (SQL: session_sql.py). A base of EventStore: it uses the
store's lot, _query, _transaction, _lock, _sql and _insert_audit."""
import time

from parkgate import record
from parkgate_tools.lot.store import schema
from parkgate_tools.lot.store.accounts import WHO_MAX
from parkgate_tools.lot.store import session_sql as sql
from parkgate_tools.lot.store.schema import CATCHUP_PAGE, CATCHUP_SCAN, Entry

_I64_MAX = 2 ** 63 - 1
STALE_SHOWN = 200        # stale sessions listed at most (oldest first)


class Sessions:
    """Reads and writes of sessions, shared by both backends."""

    # ---- the maximum stay ----

    def set_max_stay(self, seconds):
        """Keep the lot's maximum stay in seconds (None or 0: no maximum).
        Kept in the database, so the bridge, the page and every reader
        apply one policy. ValueError unless a whole number of seconds >= 0."""
        if seconds is None:
            seconds = 0
        if type(seconds) is not int or seconds < 0:
            raise ValueError("max stay: %r is not a whole number of seconds >= 0" % (seconds,))
        self.set_setting(sql.MAX_STAY_KEY, str(seconds))

    def max_stay(self):
        """The maximum stay in seconds, or None (no maximum)."""
        seconds = int(self.setting(sql.MAX_STAY_KEY, "0"))
        return seconds or None

    def _stay_limit(self):
        """The maximum stay as a query parameter (NO_MAX_STAY_S for none)."""
        return self.max_stay() or sql.NO_MAX_STAY_S

    # ---- reading ----

    def open_entry(self, plate, before_time):
        """The latest entry of plate at any gate of the lot at or before
        before_time, within the maximum stay, that no exit has closed, none
        voided and no operator closed, as an Entry, else None."""
        rows = self._query(sql.OPEN_ENTRY,
                           (self.lot, plate, before_time, before_time - self._stay_limit()))
        return Entry(*rows[0]) if rows else None

    def ended(self, plate, entry_time, at):
        """True if the stay of plate entered at entry_time (an entry a gate
        knows of, perhaps not stored) cannot be open at time at: older than
        the maximum stay, or an entry an operator closed."""
        max_stay = self.max_stay()
        if max_stay is not None and entry_time < at - max_stay:
            return True
        return bool(self._query(sql.CLOSED_AT, (self.lot, plate, entry_time)))

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
            rows = self._query(sql.ROW_TIME, (self.lot, cursor))
            if not rows:
                raise ValueError("c: %r is not a stored row id" % (cursor,))
            start = max(start, (rows[0][0], cursor))
        end = self._query(sql.ENTRY_WINDOW_END, (self.lot,) + start + (scan - 1,))
        window_end = tuple(end[0]) if end else (_I64_MAX, _I64_MAX)
        rows = self._query(sql.OPEN_ENTRIES,
                           (self.lot,) + start + window_end + (limit + 1,))
        entries = [(row_id, gate, record.Event(record.KIND_ENTRY, t, quality, plate, colour,
                                               confidence, flags, seq=seq))
                   for row_id, gate, seq, t, quality, plate, colour, confidence, flags in rows]
        if len(entries) > limit:
            entries = entries[:limit]
            return entries, entries[-1][0]
        return entries, (window_end[1] if end else None)

    def inside_at(self, moment):
        """The plates inside at unix time moment (entered within the maximum
        stay, not yet out; voided or closed entries and unconfirmed exits do
        not count)."""
        return {row[0] for row in self._query(
            sql.INSIDE_AT, (self.lot, moment, moment - self._stay_limit(), moment))}

    def exits_with_entries(self, start, end):
        """Exits with start <= time < end as dicts, each with stored_entry:
        the time of the stored entry of its stay (within the maximum stay,
        as a fee would find it), or None."""
        keys = ("gate", "jid", "seq", "plate", "colour", "time", "fee", "fee_source",
                "entry_time", "flags", "stored_entry")
        return [dict(zip(keys, row)) for row in self._query(
            sql.EXITS_WITH_ENTRY, (self._stay_limit(), self.lot, start, end))]

    def stale_sessions(self, now, limit=STALE_SHOWN):
        """Open sessions entered more than the maximum stay before now (none
        without a maximum): not inside, listed for an operator to close.
        Oldest first, as dicts of session_sql.STALE_FIELDS."""
        max_stay = self.max_stay()
        if max_stay is None:
            return []
        return [dict(zip(sql.STALE_FIELDS, row))
                for row in self._query(sql.STALE_ENTRIES,
                                       (self.lot, now - max_stay, limit))]

    def session_closes(self, limit=STALE_SHOWN):
        """The sessions closed by hand, the latest first, as dicts of
        session_sql.CLOSE_FIELDS."""
        return [dict(zip(sql.CLOSE_FIELDS, row))
                for row in self._query(sql.SESSION_CLOSES, (self.lot, limit))]

    # ---- writing ----

    def close_session(self, gate, jid, seq, reason, closed_by):
        """Close the session of the stored entry (gate, jid, seq) by hand (a
        ghost: the car left unseen): it is no longer inside, no fee is
        computed from it and lane catch-up leaves it out. The entry is not
        edited; the close is a row of its own with the reason (required)
        and who closed it (user closed_by), written with its audit row
        ("close-session") in one transaction. ValueError if the event is not a stored entry,
        the reason is empty or the session was closed already."""
        reason = str(reason or "").strip()[:500]
        if not reason:
            raise ValueError("reason: say why the session is closed")

        def write(cur):
            cur.execute(self._sql(schema.EVENT), (self.lot, gate, jid, seq))
            found = cur.fetchone()
            if found is None or found[3] != "in":
                raise ValueError("no stored entry %s/%s/%s" % (gate, jid, seq))
            who = str(closed_by)[:WHO_MAX]
            cur.execute(self._sql(sql.INSERT_CLOSE),
                        (self.lot, gate, jid, seq, reason, who, time.time()))
            if cur.fetchone() is None:
                raise ValueError("session %s/%s/%s is closed already" % (gate, jid, seq))
            self._insert_audit(cur, who, "close-session", {
                "gate": gate, "jid": jid, "seq": seq, "reason": reason})
        with self._lock:
            self._transaction(write)
