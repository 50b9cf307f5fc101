"""Accounts and request security of the lot's web application.

- Passwords: argon2id hashes (argon2-cffi's PasswordHasher and its default
  parameters); a stored hash made with weaker parameters is replaced at the
  next good login (store.set_password).
- Sessions: Starlette's SessionMiddleware, a cookie signed with the lot's
  secret (itsdangerous), HttpOnly, SameSite=Strict, Secure, at most
  max_age_s old. The session holds the user's name, a fingerprint of the
  password hash it logged in with (changing the password ends every other
  session of that user) and the CSRF token. The user is read from the store
  at each request, so a disabled user or a new role counts at once.
- Requests that change something: the app refuses a POST (403) unless
  csrf_ok (the session's token, as form field ``csrf`` or header
  X-CSRF-Token) and origin_ok (an Origin, else Referer, header if present
  names this site). The login form has a token too, made for the
  not-yet-logged-in session of the GET /login that showed it.
- Logins: LoginGuard refuses (429, Retry-After) a username or a client
  address after max_failures failed logins within window_s. A refused
  login says the same whether or not the user exists, and checks a
  password hash either way. Each checked login is written to the audit log
  ("login" or "login-refused").

The client address is the connection's, or, behind a reverse proxy that
uvicorn trusts (its forwarded_allow_ips), the proxy's X-Forwarded-For;
likewise the scheme origin_ok compares is X-Forwarded-Proto's, and the
proxy must pass the Host header on."""
import collections
import hashlib
import hmac
import math
import os
import secrets
import threading
import time
import urllib.parse

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.responses import RedirectResponse
from starlette.routing import Route

from parkgate_tools.files import write_atomic
from parkgate_tools.lot.store import ROLES     # the store's: each may do what those before may

SECRET_BYTES = 32
SESSION_COOKIE = "parkgate_lot"
MAX_NAME_CHARS = 64
MAX_PASSWORD_CHARS = 1024
MAX_FORM_BYTES = 8192                   # the login and logout forms
MAX_FORM_FIELDS = 10
MAX_NEXT_CHARS = 512
MAX_TRACKED_KEYS = 10000                # LoginGuard: usernames and addresses remembered
REFUSED_MESSAGE = "Wrong user name or password."

_hasher = PasswordHasher()
_no_user_hash = []                      # a hash checked when the user does not exist


def hash_password(text):
    """The argon2id hash (an encoded str) of a password."""
    return _hasher.hash(text)


def verify_password(hash, text):
    """True if text is the password of hash; False for another password or a
    hash that is no argon2 hash."""
    try:
        return _hasher.verify(hash, text)
    except (VerificationError, InvalidHashError, TypeError):
        return False


def session_middleware(secret_bytes, https_only=True, max_age_s=12 * 3600,
                       cookie=SESSION_COOKIE):
    """The session cookie's middleware, signed with secret_bytes (at least
    SECRET_BYTES long: load_or_create_secret). cookie: its name; cookies
    ignore the port, so each server on one host needs a name of its own."""
    if not isinstance(secret_bytes, bytes) or len(secret_bytes) < SECRET_BYTES:
        raise ValueError("session secret: need at least %d bytes" % SECRET_BYTES)
    return Middleware(SessionMiddleware, secret_key=secret_bytes.hex(),
                      session_cookie=cookie, max_age=int(max_age_s),
                      same_site="strict", https_only=https_only)


def load_or_create_secret(path):
    """The session secret kept at path: SECRET_BYTES random bytes, written
    (mode 0600) the first time. ValueError if the file holds something else."""
    try:
        with open(path, "rb") as f:
            secret = f.read(SECRET_BYTES + 1)
    except FileNotFoundError:
        secret = os.urandom(SECRET_BYTES)
        with write_atomic(path, "wb", private=True) as f:
            f.write(secret)
    if len(secret) != SECRET_BYTES:
        raise ValueError("%s: not a session secret of %d bytes (remove it to make a new "
                         "one; that logs everyone out)" % (path, SECRET_BYTES))
    return secret


class LoginGuard:
    """Failed logins per username and per client address: after
    max_failures within window_s, refused() says how long to wait. Remembers
    at most max_keys usernames and addresses (the least recently failed
    ones are forgotten first). Safe to share between threads."""

    def __init__(self, max_failures=5, window_s=300, clock=time.monotonic,
                 max_keys=MAX_TRACKED_KEYS):
        if max_failures < 1 or window_s <= 0 or max_keys < 2:
            raise ValueError("LoginGuard: need max_failures >= 1, window_s > 0, max_keys >= 2")
        self.max_failures, self.window_s, self.clock = max_failures, window_s, clock
        self.max_keys = max_keys
        self._failures = collections.OrderedDict()   # key -> deque of failure times
        self._lock = threading.Lock()

    @staticmethod
    def _keys(username, address):
        return (("user", username[:MAX_NAME_CHARS]), ("address", str(address)[:100]))

    def _recent(self, key, now):
        times = self._failures.get(key)
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if times is not None and not times:
            del self._failures[key]
            return None
        return times

    def refused(self, username, address):
        """Seconds until a login of username from address may be tried, or 0."""
        with self._lock:
            now, wait = self.clock(), 0
            for key in self._keys(username, address):
                times = self._recent(key, now)
                if times is not None and len(times) >= self.max_failures:
                    wait = max(wait, times[-self.max_failures] + self.window_s - now)
            return wait

    def failed(self, username, address):
        """Count a failed login."""
        with self._lock:
            now = self.clock()
            for key in self._keys(username, address):
                times = self._recent(key, now)
                if times is None:
                    times = self._failures[key] = collections.deque(maxlen=self.max_failures)
                times.append(now)
                self._failures.move_to_end(key)
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)

    def succeeded(self, username, address):
        """A good login: the username's failures are forgotten (the
        address's are not: one's own account is no key to guess others')."""
        with self._lock:
            self._failures.pop(self._keys(username, address)[0], None)


# ---- requests ----

def csrf_token(request):
    """The session's CSRF token (made and kept in the session on first use)."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


def csrf_ok(request, presented):
    """True if presented is the session's CSRF token (constant-time compare)."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or not isinstance(presented, str):
        return False
    return hmac.compare_digest(token.encode(), presented.encode("utf-8", "replace"))


def _site(url):
    """(scheme, host, port) of an absolute http(s) URL, or None."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def origin_ok(request):
    """True if the request has no Origin header (nor Referer), or it names
    the request's own scheme://host[:port]."""
    claimed = request.headers.get("origin")
    if claimed is None:
        claimed = request.headers.get("referer")
        if claimed is None:
            return True
    own = _site("%s://%s/" % (request.url.scheme, request.headers.get("host", "")))
    return own is not None and _site(claimed) == own


def _fingerprint(password_hash):
    return hashlib.sha256(password_hash.encode()).hexdigest()[:32]


def current_user(request, store):
    """The logged-in user's dict from the store (read now), or None: not
    logged in, no such user any more, disabled, or its password changed
    since this session logged in."""
    name = request.session.get("user")
    if not isinstance(name, str):
        return None
    user = store.user(name)
    if user is None or user["disabled"]:
        return None
    if not hmac.compare_digest(request.session.get("pw", ""), _fingerprint(user["password_hash"])):
        return None
    return user


def allowed(user, need):
    """True if user (a dict or None) has role need or one above it."""
    if need not in ROLES:
        raise ValueError("role %r is not one of %s" % (need, ", ".join(ROLES)))
    role = user["role"] if user else None
    return role in ROLES and ROLES.index(role) >= ROLES.index(need)


# ---- the login and logout routes ----

def _safe_next(value):
    """A same-site path to go to after login, else "/"."""
    if (not isinstance(value, str) or not value.startswith("/") or value.startswith("//")
            or "\\" in value or len(value) > MAX_NEXT_CHARS
            or any(ord(c) < 33 or ord(c) == 127 for c in value)):
        return "/"
    return value


async def read_form(request):
    """The url-encoded form of a POST, {name: first value}, read up to
    MAX_FORM_BYTES; None if it is larger (the rest is left unread) or has
    more than MAX_FORM_FIELDS fields."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        fields = urllib.parse.parse_qs(body.decode("utf-8", "replace"),
                                       max_num_fields=MAX_FORM_FIELDS)
    except ValueError:           # too many fields
        return None
    return {key: values[0] for key, values in fields.items()}


def _check_login(store, name, password):
    """The user if name and password are an enabled user's, else None;
    rehashes a hash made with older parameters."""
    user = store.user(name) if name else None
    if user is None:
        if not _no_user_hash:
            _no_user_hash.append(hash_password(secrets.token_hex(16)))
        verify_password(_no_user_hash[0], password)     # the same work as for a user
        return None
    if not verify_password(user["password_hash"], password) or user["disabled"]:
        return None
    if _hasher.check_needs_rehash(user["password_hash"]):
        store.set_password(name, hash_password(password))
        user = store.user(name)
    return user


def login_routes(store, guard, templates):
    """GET and POST /login, POST /logout (templates: the app's
    Jinja2Templates, which find login.html)."""

    def page(request, status, error="", next_path="/", headers=None):
        return templates.TemplateResponse(
            request, "login.html", {"csrf": csrf_token(request), "error": error,
                                    "next": next_path}, status_code=status, headers=headers)

    async def login(request):
        if request.method == "GET":
            return page(request, 200, next_path=_safe_next(request.query_params.get("next")))
        form = await read_form(request)
        if form is None:
            return page(request, 413, "The form is too large or has too many fields.")
        next_path = _safe_next(form.get("next") or request.query_params.get("next"))
        if not origin_ok(request) or not csrf_ok(request, form.get("csrf")):
            return page(request, 403, "The form had expired or came from another site; "
                                      "please log in again.", next_path)
        name = form.get("username", "")[:MAX_NAME_CHARS]
        password = form.get("password", "")[:MAX_PASSWORD_CHARS]
        address = request.client.host if request.client else "unknown"
        wait = guard.refused(name, address)
        if wait:
            seconds = max(1, math.ceil(wait))
            return page(request, 429, "Too many failed logins; try again in %d s." % seconds,
                        next_path, headers={"Retry-After": str(seconds)})
        user = await run_in_threadpool(_check_login, store, name, password)
        if user is None:
            guard.failed(name, address)
            await run_in_threadpool(store.audit, name, "login-refused", {"address": address})
            return page(request, 401, REFUSED_MESSAGE, next_path)
        guard.succeeded(name, address)
        await run_in_threadpool(store.audit, name, "login", {"address": address})
        request.session.clear()                 # a new session: new token, nothing kept
        request.session.update(user=name, pw=_fingerprint(user["password_hash"]))
        csrf_token(request)
        return RedirectResponse(next_path, status_code=303)

    async def logout(request):
        form = await read_form(request)
        if form is None or not origin_ok(request) or not csrf_ok(request, form.get("csrf")):
            return page(request, 403, "The logout form had expired or came from another site.")
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    return [Route("/login", login, methods=["GET", "POST"]),
            Route("/logout", logout, methods=["POST"])]
