"""The lot's web application (Starlette, Jinja2 templates; served by
uvicorn through asgi_service.ASGIService): the operator page of an
OperatorPage (lot/operator_page.py, the model), with login (auth.py).

    GET  /login, POST /login, POST /logout     auth.login_routes
    GET  /                  the dashboard (?day=YYYY-MM-DD)       attendant
    GET  /api/summary       the same numbers as JSON (?day=)      attendant
    GET  /search            ?plate=&from=&to=&page=&fuzzy=0       attendant
    GET  /api/search        the same as JSON                      attendant
    GET  /sessions.csv      ?from=&to=: the sessions as CSV       attendant
    GET  /flagged, /owed    the lists over ?from=&to=             attendant
    GET  /audit             who did what (?from=&to=)             manager
    POST /corrections       form: gate, jid, seq, action, amount (yuan), note
    POST /api/corrections   JSON: {gate, jid, seq, action, amount_fen, note}
                            an attendant: "collected" on an owed exit only
    POST /sessions/close    form: gate, jid, seq (an entry), reason   manager
    POST /push-tariff       form: tariff (the table's JSON)       manager
    POST /gates/open        form: gate (a remote open)            manager
    GET  /firmware, /api/firmware; POST /firmware/offer, /firmware/reboot,
         /firmware/cancel   the gates' images (web/firmware.py)   manager
    GET  /healthz, /metrics the lot server's health (no login)
    GET  /static/...        the stylesheet (no login)

A page asked without login is a 303 to /login (the JSON API: 401). Every
POST needs the session's CSRF token (form field csrf; the JSON API: header
X-CSRF-Token) and an Origin (else Referer), if sent, of this site: else
403 and nothing is done. Bodies: forms.read_body (Content-Length required,
at most forms.MAX_BODY, checked before reading)."""
import functools
import logging
import os
import urllib.parse

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from parkgate_tools.lot import health
from parkgate_tools.lot.web import auth, firmware, forms
from parkgate_tools.lot.web.money_text import yuan

log = logging.getLogger("parkgate.page")

HERE = os.path.dirname(__file__)
SECURITY_HEADERS = (
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "same-origin"),
    ("content-security-policy", "default-src 'self'; script-src 'none'; object-src 'none'; "
                                "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                                "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"))
CORRECTION_FIELDS = ("gate", "jid", "seq", "action")


def templates(lot):
    """The app's Jinja2Templates (web/templates): every template gets csrf
    (the session's token), lot (its id) and the yuan filter."""
    found = Jinja2Templates(directory=os.path.join(HERE, "templates"),
                            context_processors=[lambda request: {
                                "csrf": auth.csrf_token(request), "lot": lot}])
    found.env.filters["yuan"] = yuan
    return found


class SecurityHeaders:
    """ASGI middleware: SECURITY_HEADERS on every response that has none of its own."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def sending(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    if name not in headers:
                        headers[name] = value
            await send(message)
        await self.app(scope, receive, sending)


def starting_app(healthz, metrics, waiting_for):
    """What lot/run.py serves until its database is open: /healthz and
    /metrics, and 503 for every other path (waiting_for(): what it waits for)."""
    async def unavailable(request):
        return JSONResponse({"error": "starting: waiting for the %s" % waiting_for()}, 503)
    return Starlette(routes=_health_routes(healthz, metrics) + [
        Route("/{path:path}", unavailable, methods=["GET", "POST"])])


def _health_routes(healthz, metrics):
    async def healthz_route(request):
        status, doc = await run_in_threadpool(healthz)
        return JSONResponse(doc, status)

    async def metrics_route(request):
        return JSONResponse(await run_in_threadpool(metrics))
    return [Route("/healthz", healthz_route), Route("/metrics", metrics_route)]


def build_app(page, healthz=None, metrics=None):
    """The Starlette application of an OperatorPage (its store, secret,
    https_only, pusher and health). healthz() -> (status, JSON doc) and
    metrics() -> JSON doc: lot/run.py's (health.py); by default the page's
    store answering and its bridge health."""
    html = templates(page.lot)
    manager = "manager"

    def render(request, name, status=200, **context):
        return html.TemplateResponse(request, name, context, status_code=status)

    def refuse(request, status, text, api, close=False):
        headers = {"connection": "close"} if close else None
        if api:
            return JSONResponse({"error": text}, status, headers=headers)
        response = render(request, "error.html", status, message=text,
                          user=getattr(request.state, "user", None))
        response.headers.update(headers or {})
        return response

    def guarded(need="attendant", api=False, body=None):
        """An endpoint from handler(request, user, data) (run in a thread):
        login and role need checked first; body "form" or "json": read,
        CSRF and Origin checked, data the form or JSON object (else None)."""
        def wrap(handler):
            @functools.wraps(handler)
            async def endpoint(request):
                user = await run_in_threadpool(auth.current_user, request, page.store)
                unread = body is not None
                if user is None:
                    if api:
                        return refuse(request, 401, "log in first", api, close=unread)
                    target = "/" if unread else request.url.path + (
                        "?" + request.url.query if request.url.query else "")
                    return RedirectResponse("/login?" + urllib.parse.urlencode(
                        {"next": target}), 303, headers={"connection": "close"}
                        if unread else None)
                request.state.user = user
                if not auth.allowed(user, need):
                    return refuse(request, 403, "this needs the %s role" % need, api,
                                  close=unread)
                data = None
                try:
                    if unread:
                        raw = await forms.read_body(request)
                        data = forms.parse_json(raw) if body == "json" else forms.parse_form(raw)
                        presented = (request.headers.get("x-csrf-token") if body == "json"
                                     else data.pop("csrf", None))
                        if not auth.origin_ok(request) or not auth.csrf_ok(request, presented):
                            return refuse(request, 403, "refused: the form came from another "
                                          "site or its token is missing or old; reload the "
                                          "page and try again", api)
                    return await run_in_threadpool(handler, request, user, data)
                except forms.BadRequest as exc:
                    return refuse(request, exc.status, str(exc), api, close=True)
                except ValueError as exc:      # what the model refuses (store, tariff)
                    return refuse(request, 400, str(exc), api)
            return endpoint
        return wrap

    def common(request, user):
        return {"user": user, "manager": auth.allowed(user, manager),
                "bridge": page.bridge_health()}

    # ---- pages ----

    @guarded()
    def dashboard(request, user, data):
        snapshot = page.snapshot(forms.day(request.query_params, "day"))
        return render(request, "dashboard.html", s=snapshot, chart=page.chart(snapshot),
                      refresh_s=page.refresh_s, actions=forms.OFFERED_ACTIONS,
                      **common(request, user))

    @guarded(api=True)
    def summary(request, user, data):
        return JSONResponse(page.snapshot(forms.day(request.query_params, "day")))

    def found(request):
        query = request.query_params
        return page.search(forms.plate_query(query), forms.day(query, "from"),
                           forms.day(query, "to"), forms.page_number(query),
                           query.get("fuzzy", "1") != "0")

    @guarded()
    def search(request, user, data):
        results = found(request)
        link = "/search?" + urllib.parse.urlencode(
            {"plate": results["query"], "from": results["from"], "to": results["to"]})
        return render(request, "search.html", found=results, link=link,
                      **common(request, user))

    @guarded(api=True)
    def search_api(request, user, data):
        return JSONResponse(found(request))

    @guarded()
    def sessions_csv(request, user, data):
        query = request.query_params
        text = page.sessions_csv(forms.day(query, "from"), forms.day(query, "to"))
        return Response(text, media_type="text/csv; charset=utf-8", headers={
            "content-disposition": 'attachment; filename="sessions.csv"'})

    @guarded()
    def lists(request, user, data):
        query = request.query_params
        shown = page.lists(forms.day(query, "from"), forms.day(query, "to"))
        return render(request, "lists.html", lists=shown, path=request.url.path,
                      actions=forms.OFFERED_ACTIONS, **common(request, user))

    @guarded(need=manager)
    def audit(request, user, data):
        query = request.query_params
        rows = page.audit_log(forms.day(query, "from"), forms.day(query, "to"))
        return render(request, "audit.html", rows=rows, first=query.get("from", ""),
                      last=query.get("to", ""), **common(request, user))

    # ---- actions ----

    def check_correction(user, given):
        """Refuses (PermissionError) what an attendant may not record: only
        "collected" on an exit let out unpaid and not settled."""
        if auth.allowed(user, manager):
            return
        if given["action"] != "collected" or not page.is_owed_exit(
                given["gate"], given["jid"], given["seq"]):
            raise PermissionError("an attendant records only \"collected\" on an owed exit")

    @guarded(body="form")
    def correct_form(request, user, data):
        given = forms.fields(data, CORRECTION_FIELDS + ("amount",), ("note",))
        try:
            check_correction(user, given)
        except PermissionError as exc:
            return refuse(request, 403, str(exc), False)
        page.correct(given["gate"], given["jid"], given["seq"], given["action"],
                     given["amount"], given.get("note", ""), user["name"])
        return RedirectResponse("/", 303)

    @guarded(api=True, body="json")
    def correct_api(request, user, data):
        given = forms.fields(data, CORRECTION_FIELDS, ("amount_fen", "note"), json_body=True)
        try:
            check_correction(user, given)
        except PermissionError as exc:
            return refuse(request, 403, str(exc), True)
        correction_id = page.correct(given["gate"], given["jid"], given["seq"],
                                     given["action"], given.get("amount_fen", 0),
                                     given.get("note", ""), user["name"])
        return JSONResponse({"id": correction_id}, 201)

    @guarded(need=manager, body="form")
    def close_session(request, user, data):
        given = forms.fields(data, ("gate", "jid", "seq", "reason"))
        page.close_session(given["gate"], given["jid"], given["seq"], given["reason"],
                           user["name"])
        return RedirectResponse("/", 303)

    def pushed(request, user, kind, payload):
        try:
            result = page.push(kind, payload, user["name"])
        except (OSError, RuntimeError) as exc:       # no broker, a gate's key missing
            return refuse(request, 502, "not sent: %s" % exc, False)
        return render(request, "pushed.html", kind=kind, result=result,
                      **common(request, user))

    @guarded(need=manager, body="form")
    def push_tariff(request, user, data):
        return pushed(request, user, "tariff", forms.fields(data, ("tariff",))["tariff"])

    @guarded(need=manager, body="form")
    def open_gate(request, user, data):
        return pushed(request, user, "open", {"gate": forms.fields(data, ("gate",))["gate"]})

    def page_healthz():
        problem = health.store_problem(page.store)
        doc = {"lot": page.lot, "store": problem or "ok", "status": "failing" if problem
               else "ok", "bridge": page.bridge_health()}
        return (503 if problem else 200), doc

    routes = [
        Route("/", dashboard),
        Route("/api/summary", summary),
        Route("/search", search),
        Route("/api/search", search_api),
        Route("/sessions.csv", sessions_csv),
        Route("/flagged", lists),
        Route("/owed", lists),
        Route("/audit", audit),
        Route("/corrections", correct_form, methods=["POST"]),
        Route("/api/corrections", correct_api, methods=["POST"]),
        Route("/sessions/close", close_session, methods=["POST"]),
        Route("/push-tariff", push_tariff, methods=["POST"]),
        Route("/gates/open", open_gate, methods=["POST"]),
        Mount("/static", StaticFiles(directory=os.path.join(HERE, "static")), name="static"),
    ] + firmware.routes(page, guarded, render, common, manager) + _health_routes(
        healthz or page_healthz,
        metrics or (lambda: {"lot": page.lot, "bridge": page.bridge_health()}))
    routes += auth.login_routes(page.store, auth.LoginGuard(), html)
    return Starlette(routes=routes, middleware=[
        auth.session_middleware(page.secret, https_only=page.https_only)]
        + [Middleware(SecurityHeaders)])
