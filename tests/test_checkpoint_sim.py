"""Checkpoints of the cars-inside table on the simulated gate (the 32-bit
image, 64 KiB heap): a gate boots from a journal holding checkpoints,
rebuilds the table from the newest, sends the lot bridge its events and
nothing else, and the field tool's journal reader lists events only."""
import json
import os
import subprocess
import time

from parkgate_tools import runtime
from parkgate_tools.field import fieldtool
from parkgate_tools.bench.boot import fill
from parkgate_tools.lot.bridge import Bridge
from parkgate_tools.sim.broker import Broker
from parkgate_tools.sim.gate import DEFAULT_TARIFF, SimClock, SimGate

LOT = "t"
START = 1795564800
EVENTS = 1250


def run_program(gate, name, args=None):
    """A field tool program run on the gate's own image against its folder,
    as mpremote would run it on the board; returns its PG> objects."""
    path = os.path.join(gate.dir, "program.py")
    with open(path, "w") as f:
        f.write(fieldtool.program(name, args))
    env = runtime.micropython_env()
    env["PARKGATE_SIM_DIR"] = gate.dir
    env["PARKGATE_SIM_FLASH_STALL"] = "0,0"
    proc = subprocess.run(runtime.micropython_argv(path), env=env, capture_output=True,
                          text=True, timeout=120, cwd=gate.dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PG!" not in proc.stdout, proc.stdout
    return [json.loads(line[3:]) for line in proc.stdout.splitlines() if line.startswith("PG>")]


def test_a_gate_boots_from_its_newest_checkpoint_and_uplinks_only_events(tmp_path):
    broker = Broker(str(tmp_path / "broker"))
    broker.start()
    clock = SimClock(START, 1)
    bridge = Bridge(LOT, broker.host, broker.port, str(tmp_path / "lot.sqlite"),
                    DEFAULT_TARIFF, clock=clock.now)
    bridge.start()
    gate = SimGate(str(tmp_path), "g-in", LOT, "in", broker.port, clock)
    try:
        gate.provision()
        # Events the bridge has not acknowledged yet, with a checkpoint
        # every 100 of them among them.
        filled = fill(os.path.join(gate.dir, "flash.img"), True, inside=60, every=100,
                      events=EVENTS, ack=False)
        assert filled["records"] == EVENTS and filled["chunks"] >= 10
        gate.start()
        boot = gate.lines(r" BOOT ")[-1]
        assert gate.lines(r" CHECKPOINT loaded cover=")
        replayed = int(boot.split("replayed=")[1].split()[0])
        assert 0 < replayed < 100
        assert "inside=%d " % filled["table"] in boot
        deadline = time.time() + 60
        while time.time() < deadline:
            journals = [j for j in bridge.store.summary()["journals"] if j["gate"] == "g-in"]
            if journals and journals[-1]["count"] >= EVENTS:
                break
            time.sleep(0.1)
        assert journals and journals[0]["count"] == EVENTS and journals[0]["missing"] == 0
        assert journals[0]["max_seq"] == EVENTS
        summary = bridge.store.summary()
        assert summary["rows"] == summary["identities"] == EVENTS
        assert not gate.lines(r" ERROR ")
        gate.kill()
        # The field tool's journal reader, on the board's own code: events only.
        rows = run_program(gate, "journal")
        records = [r for r in rows if "s" in r]
        assert rows[-1] == {"end": EVENTS} and len(records) == EVENTS
        assert [r["s"] for r in records] == list(range(1, EVENTS + 1))
        assert not [r for r in records if "error" in r]
    finally:
        gate.stop()
        bridge.stop()
        broker.stop()
