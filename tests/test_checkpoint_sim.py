"""Checkpoints of the cars-inside table on the simulated gate (the 32-bit
image, 64 KiB heap): a gate boots from a journal holding checkpoints,
rebuilds the table from the newest, sends the lot bridge its events and
nothing else, and the field tool's journal reader lists events only."""
import json
import os
import subprocess

from parkgate_tools import runtime
from parkgate_tools.field.transport import program
from parkgate_tools.bench.boot import fill

LOT = "t"
EVENTS = 1250


def run_program(gate, name, args=None):
    """A field tool program run on the gate's own image against its folder,
    as mpremote would run it on the board; returns its PG> objects."""
    path = os.path.join(gate.dir, "program.py")
    with open(path, "w") as f:
        f.write(program(name, args))
    env = runtime.micropython_env()
    env["PARKGATE_SIM_DIR"] = gate.dir
    env["PARKGATE_SIM_FLASH_STALL"] = "0,0"
    proc = subprocess.run(runtime.micropython_argv(path), env=env, capture_output=True,
                          text=True, timeout=120, cwd=gate.dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PG!" not in proc.stdout, proc.stdout
    return [json.loads(line[3:]) for line in proc.stdout.splitlines() if line.startswith("PG>")]


def test_a_gate_boots_from_its_newest_checkpoint_and_uplinks_only_events(sim_lot):
    lot = sim_lot(LOT, rate=1, site={})
    gate = lot.gate("g-in", "in", boot=False)
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
    journals = lot.wait_stored("g-in", EVENTS, 60)
    assert journals and journals[0]["count"] == EVENTS and journals[0]["missing"] == 0
    assert journals[0]["max_seq"] == EVENTS
    summary = lot.bridge.store.summary()
    assert summary["rows"] == summary["identities"] == EVENTS
    assert not gate.lines(r" ERROR ")
    gate.kill()
    # The field tool's journal reader, on the board's own code: events only.
    rows = run_program(gate, "journal")
    records = [r for r in rows if "s" in r]
    assert rows[-1] == {"end": EVENTS} and len(records) == EVENTS
    assert [r["s"] for r in records] == list(range(1, EVENTS + 1))
    assert not [r for r in records if "error" in r]
