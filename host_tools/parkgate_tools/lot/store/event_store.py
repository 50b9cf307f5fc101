"""What the lot's two stores share: every read and write, in the SQL of
schema.py that SQLite and PostgreSQL both accept, behind one connection and
a lock, each on the rows of the store's lot only (``store.lot``: many lots
may share one database). Its bases add sessions (sessions.py), finding
things (history.py), accounts and the audit log (accounts.py) and debts
collected at the next visit (debts.py). The backends (sqlite.Store,
postgres.PgStore) add how to connect, create the schema, number rows and
wait for a lock."""
import json
import threading
import time
import uuid

from parkgate import record
from parkgate_tools import ids
from parkgate_tools.lot.store import schema
from parkgate_tools.lot.store.accounts import WHO_MAX, Accounts
from parkgate_tools.lot.store.debts import Debts
from parkgate_tools.lot.store.schema import EVENT_FIELDS
from parkgate_tools.lot.store.history import History
from parkgate_tools.lot.store.sessions import Sessions

LOCK_WAIT_S = 10.0       # default bound on waiting for a locked SQLite database
LOT_MAX = 64             # characters of a lot id
NOTE_MAX = 500           # characters of a correction's note


def lock_wait_seconds(value):
    """value as float seconds; ValueError unless a number >= 0 (not infinite)."""
    if type(value) not in (int, float) or not 0 <= value < float("inf"):
        raise ValueError("lock_wait: %r is not a number of seconds >= 0" % (value,))
    return float(value)


def lot_id(lot):
    """lot if it is a lot id (parkgate_tools.ids: letters, digits and -, at
    most LOT_MAX characters), else ValueError."""
    ids.check_id("lot", lot)
    if len(lot) > LOT_MAX:
        raise ValueError("lot: %r is longer than %d characters" % (lot, LOT_MAX))
    return lot


class EventStore(Accounts, Debts, Sessions, History):
    """The store of lot `lot` (an id) on one connection guarded by a lock,
    so any thread may call any method. It reads and writes only that lot's
    rows; other lots may share the database (lot: see lot_id). A backend
    subclass sets backend and _BEGIN and provides _connect, _create_schema,
    _with_ids (the rows with their row ids, or as they are where the
    database numbers them), _next_audit_id, _rollback, and for
    before_lots.migrate _columns and _set_aside; it may hook _stored.

    lock_wait: seconds to wait for a database another connection holds
    locked (see sqlite.Store; postgres.PgStore: its lock_timeout).
    create_schema: False for a second connection to a database whose
    schema is there (open_reader)."""

    backend = ""         # "sqlite" or "postgresql"
    _BEGIN = "BEGIN"

    def __init__(self, path, lot, lock_wait=LOCK_WAIT_S, create_schema=True):
        self.path = path
        self.lot = lot_id(lot)
        self.lock_wait = lock_wait_seconds(lock_wait)
        self._lock = threading.Lock()
        self._sql_cache = {}
        self._db = None
        with self._lock:
            self._retry_locked("opening it", self._open)
            if create_schema:
                self._transaction(self._create_schema, "creating the schema")

    def _open(self):
        self._db = self._connect()

    def open_reader(self):
        """The same database on a connection (and lock) of its own, for
        readers beside the bridge's writer: the operator page, the
        forwarder. Its reads never wait on this store's lock (SQLite in WAL
        mode: readers do not block the writer nor it them; PostgreSQL: a
        second session). It may write too (a correction, rows marked
        forwarded): those wait on the database's own lock, within
        lock_wait. Same lot. Close it when done."""
        return type(self)(self.path, self.lot, self.lock_wait, create_schema=False)

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
                rows.setdefault((gate, jid, event.seq),
                                (self.lot,) + schema.event_row(gate, jid, event, now))
        status_rows = {gate: (self.lot, gate, json.dumps(status, sort_keys=True), now)
                       for gate, status in statuses}

        def write(cur):
            new = self._insert_events(cur, list(rows.values()))
            self._settle_debts(cur, batches, new, now)
            if outbox and new:
                self._insert_outbox(cur, new, now)
            for row in status_rows.values():
                cur.execute(self._sql(schema.UPSERT_STATUS), row)
            return new

        with self._lock:
            new = set(self._transaction(write))
            self._stored(len(new))
        counts = []
        for gate, jid, events in batches:
            seqs = {event.seq for event in events}
            counts.append(sum(1 for seq in seqs if (gate, jid, seq) in new))
            new.difference_update((gate, jid, seq) for seq in seqs)
        return counts

    def _insert_events(self, cur, rows):
        """Multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING the new identities."""
        new = []
        for start in range(0, len(rows), schema.ROWS_PER_INSERT):
            chunk = self._with_ids(cur, rows[start:start + schema.ROWS_PER_INSERT])
            columns, one = schema.EVENT_COLUMNS, schema.EVENT_VALUES
            if len(chunk[0]) > len(schema.EVENT_COLUMNS.split(",")):
                columns, one = columns + ", id", one[:-1] + ", ?)"
            values = ", ".join([one] * len(chunk))
            sql = "INSERT INTO events (%s) VALUES %s ON CONFLICT (lot, gate, jid, seq) " \
                  "DO NOTHING RETURNING gate, jid, seq" % (columns, values)
            cur.execute(self._sql(sql), [value for row in chunk for value in row])
            new.extend(tuple(found) for found in cur.fetchall())
        return new

    def _insert_outbox(self, cur, identities, now):
        for start in range(0, len(identities), schema.ROWS_PER_INSERT):
            chunk = identities[start:start + schema.ROWS_PER_INSERT]
            values = ", ".join(["(?, ?, ?, ?, ?)"] * len(chunk))
            sql = "INSERT INTO outbox (lot, gate, jid, seq, queued_at) VALUES %s " \
                  "ON CONFLICT (lot, gate, jid, seq) DO NOTHING" % values
            cur.execute(self._sql(sql),
                        [v for ident in chunk for v in (self.lot,) + ident + (now,)])

    def record_status(self, gate, status):
        """Keep the gate's last status message (a dict)."""
        self.ingest_many([], statuses=[(gate, status)])

    def add_correction(self, gate, jid, seq, action, amount, note, by):
        """Record user by's correction of the stored event (gate, jid, seq)
        as a row of its own (the event is never edited), and its audit row
        ("correction"), in one transaction; it is forwarded upstream like an
        event. Returns its id. ValueError if the event is not stored or the
        action or amount is not valid."""
        with self._lock:
            return self._transaction(lambda cur: self._insert_correction(
                cur, gate, jid, seq, action, amount, note, by))

    def _insert_correction(self, cur, gate, jid, seq, action, amount, note, by):
        """add_correction's writes inside the caller's transaction (no lock
        taken, no commit): the correction and its audit row. Returns its id."""
        if action not in schema.CORRECTION_ACTIONS:
            raise ValueError("action: %r is not one of %s" % (
                action, sorted(schema.CORRECTION_ACTIONS)))
        if type(amount) is not int or not 0 <= amount <= 0xFFFFFFFF:
            raise ValueError("amount: %r is not a fen amount" % (amount,))
        cur.execute(self._sql(schema.EVENT), (self.lot, gate, jid, seq))
        if cur.fetchone() is None:
            raise ValueError("no stored event %s/%s/%s" % (gate, jid, seq))
        correction_id, note, by = uuid.uuid4().hex, str(note)[:NOTE_MAX], str(by)[:WHO_MAX]
        cur.execute(self._sql(schema.INSERT_CORRECTION), (
            self.lot, correction_id, gate, jid, seq, action, amount, note, by, time.time()))
        self._insert_audit(cur, by, "correction", {
            "id": correction_id, "gate": gate, "jid": jid, "seq": seq, "action": action,
            "amount": amount, "note": note})
        return correction_id

    def replace_members(self, members):
        """Replace the member list with [{"p": plate, "name", "from", "until"}]."""
        def write(cur):
            cur.execute(self._sql(schema.DELETE_MEMBERS), (self.lot,))
            for m in members:
                cur.execute(self._sql(schema.INSERT_MEMBER),
                            (self.lot, m["p"], m.get("name", ""), m.get("from", 0),
                             m.get("until", 0xFFFFFFFF)))
        with self._lock:
            self._transaction(write)

    def set_setting(self, key, value):
        """Keep a text value under key (e.g. the tariff taken from upstream)."""
        with self._lock:
            self._transaction(
                lambda cur: cur.execute(self._sql(schema.UPSERT_SETTING), (self.lot, key, value)))

    def mark_forwarded(self, identities=(), corrections=()):
        """Mark outbox rows [(gate, jid, seq)] and correction ids as
        forwarded, in one transaction: call only after the central server's 2xx."""
        now = time.time()

        def write(cur):
            for ident in identities:
                cur.execute(self._sql(schema.OUTBOX_MARK), (now, self.lot) + tuple(ident))
            for correction_id in corrections:
                cur.execute(self._sql(schema.CORRECTION_MARK), (now, self.lot, correction_id))
        with self._lock:
            self._transaction(write)

    # ---- reading ----

    def _query(self, sql, params=()):
        with self._lock:
            return self._db.execute(self._sql(sql), params).fetchall()

    def statuses(self):
        """{gate: (last status dict, received_at unix seconds)}."""
        return {gate: (json.loads(status), at)
                for gate, status, at in self._query(schema.STATUSES, (self.lot,))}

    def is_member(self, plate, at):
        """True if plate is a member (parks free) at unix time at."""
        return bool(self._query(schema.IS_MEMBER, (self.lot, plate, at, at)))

    def setting(self, key, default=None):
        """The text kept under key, else default."""
        rows = self._query(schema.SETTING, (self.lot, key))
        return rows[0][0] if rows else default

    def outbox_pending(self, limit=500):
        """Up to limit events not yet forwarded, oldest first, as dicts
        (EVENT_FIELDS less received_at, plus quality and confidence)."""
        return [dict(zip(schema.OUTBOX_FIELDS, row))
                for row in self._query(schema.OUTBOX_PENDING, (self.lot, limit))]

    def outbox_backlog(self):
        """How many events wait to be forwarded."""
        return self._query(schema.OUTBOX_COUNT, (self.lot,))[0][0]

    def corrections_pending(self, limit=500):
        """Corrections not yet forwarded, oldest first, as dicts."""
        keys = ("id", "gate", "jid", "seq", "action", "amount", "note", "created_at")
        return [dict(zip(keys, row))
                for row in self._query(schema.CORRECTIONS_PENDING, (self.lot, limit))]

    def corrections(self):
        """Every correction, oldest first, as dicts of schema.CORRECTION_FIELDS
        (made_by: who recorded it)."""
        return [dict(zip(schema.CORRECTION_FIELDS, row))
                for row in self._query(schema.CORRECTIONS, (self.lot,))]

    def events_between(self, start, end):
        """Events with start <= time < end, in time order, as dicts of EVENT_FIELDS."""
        return [dict(zip(EVENT_FIELDS, row))
                for row in self._query(schema.DAY_EVENTS, (self.lot, start, end))]

    def flagged(self, limit=200):
        """The most recent events flagged for the operator, as dicts: no
        entry or re-entry, and exits let out unpaid, camera replays or exits
        no car went through (FLAGGED_ANY, FLAGGED_EXIT)."""
        return [dict(zip(EVENT_FIELDS, row))
                for row in self._query(schema.FLAGGED, (self.lot, limit))]

    def latest_event(self, gate):
        """The newest stored event of gate (the last stored) as {"jid",
        "seq", "received_at"}, or None if none is stored. It reads the
        gate's rows by the primary key and sorts them (about 0.5 ms per
        thousand events of the gate on SQLite): an index on (lot, gate, id)
        would make it one lookup, but SQLite ingest measured 68-79k events/s
        without it and 43-57k with it."""
        rows = self._query(schema.LATEST_EVENT, (self.lot, gate))
        return dict(zip(("jid", "seq", "received_at"), rows[0])) if rows else None

    def money(self, start, end):
        """The money of the exits with start <= time < end and of the
        corrections of that period's events, in fen (the rule:
        schema.CORRECTION_ACTIONS): ``online`` and ``offline`` collected at
        the gate (count, fen), ``by_hand`` collected later on owed exits,
        ``owed`` (count, fen) still owed, ``corrected`` the other
        corrections' sum; ``collected`` = online + offline + by_hand."""
        charged = {source: (n, int(fen)) for source, n, fen in
                   self._query(schema.CHARGED_BETWEEN, (self.lot, start, end))}
        owed = self._query(schema.OWED_BETWEEN, (self.lot, start, end))[0]
        by_hand, corrected = self._query(schema.CORRECTED_BETWEEN, (self.lot, start, end))[0]
        online, offline = (charged.get(record.FEE_SOURCE_NAMES[source], (0, 0))
                           for source in (record.FEE_ONLINE, record.FEE_OFFLINE))
        return {"online": online, "offline": offline, "by_hand": int(by_hand),
                "collected": online[1] + offline[1] + int(by_hand),
                "owed": (owed[0], int(owed[1])), "corrected": int(corrected)}

    def owed_by_plate(self):
        """What each plate still owes: [{"plate", "fen", "sessions": [owed
        exits as dicts of schema.OWED_FIELDS, oldest first]}], by plate."""
        plates = {}
        for row in self._query(schema.OWED_LIST, (self.lot,)):
            owed = dict(zip(schema.OWED_FIELDS, row))
            plate = plates.setdefault(owed["plate"], {"plate": owed["plate"], "fen": 0,
                                                      "sessions": []})
            plate["fen"] += owed["fee"]
            plate["sessions"].append(owed)
        return list(plates.values())

    def summary(self):
        """Counts that show whether anything was lost or duplicated:
        rows and distinct identities, events per gate and kind, exits charged
        online ("on") and offline ("off") with their fee sums, and per
        journal (gate, jid) its count, max seq and the seqs missing below
        it (``gaps`` as [first, last] ranges, ``missing`` their total)."""
        counts, identities, exits, journals, gap_rows = [
            self._query(sql, (self.lot,)) for sql in (
                schema.COUNTS, schema.IDENTITIES, schema.EXITS, schema.JOURNALS, schema.GAPS)]
        identities = identities[0][0]
        per_gate = {}
        for gate, kind, n in counts:
            per_gate.setdefault(gate, {"in": 0, "out": 0})[kind] = n
        charged = {record.FEE_SOURCE_NAMES[source]: {"count": 0, "fees": 0}
                   for source in (record.FEE_ONLINE, record.FEE_OFFLINE)}
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

    def _stored(self, rows):
        """Called with the lock held after a commit that stored rows new events."""

    def _sql(self, statement):
        """The statement in this backend's placeholder style."""
        return statement

    def _retry_locked(self, what, work):
        """work(); a backend that can meet a locked database retries it here."""
        return work()

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

    def _commit(self):
        """COMMIT; its own method so that tests can make it fail."""
        self._db.execute("COMMIT")

