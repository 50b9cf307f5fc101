"""The lot's web application in headless Chromium (parkgate_tools.sim.browser:
Debian's chromium and chromium-driver over the W3C WebDriver protocol),
through the login form, against a real lot: mosquitto, the bridge and its
store fed by fake gates, and the web application on them.

- an attendant sees the lot and records "collected" on an owed exit, but
  has no tariff form, and a POST to it with the attendant's own valid
  csrf token is refused (403) with nothing pushed or audited;
- a manager closes a ghost session and cars inside goes down by one;
- the day's collected, owed and corrected totals on the page equal sums
  this test works out from the database with its own SQL (both backends);
- a form on another origin that posts a correction while the browser is
  logged in is refused (403) and stores nothing;
- a plate search finds a misread plate;
- the page, logged in while the demo runs, shows what the database holds."""
import html
import http.server
import json
import os
import threading
import urllib.parse
from types import SimpleNamespace

import pytest

from fixtures_mqtt import LOT, TARIFF, entry, exit_, fetch_all, wait_for
from parkgate import record, tariff
from parkgate_tools.lot.bridge import load_tariff
from parkgate_tools.lot.operator_page import OperatorPage
from parkgate_tools.lot.web.auth import hash_password
from parkgate_tools.lot.web.money_text import yuan
from parkgate_tools.sim import demo
from parkgate_tools.sim.browser import Browser, BrowserMissing

T0 = 1795564800                      # 2026-11-25 08:00 UTC+8
HOUR = 3600
DAY = (T0 - 8 * HOUR, T0 + 16 * HOUR)
NOW = T0 + 3 * HOUR
OWED, NO_ENTRY = record.FLAG_OWED, record.FLAG_NO_ENTRY
OFF, ON = record.FEE_OFFLINE, record.FEE_ONLINE
ACCOUNTS = {"ana": ("attendant", "ana-at-the-booth"), "max": ("manager", "max-runs-the-lot")}
MISREAD, TRUE_PLATE = "京AB8123", "京A88123"     # the camera read the 8 as a B
ENTRIES = [entry(1, "京A10001", T0), entry(2, "沪B20002", T0 + 60),
           entry(3, "粤C30003", T0 + 120), entry(4, "京G40004", T0 + 180),   # a ghost
           entry(5, "苏K50005", T0 + 240), entry(6, MISREAD, T0 + 300)]
EXITS = [exit_(1, "京A10001", T0 + HOUR, 1000, ON, entry_time=T0),
         exit_(2, "沪B20002", T0 + HOUR + 60, 1500, OFF, entry_time=T0 + 60),
         exit_(3, "粤C30003", T0 + HOUR + 120, 2000, ON, entry_time=T0 + 120, flags=OWED),
         exit_(4, "浙D40004", T0 + HOUR + 180, 500, OFF, flags=OWED | NO_ENTRY),
         exit_(5, "鄂E50005", T0 + HOUR + 240, 2000, OFF, flags=NO_ENTRY),
         exit_(6, MISREAD, T0 + 2 * HOUR, 1000, ON, entry_time=T0 + 300)]
INSIDE = {"京G40004", "苏K50005"}


@pytest.fixture
def backend():
    """SQLite unless a test asks for both backends (parametrize)."""
    return "sqlite"


@pytest.fixture(scope="module")
def browser():
    try:
        opened = Browser()
    except BrowserMissing as missing:
        pytest.fail(str(missing))
    yield opened
    opened.close()


class Pusher:
    """The web application's pusher, recording what it was asked to push."""

    def __init__(self):
        self.pushed = []

    def __call__(self, kind, payload, who):
        self.pushed.append((kind, payload, who))
        return {"pushed": kind, "gates": []}


@pytest.fixture
def lot(make_bridge, gates, db_path, browser):
    """A lot: the bridge with the day's events from two fake gates, the
    accounts of ACCOUNTS, and the web application (.url) on its store. The
    browser starts logged out."""
    bridge = make_bridge(clock=lambda: NOW)
    store = bridge.store
    for name, (role, password) in ACCOUNTS.items():
        store.add_user(name, role, hash_password(password))
    for gate, jid, events in (("in-1", 1, ENTRIES), ("out-1", 2, EXITS)):
        lane = gates(gate)
        lane.publish("up/events", {"g": gate, "j": jid, "e": events})
        lane.expect("down/ack")
    wait_for(lambda: count(db_path, "events") == len(ENTRIES) + len(EXITS), what="the events")
    pusher = Pusher()
    reader = store.open_reader()     # the page's own connection, as `parkgate lot run` has it
    page = OperatorPage(reader, LOT, lambda: bridge.tariff, clock=lambda: NOW,
                        pusher=pusher).start()
    browser.get(page.url + "login")
    browser.delete_cookies()
    yield SimpleNamespace(url=page.url, store=store, db=db_path, pusher=pusher)
    page.stop()
    reader.close()


def count(db, table, where="", params=()):
    """Rows of the lot's table (this test's own SQL)."""
    sql = "SELECT COUNT(*) FROM %s WHERE lot = ?%s" % (table, " AND " + where if where else "")
    return fetch_all(db, sql, (LOT,) + tuple(params))[0][0]


def log_in(browser, lot, name):
    browser.log_in(lot.url, name, ACCOUNTS[name][1])
    assert browser.text("span#user").split()[:1] == [name]


def tiles(browser):
    """The page's number tiles, by element id."""
    names = ("inside", "entries", "exits", "revenue-collected", "revenue-online",
             "revenue-offline", "revenue-by-hand", "revenue-owed", "revenue-adjustments",
             "revenue-total", "open-flags", "upstream-backlog")
    return {name: browser.text("#" + name) for name in names}


# ---- what the database says, worked out here independently of the page ----

def expected_numbers(db, lot, table, day_start, now):
    """The tiles of lot as its rows say (this test's own SQL and rules), and
    its gates' statuses."""
    rows = fetch_all(db, "SELECT gate, jid, seq, kind, time, plate, colour, fee, fee_source,"
                         " flags FROM events WHERE lot = ? ORDER BY time, gate, jid, seq", (lot,))
    corrections = fetch_all(db, "SELECT gate, jid, seq, action, amount FROM corrections"
                                " WHERE lot = ? ORDER BY created_at, id", (lot,))
    closed = {tuple(r) for r in fetch_all(
        db, "SELECT gate, jid, seq FROM session_closes WHERE lot = ?", (lot,))}
    statuses = dict(fetch_all(db, "SELECT gate, status FROM gates WHERE lot = ?", (lot,)))
    day = [r for r in rows if day_start <= r[4] < day_start + 86400]
    inside, open_entry, flagged = set(), {}, set()
    for gate, jid, seq, kind, t, plate, colour, fee, source, flags in rows:
        if t > now:
            continue
        if kind == "in":
            if (gate, jid, seq) not in closed:
                inside.add(plate)
                open_entry[plate] = t
        else:
            inside.discard(plate)
            entered = open_entry.pop(plate, None)
            if day_start <= t < day_start + 86400:
                quote = (tariff.quote_no_entry(table, t, colour) if entered is None
                         else tariff.quote(table, entered, t, colour, member=bool(flags & 4)))
                if quote.fee != fee:
                    flagged.add((gate, jid, seq))
        if flags & 3 or (kind == "out" and flags & 8):
            # no entry, re-entry, let out unpaid (bit 2, member, is no flag for the operator)
            flagged.add((gate, jid, seq))
    corrected = {tuple(c[:3]) for c in corrections}
    # an exit let out unpaid (bit 3) is owed, not collected, until a
    # "collected" (its first only), "waived" or "settled" (paid at the
    # plate's next visit) correction settles it
    online = sum(r[7] for r in day if r[3] == "out" and r[8] == "on" and not r[9] & 8)
    offline = sum(r[7] for r in day if r[3] == "out" and r[8] == "off" and not r[9] & 8)
    owed_ids = {tuple(r[:3]): r[7] for r in day if r[3] == "out" and r[9] & 8}
    day_ids = {tuple(r[:3]) for r in day}
    by_hand, adjust, settled = 0, 0, set()
    for c in corrections:
        key = tuple(c[:3])
        if key in owed_ids and c[3] in ("collected", "waived", "settled"):
            by_hand += c[4] if c[3] == "collected" and key not in settled else 0
            settled.add(key)
        elif key in day_ids:
            adjust += {"collected": 1, "refunded": -1}.get(c[3], 0) * c[4]
    owed = sum(fee for key, fee in owed_ids.items() if key not in settled)
    collected = online + offline + by_hand
    return {"inside": str(len(inside)), "entries": str(sum(r[3] == "in" for r in day)),
            "exits": str(sum(r[3] == "out" for r in day)),
            "revenue-collected": yuan(collected), "revenue-online": yuan(online),
            "revenue-offline": yuan(offline), "revenue-by-hand": yuan(by_hand),
            "revenue-owed": yuan(owed), "revenue-adjustments": yuan(adjust),
            "revenue-total": yuan(collected + adjust),
            "open-flags": str(len(flagged - corrected))}, statuses


def post_in_page(browser, path, fields):
    """POST fields (with the page's own csrf token) from the page by fetch;
    returns the answer's HTTP status."""
    return browser.execute(
        "const body = new URLSearchParams(arguments[1]);"
        "body.set('csrf', document.querySelector('input[name=csrf]').value);"
        "return fetch(arguments[0], {method: 'POST', body: body, redirect: 'manual'})"
        "  .then(r => r.status);", path, fields)


# ---- the tests ----

def test_an_attendant_confirms_an_owed_payment_but_cannot_push_a_tariff(lot, browser):
    log_in(browser, lot, "max")   # a manager has the tariff form: where it posts
    push_action = browser.attribute(browser.find("form#push-tariff"), "action")
    browser.log_out()
    log_in(browser, lot, "ana")
    assert "attendant" in browser.text("span#user")
    shown = tiles(browser)
    assert (shown["entries"], shown["exits"], shown["inside"]) == ("6", "6", "2")
    assert {browser.attribute(r, "data-id") for r in browser.find_all("tr.owed")} == {
        "out-1/2/3", "out-1/2/4"}
    row = browser.find('tr.owed[data-id="out-1/2/3"]')
    button = browser.find("button", within=row)
    assert browser.property(button, "textContent").strip() == "collected"
    browser.click(button)
    wait_for(lambda: count(lot.db, "corrections") == 1, what="the correction")
    assert fetch_all(lot.db, "SELECT gate, jid, seq, action, amount FROM corrections"
                             " WHERE lot = ?", (LOT,)) == [("out-1", 2, 3, "collected", 2000)]
    assert [(a["who"], a["action"]) for a in lot.store.audit_log()
            if a["action"] != "login"] == [("ana", "correction")]
    browser.get(lot.url)
    assert [browser.attribute(r, "data-id") for r in browser.find_all("tr.owed")] == [
        "out-1/2/4"]
    assert tiles(browser)["revenue-owed"] == "5.00"
    # no tariff form for an attendant, and its POST is refused even with a valid token
    assert browser.find_all("form#push-tariff") == [] and browser.find_all("form.open-gate") == []
    text = open(TARIFF, encoding="utf-8").read()
    assert post_in_page(browser, push_action, {"tariff": text}) == 403
    assert lot.pusher.pushed == []
    assert [a for a in lot.store.audit_log() if a["action"] == "push-tariff"] == []


def test_a_manager_closes_a_ghost_session_and_cars_inside_goes_down(lot, browser):
    log_in(browser, lot, "max")
    assert browser.text("#inside") == str(len(INSIDE))
    browser.get(lot.url + "search?" + urllib.parse.urlencode({"plate": "京G40004"}))
    [row] = browser.find_all("tr.session")
    form = browser.find("form.close-session", within=row)
    browser.type_into(browser.find("input[name=reason]", within=form), "towed on Monday")
    browser.click(browser.find("button", within=form))
    wait_for(lambda: count(lot.db, "session_closes") == 1, what="the close")
    browser.get(lot.url)
    assert browser.text("#inside") == str(len(INSIDE) - 1)
    assert fetch_all(lot.db, "SELECT gate, jid, seq, reason, closed_by FROM session_closes"
                             " WHERE lot = ?", (LOT,)) == [
        ("in-1", 1, 4, "towed on Monday", "max")]
    assert "towed on Monday" in browser.text("table#closed")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_days_totals_equal_sums_from_the_database(lot, browser):
    table = load_tariff(TARIFF)
    log_in(browser, lot, "max")
    expected, _ = expected_numbers(lot.db, LOT, table, DAY[0], NOW)
    assert tiles(browser) == dict(expected, **{"upstream-backlog": "0"})
    # a refund on the no-entry exit (its entry was found), through the flagged row's form
    row = browser.find('tr.flag[data-id="out-1/2/5"]')
    select = browser.find("select[name=action]", within=row)
    browser.click(browser.find("option[value=refunded]", within=select))
    browser.type_into(browser.find("input[name=amount]", within=row), "18.00")
    browser.type_into(browser.find("input[name=note]", within=row), "entry at in-1")
    browser.click(browser.find("button", within=row))
    # and the owed exit of a plate without an entry collected by hand
    browser.get(lot.url)
    browser.click(browser.find('tr.owed[data-id="out-1/2/4"] button'))
    wait_for(lambda: count(lot.db, "corrections") == 2, what="the corrections")
    browser.get(lot.url)
    shown = tiles(browser)
    expected, _ = expected_numbers(lot.db, LOT, table, DAY[0], NOW)
    assert shown == dict(expected, **{"upstream-backlog": "0"})
    # and worked out by hand: 10 + 10 online and 15 + 20 offline at the gates, 5 by hand;
    # 20 still owed; 18 refunded
    assert (shown["revenue-collected"], shown["revenue-online"], shown["revenue-by-hand"],
            shown["revenue-owed"], shown["revenue-adjustments"], shown["revenue-total"]) == (
        "60.00", "20.00", "5.00", "20.00", "-18.00", "42.00")
    assert "refunded 18.00" in browser.text('tr.flag[data-id="out-1/2/5"]')
    assert fetch_all(lot.db, "SELECT fee FROM events WHERE lot = ? AND gate = 'out-1'"
                             " AND seq = 5", (LOT,)) == [(2000,)]     # the event untouched


class CrossSitePage(http.server.BaseHTTPRequestHandler):
    """Another origin's page: a form that posts itself to the lot at once."""
    page = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.page)))
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *args):
        pass


def cross_site_form(action, fields):
    inputs = "".join('<input type="hidden" name="%s" value="%s">' % (
        html.escape(name), html.escape(value)) for name, value in fields.items())
    return ('<!doctype html><title>win a prize</title><form id="evil" method="post" '
            'action="%s">%s</form><script>document.getElementById("evil").submit()</script>'
            % (action, inputs)).encode()


@pytest.mark.parametrize("token", ["none", "the victim's own"])
def test_a_cross_site_form_post_is_refused(lot, browser, token):
    # 127.0.0.1 on another port is another origin but the same site: the
    # SameSite=Strict session cookie goes with the post, so what refuses it
    # is the token and Origin check
    log_in(browser, lot, "max")
    assert browser.cookies(), "logged in"
    fields = {"gate": "out-1", "jid": "2", "seq": "5", "action": "refunded",
              "amount": "20.00", "note": "cross-site"}
    if token != "none":   # even a stolen token does not help a foreign Origin
        fields["csrf"] = browser.attribute(browser.find("input[name=csrf]"), "value")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type(
        "Page", (CrossSitePage,), {"page": cross_site_form(lot.url + "corrections", fields)}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        browser.get("http://127.0.0.1:%d/" % server.server_port)
        wait_for(lambda: browser.current_url().startswith(lot.url), what="the form's post")
        assert browser.response_status() == 403
    finally:
        server.shutdown()
        server.server_close()
    assert count(lot.db, "corrections") == 0
    browser.get(lot.url)
    assert browser.find_all("span#user"), "still logged in: the refusal was the post's"


def test_a_plate_search_finds_a_misread_plate(lot, browser):
    log_in(browser, lot, "ana")
    browser.get(lot.url + "search?" + urllib.parse.urlencode({"plate": TRUE_PLATE}))
    assert MISREAD in browser.text("p#plates")
    assert "京A10001" not in browser.text("p#plates")
    [row] = browser.find_all("tr.session")
    assert MISREAD in browser.property(row, "textContent")
    assert "10.00" in browser.property(row, "textContent")


def test_the_page_during_the_demo_shows_what_the_database_holds(tmp_path, browser):
    mid_run, problems, watcher, checked = [], [], {}, {}

    def watch(context, stop):
        try:
            browser.log_in(context["page_url"], *context["accounts"]["manager"])
        except Exception as exc:   # noqa: BLE001 (reported by the test)
            problems.append(repr(exc))
        while not stop.is_set():
            try:
                browser.get(context["page_url"])
                mid_run.append(tiles(browser))
            except Exception as exc:   # noqa: BLE001 (reported by the test)
                problems.append(repr(exc))
            stop.wait(1.5)

    def on_running(context):
        assert context["page_url"]
        watcher["stop"] = threading.Event()
        watcher["thread"] = threading.Thread(target=watch, args=(context, watcher["stop"]))
        watcher["thread"].start()

    def on_drained(context):
        watcher["stop"].set()
        watcher["thread"].join(60)
        browser.get(context["page_url"])
        checked["shown"] = tiles(browser)
        checked["expected"], checked["statuses"] = expected_numbers(
            context["db_path"], context["lot"], load_tariff(TARIFF), DAY[0],
            int(context["clock"].now()))
        checked["gates"] = {browser.attribute(row, "data-gate"):
                            browser.text("td.state", within=row)
                            for row in browser.find_all("tr.gate")}

    with open(os.devnull, "w") as quiet:
        report = demo.run(str(tmp_path), cars=30, out=quiet, outage=(6.0, 12.0), http_port=0,
                          central_outage=(3.0, 14.0), on_running=on_running,
                          on_drained=on_drained, screenshots=False)
    assert problems == []
    assert len(mid_run) >= 5, "the page was loaded during the run"
    entries_seen = [int(t["entries"]) for t in mid_run]
    assert entries_seen == sorted(entries_seen) and entries_seen[-1] > 0
    shown, expected = checked["shown"], checked["expected"]
    for name, value in expected.items():
        assert shown[name] == value, (name, shown, expected)
    assert shown["entries"] == shown["exits"] == str(report["cars"])
    assert shown["revenue-online"] == yuan(report["fees_online_fen"])
    assert shown["revenue-offline"] == yuan(report["fees_offline_fen"])
    assert shown["upstream-backlog"] == "0"
    assert checked["gates"] == {gate: "online" if json.loads(status).get("on") else "offline"
                                for gate, status in checked["statuses"].items()}
    assert set(checked["gates"]) == {"gate-in", "gate-out"}
    assert report["upstream"]["missing"] == report["upstream"]["extra"] == 0
