"""Updates over the air, end to end (issue #16, must-shows 1 and 2): a lot
with its image server (parkgate_tools.sim.updates.UpdateLot), a gate on its
own 32-bit image in two slots, real images built as other versions, the
flash stall model on. The gate downloads while cars pass, reboots into the
new version when the operator's plan says, proves itself and marks it
valid; a broken image (crashing at boot, or never linking) comes back on
the old version by itself, reports the rollback, and no event is lost."""
import threading
import time

import pytest

from parkgate_tools.sim.updates import UpdateLot, booted_images, image, slot_states

# relay_pulse_ms 300 and a car every 1.2 s: the lane is idle between cars
# (chunks are taken only then: a car every 0.5 s with the default 800 ms
# pulse keeps it busy, and the download waits, as it should).
SITE = {"backoff_max_ms": 1000, "ota_block_gap_ms": 0, "probation_s": 60, "relay_pulse_ms": 300}
WAIT_S = 240                      # a download of the ~600 KB image with the stall model


def plates(first, count):
    return ["京A%05d" % n for n in range(first, first + count)]


class Cars(threading.Thread):
    """Cars at the gate's camera, one every `every` seconds, until stop()."""

    def __init__(self, gate, first, every=1.2):
        super().__init__(daemon=True)
        self.gate, self.first, self.every = gate, first, every
        self.sent = []
        self._halt = threading.Event()

    def run(self):
        n = self.first
        while not self._halt.is_set():
            plate = plates(n, 1)[0]
            self.gate.send_plate(plate)
            self.sent.append(plate)
            n += 1
            self._halt.wait(self.every)

    def stop(self):
        self._halt.set()
        self.join(10)
        return self.sent


def journaled(gate):
    return [e["plate"] for e in gate.events() if e["k"] == "in"]


def wait_plan(lot, gate, state, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        plan = lot.plan.plan(gate)
        if plan is not None and plan["state"] == state:
            return plan
        time.sleep(0.2)
    raise AssertionError("plan of %s: %r, not %s" % (gate, lot.plan.plan(gate), state))


@pytest.fixture
def update_lot(tmp_path):
    made = []

    def make(**options):
        made.append(UpdateLot(str(tmp_path), site=dict(SITE), rate=60, **options))
        return made[-1]
    yield make
    for lot in made:
        lot.stop()


def test_a_gate_takes_the_next_version_while_cars_pass_and_reboots_at_the_quiet_hour(update_lot):
    lot = update_lot()
    gate = lot.gate("in-1", "in")
    gate.wait_line(r"LINK up", 30)
    lot.add(image(2), 2)
    lot.plan.offer(["in-1"], 2, "manual")
    gate.wait_line(r"OTA offer version=2 ", 30)
    cars = Cars(gate, 1)
    cars.start()
    try:
        gate.wait_line(r"OTA staged version=2", WAIT_S)
    finally:
        sent = cars.stop()
    assert len(sent) >= 10, "cars during the download: %d" % len(sent)
    gate.wait_for(lambda: set(journaled(gate)) >= set(sent), 30, "every car journaled")
    assert journaled(gate) == sent              # each once, in order
    gate.wait_for(lambda: gate.relay_openings() >= len(sent), 10, "a relay opening per car")
    assert gate.relay_openings() == len(sent)
    # Staged: nothing reboots it until the plan says so.
    wait_plan(lot, "in-1", "staged")
    time.sleep(2)
    assert not gate.lines(r"OTA reboot version=2")
    assert slot_states(gate)[2] == 0
    # The quiet hour: five lot minutes from now (the lot's clock runs at 60x).
    local = lot.sim.clock.now() + 480 * 60 + 5 * 60
    quiet = time.strftime("%H:%M", time.gmtime(local))
    lot.plan.reboot(["in-1"], quiet)
    time.sleep(2)                                # two lot minutes: not yet
    assert not gate.lines(r"OTA reboot version=2")
    gate.wait_line(r"OTA reboot version=2", 30)
    gate.wait_line(r"OTA valid version=2", 60)
    assert slot_states(gate) == (["VALID", "VALID"], 1, 1)
    boots = booted_images(gate)
    assert [b[:2] for b in boots] == [("ota_0", "VALID"), ("ota_1", "PENDING_VERIFY")]
    wait_plan(lot, "in-1", "running")
    # The journal is the same journal on the new image, and goes on.
    more = plates(1000, 3)
    for plate in more:
        gate.send_plate(plate)
        time.sleep(0.3)
    gate.wait_for(lambda: journaled(gate)[-3:] == more, 30, "cars after the switch")
    stored = lot.sim.wait_stored("in-1", len(sent) + len(more), timeout=60)
    assert len(stored) == 1 and stored[0]["count"] == len(sent) + len(more)


@pytest.mark.parametrize("variant", ["crash", "nolink"])
def test_a_broken_image_rolls_back_by_itself_and_loses_no_event(update_lot, variant):
    lot = update_lot()
    gate = lot.gate("in-1", "in")
    gate.wait_line(r"LINK up", 30)
    before = plates(1, 3)
    for plate in before:
        gate.send_plate(plate)
        time.sleep(0.3)
    lot.add(image(2, variant), 2)
    lot.plan.offer(["in-1"], 2, "now")
    gate.wait_line(r"OTA staged version=2", WAIT_S)
    gate.wait_line(r"OTA reboot version=2", 30)
    # crash: the image exits at boot; nolink: the watchdog resets it. Either
    # way the boot selector goes back to ota_0, whose gate reports it.
    gate.wait_line(r"OTA rolled back version=2 running=1", 90)
    states, boot, run = slot_states(gate)
    assert (states[0], boot, run) == ("VALID", 0, 0) and states[1] == "ABORTED"
    plan = wait_plan(lot, "in-1", "rolled back")
    assert 2 in plan["rolled_back"]
    after = plates(100, 3)
    for plate in after:
        gate.send_plate(plate)
        time.sleep(0.3)
    gate.wait_for(lambda: journaled(gate)[-3:] == after, 30, "cars after the rollback")
    stored = lot.sim.wait_stored("in-1", 6, timeout=60)
    assert len(stored) == 1 and stored[0]["count"] == 6
    # The rolled-back version is not offered again.
    offers = len(gate.lines(r"OTA offer version=2 "))
    time.sleep(3)
    assert len(gate.lines(r"OTA offer version=2 ")) == offers
