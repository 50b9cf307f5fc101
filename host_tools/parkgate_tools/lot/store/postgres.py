"""The lot store on PostgreSQL (psycopg 3): the same schema and methods as
the SQLite store, for several bridge workers on several machines.

Every connection has bounds, so that a server that is gone or stuck never
holds the bridge for long: connect_timeout, TCP keepalives (a peer gone
without a word is noticed in about a minute), a lock_timeout of lock_wait,
a statement_timeout and an idle_in_transaction_session_timeout. Connection
parameters given in the URL win over these defaults.

Many lots may share one database (each store reads and writes its own
lot's rows). A database made before lots is migrated when first opened
(store/before_lots.py: its rows become the opening store's lot)."""
from parkgate_tools.lot.store import before_lots, debts, schema
from parkgate_tools.lot.store.event_store import EventStore
from parkgate_tools.lot.store.sqlite import DatabaseLocked

# libpq parameters a URL does not set itself.
CONNECTION_DEFAULTS = {"connect_timeout": "10", "keepalives": "1", "keepalives_idle": "30",
                       "keepalives_interval": "10", "keepalives_count": "3"}
STATEMENT_TIMEOUT_S = 30.0     # at least twice lock_wait
IDLE_IN_TRANSACTION_S = 60.0
ANALYZE_FIRST_ROWS = 1000      # events this store stores before its first ANALYZE


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
    _analyze_at = ANALYZE_FIRST_ROWS
    _rows_stored = 0

    def _stored(self, rows):
        """ANALYZE events each time the rows this store stored doubled (1000,
        2000, 4000, ...): the lot filter makes the planner, before it has
        statistics, take a scan of a lot's exits for each entry (minutes at
        20,000 events) over the plate index; autovacuum comes later."""
        self._rows_stored += rows
        if self._rows_stored >= self._analyze_at:
            self._analyze_at = 2 * self._rows_stored
            self._db.execute("ANALYZE events")

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
        migrated = before_lots.migrate(self, cur)
        for statement in schema.SCHEMA + debts.SCHEMA:
            cur.execute(statement)
        cur.execute("CREATE SEQUENCE IF NOT EXISTS audit_id_seq")
        # Row ids come from a sequence (workers insert concurrently); a
        # database made before row ids gets the column, numbered.
        cur.execute("ALTER TABLE events ADD COLUMN IF NOT EXISTS id BIGINT")
        cur.execute("""SELECT column_default FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name = 'events'
              AND column_name = 'id'""")
        if cur.fetchone()[0] is None:
            cur.execute("CREATE SEQUENCE IF NOT EXISTS events_id_seq")
            cur.execute("ALTER SEQUENCE events_id_seq OWNED BY events.id")
            cur.execute("ALTER TABLE events ALTER COLUMN id SET DEFAULT nextval('events_id_seq')")
            cur.execute("UPDATE events SET id = nextval('events_id_seq') WHERE id IS NULL")
            # Past every row id kept (a table migrated by before_lots).
            cur.execute("SELECT setval('events_id_seq', COALESCE(MAX(id), 0) + 1, false)"
                        " FROM events")
        for statement in schema.ID_INDEXES:
            cur.execute(statement)
        for table in migrated:       # copied in: statistics at once (see _stored)
            cur.execute("ANALYZE %s" % table)

    def _with_ids(self, cur, rows):
        return rows    # the column's default, nextval('events_id_seq')

    def _next_audit_id(self, cur):
        cur.execute("SELECT nextval('audit_id_seq')")
        return cur.fetchone()[0]

    def _columns(self, cur, table):
        cur.execute("""SELECT column_name FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name = %s""", (table,))
        return [row[0] for row in cur.fetchall()]

    def _set_aside(self, cur, table):
        """Free the names the table's successor takes: its primary key's
        and, for events, the row-id sequence's (kept, with its value)."""
        cur.execute("ALTER TABLE %s DROP CONSTRAINT IF EXISTS %s_pkey"
                    % (before_lots.ASIDE % table, table))
        if table == "events":
            cur.execute("ALTER SEQUENCE IF EXISTS events_id_seq OWNED BY NONE")

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

