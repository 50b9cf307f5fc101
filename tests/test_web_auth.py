"""Accounts and request security (lot/web/auth.py) through a real HTTP
server (uvicorn, asgi_service.ASGIService) and web.client.WebClient: login and its refusals, the login rate limit on a fake clock, CSRF
and Origin checks, sessions that end when their user is disabled or its
password changes, and rehashing of weak hashes (tests/test_users_cli.py:
`parkgate lot user`)."""
import os
import re
import stat
import urllib.parse

import pytest
from argon2 import PasswordHasher
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from parkgate_tools.asgi_service import ASGIService
from parkgate_tools.lot.web import auth
from parkgate_tools.lot.web.client import WebClient
from test_store_backends import store  # noqa: F401 (a fixture: both backends)

PASSWORD = "correct horse battery"
HASHED = auth.hash_password(PASSWORD)
TEMPLATES = Jinja2Templates(directory=os.path.join(os.path.dirname(auth.__file__), "templates"))


@pytest.fixture
def accounts(store):
    """The lot store (both backends) with a manager alice and an attendant ann."""
    store.add_user("alice", "manager", HASHED)
    store.add_user("ann", "attendant", HASHED)
    return store


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def make_app(store, guard):
    """The login routes, a page for the logged-in ("/") and a manager's
    POST ("/act"), checked as the lot's app checks them."""
    def home(request):
        user = auth.current_user(request, store)
        if user is None:
            return RedirectResponse("/login?next=/", status_code=303)
        return PlainTextResponse("%s %s csrf=%s" % (user["name"], user["role"],
                                                    auth.csrf_token(request)))

    async def act(request):
        form = await request.form()
        presented = form.get("csrf") or request.headers.get("x-csrf-token")
        if not (auth.origin_ok(request) and auth.csrf_ok(request, presented)):
            return PlainTextResponse("refused", status_code=403)
        user = auth.current_user(request, store)
        if user is None:
            return PlainTextResponse("log in", status_code=401)
        if not auth.allowed(user, "manager"):
            return PlainTextResponse("managers only", status_code=403)
        return PlainTextResponse("done by " + user["name"])

    routes = auth.login_routes(store, guard, TEMPLATES) + [
        Route("/", home), Route("/act", act, methods=["POST"])]
    return Starlette(routes=routes, middleware=[auth.session_middleware(b"k" * 32)])


@pytest.fixture
def serve():
    """serve(store, guard=None) -> the base URL of the app, stopped after the test."""
    services = []

    def start(store, guard=None):
        service = ASGIService(make_app(store, guard or auth.LoginGuard()), "127.0.0.1", 0,
                              "test-web-auth").start()
        services.append(service)
        return service.url
    yield start
    for service in services:
        service.stop()


class Browser(WebClient):
    """A WebClient that follows no redirect, at site (no trailing "/")."""

    def __init__(self, site):
        super().__init__(site + "/", follow=False)
        self.site = site

    def send(self, method, path, form=None, headers=None):
        """(status, headers, body text); form: a dict to url-encode, or bytes."""
        data = form if form is None or isinstance(form, bytes) else urllib.parse.urlencode(
            form).encode()
        sent = {"Content-Type": "application/x-www-form-urlencoded"} if form is not None else {}
        return self.request(method, path, data, dict(sent, **(headers or {})))

    def login_form(self):
        """GET /login: the page's csrf token."""
        status, _, page = self.send("GET", "/login")
        assert status == 200 and 'id="login"' in page and 'id="login-submit"' in page
        return re.search(r'name="csrf" value="([^"]+)"', page).group(1)

    def login(self, name, password=PASSWORD, headers=None, **fields):
        form = {"username": name, "password": password, "csrf": self.login_form()}
        form.update(fields)
        return self.send("POST", "/login", form, headers)

    def page_token(self):
        status, _, text = self.send("GET", "/")
        assert status == 200, text
        return text.split("csrf=")[1]


def error_of(page):
    return re.search(r'<p id="login-error"[^>]*>([^<]*)</p>', page).group(1)


# ---- login ----

def test_a_good_login_gives_a_strict_secure_cookie_and_leads_to_the_page(accounts, serve):
    browser = Browser(serve(accounts))
    status, headers, _ = browser.send("GET", "/")
    assert (status, headers["location"]) == (303, "/login?next=/")
    status, headers, _ = browser.login("alice")
    assert (status, headers["location"]) == (303, "/")
    cookie = headers.get_all("set-cookie")[-1].lower()
    for flag in ("httponly", "samesite=strict", "secure", "max-age=43200", "path=/"):
        assert flag in cookie
    status, _, text = browser.send("GET", "/")
    assert status == 200 and text.startswith("alice manager ")
    assert accounts.audit_log()[0]["action"] == "login"
    assert accounts.audit_log()[0]["who"] == "alice"
    assert accounts.audit_log()[0]["detail"] == {"address": "127.0.0.1"}


def test_the_login_rotates_the_csrf_token(accounts, serve):
    browser = Browser(serve(accounts))
    before = browser.login_form()
    browser.send("POST", "/login", {"username": "alice", "password": PASSWORD,
                                       "csrf": before})
    assert browser.page_token() != before


def test_a_refused_login_does_not_say_whether_the_user_exists(accounts, serve):
    base = serve(accounts)
    wrong = Browser(base).login("alice", "not the password")
    nobody = Browser(base).login("nobody", PASSWORD)
    assert wrong[0] == nobody[0] == 401
    assert error_of(wrong[2]) == error_of(nobody[2]) == auth.REFUSED_MESSAGE
    assert [(row["who"], row["action"]) for row in accounts.audit_log()] == [
        ("nobody", "login-refused"), ("alice", "login-refused")]


def test_a_refused_login_gives_no_session(accounts, serve):
    browser = Browser(serve(accounts))
    browser.login("alice", "not the password")
    assert browser.send("GET", "/")[0] == 303


def test_after_login_next_leads_only_to_a_path_of_this_site(accounts, serve):
    base = serve(accounts)
    for asked, went in (("/search?plate=A1", "/search?plate=A1"), ("//evil.example/", "/"),
                        ("https://evil.example/", "/"), ("/\\evil.example", "/"),
                        ("/a\r\nX-Evil: 1", "/"), ("/" + "a" * 600, "/")):
        status, headers, _ = Browser(base).login("alice", next=asked)
        assert (status, headers["location"]) == (303, went), asked
    browser = Browser(base)
    form = {"username": "alice", "password": PASSWORD, "csrf": browser.login_form()}
    status, headers, _ = browser.send("POST", "/login?next=/owed", form)
    assert (status, headers["location"]) == (303, "/owed")


def test_a_form_too_large_or_of_too_many_fields_is_refused(accounts, serve):
    browser = Browser(serve(accounts))
    browser.login_form()
    status, _, _ = browser.send("POST", "/login", b"username=" + b"a" * 10000)
    assert status == 413
    assert browser.send("POST", "/login", {"f%d" % n: "" for n in range(11)})[0] == 413


# ---- rate limit ----

def test_five_failed_logins_of_a_user_refuse_the_sixth_until_the_window_passed(accounts, serve):
    clock = Clock()
    base = serve(accounts, auth.LoginGuard(clock=clock))
    for _ in range(5):
        assert Browser(base).login("alice", "guess")[0] == 401
    clock.now += 10
    status, headers, page = Browser(base).login("alice")      # even the right password
    assert status == 429 and headers["retry-after"] == "290"
    assert "290 s" in error_of(page)
    assert Browser(base).send("GET", "/")[0] == 303
    clock.now += 290
    assert Browser(base).login("alice")[0] == 303


def test_failed_logins_from_one_address_refuse_other_users_too(accounts, serve):
    base = serve(accounts, auth.LoginGuard(clock=Clock()))
    for name in ("u1", "u2", "u3", "u4", "alice"):
        assert Browser(base).login(name, "guess")[0] == 401
    assert Browser(base).login("ann")[0] == 429
    refused = [row for row in accounts.audit_log() if row["action"] == "login-refused"]
    assert len(refused) == 5        # a rate-limited attempt checks no password


def test_a_good_login_clears_its_users_failures():
    guard = auth.LoginGuard(clock=Clock())
    for _ in range(4):
        guard.failed("alice", "a1")
    guard.succeeded("alice", "a2")
    guard.failed("alice", "a3")
    assert guard.refused("alice", "a4") == 0


def test_the_guard_forgets_failures_older_than_its_window():
    clock = Clock()
    guard = auth.LoginGuard(clock=clock)
    for _ in range(4):
        guard.failed("alice", "a1")
    clock.now += 300
    guard.failed("alice", "a1")
    assert guard.refused("alice", "a1") == 0
    assert len(guard._failures) == 2 and all(len(t) == 1 for t in guard._failures.values())
    clock.now += 300
    assert guard.refused("alice", "a1") == 0 and not guard._failures


def test_the_guard_remembers_a_bounded_number_of_keys():
    guard = auth.LoginGuard(clock=Clock(), max_keys=6)
    for _ in range(5):
        guard.failed("alice", "a1")
    assert guard.refused("alice", "a9") > 0
    for n in range(3):
        guard.failed("other%d" % n, "b%d" % n)    # 6 more keys: alice's and a1 are dropped
    assert guard.refused("alice", "a1") == 0
    assert len(guard._failures) == 6


# ---- CSRF and Origin ----

def test_a_login_post_without_the_forms_token_or_from_another_site_is_refused(accounts, serve):
    base = serve(accounts)
    browser = Browser(base)
    browser.login_form()
    assert browser.send("POST", "/login", {"username": "alice",
                                              "password": PASSWORD})[0] == 403
    assert browser.send("POST", "/login", {"username": "alice", "password": PASSWORD,
                                              "csrf": "forged"})[0] == 403
    for header in ({"Origin": "http://evil.example"}, {"Referer": "http://evil.example/x"},
                   {"Origin": "null"}, {"Origin": base.replace("http:", "https:")}):
        assert Browser(base).login("alice", headers=header)[0] == 403, header
    assert accounts.audit_log() == []
    assert Browser(base).login("alice", headers={"Origin": base})[0] == 303
    assert Browser(base).login("alice", headers={"Referer": base + "/login"})[0] == 303


def test_a_post_needs_the_sessions_token_and_this_sites_origin(accounts, serve):
    base = serve(accounts)
    browser = Browser(base)
    browser.login("alice")
    token = browser.page_token()
    assert browser.send("POST", "/act", {"x": "1"})[0] == 403
    assert browser.send("POST", "/act", {"csrf": token[:-1]})[0] == 403
    assert browser.send("POST", "/act", {"csrf": token},
                           {"Origin": "http://evil.example"})[0] == 403
    assert browser.send("POST", "/act", {"csrf": token}, {"Origin": base})[0] == 200
    assert browser.send("POST", "/act", {}, {"X-CSRF-Token": token})[0] == 200
    other = Browser(base)
    other.login("ann")
    assert other.send("POST", "/act", {"csrf": token})[0] == 403     # not its token
    assert other.send("POST", "/act", {"csrf": other.page_token()})[0] == 403  # attendant


def test_a_tampered_session_cookie_is_no_session(accounts, serve):
    browser = Browser(serve(accounts))
    browser.login("alice")
    cookie = next(iter(browser.cookies))
    cookie.value = cookie.value[:5] + ("A" if cookie.value[5] != "A" else "B") + cookie.value[6:]
    assert browser.send("GET", "/")[0] == 303


def test_logout_needs_the_token_and_ends_the_session(accounts, serve):
    browser = Browser(serve(accounts))
    browser.login("alice")
    assert browser.send("POST", "/logout", {"csrf": "forged"})[0] == 403
    assert browser.send("GET", "/")[0] == 200
    status, headers, _ = browser.send("POST", "/logout", {"csrf": browser.page_token()})
    assert (status, headers["location"]) == (303, "/login")
    assert browser.send("GET", "/")[0] == 303


# ---- sessions follow the store ----

def test_a_disabled_users_session_stops_working_at_once(accounts, serve):
    browser = Browser(serve(accounts))
    browser.login("alice")
    token = browser.page_token()
    accounts.disable_user("alice")
    assert browser.send("GET", "/")[0] == 303
    assert browser.send("POST", "/act", {"csrf": token})[0] == 401
    assert Browser(browser.site).login("alice")[0] == 401


def test_a_new_role_counts_at_once(accounts, serve):
    browser = Browser(serve(accounts))
    browser.login("alice")
    token = browser.page_token()
    accounts.set_role("alice", "attendant")
    assert browser.send("POST", "/act", {"csrf": token})[0] == 403


def test_a_new_password_ends_the_users_sessions(accounts, serve):
    browser = Browser(serve(accounts))
    browser.login("alice")
    accounts.set_password("alice", auth.hash_password("another password"))
    assert browser.send("GET", "/")[0] == 303
    assert Browser(browser.site).login("alice", "another password")[0] == 303


def test_a_weak_hash_is_rehashed_at_login(accounts, serve):
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    accounts.set_password("alice", weak)
    browser = Browser(serve(accounts))
    assert browser.login("alice")[0] == 303
    rehashed = accounts.user("alice")["password_hash"]
    assert rehashed != weak and auth.verify_password(rehashed, PASSWORD)
    assert not PasswordHasher().check_needs_rehash(rehashed)
    assert browser.send("GET", "/")[0] == 200           # this session uses the new hash
    assert Browser(browser.site).login("alice")[0] == 303
    assert accounts.user("alice")["password_hash"] == rehashed  # a good hash is kept


# ---- the parts ----

def test_passwords_and_roles():
    hashed = auth.hash_password(PASSWORD)
    assert hashed.startswith("$argon2id$") and PASSWORD not in hashed
    assert auth.verify_password(hashed, PASSWORD)
    assert not auth.verify_password(hashed, PASSWORD + "x")
    assert not auth.verify_password("not a hash", PASSWORD)
    manager, attendant = {"role": "manager"}, {"role": "attendant"}
    assert auth.allowed(manager, "manager") and auth.allowed(manager, "attendant")
    assert auth.allowed(attendant, "attendant") and not auth.allowed(attendant, "manager")
    assert not auth.allowed(None, "attendant") and not auth.allowed({"role": "x"}, "attendant")
    with pytest.raises(ValueError):
        auth.allowed(manager, "admin")


def test_the_session_secret_is_made_once_and_kept_private(tmp_path):
    path = str(tmp_path / "session.key")
    secret = auth.load_or_create_secret(path)
    assert len(secret) == 32 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert auth.load_or_create_secret(path) == secret
    with open(path, "wb") as f:
        f.write(b"short")
    with pytest.raises(ValueError, match="session.key"):
        auth.load_or_create_secret(path)
    with pytest.raises(ValueError):
        auth.session_middleware(b"short")
    assert auth.session_middleware(secret).kwargs["session_cookie"] == "parkgate_lot"
    assert auth.session_middleware(secret, cookie="c").kwargs["session_cookie"] == "c"
