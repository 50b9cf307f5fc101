"""The lot store on PostgreSQL (psycopg 3): the same schema and methods as
the SQLite store, for several bridge workers on several machines."""
from parkgate_tools.lot.store import schema
from parkgate_tools.lot.store.event_store import EventStore


class PgStore(EventStore):
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

