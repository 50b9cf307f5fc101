"""A lot database made before lots (its tables without the ``lot``
column) is migrated when a store first opens it: in the schema's one
transaction, each such table is renamed aside, made again as schema.SCHEMA
says (``lot`` first in its keys) and its rows copied in with the opening
store's lot, then the old table is dropped. Any failure rolls all of it
back: the database stays as it was. Rows keep their values, row ids
(catch-up cursors) included, so gates and the forwarder carry on.

The backends provide _columns(cur, table) (its column names, [] if there
is no such table) and _set_aside(cur, table) (what the backend must do to
a table renamed aside before its successor can be made: PostgreSQL frees
the primary key's name and the events row-id sequence)."""
import logging

from parkgate_tools.lot.store import schema

log = logging.getLogger("parkgate.store")

ASIDE = "%s_before_lots"


def tables_before_lots(store, cur):
    """{table: its columns} of the lot tables that exist without a lot column."""
    found = {}
    for table in schema.LOT_TABLES:
        columns = store._columns(cur, table)
        if columns and "lot" not in columns:
            found[table] = columns
    return found


def migrate(store, cur):
    """Give every table made before lots its lot column, its rows the
    store's lot (see the module's docstring). Call inside the schema's
    transaction, before schema.SCHEMA. Returns the tables migrated."""
    old = tables_before_lots(store, cur)
    if not old:
        return []
    for index in schema.INDEX_NAMES:     # their names are taken again below
        cur.execute("DROP INDEX IF EXISTS %s" % index)
    for table in old:
        cur.execute("ALTER TABLE %s RENAME TO %s" % (table, ASIDE % table))
        store._set_aside(cur, table)
    for statement in schema.SCHEMA:
        cur.execute(statement)
    for table, columns in old.items():
        kept = ", ".join(column for column in columns if column in store._columns(cur, table))
        cur.execute(store._sql("INSERT INTO %s (lot, %s) SELECT ?, %s FROM %s" % (
            table, kept, kept, ASIDE % table)), (store.lot,))
        cur.execute("DROP TABLE %s" % (ASIDE % table))
    log.warning("lot database %s was made before lots: tables %s migrated, their rows "
                "are lot %s's now", store.path, ", ".join(old), store.lot)
    return list(old)
