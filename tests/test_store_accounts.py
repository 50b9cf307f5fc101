"""The lot's accounts and audit log in the store, on SQLite and on
PostgreSQL: users with a role and a hash, changed and disabled; the audit
log newest first over a time range; a correction and a session closed by
hand each written with its audit row in one transaction, so neither is
stored without it; the newest stored event of a gate."""
import time

import pytest

from fixtures_mqtt import backend, db_path, pg_server  # noqa: F401 (fixtures)
from fixtures_mqtt import LOT, entry, exit_, fetch_all, store_class
from parkgate_tools.lot.store import ROLES
from test_store_backends import T0, ev, store  # noqa: F401 (store: a fixture)

HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"


def test_users_are_added_changed_and_disabled(store):
    assert ROLES == ("attendant", "manager") and store.user("ann") is None
    before = time.time()
    store.add_user("ann", "attendant", HASH)
    store.add_user("bob-2", "manager", HASH + "b")
    ann = store.user("ann")
    assert ann == {"name": "ann", "role": "attendant", "password_hash": HASH,
                   "disabled": False, "created_at": ann["created_at"]}
    assert before <= ann["created_at"] <= time.time()
    store.set_password("ann", HASH + "2")
    store.set_role("ann", "manager")
    store.disable_user("bob-2")
    assert (store.user("ann")["password_hash"], store.user("ann")["role"]) == (HASH + "2",
                                                                               "manager")
    assert [(u["name"], u["role"], u["disabled"]) for u in store.users()] == [
        ("ann", "manager", False), ("bob-2", "manager", True)]
    assert all("password_hash" not in u for u in store.users())


@pytest.mark.parametrize("name, role, password_hash, error", [
    ("ann", "attendant", HASH, "exists already"),
    ("a n", "attendant", HASH, "user name"),
    ("ann.x", "attendant", HASH, "user name"),
    ("", "attendant", HASH, "user name"),
    ("x" * 65, "attendant", HASH, "longer than"),
    ("carl", "admin", HASH, "role"),
    ("carl", "manager", "", "password hash"),
    ("carl", "manager", "h" * 501, "password hash"),
])
def test_a_user_that_is_not_valid_is_refused(store, name, role, password_hash, error):
    store.add_user("ann", "attendant", HASH)
    with pytest.raises(ValueError, match=error):
        store.add_user(name, role, password_hash)
    assert [u["name"] for u in store.users()] == ["ann"]


def test_changing_a_user_who_is_not_there_is_refused(store):
    for change in (lambda: store.set_password("zed", HASH), lambda: store.disable_user("zed"),
                   lambda: store.set_role("zed", "manager")):
        with pytest.raises(ValueError, match="no user"):
            change()
    store.add_user("ann", "attendant", HASH)
    with pytest.raises(ValueError, match="role"):
        store.set_role("ann", "root")
    assert store.user("ann")["role"] == "attendant"


def test_the_audit_log_is_newest_first_over_a_range(store):
    ids = [store.audit("ann", "login", {"address": "10.0.0.%d" % i}) for i in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    log = store.audit_log()
    assert [(row["id"], row["who"], row["action"], row["detail"]) for row in log] == [
        (ids[2], "ann", "login", {"address": "10.0.0.2"}),
        (ids[1], "ann", "login", {"address": "10.0.0.1"}),
        (ids[0], "ann", "login", {"address": "10.0.0.0"})]
    assert [row["id"] for row in store.audit_log(limit=2)] == ids[:0:-1]
    middle = log[1]["at"]
    assert [row["id"] for row in store.audit_log(start=middle)] == [ids[2], ids[1]]
    assert [row["id"] for row in store.audit_log(end=middle)] == [ids[0]]
    assert store.audit_log(start=time.time() + 60) == []
    for bad in (lambda: store.audit("ann", "", {}), lambda: store.audit("ann", "x" * 41, {}),
                lambda: store.audit("ann", "login", "not a dict"),
                lambda: store.audit("ann", "login", {"x": "y" * 5000}),
                lambda: store.audit_log(limit=0)):
        with pytest.raises(ValueError):
            bad()
    assert len(store.audit_log()) == 3


def test_a_correction_and_a_close_are_audited_in_their_transaction(store, db_path):
    store.ingest("in-1", 1, [ev(entry(1, "GH1", T0))])
    store.ingest("out-1", 2, [ev(exit_(1, "A1", T0 + 60, 800, flags=8))])
    correction = store.add_correction("out-1", 2, 1, "collected", 800, "at the booth", "ann")
    store.close_session("in-1", 1, 1, "towed", "bob")
    assert [c["made_by"] for c in store.corrections()] == ["ann"]
    assert [(row["who"], row["action"], row["detail"]) for row in store.audit_log()] == [
        ("bob", "close-session", {"gate": "in-1", "jid": 1, "seq": 1, "reason": "towed"}),
        ("ann", "correction", {"id": correction, "gate": "out-1", "jid": 2, "seq": 1,
                               "action": "collected", "amount": 800, "note": "at the booth"})]
    with pytest.raises(ValueError):                  # refused: no correction, no audit row
        store.add_correction("out-1", 2, 99, "collected", 1, "", "ann")
    assert len(store.audit_log()) == 2

    def audit_fails(cur, who, action, detail):
        raise RuntimeError("audit table full (test)")
    store._insert_audit = audit_fails                # the audit row fails: nothing is kept
    store.ingest("in-1", 1, [ev(entry(2, "GH2", T0))])
    with pytest.raises(RuntimeError):
        store.add_correction("out-1", 2, 1, "reviewed", 0, "", "ann")
    with pytest.raises(RuntimeError):
        store.close_session("in-1", 1, 2, "towed", "bob")
    assert len(store.corrections()) == 1
    assert fetch_all(db_path, "SELECT seq FROM session_closes") == [(1,)]


def test_the_latest_event_of_a_gate(store):
    assert store.latest_event("in-1") is None
    store.ingest("in-1", 1, [ev(entry(s, "P%d" % s, T0 + s)) for s in (1, 2)])
    store.ingest("in-2", 5, [ev(entry(1, "Q1", T0))])
    store.ingest("in-1", 1, [ev(entry(3, "P3", T0 + 3))])
    latest = store.latest_event("in-1")
    assert (latest["jid"], latest["seq"]) == (1, 3) and latest["received_at"] <= time.time()
    assert (store.latest_event("in-2")["jid"], store.latest_event("in-2")["seq"]) == (5, 1)


def test_accounts_are_the_lots_own(store, db_path):
    store.add_user("ann", "manager", HASH)
    store.audit("ann", "login", {})
    other = store_class(db_path)(db_path, LOT + "-other")
    try:
        assert other.user("ann") is None and other.users() == [] and other.audit_log() == []
        other.add_user("ann", "attendant", HASH + "o")    # the same name in another lot
        assert (store.user("ann")["role"], other.user("ann")["role"]) == ("manager",
                                                                          "attendant")
    finally:
        other.close()
