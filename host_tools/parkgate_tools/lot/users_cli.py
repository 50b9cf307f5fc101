"""`parkgate lot user add|list|passwd|disable`: the accounts of the lot's
web application, kept in the lot's store (lot.toml's database, its password
from database.password_file as PGPASSWORD, as `parkgate lot run` does).

A password is read twice from the terminal (getpass), or with
--password-stdin as one line from standard input; it must be at least
MIN_PASSWORD_CHARS long. Each change is written to the audit log as done
by "cli". Errors are ValueErrors (exit code 2, lot/lot_cli.py)."""
import contextlib
import getpass
import os
import sys
import time

from parkgate_tools.lot.config import load
from parkgate_tools.lot.store import open_store
from parkgate_tools.lot.web.auth import MAX_PASSWORD_CHARS, ROLES, hash_password

MIN_PASSWORD_CHARS = 10


@contextlib.contextmanager
def _store(lot_dir):
    config = load(lot_dir)
    password = config.database_password()
    if password is not None:
        os.environ["PGPASSWORD"] = password
    store = open_store(config.database.url, config.lot)
    try:
        yield store
    finally:
        store.close()


def _checked(password):
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValueError("the password must be at least %d characters long"
                         % MIN_PASSWORD_CHARS)
    if len(password) > MAX_PASSWORD_CHARS:
        raise ValueError("the password must be at most %d characters long"
                         % MAX_PASSWORD_CHARS)
    return password


def _password(args, name):
    """The new password of user name, from stdin or asked twice."""
    if args.password_stdin:
        line = sys.stdin.readline(MAX_PASSWORD_CHARS + 2)
        if not line:
            raise ValueError("--password-stdin: standard input is empty")
        return _checked(line.rstrip("\r\n"))
    try:
        first = _checked(getpass.getpass("password for %s: " % name))
        again = getpass.getpass("the same again: ")
    except EOFError:
        raise ValueError("no password given (no terminal? use --password-stdin)") from None
    if first != again:
        raise ValueError("the two passwords differ; nothing changed")
    return first


def _existing(store, name):
    if store.user(name) is None:
        raise ValueError("no user %r" % name)


def add(args):
    """`parkgate lot user add DIR NAME --role attendant|manager`."""
    if args.role not in ROLES:
        raise ValueError("--role %r is not one of %s" % (args.role, ", ".join(ROLES)))
    with _store(args.dir) as store:
        if store.user(args.name) is not None:     # before asking for a password
            raise ValueError("user %r exists already (`user passwd` changes its password)"
                             % args.name)
        store.add_user(args.name, args.role, hash_password(_password(args, args.name)))
        store.audit("cli", "user-add", {"name": args.name, "role": args.role})
    print("user %s added (%s)" % (args.name, args.role))
    return 0


def list_users(args):
    """`parkgate lot user list DIR`: one line per user."""
    with _store(args.dir) as store:
        users = store.users()
    for user in users:
        print("%-20s %-10s added %s%s" % (
            user["name"], user["role"],
            time.strftime("%Y-%m-%d %H:%M", time.localtime(user["created_at"])),
            "  disabled" if user["disabled"] else ""))
    if not users:
        print("no users (`parkgate lot user add` makes one)")
    return 0


def passwd(args):
    """`parkgate lot user passwd DIR NAME`: a new password (ends its sessions)."""
    with _store(args.dir) as store:
        _existing(store, args.name)
        store.set_password(args.name, hash_password(_password(args, args.name)))
        store.audit("cli", "user-passwd", {"name": args.name})
    print("user %s: password changed" % args.name)
    return 0


def disable(args):
    """`parkgate lot user disable DIR NAME`: no more logins, sessions end."""
    with _store(args.dir) as store:
        _existing(store, args.name)
        store.disable_user(args.name)
        store.audit("cli", "user-disable", {"name": args.name})
    print("user %s disabled" % args.name)
    return 0
