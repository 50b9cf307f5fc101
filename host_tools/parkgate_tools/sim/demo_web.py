"""The web side of `parkgate demo`: its two accounts (an attendant and a
manager, with passwords made for the run and printed in the report) and,
at the end of the run, screenshots of the lot's web application's main
pages in headless Chromium (parkgate_tools.sim.browser) as PNG files in the
demo's folder. Without chromium the demo says so and goes on without them."""
import os
import secrets
import urllib.parse

from parkgate import plate as plates
from parkgate_tools.lot.web.auth import hash_password
from parkgate_tools.sim.browser import Browser, BrowserMissing

FOLDER = "screenshots"
ACCOUNTS = {"attendant": "attendant", "manager": "manager"}    # role: user name
# Misreads of a plate's serial that plates.similar takes for the same car,
# the likeliest first.
MISREADS = (("8", "B"), ("B", "8"), ("0", "D"), ("D", "0"), ("2", "Z"), ("Z", "2"))


def make_accounts(store):
    """The demo's accounts in store, a fresh password each (an account kept
    from an earlier run in the same folder gets its new one):
    {role: (name, password)}."""
    made = {}
    for role, name in ACCOUNTS.items():
        password = secrets.token_urlsafe(9)
        if store.user(name) is None:
            store.add_user(name, role, hash_password(password))
        else:
            store.set_password(name, hash_password(password))
        made[role] = (name, password)
    return made


def misread_of(plate):
    """plate as a camera might misread it (a digit and a letter swapped in
    its serial), or None if it has nothing to swap."""
    for glyph, read_as in MISREADS:
        at = plate.find(glyph, 2)
        if at > 0:
            misread = plate[:at] + read_as + plate[at + 1:]
            if plates.similar(misread, plate):
                return misread
    return None


def pages(url, search_plate):
    """(file name, role logged in or None, address) of each screenshot, in
    the order taken."""
    search = url + "search?" + urllib.parse.urlencode({"plate": search_plate})
    return [("01-login.png", None, url + "login"),
            ("02-dashboard-manager.png", "manager", url),
            ("03-search-misread-plate.png", "manager", search),
            ("04-flagged-and-owed.png", "manager", url + "flagged"),
            ("05-audit-log.png", "manager", url + "audit"),
            ("06-dashboard-attendant.png", "attendant", url)]


def screenshots(url, accounts, workdir, plates_stored):
    """Screenshots of the web application at url (ending in /) into
    workdir/screenshots, logged in with accounts ({role: (name, password)}),
    the search page searching a misread of one of plates_stored. Returns
    (paths written, None) or ([], why they were skipped)."""
    search_plate = next(filter(None, map(misread_of, plates_stored)), "")
    try:
        browser = Browser()
    except BrowserMissing as missing:
        return [], str(missing)
    folder = os.path.join(workdir, FOLDER)
    os.makedirs(folder, exist_ok=True)
    written = []
    try:
        role_in = None
        for name, role, address in pages(url, search_plate):
            if role != role_in:
                if role_in is not None:
                    browser.log_out()
                if role is not None:
                    browser.log_in(url, *accounts[role])
                role_in = role
            browser.get(address)
            written.append(browser.screenshot(os.path.join(folder, name), full_page=True))
    finally:
        browser.close()
    return written, None
