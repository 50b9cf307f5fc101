"""Lot bridge ingest: sustained events per second, every commit durable
(SQLite WAL synchronous=FULL; PostgreSQL fsync on, synchronous_commit on),
through the real broker, with the load generator's simulated gates waiting
for acks and retransmitting as the firmware does. Bridge workers run as
their own processes (`parkgate bridge`), one or two sharing the lot through
an MQTT 5 shared subscription. Baselines measured in the same run: one
event per transaction straight into the store, and the bridge committing
each batch on its own (no group commit). Target: at least 5,000 events/s
on SQLite."""
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from parkgate import record
from parkgate_tools.sim.broker import Broker
from parkgate_tools.sim.loadgen import LoadGen
from parkgate_tools.sim.pgserver import PgServer
from parkgate_tools.sim.gate import DEFAULT_TARIFF
from parkgate_tools.lot.store import open_store

GATES = 200
EVENTS_PER_GATE = 400
BASELINE_EVENTS = 1000
TARGET = 5000.0


def one_event_per_transaction(location, n=BASELINE_EVENTS):
    """Events/s storing one event per transaction (one commit each), lot "base"."""
    store = open_store(location, "base")
    try:
        t0 = time.perf_counter()
        for seq in range(1, n + 1):
            store.ingest("base", 1, [record.Event(record.KIND_ENTRY, 1795564800 + seq, 5,
                                                  "粤B%05d" % seq, seq=seq)])
        return n / (time.perf_counter() - t0)
    finally:
        store.close()


class Worker:
    """One `parkgate bridge` process, its log lines collected; live() once
    it has caught up. extra: more command-line arguments."""

    def __init__(self, lot, broker, db, index, share=None, group_batches=None, extra=(),
                 client_id=None):
        argv = [sys.executable, "-m", "parkgate_tools.cli", "bridge", "--lot", lot,
                "--broker", "%s:%d" % (broker.host, broker.port), "--db", db,
                "--tariff", DEFAULT_TARIFF,
                "--client-id", client_id or "bench-%s-%d" % (lot, index)]
        if share:
            argv += ["--share", share]
        if group_batches:
            argv += ["--group-batches", str(group_batches)]
        argv += list(extra)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)

    def logged(self, text):
        """True once a log line holds text."""
        return any(text in line for line in self.lines)

    def live(self):
        """True once the worker logged that it is past the broker's backlog."""
        return self.logged("live:")

    def stop(self):
        """SIGTERM, then wait (SIGKILL after 20 s)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(20)


def through_broker(broker, lot, db, workers=1, group_batches=None):
    """(events/s, events) for the load generator against `workers` bridges."""
    share = "bench" if workers > 1 else None
    running = [Worker(lot, broker, db, i, share, group_batches) for i in range(workers)]
    try:
        wait_live(running)
        report = LoadGen(broker.host, broker.port, lot, gates=GATES,
                         events_per_gate=EVENTS_PER_GATE, prefix="b").run(timeout=90)
    finally:
        for worker in running:
            worker.stop()
    check_stored_once(db, report, lot)
    return report["events_per_s"], report["events"]


def wait_live(workers, timeout=30):
    """Wait until every Worker is live; RuntimeError with their last log lines if not."""
    deadline = time.monotonic() + timeout
    while not all(w.live() for w in workers):
        if time.monotonic() > deadline or any(w.proc.poll() is not None for w in workers):
            raise RuntimeError("bridge worker did not go live:\n" + "".join(
                line for w in workers for line in w.lines[-10:]))
        time.sleep(0.05)


def check_stored_once(db, report, lot):
    """RuntimeError unless the LoadGen report is complete and db holds each
    of its events exactly once, as lot's."""
    store = open_store(db, lot)
    try:
        summary = store.summary()
    finally:
        store.close()
    if not report["complete"] or not summary["rows"] == summary["identities"] == report["events"]:
        raise RuntimeError("load not stored exactly once: %r, %d rows" % (report,
                                                                           summary["rows"]))


def measure(workdir):
    """[(label, events/s, baseline label)] for every configuration."""
    results = []
    broker = Broker(os.path.join(workdir, "broker"))
    broker.start()
    pg = PgServer().start()
    try:
        sqlite_db = lambda name: os.path.join(workdir, name + ".sqlite")  # noqa: E731
        base = "sqlite, 1 event per transaction (store only)"
        results.append((base, one_event_per_transaction(sqlite_db("base")), None))
        per_batch = "sqlite, 1 worker, 1 commit per batch"
        results.append((per_batch, through_broker(broker, "s0", sqlite_db("s0"),
                                                  group_batches=1)[0], base))
        for workers in (1, 2):
            rate, _ = through_broker(broker, "s%d" % workers, sqlite_db("s%d" % workers),
                                     workers)
            results.append(("sqlite, %d worker%s, group commit" % (
                workers, "s" if workers > 1 else ""), rate, base))
        pg_base = "postgresql, 1 event per transaction (store only)"
        results.append((pg_base, one_event_per_transaction(pg.create_database("base")), None))
        for workers in (1, 2):
            rate, _ = through_broker(broker, "p%d" % workers,
                                     pg.create_database("p%d" % workers), workers)
            results.append(("postgresql, %d worker%s, group commit" % (
                workers, "s" if workers > 1 else ""), rate, pg_base))
    finally:
        pg.stop()
        broker.stop()
    return results


def main():
    """Measure, print the table and the ratios; 0 if SQLite meets the target."""
    workdir = tempfile.mkdtemp(prefix="parkgate-bench-bridge-")
    try:
        t0 = time.monotonic()
        results = measure(workdir)
        rates = {label: rate for label, rate, _ in results}
        print("%d simulated gates x %d events through mosquitto, durable commits"
              % (GATES, EVENTS_PER_GATE))
        print("%-50s %10s %12s" % ("configuration", "events/s", "vs baseline"))
        for label, rate, baseline in results:
            ratio = "%.1fx" % (rate / rates[baseline]) if baseline else "baseline"
            print("%-50s %10.0f %12s" % (label, rate, ratio))
        one = rates["sqlite, 1 worker, group commit"]
        print("2 workers / 1 worker: sqlite %.2fx, postgresql %.2fx" % (
            rates["sqlite, 2 workers, group commit"] / one,
            rates["postgresql, 2 workers, group commit"]
            / rates["postgresql, 1 worker, group commit"]))
        ok = one >= TARGET
        print("sqlite, 1 worker: %.0f events/s (target >= %.0f): %s; bench took %.0f s" % (
            one, TARGET, "ok" if ok else "UNDER TARGET", time.monotonic() - t0))
        return 0 if ok else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
