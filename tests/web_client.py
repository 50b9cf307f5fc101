"""Helpers for tests of the lot's web application: users made in the
store (auth.hash_password) and a web.client.WebClient logged in as one."""
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
