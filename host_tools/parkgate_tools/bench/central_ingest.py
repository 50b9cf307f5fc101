"""Benchmark (must-show 3 of #15): central ingest in events/s on PostgreSQL
through the real HTTP server (Starlette under uvicorn, central/server.py).

LOTS lots post at once, each from its own thread with its own token,
EVENTS_PER_LOT events (entries and exits, every gate and journal id the
same in each lot, so only the lot tells them apart) in batches of BATCH, the
way lot/forwarder.py sends them (JSON bodies built before the clock starts).
Then every lot sends its first batch again (stored 0: exactly once), and
the store must hold LOTS * EVENTS_PER_LOT rows, EVENTS_PER_LOT per lot.
The baseline is one lot posting alone, the same batches.

`python -m parkgate_tools.bench.central_ingest` (or `make bench`)."""
import json
import threading
import time
import urllib.request

from parkgate import record
from parkgate_tools.central.server import CentralServer
from parkgate_tools.sim.pgserver import PgServer

LOTS = 4
EVENTS_PER_LOT = 25000
BATCH = 500
TARGET = 5000      # events/s, all lots together
T0 = 1795564800


def batches(count=EVENTS_PER_LOT, batch=BATCH):
    """JSON bodies of count events: entry then exit per plate, two gates."""
    bodies = []
    for start in range(0, count, batch):
        wires = []
        for n in range(start, min(count, start + batch)):
            plate, t = "粤B%05d" % (n // 2), T0 + n
            if n % 2 == 0:
                event = record.Event(record.KIND_ENTRY, t, 5, plate, 0, 90, seq=n // 2 + 1)
                gate = "in-1"
            else:
                event = record.Event(record.KIND_EXIT, t, 5, plate, 0, 90, 0, 500,
                                     record.FEE_ONLINE, 1, t - 1, seq=n // 2 + 1)
                gate = "out-1"
            wires.append(dict(record.to_wire(event), g=gate, j=7))
        bodies.append(json.dumps({"events": wires, "backlog": count - start - len(wires)},
                                 ensure_ascii=False).encode())
    return bodies


def post(url, token, body):
    """The central server's answer to one POST, as a dict."""
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "Authorization": "Bearer " + token})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def ingest(central, lots, bodies):
    """Every lot posts every body from its own thread; seconds taken."""
    errors = []

    def send(lot):
        url = central.url + "/v1/lots/%s/events" % lot
        try:
            for body in bodies:
                post(url, central.tokens[lot], body)
        except Exception as exc:   # reported below: a bench with lost posts is void
            errors.append("%s: %s" % (lot, exc))
    threads = [threading.Thread(target=send, args=(lot,)) for lot in lots]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - began
    if errors:
        raise RuntimeError("posting failed: %s" % "; ".join(errors))
    return took


def measure(pg, dbname, lots, bodies):
    """(events/s, seconds) of lots posting bodies to a fresh database."""
    central = CentralServer(pg.create_database(dbname),
                            tokens={lot: "token-" + lot for lot in lots}).start()
    try:
        took = ingest(central, lots, bodies)
        per_lot = sum(len(json.loads(body)["events"]) for body in bodies)
        for lot in lots:
            again = post(central.url + "/v1/lots/%s/events" % lot, central.tokens[lot], bodies[0])
            stored = central.store.summary(lot)["events"]
            if again["stored"] != 0 or stored != per_lot:
                raise RuntimeError("lot %s: %d stored of %d, %d stored again" % (
                    lot, stored, per_lot, again["stored"]))
        return per_lot * len(lots) / took, took
    finally:
        central.close()


def main():
    bodies = batches()
    with PgServer() as pg:
        alone, alone_s = measure(pg, "bench_central_one", ["lot-1"], bodies)
        lots = ["lot-%d" % (i + 1) for i in range(LOTS)]
        together, together_s = measure(pg, "bench_central_many", lots, bodies)
    print("central ingest on PostgreSQL through HTTP, batches of %d, every event once:" % BATCH)
    print("  1 lot  x %d events: %7.0f events/s (%.1f s)" % (EVENTS_PER_LOT, alone, alone_s))
    print("  %d lots x %d events at once: %7.0f events/s (%.1f s); target >= %d: %s" % (
        LOTS, EVENTS_PER_LOT, together, together_s, TARGET,
        "met" if together >= TARGET else "NOT met"))
    print("  ratio %d lots / 1 lot: %.2f" % (LOTS, together / alone))
    return 0


if __name__ == "__main__":
    main()
