"""The lot's accounts and its audit log, in the lot store (tables users and
audit of schema.py). A base of EventStore: it uses the store's lot, _query,
_transaction, _lock, _sql and the backend's _next_audit_id.

Accounts hold argon2 hashes made by lot/web/auth.py, never a password; a
role is one of ROLES. The audit log says who did what: each row (at, who,
action, detail) is only ever added, and a correction or a session closed
by hand writes its row in its own transaction (add_correction,
close_session), so neither is ever stored without it."""
import json
import time

from parkgate_tools import ids

ROLES = ("attendant", "manager")
NAME_MAX = 64            # characters of a user name (an id: letters, digits and -)
WHO_MAX = 100            # characters of who did a thing, kept with its row (audit, close)
HASH_MAX = 500           # characters of a password hash
ACTION_MAX = 40          # characters of an audit action ("correction", "login", ...)
DETAIL_MAX = 4000        # characters of an audit row's detail, as JSON
AUDIT_SHOWN_MAX = 10000  # rows one audit_log call returns at most
USER_FIELDS = ("name", "role", "password_hash", "disabled", "created_at")

_USER = "SELECT %s FROM users WHERE lot = ? AND name = ?" % ", ".join(USER_FIELDS)
_USERS = "SELECT name, role, disabled, created_at FROM users WHERE lot = ? ORDER BY name"
_INSERT_USER = """INSERT INTO users (lot, name, role, password_hash, disabled, created_at)
    VALUES (?, ?, ?, ?, 0, ?) ON CONFLICT (lot, name) DO NOTHING RETURNING name"""
_UPDATE_USER = "UPDATE users SET %s = ? WHERE lot = ? AND name = ? RETURNING name"
_INSERT_AUDIT = """INSERT INTO audit (lot, id, at, who, action, detail)
    VALUES (?, ?, ?, ?, ?, ?)"""
_AUDIT_LOG = """SELECT id, at, who, action, detail FROM audit
    WHERE lot = ? AND at >= ? AND at < ? ORDER BY id DESC LIMIT ?"""


def _check_name(name):
    ids.check_id("user name", name)
    if len(name) > NAME_MAX:
        raise ValueError("user name: %r is longer than %d characters" % (name, NAME_MAX))
    return name


def _check_role(role):
    if role not in ROLES:
        raise ValueError("role: %r is not one of %s" % (role, ", ".join(ROLES)))
    return role


def _check_hash(password_hash):
    if not isinstance(password_hash, str) or not 0 < len(password_hash) <= HASH_MAX:
        raise ValueError("password hash: not a text of 1 to %d characters" % HASH_MAX)
    return password_hash


class Accounts:
    """Users and the audit log, shared by both backends."""

    # ---- users ----

    def add_user(self, name, role, password_hash):
        """Add user name (an id) with role (ROLES) and an argon2 hash.
        ValueError if the name is no id, is taken or the role is unknown."""
        row = (self.lot, _check_name(name), _check_role(role), _check_hash(password_hash),
               time.time())

        def write(cur):
            cur.execute(self._sql(_INSERT_USER), row)
            if cur.fetchone() is None:
                raise ValueError("user %r exists already" % name)
        with self._lock:
            self._transaction(write)

    def set_password(self, name, password_hash):
        """Keep a new hash for user name. ValueError if there is no such user."""
        self._update_user(name, "password_hash", _check_hash(password_hash))

    def set_role(self, name, role):
        """Give user name role (ROLES). ValueError if no such user or role."""
        self._update_user(name, "role", _check_role(role))

    def disable_user(self, name):
        """User name may no longer log in (the row stays, for the audit
        log's names). ValueError if there is no such user."""
        self._update_user(name, "disabled", 1)

    def _update_user(self, name, column, value):
        def write(cur):
            cur.execute(self._sql(_UPDATE_USER % column), (value, self.lot, name))
            if cur.fetchone() is None:
                raise ValueError("no user %r" % (name,))
        with self._lock:
            self._transaction(write)

    def user(self, name):
        """User name as a dict of USER_FIELDS (disabled: a bool), or None."""
        rows = self._query(_USER, (self.lot, str(name)[:NAME_MAX + 1]))
        if not rows:
            return None
        found = dict(zip(USER_FIELDS, rows[0]))
        found["disabled"] = bool(found["disabled"])
        return found

    def users(self):
        """Every user by name, as dicts of USER_FIELDS less password_hash."""
        return [{"name": name, "role": role, "disabled": bool(disabled), "created_at": at}
                for name, role, disabled, at in self._query(_USERS, (self.lot,))]

    # ---- the audit log ----

    def audit(self, who, action, detail):
        """Add a row to the audit log: who did action (a short name such as
        "push-tariff") with detail (a dict, kept as JSON). Returns its id."""
        with self._lock:
            return self._transaction(lambda cur: self._insert_audit(cur, who, action, detail))

    def _insert_audit(self, cur, who, action, detail):
        """audit's row inside the caller's transaction (no lock, no commit)."""
        if not isinstance(action, str) or not 0 < len(action) <= ACTION_MAX:
            raise ValueError("audit action: %r is not a text of 1 to %d characters"
                             % (action, ACTION_MAX))
        if not isinstance(detail, dict):
            raise ValueError("audit detail: %r is not a dict" % (detail,))
        text = json.dumps(detail, sort_keys=True, default=str)
        if len(text) > DETAIL_MAX:
            raise ValueError("audit detail: %d characters as JSON, more than %d"
                             % (len(text), DETAIL_MAX))
        audit_id = self._next_audit_id(cur)
        cur.execute(self._sql(_INSERT_AUDIT), (
            self.lot, audit_id, time.time(), str(who)[:WHO_MAX], action, text))
        return audit_id

    def audit_log(self, limit=200, start=None, end=None):
        """The audit rows with start <= at < end (unix seconds; None: no
        bound), newest first, at most limit: [{"id", "at", "who", "action",
        "detail" (a dict)}]."""
        if type(limit) is not int or not 0 < limit <= AUDIT_SHOWN_MAX:
            raise ValueError("limit: %r is not 1 to %d" % (limit, AUDIT_SHOWN_MAX))
        rows = self._query(_AUDIT_LOG, (self.lot, float("-inf") if start is None else start,
                                        float("inf") if end is None else end, limit))
        return [{"id": audit_id, "at": at, "who": who, "action": action,
                 "detail": json.loads(detail)} for audit_id, at, who, action, detail in rows]
