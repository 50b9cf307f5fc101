"""The operator page in headless Chromium (Debian's chromium and
chromium-driver, driven through the W3C WebDriver protocol with urllib):
loaded while the demo runs, its numbers checked against the database;
a correction recorded through its form. Plus its JSON endpoint and money
formatting without a browser."""
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request

import pytest

from fixtures_mqtt import TARIFF, entry, exit_, wait_for
from parkgate import record, tariff
from parkgate_tools.sim import demo
from parkgate_tools.sim.broker import free_port
from parkgate_tools.lot.bridge import load_tariff
from parkgate_tools.lot.operator_page import OperatorPage, fen_from_yuan, yuan
from parkgate_tools.lot.store import Store

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"   # the W3C web element key
T0 = 1795564800   # 2026-11-25 08:00 UTC+8


class Browser:
    """Headless Chromium through chromedriver's W3C WebDriver HTTP API."""

    def __init__(self):
        binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
        if not binary or not driver:
            pytest.fail("chromium and chromium-driver are not installed: "
                        "run host_tools/setup_system.sh")
        self.profile = tempfile.mkdtemp(prefix="parkgate-chromium-")
        port = free_port()
        self.base = "http://127.0.0.1:%d" % port
        self.driver = subprocess.Popen([driver, "--port=%d" % port],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._ready, 20, "chromedriver to listen")
        options = {"binary": binary,
                   "args": CHROMIUM_FLAGS + ["--user-data-dir=" + self.profile]}
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": options}}})["sessionId"]
        self.lock = threading.Lock()

    def _ready(self):
        try:
            return self._call("GET", "/status")["ready"]
        except OSError:
            return False

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["value"]

    def _session(self, method, path, body=None):
        return self._call(method, "/session/%s%s" % (self.session, path), body)

    def get(self, url):
        """Load url and wait for the page to load."""
        self._session("POST", "/url", {"url": url})

    def find_all(self, css, within=None):
        """Element ids matching a CSS selector."""
        path = "/element/%s/elements" % within if within else "/elements"
        return [e[ELEMENT] for e in self._session("POST", path, {"using": "css selector",
                                                                  "value": css})]

    def find(self, css, within=None):
        found = self.find_all(css, within)
        assert found, "no element %s on the page" % css
        return found[0]

    def text(self, css, within=None):
        return self._session("GET", "/element/%s/text" % self.find(css, within))

    def attribute(self, element, name):
        return self._session("GET", "/element/%s/attribute/%s" % (element, name))

    def type_into(self, element, text):
        self._session("POST", "/element/%s/clear" % element, {})
        self._session("POST", "/element/%s/value" % element, {"text": text})

    def click(self, element):
        self._session("POST", "/element/%s/click" % element, {})

    def title(self):
        return self._session("GET", "/title")

    def close(self):
        try:
            self._call("DELETE", "/session/%s" % self.session)
        finally:
            self.driver.terminate()
            self.driver.wait(10)
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    opened = Browser()
    yield opened
    opened.close()


def tiles(browser):
    """The page's number tiles, by element id."""
    names = ("inside", "entries", "exits", "revenue-collected", "revenue-online",
             "revenue-offline", "revenue-by-hand", "revenue-owed", "revenue-adjustments",
             "revenue-total", "open-flags", "upstream-backlog")
    return {name: browser.text("#" + name) for name in names}


# ---- what the database says, computed here independently of the page ----

def expected_numbers(db_path, table, day_start, now):
    con = sqlite3.connect(db_path)
    try:
        rows = con.execute("SELECT gate, jid, seq, kind, time, plate, colour, fee, fee_source,"
                           " flags FROM events ORDER BY time, gate, jid, seq").fetchall()
        corrections = con.execute("SELECT gate, jid, seq, action, amount FROM corrections"
                                  " ORDER BY created_at, id").fetchall()
        statuses = {g: json.loads(s) for g, s in con.execute("SELECT gate, status FROM gates")}
    finally:
        con.close()
    day = [r for r in rows if day_start <= r[4] < day_start + 86400]
    inside = set()
    open_entry = {}
    flagged = set()
    for gate, jid, seq, kind, t, plate, colour, fee, source, flags in rows:
        if t > now:
            continue
        if kind == "in":
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
    corrected = {c[:3] for c in corrections}
    # an exit let out unpaid (bit 3) is owed, not collected, until a
    # "collected" (its first only) or "waived" correction settles it
    online = sum(r[7] for r in day if r[3] == "out" and r[8] == "on" and not r[9] & 8)
    offline = sum(r[7] for r in day if r[3] == "out" and r[8] == "off" and not r[9] & 8)
    owed_ids = {r[:3]: r[7] for r in day if r[3] == "out" and r[9] & 8}
    day_ids = {r[:3] for r in day}
    by_hand, adjust, settled = 0, 0, set()
    for c in corrections:
        if c[:3] in owed_ids and c[3] in ("collected", "waived"):
            by_hand += c[4] if c[3] == "collected" and c[:3] not in settled else 0
            settled.add(c[:3])
        elif c[:3] in day_ids:
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


def test_page_during_the_demo_shows_what_the_database_holds(tmp_path, browser):
    mid_run = []
    problems = []
    watcher = {}

    def watch(page_url, stop):
        while not stop.is_set():
            try:
                browser.get(page_url)
                mid_run.append(tiles(browser))
            except Exception as exc:   # noqa: BLE001 (reported by the test)
                problems.append(repr(exc))
            stop.wait(1.5)

    def on_running(context):
        assert context["page_url"]
        stop = threading.Event()
        watcher["stop"] = stop
        watcher["thread"] = threading.Thread(target=watch, args=(context["page_url"], stop))
        watcher["thread"].start()

    checked = {}

    def on_drained(context):
        watcher["stop"].set()
        watcher["thread"].join(60)
        clock = context["clock"]
        table = load_tariff(TARIFF)
        browser.get(context["page_url"])
        shown = tiles(browser)
        now = int(clock.now())
        day_start = T0 - 8 * 3600
        numbers, statuses = expected_numbers(context["db_path"], table, day_start, now)
        checked["shown"], checked["expected"] = shown, numbers
        checked["gates"] = {browser.attribute(row, "data-gate"):
                            browser.text("td.state", within=row)
                            for row in browser.find_all("tr.gate")}
        checked["statuses"] = statuses
        checked["points"] = browser.attribute(browser.find("#occupancy polyline"), "points")
        checked["title"] = browser.title()
        checked["upstream"] = shown["upstream-backlog"]

    with open(os.devnull, "w") as quiet:
        report = demo.run(str(tmp_path), cars=40, out=quiet, outage=(8.0, 16.0), http_port=0,
                          central_outage=(4.0, 18.0), on_running=on_running,
                          on_drained=on_drained)
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
    assert checked["gates"] == {gate: ("online" if s.get("on") else "offline")
                                for gate, s in checked["statuses"].items()}
    assert set(checked["gates"]) == {"gate-in", "gate-out"}
    assert len(checked["points"].split()) > 10
    assert checked["title"] == "parkgate lot demo"
    assert checked["upstream"] == "0"
    assert report["upstream"]["missing"] == report["upstream"]["extra"] == 0


def test_a_correction_recorded_through_the_form(tmp_path, browser):
    db_path = str(tmp_path / "lot.sqlite")
    store = Store(db_path, "L")
    ev = record.from_wire
    store.ingest("in-1", 1, [ev(entry(1, "京A00001", T0)), ev(entry(2, "京B00002", T0 + 60)),
                             ev(entry(3, "京M00003", T0 + 90))])
    # an exit the exit lane charged the no-entry fee for: the entry is stored now
    store.ingest("out-1", 2, [ev(exit_(1, "京A00001", T0 + 3600, 2000, record.FEE_OFFLINE,
                                       flags=record.FLAG_NO_ENTRY)),
                              ev(exit_(2, "京C00003", T0 + 3700, 2000, record.FEE_OFFLINE,
                                       flags=record.FLAG_NO_ENTRY)),
                              # a member the exit lane let out free (flag bit 2): no flag
                              ev(exit_(3, "京M00003", T0 + 3800, 0, record.FEE_OFFLINE,
                                       entry_time=T0 + 90, flags=4))])
    store.record_status("in-1", {"on": 1, "backlog": 3, "clock": 5, "heap": 41000, "tv": 1})
    store.record_status("out-1", {"on": 0})
    table = load_tariff(TARIFF)
    page = OperatorPage(store, "L", lambda: table, clock=lambda: T0 + 4000).start()
    try:
        browser.get(page.url)
        assert tiles(browser)["open-flags"] == "2"
        assert tiles(browser)["inside"] == "1"       # 京B00002
        assert {browser.attribute(r, "data-gate"): browser.text("td.state", within=r)
                for r in browser.find_all("tr.gate")} == {"in-1": "online", "out-1": "offline"}
        row = browser.find('tr.flag[data-id="out-1/2/1"]')
        assert "overcharged 18.00 yuan" in browser.text("td:nth-child(7)", within=row)
        select = browser.find("select[name=action]", within=row)
        browser.click(browser.find("option[value=refunded]", within=select))
        browser.type_into(browser.find("input[name=amount]", within=row), "18.00")
        browser.type_into(browser.find("input[name=note]", within=row), "entry at in-1")
        browser.click(browser.find("button", within=row))
        wait_for(lambda: store.corrections(), what="the correction")
        browser.get(page.url)
        assert tiles(browser)["open-flags"] == "1"
        assert tiles(browser)["revenue-adjustments"] == "-18.00"
        assert tiles(browser)["revenue-total"] == "22.00"
        assert "refunded 18.00 yuan entry at in-1" in browser.text(
            'tr.flag[data-id="out-1/2/1"] .corrected')
        [correction] = store.corrections()
        assert (correction["action"], correction["amount"]) == ("refunded", 1800)
        # the event itself is untouched
        assert store.exits_with_entries(T0, T0 + 86400)[0]["fee"] == 2000
        # the JSON endpoint has the same numbers
        with urllib.request.urlopen(page.url + "api/summary", timeout=10) as response:
            summary = json.loads(response.read())
        assert (summary["open_flags"], summary["inside"], summary["revenue"]["total"]) == (
            1, 1, "22.00")
    finally:
        page.stop()
        store.close()


def test_money_is_exact():
    assert [yuan(f) for f in (0, 5, 100, 1999, -1800)] == [
        "0.00", "0.05", "1.00", "19.99", "-18.00"]
    assert [fen_from_yuan(t) for t in ("0", "0.1", "12.50", "3")] == [0, 10, 1250, 300]
    for bad in ("1.001", "-1", "abc"):
        with pytest.raises(ValueError):
            fen_from_yuan(bad)


def test_correction_endpoint_refuses_bad_input(tmp_path):
    store = Store(str(tmp_path / "lot.sqlite"), "L")
    page = OperatorPage(store, "L", lambda: None, clock=lambda: T0).start()
    try:
        for body in ({"gate": "x", "jid": 1, "seq": 1, "action": "reviewed"},
                     {"gate": "x", "jid": "a", "seq": 1, "action": "reviewed"}):
            request = urllib.request.Request(page.url + "api/corrections", method="POST",
                                             data=json.dumps(body).encode())
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(request, timeout=10)
            assert caught.value.code == 400
        assert store.corrections() == []
    finally:
        page.stop()
        store.close()




def test_bridge_command_serves_the_page(tmp_path):
    from parkgate_tools.sim.broker import Broker
    port = free_port()
    with Broker(str(tmp_path / "broker")) as broker:
        proc = subprocess.Popen(
            [sys.executable, "-m", "parkgate_tools.cli", "bridge", "--lot", "lot1",
             "--broker", "%s:%d" % (broker.host, broker.port), "--db",
             str(tmp_path / "lot.sqlite"), "--tariff", TARIFF, "--http", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            def page():
                try:
                    with urllib.request.urlopen("http://127.0.0.1:%d/" % port,
                                                timeout=2) as response:
                        return response.read().decode()
                except OSError:
                    return None
            wait_for(page, 20, "the operator page of `parkgate bridge --http`")
            assert "<h1>Lot lot1" in page()
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "operator page: http://127.0.0.1:%d/" % port in err
