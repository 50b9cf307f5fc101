"""Power cuts at every kind of flash operation of a 1,000-event journal
workload (tests/mp/journal_powercut.py), under the MicroPython unix port
with the gate's heap, in both tear modes of the emulated flash:

- TORN_NONE: the cut operation lands whole, every later one fails;
- TORN_PARTIAL: the cut operation lands partly (a program a prefix of its
  bytes, an erase a prefix of the block or random bits).

After each cut the journal is remounted on the same flash and must hold
every event whose append returned, exactly once and intact, accept no
corrupt record, continue its seqs above every seq it returned and take a
new append. The workload also writes checkpoints of the cars-inside table
in idle moments, as the gate does, so cuts land inside checkpoint writes
too; after each cut the table rebuilt from the newest complete checkpoint
and the records after it must equal a replay of every durable record (or,
when no checkpoint survived once records were reclaimed, a replay of the
ring). The clean run of the workload also checks that 1,000 events fill
(JournalFull during an offline stretch) and wrap an 8-block region, and
that its reboots rebuild the table from checkpoints.

`make test` draws 200 cut points per mode from a fixed seed (printed;
PARKGATE_POWERCUT_SEED picks another); PARKGATE_NIGHTLY=1 tries every one.
"""
import os
import re
import subprocess
import sys

import pytest

from parkgate_tools import runtime

MP_DIR = os.path.join(runtime.ROOT, "tests", "mp")
SCRIPT = os.path.join(MP_DIR, "journal_powercut.py")
SEED = int(os.environ.get("PARKGATE_POWERCUT_SEED", "20240611"))
NIGHTLY = os.environ.get("PARKGATE_NIGHTLY") == "1"
SAMPLE = 0 if NIGHTLY else 200
SUMMARY = re.compile(r"powercut mode=(\w+) seed=(\d+) ops=(\d+) points=(\d+) failures=(\d+) "
                     r"full=(\d+) erases=(\d+) checkpoints=(\d+) cp_cuts=(\d+) "
                     r"restored=(\d+) fallbacks=(\d+)")


def _summary(out):
    found = SUMMARY.search(out)
    assert found, out
    return [int(v) for v in found.groups()[2:]]


@pytest.mark.parametrize("mode", ["none", "partial"])
def test_power_cuts_under_micropython(mode):
    print("power-cut campaign: mode=%s seed=%d points=%s" % (mode, SEED, SAMPLE or "all"))
    proc = subprocess.run(runtime.micropython_argv(SCRIPT, mode, str(SAMPLE), str(SEED)),
                          env=runtime.micropython_env(),
                          capture_output=True, text=True, timeout=1800)
    out = proc.stdout + proc.stderr
    print(out[-4000:])
    assert proc.returncode == 0, "seed %d:\n%s" % (SEED, out[-4000:])
    ops, points, failures, full, erases, checkpoints, cp_cuts, restored, fallbacks = _summary(out)
    assert failures == 0
    assert points == (SAMPLE if SAMPLE and SAMPLE < ops else ops)
    assert ops > 1000 and full > 0 and erases >= 3 * 8
    # Cuts landed inside checkpoint writes, and most remounts found a
    # checkpoint (the rest: the ring full of unacknowledged records).
    assert checkpoints >= 10 and cp_cuts > 0 and restored > points * 3 // 4


def test_power_cuts_on_cpython(capsys):
    # The same campaign on CPython (fewer points): the core behaves alike.
    sys.path[:0] = [MP_DIR]
    try:
        import journal_powercut
    finally:
        sys.path.remove(MP_DIR)
    failures = journal_powercut.run("partial", 60, SEED) + journal_powercut.run("none", 60, SEED)
    out = capsys.readouterr().out
    assert failures == 0, out
    assert _summary(out)[2] == 0
