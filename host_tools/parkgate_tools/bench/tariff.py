"""Tariff engine timing: one quote for a 1-hour, a 1-day and a 90-day stay,
under MicroPython (timed inside it with time.ticks_us, at the gate's heap)
and on CPython, and the ratio 90-day / 1-day (target: under 20x; the work
grows with the number of distinct days, not with minutes)."""
import json
import os
import time

from parkgate import tariff
from parkgate_tools import runtime
from parkgate_tools.field import tariff_cli

TABLES = ("default.json", "shenzhen_onstreet_class1.json", "mixed_city.json")
ENTRY = 1772413200  # 2026-03-02T09:00 UTC+8
STAYS = (("1 hour", 3600), ("1 day", 86400), ("90 days", 90 * 86400 + 1800))
TARGET = 20.0


def _cpython_us(tf, entry, exit, n):
    tariff.quote(tf, entry, exit)
    t0 = time.perf_counter()
    for _ in range(n):
        tariff.quote(tf, entry, exit)
    return (time.perf_counter() - t0) * 1e6 / n


def measure():
    """{(table, stay): (micropython us, cpython us)} per quote."""
    requests = []
    keys = []
    docs = {}
    for name in TABLES:
        path = os.path.join(runtime.FIRMWARE, "tariffs", name)
        with open(path) as f:
            docs[name] = json.load(f)
        requests.append({"table_path": path})
        keys.append(None)
        for label, length in STAYS:
            requests.append({"bench": {"entry": ENTRY, "exit": ENTRY + length, "n": 200}})
            keys.append((name, label))
    replies = tariff_cli.quote_on_micropython(None, requests)
    out = {}
    for key, req, reply in zip(keys, requests, replies):
        if key is None:
            if "error" in reply:
                raise RuntimeError(reply["error"])
            continue
        tf = tariff.load(docs[key[0]])
        b = req["bench"]
        out[key] = (reply["us"], _cpython_us(tf, b["entry"], b["exit"], 2000))
    return out


def main():
    results = measure()
    print("%-32s %-8s %14s %12s" % ("table", "stay", "micropython us", "cpython us"))
    for name in TABLES:
        for label, _ in STAYS:
            mp, cp = results[(name, label)]
            print("%-32s %-8s %14.1f %12.1f" % (name, label, mp, cp))
    worst = 0.0
    for name in TABLES:
        mp = results[(name, "90 days")][0] / results[(name, "1 day")][0]
        cp = results[(name, "90 days")][1] / results[(name, "1 day")][1]
        worst = max(worst, mp)
        print("ratio 90 days / 1 day  %-32s micropython %5.1fx  cpython %5.1fx" % (name, mp, cp))
    print("worst micropython ratio %.1fx (target < %.0fx): %s"
          % (worst, TARGET, "ok" if worst < TARGET else "OVER TARGET"))
    return 0 if worst < TARGET else 1


if __name__ == "__main__":
    main()
