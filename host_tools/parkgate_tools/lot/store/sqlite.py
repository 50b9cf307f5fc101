"""The lot store on SQLite (WAL, synchronous=FULL): a file several
processes (and lots) may share, each write transaction BEGIN IMMEDIATE. A
file made before lots is migrated when first opened (store/before_lots.py:
its rows become the opening store's lot).

Waiting on SQLite's write lock follows one rule, ``Store._retry_locked``:
opening the file, creating the schema and every write transaction retry a
locked database, logging each attempt, for at most ``lock_wait`` seconds,
then raise DatabaseLocked."""
import logging
import sqlite3
import time

from parkgate_tools.lot.store import before_lots, debts, schema
from parkgate_tools.lot.store.event_store import LOCK_WAIT_S, EventStore, lock_wait_seconds

log = logging.getLogger("parkgate.store")

_BUSY_SLICE_S = 1.0      # SQLite's own busy wait within one attempt
_RETRY_FIRST_S = 0.05    # pause after the first locked attempt, doubling
_RETRY_MAX_S = 1.0
_SQLITE_BUSY = getattr(sqlite3, "SQLITE_BUSY", 5)


class DatabaseLocked(sqlite3.OperationalError):
    """A database stayed locked by another connection for longer than the
    store's lock_wait (SQLite's write lock; PostgreSQL: a lock past
    lock_timeout or a statement past statement_timeout); the text names
    the database and what was being done."""


def _is_busy(exc):
    """True if exc is SQLite's "database is locked" (SQLITE_BUSY)."""
    if isinstance(exc, DatabaseLocked) or not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)   # Python 3.11+
    if code is not None:
        return code & 0xFF == _SQLITE_BUSY
    return "database is locked" in str(exc)


class Store(EventStore):
    """SQLite (WAL, synchronous=FULL) behind the lot bridge. Thread-safe: one
    connection guarded by a lock, so any thread may call any method; several
    processes may share the file (each write transaction is BEGIN
    IMMEDIATE).

    lock_wait: seconds to wait for a database another connection holds
    locked, when opening it (journal mode, schema) and at each write
    transaction: each locked attempt is logged (file, what, attempt, wait)
    and retried; once lock_wait has passed, DatabaseLocked. 0: give up at
    the first locked attempt. A read waits at most SQLite's busy slice (1 s);
    in WAL mode it never waits for a writer (open_reader: the page's own
    connection)."""

    backend = "sqlite"
    _BEGIN = "BEGIN IMMEDIATE"

    def __init__(self, path, lot, lock_wait=LOCK_WAIT_S, create_schema=True):
        self._busy_ms = self._busy_ms_for(lock_wait_seconds(lock_wait))
        super().__init__(path, lot, lock_wait, create_schema)

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

    def _with_ids(self, cur, rows):
        """The rows with their row ids appended: SQLite numbers them after
        the highest stored of any lot, inside the write transaction (BEGIN
        IMMEDIATE: one writer at a time, so no two rows get one id); a row that turns
        out to be stored already leaves a gap, which is harmless."""
        cur.execute("SELECT COALESCE(MAX(id), 0) FROM events")
        base = cur.fetchone()[0]
        return [row + (base + i,) for i, row in enumerate(rows, 1)]

    def _next_audit_id(self, cur):
        """The next audit row id: after the highest of any lot (BEGIN IMMEDIATE)."""
        cur.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM audit")
        return cur.fetchone()[0]

    def _columns(self, cur, table):
        cur.execute("PRAGMA table_info(%s)" % table)
        return [column[1] for column in cur.fetchall()]

    def _set_aside(self, cur, table):
        """Nothing: SQLite renames a table's keys with it."""

    def _create_schema(self, cur):
        columns = self._columns(cur, "events")
        if columns and "id" not in columns:
            # A file made before row ids: number its rows in insertion order.
            cur.execute("ALTER TABLE events ADD COLUMN id BIGINT")
            cur.execute("UPDATE events SET id = rowid")
        before_lots.migrate(self, cur)
        for statement in schema.SCHEMA + debts.SCHEMA + schema.ID_INDEXES:
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

    def _rollback(self):
        if self._db.in_transaction:
            self._db.rollback()
