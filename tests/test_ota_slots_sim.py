"""The simulator's two image slots with real bytes: a unix-sim gate started
with SimGate(..., slots=True) runs whatever its boot selector
(parkgate_tools/sim/boot_selector.py) takes from boards/unix-sim/ota_slots.py's
slot files, by ESP-IDF's rollback rules. Images: the gate's own (version 1)
and version 2 builds of it (build_firmware.py --version 2 --out ...), a good
one, one whose main crashes at boot and one that never brings its link up.
An image goes into the other slot through the board's own ota_slots() from a
MicroPython script run on the gate's running image (SimGate.run_script)."""
import os
import re

import pytest

from parkgate_tools.sim import boot_selector
from parkgate_tools.sim.updates import build_firmware, image, sha256_of as sha

# Run on the gate's image: write an image into the next update slot through
# board.ota_slots() (stop: a power cut after that many bytes), check it by
# reading it back, set_boot; or mark the running image valid; then report.
SCRIPT = """
import sys
import board
import fw_version

slots = board.ota_slots()
cmd = sys.argv[1]
if cmd == "write":
    part = slots.next_update()
    bs = part.ioctl(5, 0)
    stop = int(sys.argv[3])
    buf = bytearray(512)
    addr = 0
    with open(sys.argv[2], "rb") as f:
        while stop < 0 or addr < stop:
            n = f.readinto(buf)
            if not n:
                break
            for i in range(n, 512):
                buf[i] = 0xFF
            if addr % bs == 0:
                part.ioctl(6, addr // bs)
            part.writeblocks(addr // bs, buf, addr % bs)
            addr += n
    size, sha = part.image()
    print("WROTE", part.info()[4], size, sha)
    if sys.argv[4] == "boot":
        part.set_boot()
elif cmd == "mark":
    slots.mark_app_valid_cancel_rollback()
print("RUNNING", slots.running().info()[4], "VERSION", fw_version.VERSION, fw_version.VARIANT)
"""


class Ota:
    def __init__(self, gate, tmp_path):
        self.gate = gate
        self.script = str(tmp_path / "ota_tool.py")
        with open(self.script, "w") as f:
            f.write(SCRIPT)

    def run(self, *args):
        done = self.gate.run_script(self.script, *args)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def write(self, path, stop=-1, boot=True):
        return self.run("write", path, str(stop), "boot" if boot else "no")

    def running(self):
        """(label, version, variant) the running image reports."""
        found = re.search(r"RUNNING (\S+) VERSION (\d+) ?(\S*)", self.run("report"))
        return found.group(1), int(found.group(2)), found.group(3)

    def states(self):
        return boot_selector.states(self.gate.dir)


def boot_lines(gate):
    return gate.lines(r" BOOT ")


@pytest.fixture
def slot_gate(offline_gate, tmp_path):
    def make(**board_env):
        gate = offline_gate("g1", "in", "t", slots=True, board_env=board_env)
        return gate, Ota(gate, tmp_path)
    return make


def test_first_start_runs_slot_a_from_the_gates_own_image(slot_gate):
    gate, ota = slot_gate()
    assert ota.states() == (["VALID", "EMPTY"], 0, 0)
    assert sha(gate.image) == sha(image())
    assert ota.running() == ("ota_0", build_firmware.DEFAULT_VERSION, "")
    assert gate.lines(r"SIM BOOTSEL boot ota_0 VALID")


def test_update_runs_on_probation_then_stays_once_marked_valid(slot_gate):
    gate, ota = slot_gate()
    new = image(2)
    out = ota.write(new)
    assert "WROTE ota_1 %d %s" % (os.path.getsize(new), sha(new)) in out
    assert ota.states() == (["VALID", "NEW"], 1, 0)
    assert ota.running()[:2] == ("ota_0", 1)      # until the restart
    gate.reset()
    assert ota.states() == (["VALID", "PENDING_VERIFY"], 1, 1)
    assert sha(gate.image) == sha(new)
    assert ota.running() == ("ota_1", 2, "")
    ota.run("mark")
    assert ota.states() == (["VALID", "VALID"], 1, 1)
    gate.kill()
    gate.start()                                   # a power cut: still the new image
    assert ota.states() == (["VALID", "VALID"], 1, 1)
    assert ota.running() == ("ota_1", 2, "")
    assert len(boot_lines(gate)) == 3


def test_unmarked_update_reset_goes_back_to_the_old_image(slot_gate):
    gate, ota = slot_gate()
    ota.write(image(2))
    gate.reset()
    assert ota.running()[:2] == ("ota_1", 2)
    gate.reset()                                   # reset before it marked itself valid
    assert ota.states() == (["VALID", "ABORTED"], 0, 0)
    assert ota.running()[:2] == ("ota_0", 1)
    assert gate.lines(r"SIM BOOTSEL ota_1 was PENDING_VERIFY at boot")


def test_image_that_crashes_at_boot_rolls_back_by_itself(slot_gate):
    gate, ota = slot_gate()
    ota.write(image(2, "crash"))
    gate.reset()                  # returns once a gate has booted again: the old one
    gate.wait_line(r"SIM BOOTSEL boot ota_0 VALID", count=2)
    assert gate.lines(r"CRASH at boot: image version=2")
    assert gate.lines(r"SIM RESET exited with 1")
    assert ota.states() == (["VALID", "ABORTED"], 0, 0)
    assert ota.running() == ("ota_0", 1, "")
    assert gate.alive


def test_image_that_never_brings_the_link_up_is_reset_by_the_watchdog(slot_gate):
    gate, ota = slot_gate(PARKGATE_SIM_WDT_MS="2000")
    ota.write(image(2, "nolink"))
    resets = gate.watchdog_resets
    gate.reset(timeout=30)
    assert gate.lines(r"NOLINK boot: image version=2")
    assert gate.watchdog_resets == resets + 1
    assert ota.states() == (["VALID", "ABORTED"], 0, 0)
    assert ota.running() == ("ota_0", 1, "")


def test_half_written_slot_is_never_booted(slot_gate):
    gate, ota = slot_gate()
    new = image(2)
    half = os.path.getsize(new) // 2 // 4096 * 4096
    ota.write(new, stop=half, boot=False)         # a power cut mid-download
    assert ota.states() == (["VALID", "EMPTY"], 0, 0)
    gate.reset()
    assert ota.running()[:2] == ("ota_0", 1)
    # set_boot, then the slot rewritten and cut halfway: its bytes no longer
    # match what set_boot recorded, so it is not booted; nor is a slot
    # whose bytes are not an image (set_boot refuses it).
    ota.write(new)
    ota.write(image(2, "crash"), stop=half, boot=False)
    assert ota.states() == (["VALID", "NEW"], 1, 0)
    gate.reset()
    assert gate.lines(r"SIM BOOTSEL ota_1 NEW holds no image matching its record")
    assert ota.states() == (["VALID", "ABORTED"], 0, 0)
    assert ota.running() == ("ota_0", 1, "")
    assert sha(gate.image) == sha(image())


def test_set_boot_refuses_a_slot_that_holds_no_image(slot_gate, tmp_path):
    gate, ota = slot_gate()
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 10000)
    done = gate.run_script(ota.script, "write", str(junk), "-1", "boot")
    assert done.returncode != 0 and "no image in ota_1" in done.stdout + done.stderr
    assert ota.states() == (["VALID", "EMPTY"], 0, 0)


def test_slot_switching_leaves_the_flash_and_its_journal_untouched(slot_gate):
    gate, ota = slot_gate()
    gate.send_plate("AB12CDE")
    gate.wait_line(r" EVENT ")
    gate.kill()
    flash = os.path.join(gate.dir, "flash.img")
    with open(flash, "rb") as f:
        before = f.read()
    ota.write(image(2))                           # while the gate is off
    for _ in range(2):                            # the selector: NEW, then rollback
        boot_selector.select(gate.dir)
    assert ota.states() == (["VALID", "ABORTED"], 0, 0)
    with open(flash, "rb") as f:
        assert f.read() == before
    gate.start()
    seqs = [re.search(r"next_seq=(\d+)", line).group(1) for line in boot_lines(gate)]
    assert int(seqs[-1]) > int(seqs[0])           # the car's event is still journaled
