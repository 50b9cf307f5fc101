"""The tariff the lot bridge answers fees from: its tariff file, or a table
taken from the central server (kept in the store's settings, so that it
outlives a restart). One rule decides between them, ``is_newer``: a table
replaces the one in use only if its version is higher, the gates' own rule
for a signed tariff (parkgate.sign refuses a version not above the applied)."""
from parkgate import tariff


def load_tariff(path):
    """The tariff.Tariff in the file at path (raises tariff.TariffError)."""
    with open(path, "rb") as f:
        return tariff.loads(f.read())


def is_newer(table, current):
    """True if table should replace current (None: no tariff yet): the one
    version rule of the lot's tariff."""
    return current is None or table.version > current.version


def stored_tariff(store):
    """The table last taken from the central server (store.setting "tariff"),
    or None if there is none or it no longer loads."""
    text = store.setting("tariff")
    if not text:
        return None
    try:
        return tariff.loads(text)
    except tariff.TariffError:
        return None


def store_tariff(store, text):
    """Keep a table from the central server (its JSON text) if it is newer
    than the one kept (is_newer); returns the tariff.Tariff kept, else None.
    Raises tariff.TariffError if the gates' tariff engine refuses it."""
    table = tariff.loads(text)
    if not is_newer(table, stored_tariff(store)):
        return None
    store.set_setting("tariff", text)
    return table
