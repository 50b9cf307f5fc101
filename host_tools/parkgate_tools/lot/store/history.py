"""Finding things in the lot store (firmware/docs/lot-server.md, "Finding
things"): plates by a full or fuzzy match on the usual misreads, a plate's
session history and the sessions of a date range, paged, as rows a CSV
export writes, all of the store's lot. A base of EventStore: it uses the
store's lot and _query."""
from parkgate import plate as plates
from parkgate import record
from parkgate_tools.lot.store import schema
from parkgate_tools.lot.store import session_sql as sql

SESSION_FIELDS = ("plate", "entry_gate", "entry_jid", "entry_seq", "entry_time", "exit_gate",
                  "exit_time", "fee", "fee_source", "flags", "closed")
PAGE_SIZE = 50
# Beyond what plates.normalise maps in a plate's serial (I -> 1, O -> 0),
# the search folds these on both sides anywhere, so that a plate without a
# province (a test or foreign plate) matches its misreads too.
_FOLD = str.maketrans("OI", "01")


def search_key(text):
    """The query as the store's plates are kept (plates.normalise), or the
    text upper-cased when it is no plate (a partial one)."""
    try:
        return plates.normalise(text)
    except plates.PlateError:
        return str(text).strip().upper()


def is_misread(query, found):
    """True if found may be a read of the same car as query: plates.similar
    (one truth for the confusable glyphs: 8/B, 0/D/Q/U, ...) on both as
    normalised, with O/I folded to 0/1."""
    return plates.similar(query.translate(_FOLD), found.translate(_FOLD))


def pair(events, closed=()):
    """Sessions of a list of event dicts (EVENT_FIELDS) of any plates, in
    time order: an entry and the plate's next exit make one; an exit
    without a stored entry before it is one with its own entry_time (the
    stay its fee was computed from); an entry the plate's next entry
    replaced, or with no exit yet, is one without exit. closed: the
    (gate, jid, seq) of entries an operator closed."""
    sessions, open_by_plate = [], {}
    for e in events:
        if e["kind"] == "in":
            if e["flags"] & record.FLAG_NO_PASSAGE:
                continue
            session = dict.fromkeys(SESSION_FIELDS)
            session.update(plate=e["plate"], entry_gate=e["gate"], entry_jid=e["jid"],
                           entry_seq=e["seq"], entry_time=e["time"],
                           flags=e["flags"],
                           closed=(e["gate"], e["jid"], e["seq"]) in closed)
            sessions.append(session)
            open_by_plate[e["plate"]] = session
            continue
        session = open_by_plate.pop(e["plate"], None)
        if session is None or session["closed"]:
            session = dict.fromkeys(SESSION_FIELDS)
            session.update(plate=e["plate"], entry_time=e["entry_time"], flags=0, closed=False)
            sessions.append(session)
        session.update(exit_gate=e["gate"], exit_time=e["time"], fee=e["fee"],
                       fee_source=e["fee_source"], flags=session["flags"] | e["flags"])
    return sessions


class History:
    """Search, history and the sessions of a range, shared by both backends."""

    def find_plates(self, text, fuzzy=True, limit=100):
        """Stored plates matching text: the same plate first, then (fuzzy)
        its misreads (is_misread), then plates containing it, by plate."""
        query = search_key(text)
        if not query:
            return []
        found = [row[0] for row in self._query(sql.PLATES_LIKE, (
            self.lot, "%" + query.replace("%", "").replace("_", "") + "%", limit))]
        if fuzzy:
            found += [row[0] for row in self._query(sql.PLATES_OF_LENGTH,
                                                    (self.lot, len(query)))
                      if is_misread(query, row[0])]
        exact = [query] if query in found else []
        misread = sorted({p for p in found if p != query and len(p) == len(query)
                          and is_misread(query, p)})
        rest = sorted(set(found) - set(exact) - set(misread))
        return (exact + misread + rest)[:limit]

    def plate_history(self, plate, start=0, end=2 ** 62):
        """The sessions of plate with an entry or exit in [start, end), in
        time order, as dicts of SESSION_FIELDS."""
        events = [dict(zip(schema.EVENT_FIELDS, row))
                  for row in self._query(sql.PLATE_EVENTS, (self.lot, plate, start, end))]
        return pair(events, self._closed_ids())

    def sessions_between(self, start, end, offset=0, limit=None):
        """The sessions with an entry or exit in [start, end), in time
        order, as dicts of SESSION_FIELDS: limit of them after offset (all
        when limit is None)."""
        sessions = pair(self.events_between(start, end), self._closed_ids())
        return sessions[offset:] if limit is None else sessions[offset:offset + limit]

    def _closed_ids(self):
        return {tuple(row) for row in self._query(sql.CLOSED_IDS, (self.lot,))}
