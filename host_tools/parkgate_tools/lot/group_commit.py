"""The lot bridge's writer thread: what the network thread queued, in
arrival order. All the event batches and gate statuses waiting are stored
in ONE transaction (group commit) and each batch is acknowledged only after
that commit. A query (a fee, a catch-up page) first commits what came before
it, so that its answer sees every event sent before it."""
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
_STOP = object()


class GroupCommitWriter:
    """The writer thread of a bridge.

    store: the Store; publish(gate, leaf, obj): send a gate an answer;
    answer(kind, gate, args, live): answer a query, in order (BadMessage
    refuses it); outbox: also queue new rows for forwarding upstream, then
    call on_outbox(); group_batches: at most this many batches per
    transaction. counts: the object whose batches, events, commits, failed
    and refused the writer adds to (the Bridge)."""

    def __init__(self, store, publish, answer, counts, outbox=False, on_outbox=None,
                 group_batches=GROUP_BATCHES):
        self.store, self.publish, self.answer, self.counts = store, publish, answer, counts
        self.outbox, self.on_outbox = outbox, on_outbox
        self.group_batches = group_batches
        self._queue = queue.Queue()
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
        """Queue a batch of record.Event of gate's journal jid."""
        self._queue.put(("events", gate, jid, events))

    def status(self, gate, message):
        """Queue gate's status message (a dict)."""
        self._queue.put(("status", gate, message))

    def query(self, kind, gate, args, live):
        """Queue a query to answer once what came before it is stored;
        live: the bridge was live when it came (not queued by the broker)."""
        self._queue.put((kind, gate, args, live))

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
            batches, statuses = [], []
            for item in self._take():
                if item is _STOP:
                    self._commit(batches, statuses)
                    return
                if item[0] == "events":
                    batches.append(item[1:])
                elif item[0] == "status":
                    statuses.append(item[1:])
                else:
                    self._commit(batches, statuses)
                    batches, statuses = [], []
                    kind, gate, args, live = item
                    try:
                        self.answer(kind, gate, args, live)
                    except BadMessage as exc:
                        self.counts.refused += 1
                        log.warning("refused %s query of %s: %s", kind, gate, exc)
                    except Exception:
                        log.exception("%s query of %s failed", kind, gate)
            self._commit(batches, statuses)

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
