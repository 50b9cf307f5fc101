"""Chaos against real processes: 2,000 events over four gates while the
broker is killed and restarted, the bridge (a separate process) is killed and
restarted, and one gate loses its network for simulated minutes. Afterwards
the database holds every event exactly once and every backlog is empty.
Run with several seeds; the seed is in every failure message
(PARKGATE_CHAOS_SEEDS=1,2,3 picks others)."""
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from parkgate_tools.sim.gate import DEFAULT_TARIFF, SimClock, SimGate
from parkgate_tools.sim.lot import START
from parkgate_tools.sim.netproxy import NetProxy

LOT = "chaos"
SEEDS = [int(s) for s in os.environ.get("PARKGATE_CHAOS_SEEDS", "11,12").split(",")]
CARS = 1000
DRIVE_S = 50.0


class BridgeProcess:
    """`parkgate bridge` in its own process, so it can be killed."""

    def __init__(self, broker, db, log_path):
        self.argv = [sys.executable, "-m", "parkgate_tools.cli", "bridge", "--lot", LOT,
                     "--broker", "%s:%d" % (broker.host, broker.port), "--db", db,
                     "--tariff", DEFAULT_TARIFF]
        self.log_path = log_path
        self.proc = None

    def start(self):
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def stored(db):
    if not os.path.exists(db):
        return []
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=5)
    try:
        return con.execute("SELECT gate, jid, seq, kind, plate FROM events").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def schedule(rng):
    """(time, action, args) sorted by time: cars in and out, and the chaos."""
    actions = []
    for i in range(CARS):
        plate = "京%s%05d" % ("ABCDEFGH"[i % 8], i)
        enter_at = rng.uniform(0.0, DRIVE_S - 8.0)
        exit_at = enter_at + rng.uniform(2.0, 8.0)
        actions.append((enter_at, "car", (rng.choice(("in-1", "in-2")), plate)))
        actions.append((exit_at, "car", (rng.choice(("out-1", "out-2")), plate)))
    broker_down = rng.uniform(6.0, 14.0)
    actions.append((broker_down, "broker_kill", ()))
    actions.append((broker_down + rng.uniform(2.0, 5.0), "broker_start", ()))
    bridge_down = rng.uniform(22.0, 30.0)
    actions.append((bridge_down, "bridge_kill", ()))
    actions.append((bridge_down + rng.uniform(2.0, 5.0), "bridge_start", ()))
    cut_gate = rng.choice(("in-1", "in-2", "out-1", "out-2"))
    cut_at = rng.uniform(10.0, 30.0)
    mode = rng.choice(("cut", "blackhole"))
    actions.append((cut_at, mode, (cut_gate,)))
    actions.append((cut_at + rng.uniform(8.0, 14.0), "restore", (cut_gate,)))
    actions.sort(key=lambda a: a[0])
    return actions


@pytest.mark.parametrize("seed", SEEDS)
def test_every_event_stored_exactly_once_through_chaos(tmp_path, broker, seed):
    rng = random.Random(seed)
    work = str(tmp_path)
    db = os.path.join(work, "lot.sqlite")
    bridge = BridgeProcess(broker, db, os.path.join(work, "bridge.log"))
    bridge.start()
    clock = SimClock(START, 60)   # 10 s of network loss = 10 min of gate time
    proxies = {}
    gates = {}
    try:
        for name in ("in-1", "in-2", "out-1", "out-2"):
            proxies[name] = NetProxy(broker.host, broker.port)
            gate = SimGate(work, name, LOT, "in" if name.startswith("in") else "out",
                           proxies[name].port, clock,
                           # exits open at once (fees owed) and the barrier's
                           # pulse is short: this test is about sync, at ten
                           # cars a second per lane
                           site_extra={"backoff_max_ms": 2000, "keepalive_s": 6,
                                       "exit_policy": "owed", "relay_pulse_ms": 20})
            gate.provision()
            gates[name] = gate.start()
        for gate in gates.values():
            gate.wait_line(r"LINK up", 15)
        log = []
        sent = dict.fromkeys(gates, 0)
        plates = {name: [] for name in gates}
        start = time.time()
        for at, action, args in schedule(rng):
            delay = start + at - time.time()
            if delay > 0:
                time.sleep(delay)
            if action == "car":
                gates[args[0]].send_plate(args[1])
                sent[args[0]] += 1
                plates[args[0]].append(args[1])
                continue
            log.append("+%.1f %s %s" % (time.time() - start, action, " ".join(args)))
            if action == "broker_kill":
                broker.kill()
            elif action == "broker_start":
                broker.start()
            elif action == "bridge_kill":
                bridge.kill()
            elif action == "bridge_start":
                bridge.start()
            elif action == "cut":
                proxies[args[0]].cut()
            elif action == "blackhole":
                proxies[args[0]].blackhole()
            elif action == "restore":
                proxies[args[0]].restore()
        what = "seed %d, chaos: %s" % (seed, "; ".join(log))
        # An exit lane holds 8 cars behind the one at the barrier; while its
        # link is blackholed each exit waits out the fee timeout, and the
        # camera reads the cars it dropped again, as a camera does.
        for name, gate in gates.items():
            gate.read_until_journaled(plates[name], 120)

        def last_seq(gate):
            events = gate.events()
            return max(e["seq"] for e in events) if events else 0

        deadline = time.time() + 120
        while True:
            rows = stored(db)
            done = all(
                last_seq(gate) >= sent[name]
                and sum(1 for r in rows if r[0] == name) >= last_seq(gate)
                and gate.lines(r"ACK upto=%d$" % last_seq(gate))
                for name, gate in gates.items())
            if done or time.time() > deadline:
                break
            time.sleep(0.5)
        rows = stored(db)
        identities = {(r[0], r[1], r[2]) for r in rows}
        assert len(rows) == len(identities), what
        assert len(rows) == 2 * CARS, "%d stored of %d (%s)" % (len(rows), 2 * CARS, what)
        for name, gate in gates.items():
            seqs = sorted(r[2] for r in rows if r[0] == name)
            jids = {r[1] for r in rows if r[0] == name}
            assert len(jids) == 1, what
            assert seqs == list(range(1, last_seq(gate) + 1)), "%s: %s" % (name, what)
            assert gate.lines(r"ACK upto=%d$" % last_seq(gate)), "%s backlog: %s" % (name, what)
            assert gate.relay_openings() == last_seq(gate), "%s: %s" % (name, what)
        plates_in = sorted(r[4] for r in rows if r[3] == "in")
        plates_out = sorted(r[4] for r in rows if r[3] == "out")
        assert plates_in == plates_out and len(set(plates_in)) == CARS, what
    finally:
        for gate in gates.values():
            gate.stop()
        for proxy in proxies.values():
            proxy.close()
        bridge.stop()
