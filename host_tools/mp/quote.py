# Quotes stays under MicroPython with the firmware's tariff engine: used by
# `parkgate tariff quote --runtime micropython`, by the CPython/MicroPython
# comparison in tests/test_tariff_properties.py and by bench_tariff.
#
# usage: micropython quote.py [TABLE.json] < requests > replies
# One JSON object per line in, one JSON reply per line out, in order:
#   {"table": {...}}        load a table     -> {"version": N, "digest": "..."}
#   {"table_path": "x.json"}  the same, from a file (streamed: less heap)
#   {"entry": E or null, "exit": X, "colour": C, "member": false}
#                           quote (unix s)   -> parkgate_host.tariffs.quote_dict()
#   {"bench": {"entry": E, "exit": X, "colour": C, "n": N}}
#                           time N quotes    -> {"us": microseconds per quote}
# A request that fails replies {"error": "<field>: <message>"}.
import gc
import json
import sys

from parkgate import tariff
from parkgate_host.tariffs import quote_dict

current = None
if hasattr(gc, "threshold"):
    gc.threshold(8192)  # collect often, as a gate does: less fragmentation


def handle(req):
    global current
    if "table" in req or "table_path" in req:
        current = None
        doc = req.get("table")
        if doc is None:
            with open(req["table_path"]) as f:
                doc = json.load(f)
        current = tariff.load(doc)
        return {"version": current.version, "digest": current.digest}
    if current is None:
        return {"error": "table: no table loaded"}
    if "bench" in req:
        return bench(req["bench"])
    colour = req.get("colour", 0)
    if req.get("entry") is None:
        return quote_dict(tariff.quote_no_entry(current, req["exit"], colour))
    return quote_dict(tariff.quote(current, req["entry"], req["exit"], colour,
                                   req.get("member", False)))


def bench(b):
    import time
    n = b.get("n", 100)
    entry, exit, colour = b["entry"], b["exit"], b.get("colour", 0)
    tariff.quote(current, entry, exit, colour)  # warm up
    t0 = time.ticks_us()
    for _ in range(n):
        tariff.quote(current, entry, exit, colour)
    return {"us": time.ticks_diff(time.ticks_us(), t0) / n, "n": n}


def reply(read):
    try:
        return handle(read())
    except ValueError as exc:  # TariffError is a ValueError; so is bad JSON
        return {"error": str(exc)}


def main():
    if len(sys.argv) > 1:
        print(json.dumps(reply(lambda: {"table_path": sys.argv[1]})))
    while True:
        line = sys.stdin.readline()
        if not line:
            break
        if line.strip():
            print(json.dumps(reply(lambda: json.loads(line))))


main()
