"""The lot's operator page, served by the lot server (stdlib HTTP server):
gates online or offline with their backlog and clock quality, cars inside,
the day's entries, exits and revenue (online and offline, in yuan), flagged
sessions with a form to record a correction, and the day's occupancy as an
inline SVG chart. Nothing is fetched from elsewhere; the page works without
JavaScript.

    GET  /                 the page (?day=YYYY-MM-DD for another day)
    GET  /api/summary      the same numbers as JSON (?day= too)
    POST /corrections      form: gate, jid, seq, action, amount (yuan), note
    POST /api/corrections  JSON: {gate, jid, seq, action, amount_fen, note}

A correction is a row of its own (store.add_correction); events are never
edited. It binds to 127.0.0.1 by default and has no login of its own: see
firmware/docs/lot-server.md."""
import calendar
import decimal
import html
import json
import logging
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from parkgate import record, tariff
from parkgate.clock import QUALITY_NAMES
from parkgate_tools.lot.store import CORRECTION_ACTIONS

log = logging.getLogger("parkgate.page")

FLAG_MEMBER = 4         # record.FLAG_MEMBER: the gate found the plate on its member list
BIN_S = 900             # occupancy chart: one point every 15 minutes
STALE_AFTER_S = 90      # a gate sends its status every 30 s
DAY_S = 86400


def yuan(fen):
    """'12.50' from 1250 fen (exact: integers only)."""
    sign = "-" if fen < 0 else ""
    return "%s%d.%02d" % ((sign,) + divmod(abs(fen), 100))


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


class OperatorPage:
    """Serves the page for one lot from a Store. tariff: a callable
    returning the Tariff fees are checked against (the bridge's current
    one). clock: the lot's time for "today" and "inside now" (the demo
    passes its simulated clock); utc_offset_s: the lot's local time."""

    def __init__(self, store, lot, tariff_source, host="127.0.0.1", port=0, clock=time.time,
                 utc_offset_s=8 * 3600, refresh_s=15):
        self.store = store
        self.lot = lot
        self.tariff_source = tariff_source
        self.host = host
        self.port = port
        self.clock = clock
        self.utc_offset_s = utc_offset_s
        self.refresh_s = refresh_s
        self._server = None
        self._thread = None

    @property
    def url(self):
        """The page's URL."""
        return "http://%s:%d/" % (self.host, self.port)

    def start(self):
        """Serve in a background thread; returns self."""
        handler = type("Handler", (_Handler,), {"page": self})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True,
                                        name="operator-page")
        self._thread.start()
        log.info("operator page on %s", self.url)
        return self

    def stop(self):
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None

    # ---- the numbers ----

    def day_bounds(self, day=None):
        """(start, end, "YYYY-MM-DD") in unix seconds of the lot's local day
        (today by the lot's clock when day is None)."""
        if day is None:
            day = time.strftime("%Y-%m-%d", time.gmtime(self.clock() + self.utc_offset_s))
        start = calendar.timegm(time.strptime(day, "%Y-%m-%d")) - self.utc_offset_s
        return start, start + DAY_S, day

    def snapshot(self, day=None):
        """Everything the page shows, as a JSON-able dict."""
        start, end, day = self.day_bounds(day)
        now = int(self.clock())
        until = min(now, end)
        events = self.store.events_between(start, end)
        exits = self.store.exits_with_entries(start, end)
        corrections = {}
        for c in self.store.corrections():
            corrections.setdefault((c["gate"], c["jid"], c["seq"]), []).append(c)
        entries = [e for e in events if e["kind"] == "in"]
        online = [e for e in events if e["kind"] == "out" and e["fee_source"] == "on"]
        offline = [e for e in events if e["kind"] == "out" and e["fee_source"] == "off"]
        day_ids = {(e["gate"], e["jid"], e["seq"]) for e in events}
        adjustments = sum(CORRECTION_ACTIONS[c["action"]] * c["amount"]
                          for key, items in corrections.items() if key in day_ids
                          for c in items)
        revenue = {"online_fen": sum(e["fee"] for e in online),
                   "offline_fen": sum(e["fee"] for e in offline),
                   "adjustments_fen": adjustments}
        revenue["total_fen"] = sum(revenue.values())
        for key in list(revenue):
            revenue[key[:-4]] = yuan(revenue[key])
        flagged = self._flagged(exits, corrections)
        inside = self.store.inside_at(now + 1) if start <= now < end else (
            self.store.inside_at(end) if now >= end else set())
        return {
            "lot": self.lot, "day": day, "as_of": now, "as_of_local": self._local(now),
            "gates": self._gates(),
            "inside": len(inside),
            "entries": len(entries), "exits": len(online) + len(offline),
            "exits_online": len(online), "exits_offline": len(offline),
            "revenue": revenue,
            "flagged": flagged,
            "open_flags": sum(1 for f in flagged if not f["corrections"]),
            "occupancy": self._occupancy(start, until, events),
            "upstream_backlog": self.store.outbox_backlog(),
        }

    def _gates(self):
        wall = time.time()
        gates = []
        for gate, (status, received_at) in sorted(self.store.statuses().items()):
            age = wall - received_at
            if not status.get("on"):
                state = "offline"
            elif age > STALE_AFTER_S:
                state = "stale"
            else:
                state = "online"
            quality = status.get("clock")
            gates.append({
                "gate": gate, "state": state, "backlog": status.get("backlog"),
                "seq": status.get("seq"), "acked": status.get("acked"),
                "heap": status.get("heap"), "tv": status.get("tv"),
                "clock_quality": quality,
                "clock": QUALITY_NAMES[quality] if type(quality) is int and 0 <= quality < len(
                    QUALITY_NAMES) else None,
                "last_seen_s": round(age, 1)})
        return gates

    def _flagged(self, exits, corrections):
        table = self.tariff_source()
        found = {}
        for x in exits:
            reasons = _flag_reasons(x["flags"])
            expected = None
            if table is not None:
                try:
                    if x["stored_entry"] is None:
                        expected = tariff.quote_no_entry(table, x["time"], x["colour"]).fee
                    else:
                        member = bool(x["flags"] & FLAG_MEMBER) or self.store.is_member(
                            x["plate"], x["time"])
                        expected = tariff.quote(table, x["stored_entry"], x["time"], x["colour"],
                                                member=member).fee
                except tariff.TariffError:
                    expected = None
            owed = None if expected is None else expected - x["fee"]
            if owed:
                reasons.append(("owes %s yuan" if owed > 0 else "overcharged %s yuan")
                               % yuan(abs(owed)))
            if reasons:
                found[(x["gate"], x["jid"], x["seq"])] = dict(
                    x, kind="out", expected=expected, owed=owed, reasons=reasons)
        for e in self.store.flagged():
            key = (e["gate"], e["jid"], e["seq"])
            if key not in found:
                found[key] = dict(e, expected=None, owed=None, stored_entry=None,
                                  reasons=_flag_reasons(e["flags"]))
        items = []
        for key, item in sorted(found.items(), key=lambda kv: (kv[1]["time"], kv[0])):
            item["corrections"] = [{k: c[k] for k in ("id", "action", "amount", "note")}
                                   for c in corrections.get(key, [])]
            item["time_local"] = self._local(item["time"])
            items.append(item)
        return items

    def _occupancy(self, start, until, events):
        inside = set(self.store.inside_at(start))
        points = [[0, len(inside)]]
        boundary = start + BIN_S
        for e in events:
            while e["time"] >= boundary and boundary <= until:
                points.append([(boundary - start) // 60, len(inside)])
                boundary += BIN_S
            if e["time"] > until:
                break
            if e["kind"] == "in":
                inside.add(e["plate"])
            else:
                inside.discard(e["plate"])
        while boundary <= until:
            points.append([(boundary - start) // 60, len(inside)])
            boundary += BIN_S
        if until > start and (until - start) % BIN_S:
            points.append([(until - start) // 60, len(inside)])
        return points

    def _local(self, t):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t + self.utc_offset_s))

    def correct(self, gate, jid, seq, action, amount_fen, note):
        """Record a correction (see Store.add_correction); returns its id."""
        return self.store.add_correction(gate, int(jid), int(seq), action, amount_fen, note)


def _flag_reasons(flags):
    reasons = []
    if flags & record.FLAG_NO_ENTRY:
        reasons.append("exit without entry")
    if flags & record.FLAG_REENTRY:
        reasons.append("re-entry closed an open session")
    return reasons


class _Handler(BaseHTTPRequestHandler):
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


# ---- HTML ----

_STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em}
th{background:#f3f3f3}.online{color:#080}.offline{color:#b00}.stale{color:#b70}
.tiles{display:flex;gap:1em;flex-wrap:wrap}.tile{border:1px solid #ccc;padding:.6em 1em}
.tile b{display:block;font-size:1.6em}svg{border:1px solid #ccc;background:#fafafa}
form{display:inline}input[type=text]{width:6em}"""


def _esc(value):
    return html.escape("" if value is None else str(value))


def _tile(element_id, label, value):
    return '<div class="tile"><b id="%s">%s</b>%s</div>' % (element_id, _esc(value), _esc(label))


def render(page, s):
    """The page's HTML for a snapshot."""
    parts = ['<!doctype html><html lang="en"><head><meta charset="utf-8">',
             '<meta http-equiv="refresh" content="%d">' % page.refresh_s,
             "<title>parkgate lot %s</title><style>%s</style></head><body>" % (
                 _esc(s["lot"]), _STYLE),
             "<h1>Lot %s <small>%s, as of %s</small></h1>" % (
                 _esc(s["lot"]), _esc(s["day"]), _esc(s["as_of_local"])),
             '<div class="tiles">',
             _tile("inside", "cars inside", s["inside"]),
             _tile("entries", "entries today", s["entries"]),
             _tile("exits", "exits today", s["exits"]),
             _tile("revenue-online", "yuan charged online (%d exits)" % s["exits_online"],
                   s["revenue"]["online"]),
             _tile("revenue-offline", "yuan charged offline (%d exits)" % s["exits_offline"],
                   s["revenue"]["offline"]),
             _tile("revenue-adjustments", "yuan of corrections", s["revenue"]["adjustments"]),
             _tile("revenue-total", "yuan today", s["revenue"]["total"]),
             _tile("open-flags", "flagged sessions open", s["open_flags"]),
             _tile("upstream-backlog", "events not yet sent upstream", s["upstream_backlog"]),
             "</div>", "<h2>Gates</h2>", _gates_table(s["gates"]),
             "<h2>Occupancy</h2>", _chart(s["occupancy"]),
             "<h2>Flagged sessions</h2>", _flagged_table(s["flagged"]),
             '<p><a href="/api/summary">JSON</a></p></body></html>']
    return "".join(parts)


def _gates_table(gates):
    rows = ["<table id=gates><tr><th>gate</th><th>state</th><th>backlog</th><th>clock</th>"
            "<th>tariff</th><th>free heap</th><th>last seen</th></tr>"]
    for g in gates:
        rows.append('<tr class="gate" data-gate="%s"><td>%s</td><td class="state %s">%s</td>'
                    '<td class="backlog">%s</td><td>%s</td><td>%s</td><td>%s</td>'
                    "<td>%s s ago</td></tr>" % (
                        _esc(g["gate"]), _esc(g["gate"]), g["state"], g["state"],
                        _esc(g["backlog"]), _esc(g["clock"]), _esc(g["tv"]), _esc(g["heap"]),
                        _esc(g["last_seen_s"])))
    if not gates:
        rows.append("<tr><td colspan=7>no gate has reported yet</td></tr>")
    return "".join(rows) + "</table>"


def _chart(points, width=960, height=200):
    top = max([p[1] for p in points] + [10])
    coords = " ".join("%.1f,%.1f" % (p[0] * width / 1440.0, height - p[1] * (height - 10) / top)
                      for p in points)
    ticks = "".join('<text x="%d" y="%d" font-size="10">%02d:00</text>' % (
        h * width // 24, height - 2, h) for h in range(0, 24, 3))
    return ('<svg id="occupancy" width="%d" height="%d" viewBox="0 0 %d %d" role="img" '
            'aria-label="cars inside over the day (max %d)">%s'
            '<text x="4" y="12" font-size="10">%d</text>'
            '<polyline fill="none" stroke="#36c" stroke-width="2" points="%s"/></svg>' % (
                width, height, width, height, top, ticks, top, coords))


def _flagged_table(flagged):
    rows = ["<table id=flagged><tr><th>time</th><th>gate</th><th>kind</th><th>plate</th>"
            "<th>fee</th><th>tariff says</th><th>why</th><th>correction</th></tr>"]
    options = "".join('<option value="%s">%s</option>' % (a, a) for a in sorted(CORRECTION_ACTIONS))
    for f in flagged:
        ident = "%s/%s/%s" % (f["gate"], f["jid"], f["seq"])
        if f["corrections"]:
            done = "; ".join("%s %s yuan %s" % (c["action"], yuan(c["amount"]), c["note"])
                             for c in f["corrections"])
            action = '<span class="corrected">%s</span>' % _esc(done)
        else:
            action = ('<form method="post" action="/corrections">'
                      '<input type="hidden" name="gate" value="%s">'
                      '<input type="hidden" name="jid" value="%s">'
                      '<input type="hidden" name="seq" value="%s">'
                      '<select name="action">%s</select> '
                      '<input type="text" name="amount" value="%s" aria-label="yuan"> '
                      '<input type="text" name="note" placeholder="note" aria-label="note"> '
                      '<button type="submit">record</button></form>' % (
                          _esc(f["gate"]), f["jid"], f["seq"], options,
                          yuan(max(f["owed"] or 0, 0)) if f["owed"] else "0.00"))
        rows.append('<tr class="flag%s" data-id="%s"><td>%s</td><td>%s</td><td>%s</td>'
                    "<td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>" % (
                        "" if f["corrections"] else " open", _esc(ident), _esc(f["time_local"]),
                        _esc(f["gate"]), _esc(f["kind"]), _esc(f["plate"]),
                        "" if f.get("fee") is None else yuan(f["fee"]),
                        "" if f.get("expected") is None else yuan(f["expected"]),
                        _esc(", ".join(f["reasons"])), action))
    if not flagged:
        rows.append("<tr><td colspan=8>nothing flagged</td></tr>")
    return "".join(rows) + "</table>"
