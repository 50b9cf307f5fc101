"""The lot bridge's durable store: every gate event once, each gate's last
status, the outbox of rows still to forward to the central server, the
operator's corrections and closed sessions, the members and tariff taken
from upstream, the lot's accounts and its audit log.

A store belongs to one lot (``store.lot``); the lot id is the first part of
every table's key and every statement filters on it, so many lots may
share one database (one PostgreSQL database for many lots) without mixing
plates, money or sessions. A database made before lots is migrated when a
store first opens it, in one transaction: its rows become that store's
lot (before_lots.py).

    schema.py       the tables, the SQL of events, statuses, the outbox,
                    corrections, money, members and settings (written
                    once, in SQL SQLite and PostgreSQL both accept) and the
                    event <-> row mapping
    session_sql.py  the SQL of sessions and of finding things
    event_store.py  EventStore: the reads and writes both backends share
    sessions.py     its sessions: open entries, cars inside, the maximum
                    stay, stale sessions and sessions closed by hand
    history.py      finding things: plates (fuzzy on misreads), a plate's
                    sessions, the sessions of a date range
    accounts.py     users (argon2 hashes, roles) and the audit log
    debts.py        owed fees collected at the plate's next visit
    before_lots.py  migrating a database made before lots
    sqlite.py       Store: SQLite, with the one rule for waiting on its lock
    postgres.py     PgStore: PostgreSQL

``open_store`` picks one from a path or a ``postgresql://`` URL."""
from parkgate_tools.lot.store.accounts import ROLES
from parkgate_tools.lot.store.event_store import LOCK_WAIT_S, EventStore
from parkgate_tools.lot.store.postgres import PgStore
from parkgate_tools.lot.store.schema import (CATCHUP_PAGE, CATCHUP_SCAN, CORRECTION_ACTIONS,
                                             EVENT_FIELDS, FLAGGED_ANY, FLAGGED_EXIT, SCHEMA,
                                             Entry)
from parkgate_tools.lot.store.sqlite import DatabaseLocked, Store

__all__ = ["CATCHUP_PAGE", "CATCHUP_SCAN", "CORRECTION_ACTIONS", "EVENT_FIELDS", "FLAGGED_ANY",
           "FLAGGED_EXIT", "LOCK_WAIT_S", "SCHEMA", "DatabaseLocked", "Entry", "EventStore",
           "PgStore", "ROLES", "Store", "open_store"]


def open_store(location, lot, lock_wait=LOCK_WAIT_S, create_schema=True):
    """The store of lot `lot` (an id): a PgStore for a ``postgresql://`` or
    ``postgres://`` URL, else a SQLite Store at the path (lock_wait: see
    Store; create_schema False: a reader's connection to a database made
    already, see open_reader)."""
    if location.startswith(("postgresql://", "postgres://")):
        return PgStore(location, lot, lock_wait, create_schema)
    return Store(location, lot, lock_wait, create_schema)
