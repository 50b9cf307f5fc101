# Benchmark: the journal against a naive littlefs log, on the emulated NOR
# flash of the unix-sim board (512 blocks x 4096 B, file-backed, flushed per
# write), under the MicroPython unix port with the gate's heap.
#
# `python -m parkgate_tools.bench.journal` (or `make bench`) runs main() on
# CPython, which starts this same file under micropython; there it writes
# N events of a BODY-byte body
#   journal   into the journal region (blocks 320..511), the gate acking in
#             batches of 10 and calling maintain() when idle; and once more
#             with maintain() never called (erases then land on appends);
#   littlefs  as one JSON line appended to a file and flushed, per event, on
#             VfsLfs2 over blocks 0..319 of the same device
# and prints erases and bytes programmed per event, the worst single
# append/flush (programs, erases, microseconds on the emulator) and the
# ratio littlefs / journal. Emulator microseconds include the host file I/O;
# on an ESP32 a 4 KiB erase stalls the chip for tens of ms, so the erase
# counts are what matter.
import sys

N = 2000
BODY = 40
BLOCK_SIZE = 4096
BLOCK_COUNT = 512
FS_BLOCKS = 320


class Meter:
    def __init__(self, dev):
        self.dev = dev
        self.worst = (0, 0, 0)      # programs, erases, us of the worst op
        dev.reset_counters()

    def timed(self, fn, *args):
        import time
        dev = self.dev
        p = dev.programs
        e = dev.erases
        t = time.ticks_us()
        r = fn(*args)
        us = time.ticks_diff(time.ticks_us(), t)
        cost = (dev.programs - p, dev.erases - e, us)
        if (cost[1], cost[0], cost[2]) > (self.worst[1], self.worst[0], self.worst[2]):
            self.worst = cost
        return r

    def report(self, name):
        dev = self.dev
        print("%-28s erases/event %.4f  bytes programmed/event %6.1f  programs/event %.2f"
              "  worst append: %d programs %d erases %d us"
              % (name, dev.erases / N, dev.bytes_programmed / N, dev.programs / N,
                 self.worst[0], self.worst[1], self.worst[2]))
        return dev.erases / N


def body_of(i):
    return bytes((i * 31 + k) & 0xFF for k in range(BODY))


def bench_journal(dev, maintain):
    from flashdev import Partition
    from parkgate.journal import Journal
    part = Partition(dev, FS_BLOCKS, BLOCK_COUNT - FS_BLOCKS)
    for b in range(BLOCK_COUNT - FS_BLOCKS):    # a fresh region each run
        part.ioctl(6, b)
    j = Journal(part)
    j.mount()
    j.maintain()
    m = Meter(dev)
    for i in range(N):
        s = m.timed(j.append, 1 + i % 2, body_of(i))
        if i % 10 == 9:
            j.ack(s)
        if maintain:
            j.maintain()
    j2 = Journal(part)
    j2.mount()
    # Without maintain() the last ack may still wait for a block to open.
    if j2.next_seq != N + 1 or not N - 10 <= j2.acked <= N or len(j2.pending(N)) != N - j2.acked:
        raise RuntimeError("journal lost events")
    return m


def append_line(f, line):
    f.write(line)
    f.flush()


def bench_littlefs(dev):
    import os
    import vfs
    from flashdev import Partition
    part = Partition(dev, 0, FS_BLOCKS)
    vfs.VfsLfs2.mkfs(part)
    vfs.mount(vfs.VfsLfs2(part), "/bench")
    m = Meter(dev)
    f = open("/bench/events.jsonl", "a")
    for i in range(N):
        # The same payload as text: seq, kind and the body in hex.
        line = '{"seq":%d,"k":%d,"b":"%s"}\n' % (i + 1, 1 + i % 2, body_of(i)[:BODY // 2].hex())
        m.timed(append_line, f, line)
    f.close()
    size = os.stat("/bench/events.jsonl")[6]
    vfs.umount("/bench")
    return m, size


def run(path):
    from flashdev import FlashDevice
    dev = FlashDevice(path, BLOCK_SIZE, BLOCK_COUNT)
    print("N=%d events, %d-byte body; flash %d x %d B, journal %d blocks, littlefs %d blocks"
          % (N, BODY, BLOCK_COUNT, BLOCK_SIZE, BLOCK_COUNT - FS_BLOCKS, FS_BLOCKS))
    ej = bench_journal(dev, True).report("journal (maintain when idle)")
    bench_journal(dev, False).report("journal (no maintain)")
    m, size = bench_littlefs(dev)
    el = m.report("littlefs JSON line + flush")
    print("littlefs file: %d bytes; JSON line %d bytes per event" % (size, size // N))
    print("ratio littlefs/journal: erases %.0fx" % (el / ej))
    print("target <= 0.05 erases/event: %s" % ("met" if ej <= 0.05 else "MISSED"))
    dev.close()
    return 0 if ej <= 0.05 else 1


def main():
    if sys.implementation.name == "micropython":
        return run(sys.argv[1])
    import os
    import subprocess
    import tempfile
    from parkgate_tools import runtime
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            runtime.micropython_argv(os.path.abspath(__file__), os.path.join(tmp, "flash.img")),
            env=runtime.micropython_env(), timeout=1800)
    if proc.returncode:
        raise RuntimeError("bench_journal failed (exit %d)" % proc.returncode)
    return 0


if __name__ == "__main__":
    sys.exit(main())
