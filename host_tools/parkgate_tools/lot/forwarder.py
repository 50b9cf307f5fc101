"""Store and forward from the lot bridge to the central server.

The bridge writes every new event into the store's outbox in the same
transaction that stores it; the Forwarder thread POSTs the outbox, oldest
first, in batches, and marks rows forwarded only after the central server
answered 2xx. A request that fails or times out is tried again after a
backoff that doubles up to a bound, so a link down for hours costs nothing
but the wait: the outbox is on disk and survives restarts, and the far side
stores each (lot, gate, jid, seq) once however often it is sent. The same
thread takes the lot's tariff and member list from the central server.
Protocol: firmware/docs/upstream.md."""
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request

from parkgate import record, tariff
from parkgate_tools.lot.store.schema import row_event
from parkgate_tools.lot.tariff_in_use import store_tariff

log = logging.getLogger("parkgate.forwarder")


class LinkError(RuntimeError):
    """The central server could not be reached or did not answer 2xx."""


def wire_event(row):
    """The upstream form of an outbox row: the gate's wire form plus g and j."""
    wire = record.to_wire(row_event(row))
    wire["g"], wire["j"] = row["gate"], row["jid"]
    return wire


class Forwarder:
    """Forwards a Store's outbox and corrections to the central server at
    url for the lot, and polls its tariff and members every sync_every
    seconds. on_tariff(Tariff) and on_members(version) are called, from this
    thread, when a new tariff or member list has been stored, and then each
    function in taken with ("tariff", the table's JSON text) or ("members",
    the member document {"version", "members"}) (the push keeper passes
    them on to the gates).

    timeout: seconds for each HTTP request; backoff_min/backoff_max: the
    retry delay after a failure, doubling, with up to 20 % jitter."""

    def __init__(self, store, lot, url, token=None, batch=500, timeout=5.0, backoff_min=0.5,
                 backoff_max=30.0, sync_every=30.0, on_tariff=None, on_members=None):
        self.store = store
        self.lot = lot
        self.base = "%s/v1/lots/%s/" % (url.rstrip("/"), lot)
        self.token = token
        self.batch = batch
        self.timeout = timeout
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.sync_every = sync_every
        self.on_tariff = on_tariff
        self.on_members = on_members
        self.taken = []
        self.forwarded = 0       # events the central server answered 2xx for
        self.failures = 0        # requests that failed
        self.last_error = None
        self.linked = False      # the last request succeeded
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = None

    # ---- life cycle ----

    def start(self):
        """Start the forwarding thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="forwarder-" + self.lot,
                                         daemon=True)
        self._thread.start()

    def stop(self, timeout=10):
        """Stop the thread (an HTTP request in progress ends by its timeout)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wake(self):
        """New rows are in the outbox: forward without waiting for the poll."""
        self._wake.set()

    # ---- the loop ----

    def _run(self):
        delay = self.backoff_min
        next_sync = 0.0
        clock = time.monotonic
        while not self._stop.is_set():
            try:
                if clock() >= next_sync:
                    self.sync()
                    next_sync = clock() + self.sync_every
                sent = self.forward_once()
            except LinkError as exc:
                self.failures += 1
                if self.linked or self.last_error != str(exc):
                    log.warning("central server %s: %s; retrying in %.1f s", self.base, exc,
                                delay)
                self.linked, self.last_error = False, str(exc)
                self._stop.wait(delay * (1 + 0.2 * random.random()))
                delay = min(delay * 2, self.backoff_max)
                continue
            except Exception:   # a store error: keep the thread, try again later
                log.exception("forwarding failed")
                self._stop.wait(delay)
                delay = min(delay * 2, self.backoff_max)
                continue
            if not self.linked:
                log.info("central server %s reachable", self.base)
            self.linked, delay = True, self.backoff_min
            if not sent:
                self._wake.wait(1.0)
                self._wake.clear()

    def forward_once(self):
        """Send one batch of events and one of corrections, if any; returns
        how many rows were forwarded. Raises LinkError."""
        sent = 0
        rows = self.store.outbox_pending(self.batch)
        if rows:
            # what is left after this batch, for the central admin page (a short
            # batch was all there was)
            backlog = self.store.outbox_backlog() - len(rows) if len(rows) >= self.batch else 0
            self._request("POST", "events", {"events": [wire_event(r) for r in rows],
                                             "backlog": max(0, backlog)})
            self.store.mark_forwarded(identities=[(r["gate"], r["jid"], r["seq"]) for r in rows])
            self.forwarded += len(rows)
            sent += len(rows)
        corrections = self.store.corrections_pending(self.batch)
        if corrections:
            self._request("POST", "corrections", {"corrections": [
                {"id": c["id"], "g": c["gate"], "j": c["jid"], "s": c["seq"],
                 "action": c["action"], "amount": c["amount"], "note": c["note"],
                 "at": c["created_at"]} for c in corrections]})
            self.store.mark_forwarded(corrections=[c["id"] for c in corrections])
            sent += len(corrections)
        return sent

    def sync(self):
        """Take the tariff from the central server when it is newer than the
        one taken before (tariff_in_use.is_newer), and the member list when
        its version differs from the stored one. Raises LinkError."""
        text = self._request("GET", "tariff", missing_ok=True)
        if text is not None:
            try:
                table = store_tariff(self.store, text)
            except tariff.TariffError as exc:
                log.error("central tariff refused: %s", exc)
                table = None
            if table is not None:
                log.info("tariff version %s taken from the central server", table.version)
                if self.on_tariff:
                    self.on_tariff(table)
                self._tell("tariff", text)
        text = self._request("GET", "members", missing_ok=True)
        if text is not None:
            doc = json.loads(text)
            version = str(doc.get("version"))
            if version != self.store.setting("members_version"):
                self.store.replace_members(doc.get("members", []))
                self.store.set_setting("members_version", version)
                log.info("member list version %s: %d members", version,
                         len(doc.get("members", [])))
                if self.on_members:
                    self.on_members(version)
                self._tell("members", doc)

    def _tell(self, kind, taken):
        for function in self.taken:
            try:
                function(kind, taken)
            except Exception:   # a listener's fault must not stop forwarding
                log.exception("passing on the %s taken failed", kind)

    def _request(self, method, leaf, body=None, missing_ok=False):
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        request = urllib.request.Request(self.base + leaf, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", "Bearer " + self.token)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read().decode()
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and missing_ok:
                return None
            raise LinkError("%s %s: HTTP %d %s" % (method, leaf, exc.code,
                                                   exc.read()[:200].decode(errors="replace")))
        except (OSError, ValueError) as exc:   # URLError, timeouts, resets
            raise LinkError("%s %s: %s" % (method, leaf, exc))
