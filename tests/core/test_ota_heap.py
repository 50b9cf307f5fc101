# The heap an OTA download takes on the gate's image (parkgate.ota): every
# chunk and the whole read-back with the heap cut into 1 KiB holes, and the
# bytes one accept() and one verify_step() allocate (printed). On CPython
# the test returns at once. Helpers from test_ota.
import gc
import sys

from check import raises
from parkgate import ota
from parkgate.ota import Download
from parkgate.ota_record import Progress
from test_ota import SLOT_BLOCKS, frames, offered, record_path


class RamSlot:
    """A slot in one preallocated bytearray whose reads, programs and
    erases allocate nothing (flashdev's build bytes objects), so that what
    is counted is parkgate.ota's own allocation."""

    def __init__(self, blocks):
        self.mem = bytearray(b"\xff" * (blocks * 4096))
        self.mv = memoryview(self.mem)
        self.blocks = blocks

    def readblocks(self, block, buf, offset=0):
        at = block * 4096 + offset
        buf[0:len(buf)] = self.mv[at:at + len(buf)]

    def writeblocks(self, block, buf, offset):
        at = block * 4096 + offset
        mem = self.mem
        for i in range(len(buf)):
            mem[at + i] &= buf[i]

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return 4096
        if op == 6:
            mem = self.mem
            for i in range(arg * 4096, arg * 4096 + 4096):
                mem[i] = 0xFF
        return 0

    def set_boot(self):
        pass


def _fragment_heap():
    # The heap cut into free holes of about 1 KiB between live blocks, as a
    # gate's heap at its worst: an allocation of 1200 bytes fails.
    gc.collect()
    holes = [None] * 600
    n = 0
    try:
        while n < 600:
            holes[n] = bytearray(1008)
            n += 1
    except MemoryError:
        pass
    for i in range(0, n, 2):
        holes[i] = None
    gc.collect()
    # holes that merged into more than 1100 bytes plugged: none is left
    k = 1
    while k < n:
        try:
            holes[k] = (holes[k], bytearray(1100))
        except MemoryError:
            break
        k += 2
    raises(MemoryError, bytearray, 1200)
    return holes


def test_a_download_runs_in_a_heap_of_1_kib_holes():
    # On the gate's image: every chunk taken and the whole read-back done
    # with the heap in 1 KiB holes (no allocation of parkgate.ota's needs
    # more), and the bytes one accept() / verify_step() allocate, all of it
    # garbage afterwards (figures printed).
    if sys.implementation.name != "micropython":
        return
    progress = Progress(record_path())
    dl = Download(RamSlot(SLOT_BLOCKS), offered(), progress)
    fs = frames()
    rx = bytearray(ota.FRAME_MAX)
    worst = step = 0
    holes = _fragment_heap()
    try:
        for frame in fs:
            rx[0:len(frame)] = frame
            view = memoryview(rx)[0:len(frame)]
            before = gc.mem_alloc()
            dl.accept(view)
            worst = max(worst, gc.mem_alloc() - before)
        r = None
        while r is None:
            before = gc.mem_alloc()
            r = dl.verify_step()
            step = max(step, gc.mem_alloc() - before)
    finally:
        holes = None
    gc.collect()
    print("ota heap: accept allocates at most %d bytes in all, verify_step %d" % (worst, step))
    assert r is True and holes is None
    assert 0 < worst < 2048 and 0 < step < 2048, (worst, step)
