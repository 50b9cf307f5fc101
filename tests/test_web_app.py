"""The lot's web application (lot/web/app.py) through uvicorn, without a
browser: login required, CSRF and Origin on every POST, request bodies
capped before they are read, every field checked, attendant and manager
roles, who did what (corrections, closes, pushes, remote opens, the audit
page), the bridge's health, a gate's stale backlog cleared, the flagged
and owed lists over a date range and the chart."""
import http.client
import re
import urllib.parse

import pytest

from fixtures_mqtt import TARIFF, entry, exit_
from parkgate import record
from parkgate_tools.lot.operator_page import OperatorPage
from parkgate_tools.lot.store import Store
from test_store_backends import ev
from web_client import PASSWORD, WebClient, add_user

T0 = 1795564800                  # 2026-11-25 08:00 UTC+8
OWED = record.FLAG_OWED
with open(TARIFF, encoding="utf-8") as f:
    TARIFF_TEXT = f.read()


class FakePusher:
    """The pusher seam: records each call, answers each gate "accepted"."""

    def __init__(self):
        self.calls = []

    def __call__(self, kind, payload, who):
        self.calls.append((kind, payload, who))
        return {"in-1": "accepted"}


@pytest.fixture
def lot(tmp_path):
    """(page, store, pusher, health) of a served page on a day with an owed
    exit, a paid one and an open entry; users boss (manager) and att
    (attendant)."""
    store = Store(str(tmp_path / "lot.sqlite"), "L")
    store.ingest("in-1", 1, [ev(entry(1, "A1", T0)), ev(entry(2, "B2", T0 + 60)),
                             ev(entry(3, "C3", T0 + 90))])
    store.ingest("out-1", 2, [ev(exit_(1, "A1", T0 + 3600, 500, record.FEE_OFFLINE,
                                       entry_time=T0, flags=OWED)),
                              ev(exit_(2, "B2", T0 + 3700, 800, entry_time=T0 + 60))])
    health = {"live": True, "refused": 3, "failed": 1}
    pusher = FakePusher()
    page = OperatorPage(store, "L", lambda: None, clock=lambda: T0 + 4000, duty=1,
                        pusher=pusher, health=lambda: dict(health)).start()
    add_user(store, "boss", "manager")
    add_user(store, "att", "attendant")
    yield page, store, pusher, health
    page.stop()
    store.close()


def client_of(page, name):
    client = WebClient(page.url)
    assert client.login(name, PASSWORD) == 200
    return client


def raw_post(page, client, path, body, headers):
    """(status, body) of a POST sent as given (headers as they are, with
    the client's session cookie)."""
    cookie = "; ".join("%s=%s" % (c.name, c.value) for c in client.cookies)
    host = urllib.parse.urlsplit(page.url)
    connection = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
    try:
        connection.putrequest("POST", path)
        for name, value in dict(headers, Cookie=cookie).items():
            connection.putheader(name, value)
        connection.endheaders(body)
        answer = connection.getresponse()
        return answer.status, answer.read().decode()
    finally:
        connection.close()


def test_every_page_but_login_and_health_needs_a_login(lot):
    page, store, _, _ = lot
    anonymous = WebClient(page.url, follow=False)
    status, headers, _ = anonymous.get("search?plate=A1")
    assert status == 303 and headers["location"] == "/login?next=%2Fsearch%3Fplate%3DA1"
    for path in ("", "flagged", "owed", "audit", "sessions.csv"):
        assert anonymous.get(path)[0] == 303, path
    assert anonymous.get("api/summary")[0] == 401
    status, headers, _ = anonymous.post("corrections", {"gate": "out-1"})
    assert status == 303 and headers["location"] == "/login?next=%2F"     # not to a POST
    assert anonymous.post_json("api/corrections", {})[0] == 401
    for path in ("login", "healthz", "metrics", "static/page.css"):
        assert anonymous.get(path)[0] == 200, path
    assert store.corrections() == []
    boss = client_of(page, "boss")
    status, headers, html = boss.get("")
    assert status == 200 and '<span id="user">boss (manager)</span>' in html
    assert headers["content-security-policy"].startswith("default-src 'self'")
    assert boss.get("login")[0] == 200


def test_a_post_without_the_token_or_from_another_site_is_refused(lot):
    page, store, _, _ = lot
    boss = client_of(page, "boss")
    boss.get("")
    fields = {"gate": "out-1", "jid": 2, "seq": 2, "action": "refunded", "amount": "1.00",
              "note": "x"}
    assert boss.post("corrections", fields, csrf=False)[0] == 403
    assert boss.post("corrections", dict(fields, csrf="forged"), csrf=False)[0] == 403
    assert boss.post("corrections", fields, headers={"Origin": "http://evil.example"})[0] == 403
    assert boss.post("corrections", fields,
                     headers={"Referer": "http://evil.example/page"})[0] == 403
    assert boss.post_json("api/corrections", dict(fields, amount_fen=100), csrf=False)[0] == 403
    assert store.corrections() == []
    origin = page.url.rstrip("/")
    assert boss.post("corrections", fields, headers={"Origin": origin})[0] == 200  # after a 303
    [correction] = store.corrections()
    assert (correction["action"], correction["amount"], correction["made_by"]) == (
        "refunded", 100, "boss")


def test_bodies_are_capped_before_they_are_read(lot):
    page, store, _, _ = lot
    boss = client_of(page, "boss")
    boss.get("")
    form = urllib.parse.urlencode({"csrf": boss.csrf, "gate": "out-1", "jid": 2, "seq": 2,
                                   "action": "reviewed", "amount": "0"}).encode()
    kind = {"Content-Type": "application/x-www-form-urlencoded"}
    # no Content-Length (chunked), a non-numeric one, one over 64 KiB with no body sent
    status, text = raw_post(page, boss, "/corrections", b"0\r\n\r\n",
                            dict(kind, **{"Transfer-Encoding": "chunked"}))
    assert status == 400 and "Content-Length: missing" in text
    assert raw_post(page, boss, "/corrections", b"",       # refused by uvicorn itself
                    dict(kind, **{"Content-Length": "12x"}))[0] == 400
    status, text = raw_post(page, boss, "/corrections", b"",
                            dict(kind, **{"Content-Length": str(1 << 30)}))
    assert status == 413 and "at most 65536" in text
    assert store.corrections() == []
    assert raw_post(page, boss, "/corrections", form,
                    dict(kind, **{"Content-Length": str(len(form))}))[0] == 303
    assert len(store.corrections()) == 1


@pytest.mark.parametrize("change", [
    {"jid": "a"}, {"seq": "-1"}, {"seq": "99999999999"}, {"gate": "no gate!"},
    {"action": "settled"}, {"action": "deleted"}, {"amount": "1e400"}, {"amount": "1.001"},
    {"note": "x" * 501}, {"note": "bell\x07"}, {"extra": "1"}])
def test_every_form_field_is_checked(lot, change):
    page, store, _, _ = lot
    boss = client_of(page, "boss")
    boss.get("")
    fields = dict({"gate": "out-1", "jid": "2", "seq": "1", "action": "collected",
                   "amount": "5.00", "note": "booth"}, **change)
    assert boss.post("corrections", fields)[0] == 400
    assert store.corrections() == []


def test_the_json_api_checks_types(lot):
    page, store, _, _ = lot
    boss = client_of(page, "boss")
    boss.get("")
    for body in ({"gate": "out-1", "jid": 2, "seq": 9, "action": "reviewed"},   # no such event
                 {"gate": "out-1", "jid": "2", "seq": 1, "action": "reviewed"},
                 {"gate": "out-1", "jid": 2, "seq": 1, "action": "refunded", "amount_fen": 1.5},
                 ["not", "an", "object"]):
        assert boss.post_json("api/corrections", body)[0] == 400, body
    assert store.corrections() == []
    status, answer = boss.post_json("api/corrections", {"gate": "out-1", "jid": 2, "seq": 2,
                                                         "action": "refunded", "amount_fen": 300})
    assert status == 201 and [c["id"] for c in store.corrections()] == [answer["id"]]


def test_an_attendant_collects_an_owed_fee_but_does_nothing_a_manager_does(lot):
    page, store, pusher, _ = lot
    att = client_of(page, "att")
    status, _, html = att.get("")
    assert status == 200 and '<span id="user">att (attendant)</span>' in html
    assert 'id="push-tariff"' not in html and 'class="open-gate"' not in html
    assert 'data-id="out-1/2/1"' in html.split('id="owed"')[1]
    collect = {"gate": "out-1", "jid": 2, "seq": 1, "action": "collected", "amount": "5.00"}
    for path, fields in (("push-tariff", {"tariff": TARIFF_TEXT}), ("gates/open", {"gate": "in-1"}),
                         ("sessions/close", {"gate": "in-1", "jid": 1, "seq": 3, "reason": "x"}),
                         ("corrections", dict(collect, action="refunded")),
                         ("corrections", dict(collect, seq=2))):       # a paid exit: not owed
        assert att.post(path, fields)[0] == 403, path
    assert att.get("audit")[0] == 403
    assert pusher.calls == [] and store.corrections() == [] and store.session_closes() == []
    assert att.post("corrections", collect)[0] == 200
    [correction] = store.corrections()
    assert (correction["action"], correction["amount"], correction["made_by"]) == (
        "collected", 500, "att")
    assert att.post("corrections", collect)[0] == 403       # settled: no longer owed
    revenue = att.get_json("api/summary")["revenue"]
    assert (revenue["by_hand"], revenue["owed"]) == ("5.00", "0.00")


def test_a_manager_closes_pushes_and_opens_and_the_audit_log_says_who(lot):
    page, store, pusher, _ = lot
    boss = client_of(page, "boss")
    status, _, html = boss.get("")
    assert 'id="push-tariff"' in html and 'id="push-tariff-submit"' in html
    assert boss.post("sessions/close", {"gate": "in-1", "jid": 1, "seq": 3,
                                        "reason": "towed"})[0] == 200
    assert [(c["plate"], c["closed_by"]) for c in store.session_closes()] == [("C3", "boss")]
    assert boss.post("push-tariff", {"tariff": "{not a table"})[0] == 400
    assert pusher.calls == []
    status, _, html = boss.post("push-tariff", {"tariff": TARIFF_TEXT})
    assert status == 200 and 'data-gate="in-1"' in html and "accepted" in html
    assert boss.post("gates/open", {"gate": "in-1"})[0] == 200
    assert pusher.calls == [("tariff", TARIFF_TEXT, "boss"), ("open", {"gate": "in-1"}, "boss")]
    log = {row["action"]: row for row in store.audit_log()}
    assert log["push-tariff"]["who"] == "boss" and log["push-tariff"]["detail"]["result"] == {
        "in-1": "accepted"}
    assert log["open"]["detail"] == {"gate": "in-1", "result": {"in-1": "accepted"}}
    assert log["close-session"]["who"] == "boss"
    status, _, html = boss.get("audit")
    assert status == 200 and html.count('class="audit"') == len(store.audit_log())
    assert re.search(r'<tr class="audit"[^>]*><td>[^<]+</td><td>boss</td><td>open</td>', html)


def test_the_bridge_health_and_a_backlog_delivered_since(lot):
    page, store, _, health = lot
    boss = client_of(page, "boss")
    store.record_status("in-1", {"on": 1, "backlog": 19})

    def shown():
        html = boss.get("")[2]
        bridge = re.search(r'<div id="bridge-health">(.*?)</div>', html, re.S).group(1)
        backlog = re.search(r'data-gate="in-1">.*?<td class="backlog">(.*?)</td>', html,
                            re.S).group(1)
        return bridge, backlog
    bridge, backlog = shown()
    assert ">live<" in bridge and '"refused">3<' in bridge and '"failed">1<' in bridge
    assert backlog == "19"
    store.ingest("in-1", 1, [ev(entry(4, "D4", T0 + 3900))])     # stored after the status
    health.update(live=False, refused=4)
    bridge, backlog = shown()
    assert ">not live<" in bridge and '"refused">4<' in bridge
    assert backlog.endswith(">-</span>") and "delivered since" in backlog
    assert boss.get_json("healthz")["bridge"] == {"live": False, "refused": 4, "failed": 1}


def test_flagged_and_owed_over_a_date_range_and_the_chart(lot):
    page, store, _, _ = lot
    store.ingest("out-1", 2, [ev(exit_(3, "Z9", T0 - 5 * 86400, 700, record.FEE_OFFLINE,
                                       flags=OWED | record.FLAG_NO_ENTRY))])
    boss = client_of(page, "boss")
    for path in ("flagged", "owed"):
        html = boss.get(path + "?from=2026-11-25&to=2026-11-25")[2]
        assert 'data-id="out-1/2/1"' in html and "out-1/2/3" not in html, path
        html = boss.get(path + "?from=2026-11-20&to=2026-11-20")[2]
        assert "out-1/2/3" in html and "out-1/2/1" not in html, path
    assert boss.get("owed?from=2026-11-25&to=2026-11-20")[0] == 400
    assert boss.get("owed?from=yesterday")[0] == 400
    html = boss.get("")[2]
    figure = re.search(r'<figure id="chart">(.*?)</figure>', html, re.S).group(1)
    assert "<svg" in figure and "<script" not in figure
    assert sum(page.snapshot()["revenue_by_hour"]) == 800     # the paid exit; the owed is not


def test_the_search_page_closes_an_open_session_for_a_manager_only(lot):
    page, store, _, _ = lot
    boss, att = client_of(page, "boss"), client_of(page, "att")
    html = boss.get("search?plate=C3&from=2026-11-25")[2]
    form = re.search(r'<form class="close-session".*?</form>', html, re.S).group(0)
    assert 'name="gate" value="in-1"' in form and 'name="seq" value="3"' in form
    assert 'class="close-session"' not in boss.get("search?plate=B2&from=2026-11-25")[2]
    assert 'class="close-session"' not in att.get("search?plate=C3&from=2026-11-25")[2]
    inside = boss.get_json("api/summary")["inside"]
    assert boss.post("sessions/close", {"gate": "in-1", "jid": 1, "seq": 3,
                                        "reason": "seen leaving"})[0] == 200
    assert boss.get_json("api/summary")["inside"] == inside - 1
    assert "closed by hand" in boss.get("search?plate=C3&from=2026-11-25")[2]


def test_what_a_user_typed_is_shown_escaped(lot):
    page, store, _, _ = lot
    boss = client_of(page, "boss")
    boss.get("")
    assert boss.post("corrections", {"gate": "out-1", "jid": 2, "seq": 1, "action": "reviewed",
                                     "amount": "0", "note": "<img src=x onerror=alert(1)>"}
                     )[0] == 200
    html = boss.get("")[2]
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img src=x" not in html
    assert "&lt;b&gt;" in boss.get("search?plate=%3Cb%3E")[2]
