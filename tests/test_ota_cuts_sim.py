"""Power cuts during an update over the air (issue #16, must-show 3): the
gate's power is cut (its process killed, RTC lost) at random points of the
download and of the switch-over, on the gate's own 32-bit image with two
real image slots. The download resumes from the last written block, no
half-written image is ever booted (every boot is the whole old image or
the whole new one), and the journal keeps every car exactly once."""
import hashlib
import random
import time

import pytest

from parkgate_tools.sim.updates import UpdateLot, booted_images, image, slot_states

SITE = {"backoff_max_ms": 1000, "ota_block_gap_ms": 0, "probation_s": 60}
WAIT_S = 240
RESUME = r"OTA resume version=2 block=(\d+)"


def plates(first, count):
    return ["京B%05d" % n for n in range(first, first + count)]


def journaled(gate):
    return [e["plate"] for e in gate.events() if e["k"] == "in"]


def a_car(gate, plate):
    gate.send_plate(plate)
    gate.wait_for(lambda: plate in journaled(gate), 20, "car %s journaled" % plate)


def sha16(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


@pytest.mark.parametrize("seed", [16, 61])
def test_power_cuts_in_the_download_and_the_switch_lose_nothing(tmp_path, seed):
    rng = random.Random(seed)
    lot = UpdateLot(str(tmp_path), site=dict(SITE), rate=60)
    try:
        gate = lot.gate("in-1", "in")
        gate.wait_line(r"LINK up", 30)
        old, new = image(), image(2)
        lot.add(new, 2)
        lot.plan.offer(["in-1"], 2, "manual")
        gate.wait_line(r"OTA offer version=2 ", 30)
        sent = []
        resumed = []
        for cut in range(3):                 # cuts in the download
            time.sleep(rng.uniform(1.0, 8.0))
            if gate.lines(r"OTA staged version=2"):
                break
            sent.append(plates(len(sent) + 1, 1)[0])
            a_car(gate, sent[-1])
            gate.kill()
            gate.start()
            gate.wait_line(RESUME, 60, count=len(resumed) + 1)
            resumed = [int(line.rsplit("=", 1)[1]) for line in gate.lines(RESUME)]
        assert resumed == sorted(resumed), "the download went back: %r" % resumed
        gate.wait_line(r"OTA staged version=2", WAIT_S)
        lot.plan.reboot(["in-1"], "now")
        gate.wait_line(r"OTA reboot version=2", 30)
        # A cut somewhere in the switch: the reset, the boot, the probation.
        time.sleep(rng.uniform(0.0, 1.5))
        gate.kill()
        gate.start()
        gate.wait_for(lambda: gate.lines(r"OTA valid version=2") or
                      gate.lines(r"OTA rolled back version=2"), 90, "the switch's outcome")
        states, boot, run = slot_states(gate)
        assert states[run] == "VALID"
        whole = {sha16(old), sha16(new)}
        for label, state, size, digest in booted_images(gate):
            assert digest in whole, "booted %s %s: not a whole image" % (label, state)
        sent.append(plates(len(sent) + 1, 1)[0])
        a_car(gate, sent[-1])
        assert journaled(gate) == sent
        stored = lot.sim.wait_stored("in-1", len(sent), timeout=60)
        assert len(stored) == 1 and stored[0]["count"] == len(sent)
    finally:
        lot.stop()
