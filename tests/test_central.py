"""The central server's access rules and store, on SQLite and PostgreSQL:
per-lot tokens checked with hmac.compare_digest, a lot's token refused for
another lot (403), no token configured refusing everything, the admin page
(lots, event counts, backlog, revenue without owed exits) and the lot id in
every event's key."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from fixtures_mqtt import backend, db_path, pg_server  # noqa: F401 (fixtures)
from fixtures_mqtt import TARIFF, WAIT_S, entry, exit_
from parkgate import record
from parkgate_tools.central import app as central_app
from parkgate_tools.central.server import CentralServer, TokenError, load_tokens
from parkgate_tools.sim.broker import free_port

T0 = 1795564800
TOKENS = {"lot-a": "token-a", "lot-b": "token-b"}
ADMIN = "admin-token"


@pytest.fixture
def central(db_path):  # noqa: F811 (fixture)
    server = CentralServer(db_path, tokens=dict(TOKENS), admin_token=ADMIN).start()
    yield server
    server.close()


def call(url, method="GET", body=None, token=None):
    """(status, text) of one request."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(request, timeout=WAIT_S) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def events_body(*wires, gate="in-1", jid=7, backlog=None):
    body = {"events": [dict(w, g=gate, j=jid) for w in wires]}
    if backlog is not None:
        body["backlog"] = backlog
    return body


def test_tokens_are_compared_with_compare_digest(central, monkeypatch):
    compared = []

    def spy(a, b):
        compared.append(b)
        return a == b
    monkeypatch.setattr(central_app.hmac, "compare_digest", spy)
    assert call(central.url + "/v1/lots/lot-a/summary", token="token-a")[0] == 200
    # every configured token was compared, not only up to the one that matched
    assert sorted(compared) == sorted(t.encode() for t in list(TOKENS.values()) + [ADMIN])
    compared.clear()
    assert call(central.url + "/v1/lots/lot-a/summary", token="token-x")[0] == 401
    assert len(compared) == 3


def test_a_lot_acts_only_on_its_own_lot(central):
    url = central.url + "/v1/lots/%s/%s"
    body = events_body(entry(1, "A1", T0))
    assert call(url % ("lot-b", "events"), "POST", body, "token-a")[0] == 403
    assert call(url % ("lot-a", "events"), "POST", body, "token-a")[0] == 200
    central.set_tariff("lot-b", open(TARIFF, encoding="utf-8").read())
    for what in ("tariff", "members", "summary"):
        assert call(url % ("lot-b", what), token="token-a")[0] == 403
    assert call(url % ("lot-b", "tariff"), token="token-b")[0] == 200
    assert call(url % ("lot-b", "corrections"), "POST", {"corrections": []}, "token-a")[0] == 403
    # a lot's token cannot publish documents, nor list the lots, nor open the admin page
    assert call(url % ("lot-a", "members"), "PUT", {"members": []}, "token-a")[0] == 403
    assert call(central.url + "/v1/lots", token="token-a")[0] == 403
    assert call(central.url + "/admin", token="token-a")[0] == 403
    # the admin reads every lot, publishes, but posts no events for a lot
    assert call(url % ("lot-b", "tariff"), token=ADMIN)[0] == 200
    code, text = call(url % ("lot-a", "summary"), token=ADMIN)
    assert code == 200 and json.loads(text)["events"] == 1
    assert call(url % ("lot-a", "members"), "PUT", {"members": [{"p": "X1"}]}, ADMIN) == (
        200, '{"version":1}')
    assert call(url % ("lot-a", "events"), "POST", body, ADMIN)[0] == 403
    assert central.store.summary("lot-b")["events"] == 0


def test_no_token_configured_refuses_everything(db_path, tmp_path):  # noqa: F811
    server = CentralServer(db_path).start()
    try:
        for token in (None, "", "anything"):
            assert call(server.url + "/v1/lots/lot-a/events", "POST",
                        events_body(entry(1, "A1", T0)), token)[0] == 401
            assert call(server.url + "/v1/lots/lot-a/tariff", token=token)[0] == 401
            assert call(server.url + "/admin", token=token)[0] == 401
        assert server.store.summary("lot-a")["events"] == 0
    finally:
        server.close()
    empty = tmp_path / "tokens.json"
    empty.write_text('{"lots": {}}')
    with pytest.raises(TokenError, match="no token configured"):
        load_tokens(str(empty))
    with pytest.raises(TokenError, match="tokens file"):
        CentralServer(db_path, tokens_file=str(tmp_path / "missing.json"))
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"admin": ADMIN, "lots": TOKENS}))
    assert load_tokens(str(good)) == (TOKENS, ADMIN)


def test_the_lot_id_is_part_of_every_event_key(central):
    same = events_body(entry(1, "A1", T0), exit_(2, "A1", T0 + 60, 500, entry_time=T0))
    for lot, token in TOKENS.items():
        code, text = call(central.url + "/v1/lots/%s/events" % lot, "POST", same, token)
        assert (code, json.loads(text)) == (200, {"stored": 2, "duplicates": 0})
    for lot in TOKENS:
        assert central.store.events(lot) == [("in-1", 7, 1, "in", "A1", None),
                                             ("in-1", 7, 2, "out", "A1", 500)]
    again = call(central.url + "/v1/lots/lot-a/events", "POST", same, "token-a")
    assert json.loads(again[1]) == {"stored": 0, "duplicates": 2}


def test_admin_page_lists_lots_backlog_and_revenue(central):
    owed = record.FLAG_OWED
    posts = {"lot-a": events_body(entry(1, "A1", T0), exit_(2, "A1", T0 + 60, 500, entry_time=T0),
                                  exit_(3, "A2", T0 + 90, 300, record.FEE_OFFLINE),
                                  exit_(4, "A3", T0 + 99, 700, flags=owed), backlog=12),
             "lot-b": events_body(exit_(1, "B1", T0 + 5, 250), gate="out-9")}
    for lot, body in posts.items():
        assert call(central.url + "/v1/lots/%s/events" % lot, "POST", body, TOKENS[lot])[0] == 200
    central.set_members("lot-c", [])   # known, nothing posted yet
    assert call(central.url + "/admin")[0] == 401
    code, html = call(central.url + "/admin", token=ADMIN)
    assert code == 200

    def cell(lot, name):
        row = re.search(r'<tr data-lot="%s">(.*?)</tr>' % lot, html, re.S).group(1)
        return re.search(r'class="%s[^"]*"[^>]*>([^<]*)<' % name, row).group(1)
    # revenue: fees charged (online or offline), not the owed exit's
    assert [cell("lot-a", n) for n in ("events", "revenue", "owed", "backlog")] == [
        "4", "8.00", "7.00", "12"]
    assert [cell("lot-b", n) for n in ("events", "revenue", "backlog")] == ["1", "2.50", "unknown"]
    assert [cell("lot-c", n) for n in ("events", "last-seen")] == ["0", "never"]
    code, text = call(central.url + "/v1/lots", token=ADMIN)
    lots = {row["lot"]: row for row in json.loads(text)["lots"]}
    assert (lots["lot-a"]["revenue"], lots["lot-a"]["owed"], lots["lot-b"]["revenue"]) == (
        800, 700, 250)


def test_the_service_reads_its_tokens_from_a_file(tmp_path):
    """`parkgate central`: tokens from --tokens FILE only; a file with none
    is a startup error (exit 2, saying so); with one it serves (the session
    secret made in --secret-file) and stops on SIGTERM."""
    command = [os.path.join(os.path.dirname(sys.executable), "parkgate"), "central",
               "--db", str(tmp_path / "central.sqlite"), "--port", str(free_port())]
    empty = tmp_path / "none.json"
    empty.write_text('{"lots": {}}')
    refused = subprocess.run(command + ["--tokens", str(empty)], capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 2 and "no token configured" in refused.stderr
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"admin": ADMIN, "lots": TOKENS}))
    secret = tmp_path / "central.key"
    server = subprocess.Popen(command + ["--tokens", str(tokens), "--secret-file", str(secret)],
                              stderr=subprocess.PIPE)
    url = "http://127.0.0.1:%s/v1/lots/lot-a/summary" % command[-1]
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                assert call(url, token="token-a")[0] == 200
                break
            except urllib.error.URLError:
                assert time.monotonic() < deadline, "parkgate central did not start"
                time.sleep(0.1)
        assert call(url, token="token-b")[0] == 403
        assert oct(secret.stat().st_mode & 0o777) == "0o600" and len(secret.read_bytes()) == 32
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0


class AdminBrowser:
    """What a browser does at /admin: keeps the session cookie (sent by hand:
    it is Secure, which urllib's cookie jar keeps for https), follows no
    redirect, sends Accept: text/html and its own Origin."""

    def __init__(self, url):
        self.url, self.cookie, self.set_cookie = url, None, None
        self.opener = urllib.request.build_opener(NoRedirect)

    def call(self, path, form=None, origin=True):
        data = None if form is None else urllib.parse.urlencode(form).encode()
        request = urllib.request.Request(self.url + path, data=data)
        request.add_header("Accept", "text/html")
        if origin:
            request.add_header("Origin", self.url if origin is True else origin)
        if self.cookie:
            request.add_header("Cookie", self.cookie)
        try:
            response = self.opener.open(request, timeout=WAIT_S)
        except urllib.error.HTTPError as exc:
            response = exc
        header = response.headers.get("Set-Cookie")
        if header:
            self.set_cookie = header
            self.cookie = header.split(";")[0]
        return response.status, response.headers.get("Location"), response.read().decode()

    def csrf(self, path):
        return re.search(r'name="csrf" value="([^"]+)"', self.call(path)[2]).group(1)

    def log_in(self, token):
        return self.call("/admin/login", {"csrf": self.csrf("/admin/login"), "token": token})


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_admin_logs_in_with_a_browser_form_and_out(db_path, tmp_path):  # noqa: F811
    secret = tmp_path / "secret"
    server = CentralServer(db_path, tokens=dict(TOKENS), admin_token=ADMIN,
                           secret_file=str(secret)).start()
    try:
        assert oct(secret.stat().st_mode & 0o777) == "0o600" and len(secret.read_bytes()) == 32
        browser = AdminBrowser(server.url)
        assert browser.call("/admin")[:2] == (303, "/admin/login")
        assert call(server.url + "/admin")[0] == 401            # an API client: as before
        code, _, html = browser.log_in("token-a")                # a lot's token is no admin's
        assert code == 401 and 'id="login-error"' in html and "Wrong admin token" in html
        code, where, _ = browser.log_in(ADMIN)
        assert (code, where) == (303, "/admin")
        assert all(flag in browser.set_cookie.lower()
                   for flag in ("parkgate_central=", "httponly", "secure", "samesite=strict"))
        code, _, html = browser.call("/admin")
        assert code == 200 and '<table id="lots">' in html and 'id="logout"' in html
        # the cookie opens the page only: the API still wants the bearer token
        request = urllib.request.Request(server.url + "/v1/lots", headers={
            "Cookie": browser.cookie})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=WAIT_S)
        assert refused.value.code == 401
        # logging out needs the session's CSRF token and this site's Origin
        token = browser.csrf("/admin")
        assert browser.call("/admin/logout", {"csrf": "forged"})[0] == 403
        assert browser.call("/admin/logout", {"csrf": token}, origin="https://evil.example")[0] == 403
        assert browser.call("/admin")[0] == 200
        assert browser.call("/admin/logout", {"csrf": token})[:2] == (303, "/admin/login")
        assert browser.call("/admin")[:2] == (303, "/admin/login")
    finally:
        server.close()
    # the secret file is kept: a session made before a restart still opens the page
    again = CentralServer(db_path, tokens=dict(TOKENS), admin_token=ADMIN,
                          secret_file=str(secret)).start()
    try:
        browser = AdminBrowser(again.url)
        browser.log_in(ADMIN)
        again.stop()
        again.start()
        assert browser.call("/admin")[0] == 200
        again.admin_token = "a-new-admin-token"             # a new token ends the session
        assert browser.call("/admin")[:2] == (303, "/admin/login")
    finally:
        again.close()


def test_admin_login_wants_csrf_and_origin_and_is_rate_limited(central):
    browser = AdminBrowser(central.url)
    token = browser.csrf("/admin/login")
    assert browser.call("/admin/login", {"csrf": "forged", "token": ADMIN})[0] == 403
    assert browser.call("/admin/login", {"csrf": token, "token": ADMIN},
                        origin="https://evil.example")[0] == 403
    assert browser.call("/admin")[:2] == (303, "/admin/login")     # neither logged in
    for _ in range(5):
        assert browser.log_in("guess")[0] == 401
    code, _, html = browser.log_in(ADMIN)                 # the right token, too late
    assert code == 429 and "Too many failed logins" in html
    assert browser.call("/admin")[:2] == (303, "/admin/login")
    assert call(central.url + "/admin", token=ADMIN)[0] == 200     # the bearer API is not limited


def test_the_admin_login_compares_the_token_with_compare_digest(central, monkeypatch):
    compared = []
    real = central_app.hmac.compare_digest
    monkeypatch.setattr(central_app.hmac, "compare_digest",
                        lambda a, b: compared.append((a, b)) or real(a, b))
    AdminBrowser(central.url).log_in("guess")
    assert (b"guess", ADMIN.encode()) in compared


def test_owed_fees_settled_at_the_lot_leave_the_owed_total_once(central):
    """A fee owed, then paid at the plate's next visit ("settled", its fen in
    that exit's fee) or collected by hand (the first "collected" counts,
    into revenue) is owed no more, and no fen is counted twice."""
    owed = record.FLAG_OWED
    body = events_body(exit_(1, "A1", T0, 700, flags=owed), exit_(2, "A1", T0 + 60, 1200),
                       exit_(3, "A2", T0 + 90, 300, flags=owed),
                       exit_(4, "A3", T0 + 99, 400, flags=owed), gate="out-1")
    assert call(central.url + "/v1/lots/lot-a/events", "POST", body, "token-a")[0] == 200

    def correction(n, seq, action, amount):
        return {"id": "c%d" % n, "g": "out-1", "j": 7, "s": seq, "action": action,
                "amount": amount, "note": "", "at": T0 + 100 + n}
    corrections = {"corrections": [correction(1, 1, "settled", 700),        # paid in exit 2
                                   correction(2, 3, "collected", 300),
                                   correction(3, 3, "collected", 300)]}     # clicked twice
    assert call(central.url + "/v1/lots/lot-a/corrections", "POST", corrections,
                "token-a")[0] == 200
    code, text = call(central.url + "/v1/lots", token=ADMIN)
    [lot] = [row for row in json.loads(text)["lots"] if row["lot"] == "lot-a"]
    assert (lot["revenue"], lot["owed"]) == (1200 + 300, 400)
