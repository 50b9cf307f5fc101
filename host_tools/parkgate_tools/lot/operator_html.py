"""The operator page's HTML (operator_page.py serves it): tiles with the
day's numbers, the gates, the occupancy chart as inline SVG, the flagged
sessions, each open one with a form to record a correction, and what each
plate owes, each owed exit with a form to collect it. No script, and
nothing fetched from elsewhere."""
import html
import urllib.parse

from parkgate_tools.lot.store import CORRECTION_ACTIONS


def yuan(fen):
    """'12.50' from 1250 fen (exact: integers only)."""
    sign = "-" if fen < 0 else ""
    return "%s%d.%02d" % ((sign,) + divmod(abs(fen), 100))


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
             _tile("revenue-collected", "yuan collected", s["revenue"]["collected"]),
             _tile("revenue-online", "yuan paid online (%d exits)" % s["exits_online"],
                   s["revenue"]["online"]),
             _tile("revenue-offline", "yuan paid offline (%d exits)" % s["exits_offline"],
                   s["revenue"]["offline"]),
             _tile("revenue-by-hand", "yuan owed, collected by hand", s["revenue"]["by_hand"]),
             _tile("revenue-owed", "yuan still owed (%d of %d exits let out unpaid)" % (
                 s["exits_unsettled"], s["exits_owed"]), s["revenue"]["owed"]),
             _tile("revenue-adjustments", "yuan of corrections", s["revenue"]["adjustments"]),
             _tile("revenue-total", "yuan today (collected and corrections)",
                   s["revenue"]["total"]),
             _tile("open-flags", "flagged sessions open", s["open_flags"]),
             _tile("stale", "stale sessions (past the maximum stay)", len(s["stale"])),
             _tile("upstream-backlog", "events not yet sent upstream", s["upstream_backlog"]),
             "</div>", _search_form({"query": "", "from": "", "to": ""}),
             "<h2>Gates</h2>", _gates_table(s["gates"]),
             "<h2>Occupancy</h2>", _chart(s["occupancy"]),
             "<h2>Flagged sessions</h2>", _shown_of(s), _flagged_table(s["flagged"]),
             "<h2>Owed</h2>", _owed_table(s["owed"]),
             "<h2>Stale sessions</h2>", _stale_table(s),
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


def _shown_of(s):
    """A line saying how many of the day's flagged sessions are listed, if not all."""
    total = s.get("flagged_total", len(s["flagged"]))
    if total <= len(s["flagged"]):
        return ""
    return "<p class=shown>the latest %d of %d flagged sessions</p>" % (len(s["flagged"]),
                                                                         total)


def _flagged_table(flagged):
    rows = ["<table id=flagged><tr><th>time</th><th>gate</th><th>kind</th><th>plate</th>"
            "<th>fee</th><th>tariff says</th><th>why</th><th>correction</th></tr>"]
    options = "".join('<option value="%s">%s</option>' % (a, a)
                      for a in sorted(CORRECTION_ACTIONS))
    for f in flagged:
        ident = "%s/%s/%s" % (f["gate"], f["jid"], f["seq"])
        if f["corrections"]:
            done = "; ".join("%s %s yuan %s%s" % (
                c["action"], yuan(c["amount"]), c["note"],
                "" if c.get("counted", True) else " (collected already: not counted)")
                for c in f["corrections"])
            action = '<span class="corrected">%s</span>' % _esc(done)
        else:
            action = _form(f, '<select name="action">%s</select>' % options,
                           yuan(f.get("collect_fen", 0)))
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


def _form(f, action, amount, button="record"):
    """A form recording a correction of the event f (gate, jid, seq): action
    is its action field's HTML, amount the yuan filled in."""
    return ('<form method="post" action="/corrections">'
            '<input type="hidden" name="gate" value="%s">'
            '<input type="hidden" name="jid" value="%s">'
            '<input type="hidden" name="seq" value="%s">%s '
            '<input type="text" name="amount" value="%s" aria-label="yuan"> '
            '<input type="text" name="note" placeholder="note" aria-label="note"> '
            '<button type="submit">%s</button></form>' % (
                _esc(f["gate"]), int(f["jid"]), int(f["seq"]), action, _esc(amount),
                _esc(button)))


def _owed_table(owed):
    """What each plate still owes, its owed exits each with a form that
    records the fee collected by hand."""
    rows = ['<p>%s yuan owed by %d plates%s</p>' % (
                _esc(owed["yuan"]), owed["plates_total"],
                "" if owed["plates_total"] <= len(owed["plates"])
                else " (the %d owing most listed)" % len(owed["plates"])),
            "<table id=owed><tr><th>plate</th><th>owes</th><th>exit time</th><th>gate</th>"
            "<th>fee</th><th>collect</th></tr>"]
    collect = '<input type="hidden" name="action" value="collected">'
    for plate in owed["plates"]:
        for i, x in enumerate(plate["sessions"]):
            head = ('<td rowspan="%d">%s</td><td rowspan="%d">%s</td>' % (
                len(plate["sessions"]), _esc(plate["plate"]), len(plate["sessions"]),
                _esc(plate["yuan"]))) if i == 0 else ""
            rows.append('<tr class="owed" data-plate="%s" data-id="%s/%s/%s">%s<td>%s</td>'
                        "<td>%s</td><td>%s</td><td>%s</td></tr>" % (
                            _esc(plate["plate"]), _esc(x["gate"]), x["jid"], x["seq"], head,
                            _esc(x["time_local"]), _esc(x["gate"]), yuan(x["fee"]),
                            _form(x, collect, yuan(x["fee"]), "collected")))
    if not owed["plates"]:
        rows.append("<tr><td colspan=6>nothing owed</td></tr>")
    return "".join(rows) + "</table>"


def _stale_table(s):
    """The sessions past the maximum stay (not counted inside), each with a
    form that closes it by hand with a reason; the latest closed below."""
    rows = ["<p>no maximum stay set: every open session counts as inside</p>"
            if s["max_stay_hours"] is None else
            "<p>entries older than %g hours with no exit: not counted inside</p>"
            % s["max_stay_hours"],
            "<table id=stale><tr><th>entered</th><th>hours ago</th><th>plate</th>"
            "<th>gate</th><th>close</th></tr>"]
    for e in s["stale"]:
        rows.append('<tr class="stale" data-id="%s/%s/%s"><td>%s</td><td>%d</td><td>%s</td>'
                    '<td>%s</td><td><form method="post" action="/sessions/close">'
                    '<input type="hidden" name="gate" value="%s">'
                    '<input type="hidden" name="jid" value="%d">'
                    '<input type="hidden" name="seq" value="%d">'
                    '<input type="text" name="reason" placeholder="why" aria-label="reason"'
                    ' required> <button type="submit">close session</button></form></td></tr>'
                    % (_esc(e["gate"]), e["jid"], e["seq"], _esc(e["time_local"]), e["hours"],
                       _esc(e["plate"]), _esc(e["gate"]), _esc(e["gate"]), e["jid"], e["seq"]))
    if not s["stale"]:
        rows.append("<tr><td colspan=5>no stale sessions</td></tr>")
    rows.append("</table><table id=closed><tr><th>entered</th><th>plate</th><th>closed</th>"
                "<th>by</th><th>why</th></tr>")
    for c in s["closed_sessions"]:
        rows.append('<tr class="closed" data-id="%s/%s/%s"><td>%s</td><td>%s</td><td>%s</td>'
                    "<td>%s</td><td>%s</td></tr>" % (
                        _esc(c["gate"]), c["jid"], c["seq"], _esc(c["time_local"]),
                        _esc(c["plate"]), _esc(c["closed_local"]), _esc(c["closed_by"]),
                        _esc(c["reason"])))
    return "".join(rows) + "</table>"


def _search_form(found):
    """The plate search and the CSV export of a date range."""
    fields = ('<input type="text" name="from" value="%s" placeholder="from YYYY-MM-DD"'
              ' aria-label="from"> <input type="text" name="to" value="%s"'
              ' placeholder="to YYYY-MM-DD" aria-label="to"> ' % (
                  _esc(found["from"]), _esc(found["to"])))
    return ('<p><form method="get" action="/search"><input type="text" name="plate" value="%s"'
            ' placeholder="plate" aria-label="plate"> %s<button type="submit">find</button>'
            '</form> <form method="get" action="/sessions.csv">%s<button type="submit">'
            "export CSV</button></form></p>" % (_esc(found["query"]), fields, fields))


def render_search(found):
    """The search page's HTML: the plates found (the one asked and its
    misreads) and a page of their sessions (entry, exit, fee, source, flags)."""
    link = "/search?" + urllib.parse.urlencode(
        {"plate": found["query"], "from": found["from"], "to": found["to"]})
    rows = ['<!doctype html><html lang="en"><head><meta charset="utf-8">',
            "<title>parkgate: %s</title><style>%s</style></head><body>" % (
                _esc(found["query"]), _STYLE),
            '<h1>Sessions of %s <small><a href="/">back</a></small></h1>' % _esc(found["query"]),
            _search_form(found),
            "<p id=plates>plates found: %s</p>" % (
                _esc(", ".join(found["plates"])) or "none"),
            "<p>%d sessions, page %d of %d%s%s</p>" % (
                found["total"], found["page"], found["pages"],
                ' <a rel="prev" href="%s&amp;page=%d">previous</a>' % (
                    _esc(link), found["page"] - 1) if found["page"] > 1 else "",
                ' <a rel="next" href="%s&amp;page=%d">next</a>' % (
                    _esc(link), found["page"] + 1) if found["page"] < found["pages"] else ""),
            "<table id=sessions><tr><th>plate</th><th>entry</th><th>exit</th><th>gates</th>"
            "<th>yuan</th><th>source</th><th>flags</th></tr>"]
    for s in found["sessions"]:
        rows.append('<tr class="session"><td>%s</td><td>%s</td><td>%s</td><td>%s / %s</td>'
                    "<td>%s</td><td>%s</td><td>%s</td></tr>" % tuple(_esc(v) for v in (
                        s["plate"], s["entry_local"] or "no entry stored",
                        s["exit_local"] or ("closed by hand" if s["closed"] else "no exit"),
                        s["entry_gate"] or "-", s["exit_gate"] or "-", s["yuan"],
                        s["fee_source"], s["flags"])))
    if not found["sessions"]:
        rows.append("<tr><td colspan=7>no sessions</td></tr>")
    return "".join(rows) + "</table></body></html>"
