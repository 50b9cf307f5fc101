"""`parkgate lot user add|list|passwd|disable` on a lot made by `parkgate lot
init`, on SQLite and PostgreSQL: its refusals and exit codes, the audit log,
and its users logging in through the web routes of tests/test_web_auth.py
(a new password or a disabled user ends their sessions)."""
import getpass
import io
import sys

from parkgate_tools.cli import main as parkgate
from parkgate_tools.lot import config
from parkgate_tools.lot.store import open_store
from test_lot_init import init
from test_web_auth import PASSWORD, Browser, serve  # noqa: F401 (serve: a fixture)


def user_command(monkeypatch, *argv, stdin=None):
    """`parkgate lot user ARGV...` with stdin; its exit code."""
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return parkgate(["lot", "user"] + [str(arg) for arg in argv])


def test_the_user_commands_on_a_lot_made_by_init(tmp_path, db_path, monkeypatch, capsys,
                                                serve):
    lot_dir = tmp_path / "lot"
    assert init(lot_dir, "--db", db_path) == 0
    capsys.readouterr()
    add = ("add", lot_dir, "alice", "--role", "manager", "--password-stdin")
    assert user_command(monkeypatch, *add, stdin=PASSWORD + "\n") == 0
    assert capsys.readouterr().out == "user alice added (manager)\n"
    for argv, stdin, problem in (
            (add, PASSWORD + "\n", "user 'alice' exists already"),
            (("add", lot_dir, "bob", "--role", "manager", "--password-stdin"), "too short\n",
             "at least 10 characters"),
            (("add", lot_dir, "bob", "--role", "boss", "--password-stdin"), PASSWORD,
             "'boss' is not one of attendant, manager"),
            (("add", lot_dir, "bob b", "--role", "manager", "--password-stdin"), PASSWORD,
             "is not letters, digits and -"),
            (("add", lot_dir, "bob", "--role", "manager", "--password-stdin"), "",
             "standard input is empty"),
            (("passwd", lot_dir, "nobody", "--password-stdin"), PASSWORD, "no user 'nobody'"),
            (("disable", lot_dir, "nobody"), None, "no user 'nobody'"),
            (("list", tmp_path / "no-lot"), None, "lot.toml")):
        assert user_command(monkeypatch, *argv, stdin=stdin) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("parkgate lot user %s: " % argv[0]) and problem in err, err
    answers = iter(["attendant password", "attendant passwort"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt: next(answers))
    assert user_command(monkeypatch, "add", lot_dir, "ann", "--role", "attendant") == 2
    assert "the two passwords differ" in capsys.readouterr().err
    answers = iter(["attendant password"] * 2)
    assert user_command(monkeypatch, "add", lot_dir, "ann", "--role", "attendant") == 0
    cfg = config.load(lot_dir)
    store = open_store(cfg.database.url, cfg.lot)
    try:
        assert [(row["who"], row["action"], row["detail"]) for row in store.audit_log()] == [
            ("cli", "user-add", {"name": "ann", "role": "attendant"}),
            ("cli", "user-add", {"name": "alice", "role": "manager"})]
        base = serve(store)
        alice, ann = Browser(base), Browser(base)
        assert alice.login("alice")[0] == 303
        assert ann.login("ann", "attendant password")[0] == 303
        assert user_command(monkeypatch, "passwd", lot_dir, "alice", "--password-stdin",
                            stdin="a new long password\n") == 0
        assert user_command(monkeypatch, "disable", lot_dir, "ann") == 0
        assert alice.send("GET", "/")[0] == 303 and ann.send("GET", "/")[0] == 303
        assert Browser(base).login("alice")[0] == 401
        assert Browser(base).login("alice", "a new long password")[0] == 303
        assert Browser(base).login("ann", "attendant password")[0] == 401
        capsys.readouterr()
        assert user_command(monkeypatch, "list", lot_dir) == 0
        alice_line, ann_line = [line.split() for line in capsys.readouterr().out.splitlines()]
        assert alice_line[:3] == ["alice", "manager", "added"] and "disabled" not in alice_line
        assert ann_line[:2] == ["ann", "attendant"] and ann_line[-1] == "disabled"
        assert [(row["action"], row["detail"]) for row in store.audit_log()
                if row["who"] == "cli"][:2] == [("user-disable", {"name": "ann"}),
                                                ("user-passwd", {"name": "alice"})]
    finally:
        store.close()
