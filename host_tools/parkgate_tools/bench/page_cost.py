"""What reading the operator page costs the lot bridge: ingest events/s and
the p99 latency of fee answers while a client reads the page in a loop, back
to back, against the same figures with the page served but not read, in the
same run. The bridge is one `parkgate bridge --http` process (the page in
the bridge's process, on its own database connection: store.open_reader),
on SQLite with durable commits; the load generator's 200 simulated gates
send 200,000 events while an exit gate of its own asks FEE_RATE fees a
second. The page shown is the load's day, so each read covers every event
stored so far; the reader logs in first, as an attendant made in the
lot's store before the bridge starts. Rounds alternate without / with / with / without the page,
twice, so that drift in a shared machine falls on both alike; the cost
compares the median events/s of each kind of round, and the p99 of all the
fee answers of each kind pooled (one round's p99 rests on a few answers and
moves by 10 % between identical rounds). Target: the page costs under 10 %
(events/s down, fee p99 up)."""
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

import paho.mqtt.client as mqtt

from parkgate_tools.bench.bridge import GATES, Worker, check_stored_once, wait_live
from parkgate_tools.lot.store import open_store
from parkgate_tools.lot.web.auth import hash_password
from parkgate_tools.lot.web.client import WebClient
from parkgate_tools.sim.broker import Broker
from parkgate_tools.sim.loadgen import START_TIME, LoadGen

EVENTS_PER_GATE = 1000   # 200,000 events a round: about 10 s of load
FEE_RATE = 150.0         # fee queries a second, from one exit gate
DAY = time.strftime("%Y-%m-%d", time.gmtime(START_TIME + 8 * 3600))   # the load's local day
TARGET = 0.10
ROUNDS = (False, True, True, False) * 2
READER, READER_PASSWORD = "bench", "page benchmark reader"   # an attendant of each round's lot


class FeeProber:
    """An exit gate of the lot asking a fee every 1/rate seconds on its own
    MQTT client; latencies() are the seconds from query to answer."""

    def __init__(self, broker, lot, rate=FEE_RATE):
        self.prefix = "pg/%s/probe-out/" % lot
        self.rate = rate
        self._sent, self._latency = {}, []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-fee-probe")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(self.prefix + "down/fee", 0)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._ready.set()
        self.client.on_message = self._on_answer
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise RuntimeError("fee probe did not subscribe")
        self._thread = threading.Thread(target=self._ask, daemon=True)
        self._thread.start()

    def _ask(self):
        request = 0
        next_at = time.perf_counter()
        while not self._stop.is_set():
            request += 1
            plate = "粤Z%05d" % (request % 100000)
            self._sent[request] = time.perf_counter()
            self.client.publish(self.prefix + "up/fee", json.dumps(
                {"r": request, "p": plate, "c": 0, "t": START_TIME + 7200, "et": START_TIME}),
                qos=0)
            next_at += 1.0 / self.rate
            self._stop.wait(max(0.0, next_at - time.perf_counter()))

    def _on_answer(self, client, userdata, message):
        at = time.perf_counter()
        sent = self._sent.get(json.loads(message.payload).get("r"))
        if sent is not None:
            self._latency.append(at - sent)

    def stop(self):
        """Stop asking; returns (latencies in seconds, queries unanswered)."""
        self._stop.set()
        self._thread.join()
        time.sleep(0.5)        # the last answers
        self.client.disconnect()
        self.client.loop_stop()
        return list(self._latency), len(self._sent) - len(self._latency)


class PageReader:
    """A client logged in as READER reading path of the page at base_url
    back to back in a thread until stop()."""

    def __init__(self, base_url, path):
        self.path, self.reads, self.seconds, self.errors = path, 0, 0.0, 0
        self.client = WebClient(base_url)
        if self.client.login(READER, READER_PASSWORD) != 200:
            raise RuntimeError("the page benchmark could not log in as %s" % READER)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                status = self.client.get(self.path, timeout=60)[0]
            except OSError:
                status = None
            if status != 200:
                self.errors += 1
                continue
            self.seconds += time.perf_counter() - t0
            self.reads += 1

    def stop(self):
        """Stop; returns (reads, mean seconds a read). RuntimeError if a read failed."""
        self._stop.set()
        self._thread.join(60)
        if self.errors:
            raise RuntimeError("%d page reads failed" % self.errors)
        return self.reads, self.seconds / self.reads if self.reads else 0.0


def p99(values):
    """The 99th percentile of values (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else float("nan")


def one_round(broker, workdir, index, read_page):
    """{"events_per_s", "fee_p99_s", "fees", "unanswered", "reads", "read_s"} of one load."""
    lot = "pc%d" % index
    db = os.path.join(workdir, lot + ".sqlite")
    store = open_store(db, lot)         # the page's reader, made before the bridge starts
    try:
        store.add_user(READER, "attendant", hash_password(READER_PASSWORD))
    finally:
        store.close()
    worker = Worker(lot, broker, db, index, extra=["--http", "0"])
    reader = prober = None
    try:
        wait_live([worker])
        deadline = time.monotonic() + 10
        while not worker.logged("operator page: ") and time.monotonic() < deadline:
            time.sleep(0.05)
        line = next(line for line in worker.lines if "operator page: " in line)
        url = line.split("operator page: ", 1)[1].strip()
        prober = FeeProber(broker, lot)
        reader = PageReader(url, "?day=" + DAY) if read_page else None
        report = LoadGen(broker.host, broker.port, lot, gates=GATES,
                         events_per_gate=EVENTS_PER_GATE, prefix="c").run(timeout=120)
    finally:
        latencies, unanswered = prober.stop() if prober else ([], 0)
        reads, read_s = reader.stop() if reader else (0, 0.0)
        worker.stop()
    check_stored_once(db, report, lot)
    return {"events_per_s": report["events_per_s"], "fee_p99_s": p99(latencies),
            "latencies": latencies, "fees": len(latencies), "unanswered": unanswered, "reads": reads, "read_s": read_s}


def main():
    """Measure, print each round and the cost; 0 if the page costs under TARGET."""
    workdir = tempfile.mkdtemp(prefix="parkgate-bench-page-")
    broker = Broker(os.path.join(workdir, "broker"))
    broker.start()
    try:
        t0 = time.monotonic()
        rounds = [(read, one_round(broker, workdir, i, read)) for i, read in enumerate(ROUNDS)]
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print("%d simulated gates x %d events, %.0f fee queries/s, page of %s read back to back"
          % (GATES, EVENTS_PER_GATE, FEE_RATE, DAY))
    print("%-22s %10s %12s %8s %8s %12s" % ("round", "events/s", "fee p99 ms", "fees",
                                            "reads", "ms a read"))
    for read, r in rounds:
        print("%-22s %10.0f %12.1f %8d %8d %12.0f" % (
            "page read in a loop" if read else "page not read", r["events_per_s"],
            r["fee_p99_s"] * 1000, r["fees"], r["reads"], r["read_s"] * 1000))
    by_kind = {read: {"events_per_s": statistics.median(
                       r["events_per_s"] for was, r in rounds if was == read),
                   "fee_p99_s": p99([t for was, r in rounds if was == read
                                     for t in r["latencies"]])} for read in (False, True)}
    rate_cost = 1 - by_kind[True]["events_per_s"] / by_kind[False]["events_per_s"]
    p99_cost = by_kind[True]["fee_p99_s"] / by_kind[False]["fee_p99_s"] - 1
    ok = rate_cost < TARGET and p99_cost < TARGET
    print("page cost: events/s %+.1f %%, fee p99 %+.1f %% (%.0f -> %.0f events/s, "
          "%.1f -> %.1f ms; target < %.0f %%): %s; bench took %.0f s" % (
              -rate_cost * 100, p99_cost * 100, by_kind[False]["events_per_s"],
              by_kind[True]["events_per_s"], by_kind[False]["fee_p99_s"] * 1000,
              by_kind[True]["fee_p99_s"] * 1000, TARGET * 100, "ok" if ok else "OVER TARGET",
              time.monotonic() - t0))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
