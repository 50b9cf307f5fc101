"""The lot's operator page, served by the lot server (stdlib HTTP server):
gates online or offline with their backlog and clock quality, cars inside,
the day's entries, exits and money in yuan (collected at the gates online
and offline or by hand, owed, corrected: see store.EventStore.money),
flagged sessions with a form to record a correction, what each plate still
owes with a form to collect it, and the day's occupancy as an inline SVG
chart, and the sessions past the lot's maximum stay (stale: not inside)
with a form to close each by hand. Nothing is fetched from elsewhere; the page works without
JavaScript.

    GET  /                 the page (?day=YYYY-MM-DD for another day)
    GET  /api/summary      the same numbers as JSON (?day= too)
    GET  /search           ?plate=&from=&to=YYYY-MM-DD&page=N: plates found (misreads
                           too) and their sessions; /api/search the same as JSON
    GET  /sessions.csv     ?from=&to=YYYY-MM-DD: the sessions of those days as CSV
    POST /corrections      form: gate, jid, seq, action, amount (yuan), note
    POST /api/corrections  JSON: {gate, jid, seq, action, amount_fen, note}
    POST /sessions/close   form: gate, jid, seq (an entry), reason: a ghost's session closed

A correction is a row of its own (store.add_correction); events are never
edited. It binds to 127.0.0.1 by default and has no login of its own: see
firmware/docs/lot-server.md. The HTML is operator_html.py's."""
import calendar
import csv
import io
import logging
import threading
import time

from parkgate import record, tariff
from parkgate.clock import QUALITY_NAMES
from parkgate_tools.http_service import HTTPService
from parkgate_tools.lot.operator_html import yuan
from parkgate_tools.lot.operator_http import Handler, fen_from_yuan  # noqa: F401 (API)
from parkgate_tools.lot.page_worker import PageWorker

log = logging.getLogger("parkgate.page")

BIN_S = 900             # occupancy chart: one point every 15 minutes
STALE_AFTER_S = 90      # a gate sends its status every 30 s
# The page's share of the lot server's time: after a snapshot that took t
# seconds the next one starts no sooner than t * (1 / DUTY - 1) later, and
# no later than PAUSE_MAX_S (a reader waits at most that, and one snapshot).
DUTY = 0.02
PAUSE_MAX_S = 10.0
FLAGGED_SHOWN = 200     # the latest flagged sessions listed (all are counted)
OWED_SHOWN = 200        # plates in the owed list, those owing most (all are summed)
DAY_S = 86400
PAGE_SIZE = 50          # sessions a search page lists
CSV_FIELDS = ("plate", "entry_local", "exit_local", "entry_gate", "exit_gate", "yuan",
              "fee", "fee_source", "flags", "closed", "entry_time", "exit_time")
ONLINE = record.FEE_SOURCE_NAMES[record.FEE_ONLINE]     # fee_source of a stored exit
OFFLINE = record.FEE_SOURCE_NAMES[record.FEE_OFFLINE]


class OperatorPage:
    """Serves the page for one lot from a Store. tariff: a callable
    returning the Tariff fees are checked against (the bridge's current
    one). clock: the lot's time for "today" and "inside now" (the demo
    passes its simulated clock); utc_offset_s: the lot's local time.

    While serving, the page reads (and records corrections) through a
    connection of its own (store.open_reader()), never the bridge's, so a
    page being read holds up neither ingest nor fee answers. It also works
    out at most one snapshot at a time and spends at most `duty` of the
    time on them (readers asking meanwhile wait, and share the next one),
    so that readers in a loop cost the bridge a bounded share of its
    process, not one day's worth of queries a read. aside=True (the
    default): the snapshots are worked out in a process of the page's own
    at the lowest CPU priority (page_worker.py, on its own connection;
    started by start() or the first snapshot, ended by stop() or when this
    process ends), so that their Python work never takes the bridge's
    interpreter lock from its writer and network threads, nor the CPU the
    bridge wants. A day lists at most FLAGGED_SHOWN flagged sessions (the
    latest; all are counted), so that a page stays small whatever the day."""

    def __init__(self, store, lot, tariff_source, host="127.0.0.1", port=0, clock=time.time,
                 utc_offset_s=8 * 3600, refresh_s=15, duty=DUTY, aside=True):
        self.source = store    # the store given
        self.store = store     # the store read: its own connection while serving
        self.lot, self.tariff_source = lot, tariff_source
        self.clock, self.utc_offset_s, self.refresh_s = clock, utc_offset_s, refresh_s
        if not 0 < duty <= 1:
            raise ValueError("duty: %r is not a share of time in (0, 1]" % (duty,))
        self.duty, self.aside = duty, aside
        self._worker = None             # the process the snapshots are worked out in
        self._snapshot_lock = threading.Lock()
        self._next_snapshot_at = 0.0    # monotonic: when the next may start
        self._last = None               # (day asked, monotonic start, snapshot)
        self._http = HTTPService(type("Handler", (Handler,), {"page": self}), host, port,
                                 "operator-page")

    @property
    def url(self):
        """The page's URL."""
        return "http://%s:%d/" % (self._http.host, self._http.port)

    def start(self):
        """Open the page's own connection and serve in a background thread;
        returns self."""
        if self.store is self.source:
            self.store = self.source.open_reader()
        with self._snapshot_lock:
            if self.aside and self._worker is None:
                self._worker = PageWorker()     # started now, not at the first read
        self._http.start()
        log.info("operator page on %s", self.url)
        return self

    def stop(self):
        """Stop serving and close the page's connection."""
        self._http.stop()
        with self._snapshot_lock:
            if self._worker is not None:
                self._worker.close()
                self._worker = None
        if self.store is not self.source:
            self.store.close()
            self.store = self.source

    # ---- the numbers ----

    def day_bounds(self, day=None):
        """(start, end, "YYYY-MM-DD") in unix seconds of the lot's local day
        (today by the lot's clock when day is None)."""
        if day is None:
            day = time.strftime("%Y-%m-%d", time.gmtime(self.clock() + self.utc_offset_s))
        start = calendar.timegm(time.strptime(day, "%Y-%m-%d")) - self.utc_offset_s
        return start, start + DAY_S, day

    def snapshot(self, day=None):
        """Everything the page shows, as a JSON-able dict: one worked out
        after this call began (another caller's, if it began after this
        call did), within the page's duty (the class docstring)."""
        asked_at = time.monotonic()
        with self._snapshot_lock:
            last = self._last
            if last is not None and last[0] == day and last[1] >= asked_at:
                return last[2]
            wait = self._next_snapshot_at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            started = time.monotonic()
            if self.aside and self._worker is None:
                self._worker = PageWorker()
            if self.aside:
                spent, snapshot = self._work_out_aside(day)
            else:
                snapshot = self.work_out(day)
                spent = time.monotonic() - started
            self._next_snapshot_at = time.monotonic() + min(
                PAUSE_MAX_S, spent * (1 / self.duty - 1))
            self._last = (day, started, snapshot)
            return snapshot

    def _work_out_aside(self, day):
        """(seconds it took there, work_out(day)) in the page's own process."""
        return self._worker.ask(self.source.path, self.source.lock_wait, self.lot,
                                self.tariff_source(), int(self.clock()), self.utc_offset_s, day)

    def work_out(self, day=None, now=None):
        """The snapshot, worked out here and now (snapshot() is the one to
        call: it bounds how often this runs); now: the lot's time to use."""
        start, end, day = self.day_bounds(day)
        now = int(self.clock()) if now is None else now
        until = min(now, end)
        events = self.store.events_between(start, end)
        exits = self.store.exits_with_entries(start, end)
        corrections = {}
        for c in self.store.corrections():
            corrections.setdefault((c["gate"], c["jid"], c["seq"]), []).append(c)
        entries = [e for e in events if e["kind"] == "in"]
        exits_charged = [e for e in events if e["kind"] == "out"
                         and e["fee_source"] in (ONLINE, OFFLINE)]
        money = self.store.money(start, end)
        revenue = {"online_fen": money["online"][1], "offline_fen": money["offline"][1],
                   "by_hand_fen": money["by_hand"], "collected_fen": money["collected"],
                   "owed_fen": money["owed"][1], "adjustments_fen": money["corrected"],
                   "total_fen": money["collected"] + money["corrected"]}
        for key in list(revenue):
            revenue[key[:-4]] = yuan(revenue[key])
        flagged = self._flagged(exits, corrections)
        max_stay = self.store.max_stay()
        stale, closed = self._stale(now)
        inside = self.store.inside_at(now + 1) if start <= now < end else (
            self.store.inside_at(end) if now >= end else set())
        return {
            "lot": self.lot, "day": day, "as_of": now, "as_of_local": self._local(now),
            "gates": self._gates(),
            "inside": len(inside),
            "entries": len(entries),
            "exits": len(exits_charged),
            "exits_online": money["online"][0], "exits_offline": money["offline"][0],
            "exits_owed": sum(1 for e in events if e["kind"] == "out"
                              and e["flags"] & record.FLAG_OWED),
            "exits_unsettled": money["owed"][0], "revenue": revenue,
            "owed": self._owed_list(),
            "flagged": flagged[-FLAGGED_SHOWN:], "flagged_total": len(flagged),
            "open_flags": sum(1 for f in flagged if not f["corrections"]),
            "occupancy": self._occupancy(start, until, events),
            "upstream_backlog": self.store.outbox_backlog(),
            "max_stay_hours": None if max_stay is None else max_stay / 3600,
            "stale": stale, "closed_sessions": closed,
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
                        member = bool(x["flags"] & record.FLAG_MEMBER) or self.store.is_member(
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
            # what the form offers to record: an owed fee, and what the tariff says is short
            owed_fee = (item["fee"] or 0) if item["flags"] & record.FLAG_OWED else 0
            item["collect_fen"] = max(item["owed"] or 0, 0) + owed_fee
            item["corrections"] = _counted(item, corrections.get(key, []))
            item["time_local"] = self._local(item["time"])
            items.append(item)
        return items

    def _owed_list(self):
        """What each plate still owes (store.owed_by_plate), the most first,
        at most OWED_SHOWN plates."""
        plates = sorted(self.store.owed_by_plate(), key=lambda p: (-p["fen"], p["plate"]))
        for plate in plates[:OWED_SHOWN]:
            plate["yuan"] = yuan(plate["fen"])
            for owed in plate["sessions"]:
                owed["time_local"] = self._local(owed["time"])
        return {"plates": plates[:OWED_SHOWN], "plates_total": len(plates),
                "fen": sum(p["fen"] for p in plates),
                "yuan": yuan(sum(p["fen"] for p in plates))}

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
        """Record a correction (see Store.add_correction); returns its id.
        The next snapshot is worked out without waiting for the duty."""
        correction_id = self.store.add_correction(gate, int(jid), int(seq), action, amount_fen,
                                                  note)
        self._next_snapshot_at = 0.0
        return correction_id

    def range_bounds(self, first=None, last=None):
        """(start, end) in unix seconds from the local days first..last
        (YYYY-MM-DD, both included; either may be empty: from the start, to
        today's end). ValueError if a day is not a date."""
        start = self.day_bounds(first)[0] if first else 0
        end = self.day_bounds(last or None)[1]
        if end <= start:
            raise ValueError("to: %r is before from: %r" % (last, first))
        return start, end

    def search(self, text, first=None, last=None, page=1, fuzzy=True):
        """The plates matching text (store.find_plates) and the sessions of
        them in the days first..last, page `page` of PAGE_SIZE, as a dict."""
        start, end = self.range_bounds(first, last)
        page = max(1, int(page))
        found = self.store.find_plates(text, fuzzy=fuzzy) if str(text).strip() else []
        sessions = sorted((s for p in found for s in self.store.plate_history(p, start, end)),
                          key=lambda s: (s["entry_time"] or s["exit_time"] or 0, s["plate"]))
        return {"query": text, "from": first or "", "to": last or "", "plates": found,
                "page": page, "pages": max(1, -(-len(sessions) // PAGE_SIZE)),
                "total": len(sessions),
                "sessions": [self._shown(s) for s in
                             sessions[(page - 1) * PAGE_SIZE:page * PAGE_SIZE]]}

    def sessions_csv(self, first=None, last=None):
        """The sessions of the days first..last as CSV text (SESSION_FIELDS,
        local times beside the unix ones)."""
        start, end = self.range_bounds(first, last)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_FIELDS)
        for s in self.store.sessions_between(start, end):
            shown = self._shown(s)
            writer.writerow(["" if shown[k] is None else shown[k] for k in CSV_FIELDS])
        return out.getvalue()

    def _shown(self, session):
        """A session with its local times and fee in yuan."""
        return dict(session, entry_local=self._local(session["entry_time"])
                    if session["entry_time"] else None,
                    exit_local=self._local(session["exit_time"])
                    if session["exit_time"] else None,
                    yuan=None if session["fee"] is None else yuan(session["fee"]))

    def close_session(self, gate, jid, seq, reason):
        """Close a ghost's session by hand (see Store.close_session): who is
        "operator" until the page has logins. The next snapshot is worked
        out without waiting for the duty."""
        self.store.close_session(gate, int(jid), int(seq), reason)
        self._next_snapshot_at = 0.0

    def _stale(self, now):
        """Sessions past the maximum stay (not inside), oldest first, and
        the latest closed by hand."""
        stale = self.store.stale_sessions(now)
        for session in stale:
            session["time_local"] = self._local(session["time"])
            session["hours"] = (now - session["time"]) // 3600
        closed = self.store.session_closes()
        for session in closed:
            session["time_local"] = self._local(session["time"])
            session["closed_local"] = self._local(int(session["closed_at"]))
        return stale, closed


def _counted(item, corrections):
    """The corrections of a flagged item as shown, each with counted: False
    for a "collected" on an owed exit after its first (schema.CORRECTION_ACTIONS)."""
    owed = item["kind"] == "out" and item["flags"] & record.FLAG_OWED
    shown, collected = [], False
    for c in corrections:
        counted = not (owed and c["action"] == "collected" and collected)
        collected = collected or (owed and c["action"] == "collected")
        shown.append(dict({k: c[k] for k in ("id", "action", "amount", "note")},
                          counted=counted))
    return shown


def _flag_reasons(flags):
    reasons = []
    if flags & record.FLAG_OWED:
        reasons.append("let out unpaid: fee owed")
    if flags & record.FLAG_NO_ENTRY:
        reasons.append("exit without entry")
    if flags & record.FLAG_REENTRY:
        reasons.append("re-entry closed an open session")
    return reasons
