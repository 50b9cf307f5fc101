"""Helpers for tests of the lot's web application: users made in the
store (auth.hash_password) and a web.client.WebClient logged in as one."""
import contextlib

from parkgate_tools.lot.operator_page import OperatorPage
from parkgate_tools.lot.web.auth import hash_password
from parkgate_tools.lot.web.client import WebClient

PASSWORD = "correct horse battery staple"


def add_user(store, name, role, password=PASSWORD):
    """A user of the store's lot with this password; returns name."""
    store.add_user(name, role, hash_password(password))
    return name


def logged_in(page, store, name="manager", role="manager"):
    """A WebClient logged in to a started OperatorPage as a new user of store."""
    add_user(store, name, role)
    client = WebClient(page.url)
    assert client.login(name, PASSWORD) == 200
    return client


@contextlib.contextmanager
def started_page(store, table, clock):
    """An OperatorPage of store's lot answering fees from table, with the
    clock given and no pause between snapshots (duty=1: tests read back to
    back); stopped on leaving the block."""
    page = OperatorPage(store, store.lot, lambda: table, clock=clock, duty=1)
    page.start()
    try:
        yield page
    finally:
        page.stop()
