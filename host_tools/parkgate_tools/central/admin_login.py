"""The central server's admin login for a browser (firmware/docs/upstream.md,
"The admin page"): a browser cannot send the bearer header the API takes,
so GET /admin/login shows a form taking the admin token, and a good token
makes a signed session cookie that opens /admin. The bearer API is
unchanged: no API request is ever allowed by the cookie.

The request security is the lot's web application's (lot/web/auth.py): the
cookie is Starlette's SessionMiddleware (signed with the secret of
``--secret-file``, HttpOnly, SameSite=Strict, Secure), every POST needs the
session's CSRF token and an Origin (or Referer) of this site, and failed
logins are limited per client address by a LoginGuard (not per user name:
there is one admin, whom a stranger could otherwise lock out). The session
holds a fingerprint of the admin token it logged in with, so that a new
admin token ends every session."""
import hashlib
import hmac
import logging
import math

from starlette.responses import RedirectResponse
from starlette.routing import Route

from parkgate_tools.lot.web import auth

log = logging.getLogger("parkgate.central")

SESSION_COOKIE = "parkgate_central"   # not the lot page's: cookies ignore the port
SESSION_KEY = "admin"
MAX_TOKEN_CHARS = 1024
REFUSED = "Wrong admin token."


def session_middleware(secret_bytes, https_only=True):
    """The admin session cookie's middleware: the lot application's
    (auth.session_middleware) under a cookie name of its own."""
    return auth.session_middleware(secret_bytes, https_only=https_only, cookie=SESSION_COOKIE)


def _fingerprint(token):
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def logged_in(request, admin_token):
    """True if the request's session logged in with admin_token (None: no
    admin token configured, nobody is logged in)."""
    held = request.session.get(SESSION_KEY)
    return bool(admin_token) and isinstance(held, str) and hmac.compare_digest(
        held.encode(), _fingerprint(admin_token).encode())


def login_routes(central, guard, is_admin_token, render):
    """GET and POST /admin/login, POST /admin/logout. central: its
    admin_token is read at each request; guard: an auth.LoginGuard;
    is_admin_token(text) -> bool (a constant-time compare); render(template,
    context, status) -> a response."""

    def page(request, status, error="", headers=None):
        response = render("admin_login.html",
                          {"csrf": auth.csrf_token(request), "error": error}, status)
        response.headers.update(headers or {})
        return response

    async def login(request):
        if request.method == "GET":
            return page(request, 200)
        form = await auth.read_form(request)
        if form is None:
            return page(request, 413, "The form is too large.")
        if not auth.origin_ok(request) or not auth.csrf_ok(request, form.get("csrf")):
            return page(request, 403, "The form had expired or came from another site; "
                                      "please log in again.")
        address = request.client.host if request.client else "unknown"
        wait = guard.refused(address, address)
        if wait:
            seconds = max(1, math.ceil(wait))
            return page(request, 429, "Too many failed logins; try again in %d s." % seconds,
                        {"Retry-After": str(seconds)})
        token = form.get("token", "")[:MAX_TOKEN_CHARS]
        if not is_admin_token(token):
            guard.failed(address, address)
            log.warning("admin login refused from %s", address)
            return page(request, 401, REFUSED)
        guard.succeeded(address, address)
        request.session.clear()          # a new session: a new CSRF token too
        request.session[SESSION_KEY] = _fingerprint(central.admin_token)
        log.info("admin logged in from %s", address)
        return RedirectResponse("/admin", 303)

    async def logout(request):
        form = await auth.read_form(request)
        if form is None or not auth.origin_ok(request) or not auth.csrf_ok(
                request, form.get("csrf")):
            return page(request, 403, "The form had expired or came from another site.")
        request.session.clear()
        return RedirectResponse("/admin/login", 303)

    return [Route("/admin/login", login, methods=["GET", "POST"]),
            Route("/admin/logout", logout, methods=["POST"])]
