"""The lot bridge's writer thread: what the network thread queued, in
arrival order. All the event batches and gate statuses waiting are stored
in ONE transaction (group commit) and each batch is acknowledged only after
that commit. A query (a fee, a catch-up page) first commits what came before
it, so that its answer sees every event sent before it.

The writer holds at most queue_max messages (queued or in the transaction
being written). When it holds that many, the bridge stops taking: a message
that comes then is dropped, unacknowledged (an event batch stays in its
gate's journal and is sent again after the gate's ack timeout; a fee query
is charged offline by its gate after fee_timeout_ms; a status is sent again
within 30 s), so a stalled database never grows the bridge's memory."""
import logging
import queue
import threading

from parkgate_tools.lot.answers import ack_runs
from parkgate_tools.lot.gate_messages import BadMessage
from parkgate_tools.lot.store import DatabaseLocked

log = logging.getLogger("parkgate.bridge")

# One commit takes every batch waiting, up to these many.
GROUP_BATCHES = 512
GROUP_EVENTS = 8192
# Messages held at most (queued and being written): each at most
# security.MAX_MESSAGE_BYTES of JSON, a gate's batch about 1 KiB.
QUEUE_MAX = 2048
_STOP = object()


class GroupCommitWriter:
    """The writer thread of a bridge.

    store: the Store; publish(gate, leaf, obj): send a gate an answer;
    answer(kind, gate, args, live): answer a query, in order (BadMessage
    refuses it); outbox: also queue new rows for forwarding upstream, then
    call on_outbox(); group_batches: at most this many batches per
    transaction; queue_max: at most this many messages held (module
    docstring). counts: the object whose batches, events, commits, failed,
    refused and dropped the writer adds to (the Bridge)."""

    def __init__(self, store, publish, answer, counts, outbox=False, on_outbox=None,
                 group_batches=GROUP_BATCHES, queue_max=QUEUE_MAX):
        if type(queue_max) is not int or queue_max < 1:
            raise ValueError("queue_max: %r is not a number of messages >= 1" % (queue_max,))
        self.store, self.publish, self.answer, self.counts = store, publish, answer, counts
        self.outbox, self.on_outbox = outbox, on_outbox
        self.group_batches, self.queue_max = group_batches, queue_max
        self._queue = queue.Queue()
        self._held_lock = threading.Lock()
        self.held = 0          # messages queued or in the transaction being written
        self.held_peak = 0     # the most held at once
        self._dropping_since = None   # counts.dropped when the queue last filled up
        self._thread = None

    def start(self, name):
        """Start the thread (again after stop())."""
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)
        self._thread.start()

    def stop(self, timeout=30):
        """Commit what is queued before the stop, then end the thread."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    def events(self, gate, jid, events):
        """Queue a batch of record.Event of gate's journal jid; False if it
        was dropped (the writer held queue_max messages)."""
        return self._put(("events", gate, jid, events))

    def status(self, gate, message):
        """Queue gate's status message (a dict); False if dropped."""
        return self._put(("status", gate, message))

    def query(self, kind, gate, args, live):
        """Queue a query to answer once what came before it is stored;
        live: the bridge was live when it came (not queued by the broker).
        False if dropped."""
        return self._put((kind, gate, args, live))

    def _put(self, item):
        with self._held_lock:
            if self.held >= self.queue_max:
                if self._dropping_since is None:
                    self._dropping_since = self.counts.dropped
                    log.warning("ingest queue full (%d messages held): dropping what comes, "
                                "unacknowledged, until the store catches up", self.held)
                self.counts.dropped += 1
                return False
            self.held += 1
            self.held_peak = max(self.held_peak, self.held)
        self._queue.put(item)
        return True

    def _release(self, count):
        """count messages are done with (stored and acked, answered, or failed)."""
        with self._held_lock:
            self.held -= count
            if self._dropping_since is not None and self.held < self.queue_max:
                log.warning("ingest queue taking messages again: %d dropped while full",
                            self.counts.dropped - self._dropping_since)
                self._dropping_since = None

    def _take(self):
        """The items waiting, at least one: up to group_batches and GROUP_EVENTS."""
        items = [self._queue.get()]
        events = len(items[0][3]) if items[0] is not _STOP and items[0][0] == "events" else 0
        while len(items) < self.group_batches and events < GROUP_EVENTS:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            items.append(item)
            if item is not _STOP and item[0] == "events":
                events += len(item[3])
        return items

    def _run(self):
        while True:
            items = self._take()
            try:
                if not self._write(items):
                    return
            finally:
                self._release(sum(1 for item in items if item is not _STOP))

    def _write(self, items):
        """Store and answer items in order; False once the stop came."""
        batches, statuses = [], []
        for item in items:
            if item is _STOP:
                self._commit(batches, statuses)
                return False
            if item[0] == "events":
                batches.append(item[1:])
            elif item[0] == "status":
                statuses.append(item[1:])
            else:
                self._commit(batches, statuses)
                batches, statuses = [], []
                self._answer(*item)
        self._commit(batches, statuses)
        return True

    def _answer(self, kind, gate, args, live):
        try:
            self.answer(kind, gate, args, live)
        except BadMessage as exc:
            self.counts.refused += 1
            log.warning("refused %s query of %s: %s", kind, gate, exc)
        except Exception:
            log.exception("%s query of %s failed", kind, gate)

    def _commit(self, batches, statuses):
        """Store batches [(gate, jid, events)] and statuses in one
        transaction, then ack each batch. If that fails and there were
        several, each is tried on its own, so one bad batch holds up no other."""
        if not batches and not statuses:
            return
        counts = self.counts
        try:
            inserted = self.store.ingest_many(batches, statuses, outbox=self.outbox)
        except DatabaseLocked as exc:
            # The whole lock_wait has passed: one at a time would wait it
            # again for each. The gates send them again.
            counts.failed += len(batches)
            log.error("%d batches and %d statuses not stored, not acknowledged: %s",
                      len(batches), len(statuses), exc)
            return
        except Exception:
            if len(batches) + len(statuses) > 1:
                for batch in batches:
                    self._commit([batch], [])
                for status in statuses:
                    self._commit([], [status])
                return
            counts.failed += len(batches)
            for gate, jid, _ in batches:
                log.exception("batch gate=%s j=%d not stored, not acknowledged", gate, jid)
            if statuses:
                log.exception("status of %s not stored", statuses[0][0])
            return
        counts.commits += 1
        for (gate, jid, events), new in zip(batches, inserted):
            counts.batches += 1
            counts.events += len(events)
            for run_first, run_last in ack_runs(event.seq for event in events):
                self.publish(gate, "down/ack", {"j": jid, "f": run_first, "l": run_last})
            log.debug("batch gate=%s j=%d: %d events, %d new", gate, jid, len(events), new)
        if self.outbox and batches and self.on_outbox is not None:
            self.on_outbox()
