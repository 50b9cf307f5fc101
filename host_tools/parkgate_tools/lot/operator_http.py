"""The operator page's HTTP side (operator_page.OperatorPage serves it on
the stdlib HTTP server): the GET routes, the forms and the JSON API; the
HTML is operator_html.py's."""
import decimal
import json
import logging
import urllib.parse
from http.server import BaseHTTPRequestHandler

from parkgate_tools.lot.operator_html import render, render_search

log = logging.getLogger("parkgate.page")


def fen_from_yuan(text):
    """1250 from '12.5' or '12.50'; ValueError if not a non-negative amount."""
    try:
        amount = decimal.Decimal(str(text).strip() or "0")
    except decimal.InvalidOperation:
        raise ValueError("amount: %r is not a number of yuan" % (text,))
    fen = amount * 100
    if fen != fen.to_integral_value() or fen < 0:
        raise ValueError("amount: %r is not a yuan amount to the fen" % (text,))
    return int(fen)


class Handler(BaseHTTPRequestHandler):
    """One request to the page (page: the OperatorPage)."""

    page = None
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        log.debug("%s " + fmt, self.address_string(), *args)

    def _send(self, code, body, content_type, headers=()):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _json(self, code, obj):
        self._send(code, json.dumps(obj, ensure_ascii=False), "application/json; charset=utf-8")

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        day = query.get("day", [None])[0]
        try:
            if url.path == "/":
                snapshot = self.page.snapshot(day)
                self._send(200, render(self.page, snapshot), "text/html; charset=utf-8")
            elif url.path == "/api/summary":
                self._json(200, self.page.snapshot(day))
            elif url.path in ("/search", "/api/search"):
                found = self.page.search(
                    query.get("plate", [""])[0], query.get("from", [""])[0],
                    query.get("to", [""])[0], query.get("page", ["1"])[0],
                    query.get("fuzzy", ["1"])[0] != "0")
                if url.path == "/search":
                    self._send(200, render_search(found), "text/html; charset=utf-8")
                else:
                    self._json(200, found)
            elif url.path == "/sessions.csv":
                self._send(200, self.page.sessions_csv(query.get("from", [""])[0],
                                                       query.get("to", [""])[0]),
                           "text/csv; charset=utf-8",
                           [("Content-Disposition", 'attachment; filename="sessions.csv"')])
            else:
                self._json(404, {"error": "not found"})
        except ValueError as exc:
            self._json(400, {"error": str(exc)})

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if 0 < length < 65536 else b""
        try:
            if url.path == "/corrections":
                form = {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode()).items()}
                self.page.correct(form.get("gate", ""), form.get("jid", ""), form.get("seq", ""),
                                  form.get("action", ""), fen_from_yuan(form.get("amount", "0")),
                                  form.get("note", ""))
                self._send(303, "", "text/plain", [("Location", "/")])
            elif url.path == "/sessions/close":
                form = {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode()).items()}
                self.page.close_session(form.get("gate", ""), form.get("jid", ""),
                                        form.get("seq", ""), form.get("reason", ""))
                self._send(303, "", "text/plain", [("Location", "/")])
            elif url.path == "/api/corrections":
                body = json.loads(raw or b"{}")
                correction_id = self.page.correct(
                    body.get("gate"), body.get("jid"), body.get("seq"), body.get("action"),
                    body.get("amount_fen", 0), body.get("note", ""))
                self._json(201, {"id": correction_id})
            else:
                self._json(404, {"error": "not found"})
        except (ValueError, TypeError) as exc:
            self._json(400, {"error": str(exc)})
