"""Journal behaviour beyond tests/core/test_journal.py (kept small for the
MicroPython heap): the stall budget of append/ack, a flash program that does
not verify, and a real process kill on the file-backed flash of unix-sim."""
import os
import signal
import subprocess

from flashdev import FlashDevice, Partition
from parkgate.journal import Journal, JournalFull
from parkgate_tools import runtime


def mounted(dev, first=0, count=None):
    j = Journal(Partition(dev, first, count or dev.block_count - first))
    j.mount()
    return j


def body(i, n=40):
    return bytes((i * 7 + k) & 0xFF for k in range(n))


def test_append_stall_budget():
    # After maintain(): one program, no erase, per append; ack never erases.
    dev = FlashDevice(None, 4096, 16)
    j = mounted(dev)
    j.maintain()
    for i in range(1500):            # about 15 blocks: the ring wraps
        p, e = dev.programs, dev.erases
        s = j.append(1, body(i))
        assert (dev.programs - p, dev.erases - e) == (1, 0)
        if i % 10 == 9:
            e = dev.erases
            j.ack(s)
            assert dev.erases == e
        j.maintain()
    # Without maintain(): at worst one erase and one program.
    worst = (0, 0)
    for i in range(500):
        p, e = dev.programs, dev.erases
        s = j.append(2, body(i, 120))
        worst = max(worst, (dev.erases - e, dev.programs - p))
        j.ack(s)
    assert worst == (1, 1)


class FlakyFlash(FlashDevice):
    """Programs that do not verify: in the chosen ones (counted from 1) a bit
    meant to stay 1 reads back 0: in the header CRC of a block being opened
    (opens), else in the last byte of a record (records)."""

    def __init__(self, records=(), opens=()):
        FlashDevice.__init__(self, None, 512, 8)
        self.bad = (set(records), set(opens))
        self.n = [0, 0]

    def writeblocks(self, block, buf, offset=None):
        kind = 1 if offset == 0 else 0
        self.n[kind] += 1
        if self.n[kind] in self.bad[kind]:
            buf = bytearray(buf)
            i = max(k for k in range(24 if kind else len(buf)) if buf[k])
            buf[i] &= buf[i] - 1
        FlashDevice.writeblocks(self, block, buf, offset)


def test_program_that_does_not_verify_moves_on():
    dev = FlakyFlash(records={5, 30}, opens={3})
    j = mounted(dev)
    for i in range(60):
        assert j.append(1, body(i, 24)) == i + 1
    k = mounted(dev)
    assert list(k.records()) == [(i + 1, 1, body(i, 24)) for i in range(60)]
    assert k.next_seq == 61


def test_program_that_never_verifies_raises():
    dev = FlakyFlash(range(1, 100), range(2, 100))
    j = mounted(dev)
    try:
        j.append(1, b"x")
    except JournalFull:
        raise AssertionError("not a full journal")
    except OSError as exc:
        assert "verify" in str(exc)
    else:
        raise AssertionError("append returned")


_WRITER = """
import sys
from flashdev import FlashDevice, Partition
from parkgate.journal import Journal
dev = FlashDevice(sys.argv[1], 4096, 64)
j = Journal(Partition(dev, 16, 48))
j.mount()
i = 0
while True:
    s = j.append(1, bytes((s_ * 3) & 0xFF for s_ in range(i % 50)))
    print(s)
    i += 1
    if i % 7 == 0:
        j.ack(s - 3)
    if i % 5 == 0:
        j.maintain()
"""


def test_killing_the_process_is_a_power_cut(tmp_path):
    img = str(tmp_path / "flash.img")
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    for round_ in range(3):
        proc = subprocess.Popen(runtime.micropython_argv(str(script), img),
                                env=runtime.micropython_env(),
                                stdout=subprocess.PIPE, text=True)
        seen = [int(proc.stdout.readline()) for _ in range(400 + 97 * round_)]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        dev = FlashDevice(img, 4096, 64, create=False)
        j = mounted(dev, 16, 48)
        got = {seq: b for seq, _, b in j.records()}
        for s in seen:
            if s > j.acked:
                assert s in got, (round_, s, j.acked)
        assert j.next_seq > seen[-1]
        assert all(v == bytes((k * 3) & 0xFF for k in range(len(v))) for v in got.values())
        dev.close()
