"""The lot store on PostgreSQL (psycopg 3): the same schema and methods as
the SQLite store, for several bridge workers on several machines.

Every connection has bounds, so that a server that is gone or stuck never
holds the bridge for long: connect_timeout, TCP keepalives (a peer gone
without a word is noticed in about a minute), a lock_timeout of lock_wait,
a statement_timeout and an idle_in_transaction_session_timeout. Connection
parameters given in the URL win over these defaults."""
from parkgate_tools.lot.store import schema
from parkgate_tools.lot.store.event_store import EventStore
from parkgate_tools.lot.store.sqlite import DatabaseLocked

# libpq parameters a URL does not set itself.
CONNECTION_DEFAULTS = {"connect_timeout": "10", "keepalives": "1", "keepalives_idle": "30",
                       "keepalives_interval": "10", "keepalives_count": "3"}
STATEMENT_TIMEOUT_S = 30.0     # at least twice lock_wait
IDLE_IN_TRANSACTION_S = 60.0


class PgStore(EventStore):
    """The same store on PostgreSQL: url is a libpq connection string
    (``postgresql://user@/db?host=/socket/dir&port=5432``). One connection
    in autocommit mode with explicit BEGIN/COMMIT, guarded by a lock; it is
    opened again after the server dropped it. Needs psycopg 3.

    lock_wait: the session's lock_timeout; a lock held past it, or a
    statement past statement_timeout, raises DatabaseLocked (as SQLite's
    lock does), having rolled back."""

    backend = "postgresql"
    _BEGIN = "BEGIN"

    def _connect(self):
        import psycopg
        from psycopg.conninfo import conninfo_to_dict
        given = conninfo_to_dict(self.path)
        db = psycopg.connect(self.path, autocommit=True, **{
            key: value for key, value in CONNECTION_DEFAULTS.items() if key not in given})
        try:
            for name, seconds in (
                    ("lock_timeout", self.lock_wait),
                    ("statement_timeout", max(STATEMENT_TIMEOUT_S, 2 * self.lock_wait)),
                    ("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION_S)):
                db.execute("SET %s = %d" % (name, max(1, int(seconds * 1000))))
        except BaseException:
            db.close()
            raise
        return db

    def _sql(self, statement):
        converted = self._sql_cache.get(statement)
        if converted is None:
            converted = self._sql_cache[statement] = statement.replace("?", "%s")
        return converted

    def _create_schema(self, cur):
        # Several workers may start together: one creates, the others wait.
        cur.execute("SELECT pg_advisory_xact_lock(7240517)")
        for statement in schema.SCHEMA:
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
        for statement in schema.ID_INDEXES:
            cur.execute(statement)

    def _with_ids(self, cur, rows):
        return rows    # the column's default, nextval('events_id_seq')

    def _reconnect_if_lost(self):
        if self._db.closed or self._db.broken:
            self._db.close()
            self._db = self._connect()

    def _attempt(self, work):
        from psycopg import errors
        self._reconnect_if_lost()
        try:
            return super()._attempt(work)
        except (errors.LockNotAvailable, errors.QueryCanceled) as exc:
            raise DatabaseLocked("PostgreSQL database %s: %s (lock_timeout %.1f s): %s" % (
                self._db.info.dbname, "locked by another session" if isinstance(
                    exc, errors.LockNotAvailable) else "statement timed out",
                self.lock_wait, str(exc).strip())) from exc

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

