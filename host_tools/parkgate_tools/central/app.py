"""The central server's web application (Starlette): the lots' API under
/v1/lots/<lot>/ and the admin page at /admin, which a browser opens after
logging in at /admin/login (central/admin_login.py). Protocol:
firmware/docs/upstream.md.

Who may do what, from the request's bearer token (compared with every
configured token in constant time, hmac.compare_digest):
    a lot's token    GET its own tariff, members and summary; POST its own
                     events and corrections (another lot's: 403)
    the admin token  GET any lot's documents and summary, PUT tariffs and
                     member lists, the lot list (/v1/lots) and /admin; it
                     posts no events or corrections (403)
    none or unknown  401, also when no token is configured at all; GET
                     /admin from a browser (Accept: text/html) without a
                     header goes to /admin/login instead (303), and with
                     the admin session cookie it is shown."""
import hmac
import json
import logging
import os
import time

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from parkgate import record, tariff
from parkgate_tools.central import admin_login
from parkgate_tools.ids import ID_PATTERN, is_id
from parkgate_tools.lot.web import auth

log = logging.getLogger("parkgate.central")

MAX_BODY = 8 << 20
ADMIN = "admin"
_LOT = "{lot:lot}"
_TEMPLATES = Environment(
    loader=FileSystemLoader(os.path.join(os.path.dirname(__file__), "templates")),
    autoescape=select_autoescape(["html"]))


class BadRequest(ValueError):
    """A request the server refuses with 400; the text says why."""


def parse_events(body):
    """[(gate, jid, record.Event)] from a POST events body; BadRequest if malformed."""
    items = body.get("events") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise BadRequest("events: not a list")
    out = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest("events[%d]: not an object" % index)
        gate, jid = item.get("g"), item.get("j")
        if not is_id(gate):
            raise BadRequest("events[%d].g: %r is not a gate id" % (index, gate))
        if type(jid) is not int or not 0 <= jid <= 0xFFFFFFFF:
            raise BadRequest("events[%d].j: %r is not a journal id" % (index, jid))
        try:
            out.append((gate, jid, record.from_wire(item)))
        except record.RecordError as exc:
            raise BadRequest("events[%d]: %s" % (index, exc))
    return out


def parse_corrections(body):
    """Correction dicts from a POST corrections body; BadRequest if malformed."""
    items = body.get("corrections") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise BadRequest("corrections: not a list")
    for index, c in enumerate(items):
        ok = (isinstance(c, dict) and isinstance(c.get("id"), str) and c["id"]
              and isinstance(c.get("g"), str) and type(c.get("j")) is int
              and type(c.get("s")) is int and isinstance(c.get("action"), str)
              and type(c.get("amount")) is int and isinstance(c.get("note"), str)
              and isinstance(c.get("at"), (int, float)))
        if not ok:
            raise BadRequest("corrections[%d]: malformed" % index)
    return items


def token_owner(presented, lot_tokens, admin_token):
    """ADMIN, a lot id, or None: whose token presented is. Every configured
    token is compared, each with hmac.compare_digest, so the time taken
    tells nothing about which one, or how much of one, matched."""
    if not presented:
        return None
    given = presented.encode()
    owner = None
    for who, token in [(ADMIN, admin_token)] + sorted((lot_tokens or {}).items()):
        if token and hmac.compare_digest(given, token.encode()) and owner is None:
            owner = who
    return owner


def _error(code, text):
    return JSONResponse({"error": text}, code)


def _bearer(request):
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _render(name, context, status=200):
    return HTMLResponse(_TEMPLATES.get_template(name).render(**context), status)


def build_app(central):
    """The Starlette application serving central (a CentralServer: its
    store, tokens, admin_token and counters, read at each request; its
    secret and https_only make the admin session cookie)."""

    def allowed(request, lot, who=(ADMIN, "lot")):
        """None if the request's token is one of who (ADMIN; "lot": the
        token of lot) and so may act, else the refusal (401 or 403)."""
        owner = token_owner(_bearer(request), central.tokens, central.admin_token)
        if owner is None:
            return _error(401, "no or wrong token" + (" for lot %s" % lot if lot else ""))
        if owner == ADMIN and ADMIN not in who:
            return _error(403, "the admin token posts nothing for a lot")
        if owner != ADMIN and ("lot" not in who or owner != lot):
            return _error(403, "lot %s's token may not act on %s" % (
                owner, "lot %s" % lot if lot else "this"))
        return None

    async def body_of(request):
        length = request.headers.get("content-length", "")
        if not length.isdigit() or not 0 < int(length) <= MAX_BODY:
            raise BadRequest("body: Content-Length %r (1 to %d bytes)" % (length, MAX_BODY))
        try:
            return json.loads(await request.body())
        except ValueError as exc:
            raise BadRequest("not JSON (%s)" % exc)

    async def lot_get(request):
        lot, what = request.path_params["lot"], request.path_params["what"]
        refused = allowed(request, lot)
        if refused:
            return refused
        store = central.store
        if what == "summary":
            summary = await run_in_threadpool(store.summary, lot)
            summary.update(requests=central.requests, duplicates=central.duplicates)
            return JSONResponse(summary)
        found = await run_in_threadpool(store.document, lot, what)
        if found is None:
            return _error(404, "no %s for lot %s" % (what, lot))
        return Response(found[0], media_type="application/json; charset=utf-8")

    def store_posted(lot, what, body, backlog):
        if what == "events":
            events = parse_events(body)
            new = central.store.add_events(lot, events, backlog)
            central.requests += 1
            central.duplicates += len(events) - new
            return {"stored": new, "duplicates": len(events) - new}
        items = parse_corrections(body)
        new = central.store.add_corrections(lot, items)
        return {"stored": new, "duplicates": len(items) - new}

    async def lot_post(request):
        lot, what = request.path_params["lot"], request.path_params["what"]
        refused = allowed(request, lot, who=("lot",))
        if refused:
            return refused
        try:
            body = await body_of(request)
            backlog = body.get("backlog") if isinstance(body, dict) else None
            backlog = backlog if type(backlog) is int and backlog >= 0 else None
            return JSONResponse(await run_in_threadpool(store_posted, lot, what, body, backlog))
        except BadRequest as exc:
            return _error(400, str(exc))

    async def lot_put(request):
        lot, what = request.path_params["lot"], request.path_params["what"]
        refused = allowed(request, lot, who=(ADMIN,))
        if refused:
            return refused
        try:
            body = await body_of(request)
            if what == "tariff":
                try:
                    await run_in_threadpool(central.set_tariff, lot,
                                            json.dumps(body, ensure_ascii=False))
                except tariff.TariffError as exc:
                    raise BadRequest(str(exc))
                return JSONResponse({"version": body.get("version")})
            members = body.get("members") if isinstance(body, dict) else None
            if not isinstance(members, list) or not all(
                    isinstance(m, dict) and isinstance(m.get("p"), str) for m in members):
                raise BadRequest("members: not a list of {p, ...}")
            return JSONResponse({"version": await run_in_threadpool(central.set_members, lot,
                                                                     members)})
        except BadRequest as exc:
            return _error(400, str(exc))

    async def lots(request):
        refused = allowed(request, None, who=(ADMIN,))
        return refused or JSONResponse({"lots": await run_in_threadpool(central.store.lots)})

    async def admin_page(request):
        bearer = _bearer(request)
        session = not bearer and admin_login.logged_in(request, central.admin_token)
        if not session:
            if not bearer and "text/html" in request.headers.get("accept", ""):
                return RedirectResponse("/admin/login", 303)
            refused = allowed(request, None, who=(ADMIN,))
            if refused:
                return refused
        rows = await run_in_threadpool(central.store.lots)
        return _render("admin.html", dict(
            lots=rows, now=time.time(), total_events=sum(r["events"] for r in rows),
            total_revenue=sum(r["revenue"] for r in rows),
            total_owed=sum(r["owed"] for r in rows),
            csrf=auth.csrf_token(request) if session else None))

    def is_admin_token(text):
        return token_owner(text, None, central.admin_token) == ADMIN

    documents = "{what:documents}"
    posted = "{what:posted}"
    routes = [
        Route("/v1/lots/%s/%s" % (_LOT, documents), lot_get, methods=["GET"]),
        Route("/v1/lots/%s/%s" % (_LOT, "{what:summary}"), lot_get, methods=["GET"]),
        Route("/v1/lots/%s/%s" % (_LOT, documents), lot_put, methods=["PUT"]),
        Route("/v1/lots/%s/%s" % (_LOT, posted), lot_post, methods=["POST"]),
        Route("/v1/lots", lots, methods=["GET"]),
        Route("/admin", admin_page, methods=["GET"]),
    ] + admin_login.login_routes(central, auth.LoginGuard(), is_admin_token, _render)
    return Starlette(routes=routes, middleware=[
        admin_login.session_middleware(central.secret, central.https_only)])


def _register_convertors():
    from starlette.convertors import Convertor, register_url_convertor

    def convertor(pattern):
        return type("Convertor", (Convertor,), {
            "regex": pattern, "convert": lambda self, value: value,
            "to_string": lambda self, value: value})()
    register_url_convertor("lot", convertor(ID_PATTERN))
    register_url_convertor("documents", convertor("tariff|members"))
    register_url_convertor("summary", convertor("summary"))
    register_url_convertor("posted", convertor("events|corrections"))


_register_convertors()
