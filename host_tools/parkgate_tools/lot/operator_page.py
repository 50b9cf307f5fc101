"""The lot's operator page: its model (OperatorPage: the snapshot of a day
with its duty throttle and worker process, search, CSV export, corrections,
session closes, pushes to the gates, the audit log) served by the web
application of lot/web/app.py (Starlette under uvicorn, with login).

The page shows the gates online or offline with their backlog and clock
quality, cars inside, the day's entries, exits and money in yuan (collected
at the gates online and offline or by hand, owed, corrected: see
store.EventStore.money), flagged sessions with a form to record a
correction, what each plate still owes with a form to collect it, the
occupancy and revenue chart, and the sessions past the lot's maximum stay
(stale: not inside) with a form to close each by hand (page_numbers.py
works the numbers out). The routes: lot/web/app.py. Who may do what:
firmware/docs/lot-server.md ("Accounts and roles").

A correction is a row of its own (store.add_correction); events are never
edited. Every correction, close, push and remote open is written with the
logged-in user's name (the store's audit log)."""
import csv
import io
import logging
import os
import threading
import time

from parkgate import tariff
from parkgate_tools.asgi_service import ASGIService
from parkgate_tools.lot.page_numbers import FLAGGED_SHOWN, PageNumbers  # noqa: F401 (API)
from parkgate_tools.lot.page_worker import PageWorker
from parkgate_tools.lot.web import charts
from parkgate_tools.lot.web.auth import SECRET_BYTES
from parkgate_tools.lot.web.money_text import yuan

log = logging.getLogger("parkgate.page")

# The page's share of the lot server's time: after a snapshot that took t
# seconds the next one starts no sooner than t * (1 / DUTY - 1) later, and
# no later than PAUSE_MAX_S (a reader waits at most that, and one snapshot).
DUTY = 0.02
PAUSE_MAX_S = 10.0
PAGE_SIZE = 50          # sessions a search page lists
MAX_RANGE_DAYS = 366    # the longest date range a list or export covers
CSV_FIELDS = ("plate", "entry_local", "exit_local", "entry_gate", "exit_gate", "yuan",
              "fee", "fee_source", "flags", "closed", "entry_time", "exit_time")
PUSH_ACTIONS = {"tariff": "push-tariff", "open": "open"}    # pusher kind: audit action


class OperatorPage(PageNumbers):
    """Serves the page for one lot from a Store. tariff_source: a callable
    returning the Tariff fees are checked against (the bridge's current
    one). clock: the lot's time for "today" and "inside now" (the demo
    passes its simulated clock); utc_offset_s: the lot's local time.

    secret: the session cookie's key (SECRET_BYTES or more; None: random,
    so sessions end with the process: lot/run.py keeps one in
    state/session.key); https_only: the cookie is Secure (browsers keep it
    on http://127.0.0.1 too). pusher(kind, payload, who): sends to the
    gates (kind "tariff", payload the table's JSON text; kind "open",
    payload {"gate": id}) and returns what the gates answered, JSON-able;
    None: the page pushes nothing. health(): the bridge's health,
    {"live", "refused", "failed"} (lot/health.bridge_health), or None.
    tls_cert/tls_key: serve HTTPS directly. images, ota_plan: the lot's
    firmware image store and update plan (lot/images.ImageStore,
    lot/ota_plan.OtaPlan) the Firmware page shows and writes
    (web/firmware.py); None: the page says there are none and changes
    nothing. gate_ids: the ids of the lot's gates (its config's), what
    "every gate" means there; None: the gates that sent a status or have
    a plan.

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
                 utc_offset_s=8 * 3600, refresh_s=15, duty=DUTY, aside=True, secret=None,
                 https_only=True, pusher=None, health=None, tls_cert=None, tls_key=None,
                 images=None, ota_plan=None, gate_ids=None):
        if store.lot != lot:
            raise ValueError("the page of lot %r cannot show a store of lot %r" % (lot, store.lot))
        self.source = store    # the store given
        self.store = store     # the store read: its own connection while serving
        self.lot, self.tariff_source = lot, tariff_source
        self.clock, self.utc_offset_s, self.refresh_s = clock, utc_offset_s, refresh_s
        if not 0 < duty <= 1:
            raise ValueError("duty: %r is not a share of time in (0, 1]" % (duty,))
        self.duty, self.aside = duty, aside
        self.secret = os.urandom(SECRET_BYTES) if secret is None else secret
        self.https_only, self.pusher, self.health = https_only, pusher, health
        self.images, self.ota_plan = images, ota_plan
        self.gate_ids = None if gate_ids is None else tuple(gate_ids)
        self._worker = None             # the process the snapshots are worked out in
        self._snapshot_lock = threading.Lock()
        self._next_snapshot_at = 0.0    # monotonic: when the next may start
        self._last = None               # (day asked, monotonic start, snapshot)
        self._chart = None              # (snapshot, its chart's SVG)
        self._http = ASGIService(None, host, port, "operator-page", tls_cert, tls_key)

    @property
    def url(self):
        """The page's URL (with a trailing slash)."""
        return self._http.url + "/"

    def start(self):
        """Open the page's own connection and serve the web application in
        a background thread; returns self."""
        from parkgate_tools.lot.web.app import build_app
        if self.store is self.source:
            self.store = self.source.open_reader()
        with self._snapshot_lock:
            if self.aside and self._worker is None:
                self._worker = PageWorker()     # started now, not at the first read
        self._http.app = build_app(self)
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
                spent, snapshot, chart = self._work_out_aside(day)
                self._chart = (snapshot, chart)
            else:
                snapshot = self.work_out(day)
                spent = time.monotonic() - started
            self._next_snapshot_at = time.monotonic() + min(
                PAUSE_MAX_S, spent * (1 / self.duty - 1))
            self._last = (day, started, snapshot)
            return snapshot

    def chart(self, snapshot):
        """The SVG of a snapshot's chart (web/charts.py): drawn once a
        snapshot, however many readers share it (aside: with the snapshot,
        in the page's own process)."""
        drawn = self._chart
        if drawn is None or drawn[0] is not snapshot:
            drawn = self._chart = (snapshot, charts.day_chart_svg(
                snapshot["occupancy"], snapshot["revenue_by_hour"],
                "Lot %s, %s" % (self.lot, snapshot["day"])))
        return drawn[1]

    def _work_out_aside(self, day):
        """(seconds it took there, work_out(day), its chart's SVG) in the
        page's own process."""
        return self._worker.ask(self.source.path, self.source.lock_wait, self.lot,
                                self.tariff_source(), int(self.clock()), self.utc_offset_s, day)

    # ---- what the operator does ----

    def correct(self, gate, jid, seq, action, amount_fen, note, by):
        """Record a correction by user `by` (see Store.add_correction);
        returns its id. The next snapshot is worked out without waiting."""
        correction_id = self.store.add_correction(gate, int(jid), int(seq), action, amount_fen,
                                                  note, by)
        self._next_snapshot_at = 0.0
        return correction_id

    def close_session(self, gate, jid, seq, reason, closed_by):
        """Close a ghost's session by hand (see Store.close_session), by
        user closed_by. The next snapshot is worked out without waiting."""
        self.store.close_session(gate, int(jid), int(seq), reason, closed_by)
        self._next_snapshot_at = 0.0

    def is_owed_exit(self, gate, jid, seq):
        """True if (gate, jid, seq) is an exit let out unpaid and not settled."""
        return any((x["gate"], x["jid"], x["seq"]) == (gate, jid, seq)
                   for plate in self.store.owed_by_plate() for x in plate["sessions"])

    def push(self, kind, payload, who):
        """Send to the gates through the pusher, as user who (kind
        "tariff": payload the table's JSON text, checked first; "open":
        {"gate": id}), and write it to the audit log with what the gates
        answered (or why nothing was sent). Returns the pusher's answer;
        ValueError if there is no pusher or the table is no table."""
        if self.pusher is None:
            raise ValueError("this lot server sends nothing to the gates (no pusher)")
        if kind not in PUSH_ACTIONS:
            raise ValueError("push: %r is not one of %s" % (kind, ", ".join(PUSH_ACTIONS)))
        detail = dict(payload) if kind == "open" else {"version": tariff.loads(payload).version}
        try:
            result = self.pusher(kind, payload, who)
        except Exception as exc:
            self.store.audit(who, PUSH_ACTIONS[kind], dict(detail, error=str(exc)[:500]))
            raise
        self.store.audit(who, PUSH_ACTIONS[kind], dict(detail, result=result))
        return result

    def bridge_health(self):
        """The health callable's {"live", "refused", "failed"}, or None."""
        return None if self.health is None else self.health()

    def audit_log(self, first=None, last=None, limit=200):
        """The audit log's rows of the days first..last (neither: all), the
        newest `limit` first, with local times."""
        start, end = self.range_bounds(first, last) if first or last else (None, None)
        rows = self.store.audit_log(limit, start, end)
        for row in rows:
            row["at_local"] = self._local(int(row["at"]))
        return rows

    def lists(self, first=None, last=None):
        """The flagged sessions and what each plate owes, of the exits in
        the days first..last: {"flagged", "flagged_total", "open_flags",
        "owed", "from", "to"}."""
        start, end = self.range_bounds(first, last)
        return dict(self.flagged_between(start, end), owed=self._owed_list(start, end),
                    **{"from": first or "", "to": last or ""})

    # ---- finding things ----

    def range_bounds(self, first=None, last=None):
        """(start, end) in unix seconds from the local days first..last
        (YYYY-MM-DD, both included; either may be empty: from the start, to
        today's end). ValueError if a day is not a date."""
        start = self.day_bounds(first)[0] if first else 0
        end = self.day_bounds(last or None)[1]
        if end <= start:
            raise ValueError("to: %r is before from: %r" % (last, first))
        if first and end - start > MAX_RANGE_DAYS * 86400:
            raise ValueError("from %s to %s: more than %d days" % (first, last, MAX_RANGE_DAYS))
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

