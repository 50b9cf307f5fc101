"""Benchmark: boot to ready of a simulated gate whose journal ring is full,
with checkpoints of the cars-inside table in the ring and without them (the
baseline, measured in the same run).

`python -m parkgate_tools.bench.boot` (or `make bench`). For each case the
journal region of a provisioned gate's flash image (board unix-sim: blocks
320..511 of 512 x 4096 B, from boards/unix-sim/board.json) is filled on the
host by the firmware's own Journal and Checkpointer on CPython: entries and
exits of a lot that keeps about INSIDE cars inside, acknowledged in batches
of 16 as the lot bridge does, with the gate's idle work after every car
(journal.maintain(), and in the checkpoint case the checkpointer), until
every block of the ring is in use after more than one lap, and with
checkpoints further, to the worst case for a boot: the next checkpoint just
about due, every-1 records after the newest. The same car stream goes into
every case. Then parkgate_tools.sim.SimGate boots it: the
32-bit unix-port image with the firmware frozen in, a 64 KiB heap, the
board's flash stall model. The figure is wall time from starting the
process to the gate's BOOT line (median of BOOTS boots, each from the same
image), and the records the boot replayed (from that line).

Measured on the MicroPython unix port on this machine, not on an ESP32,
where reading and decoding a record costs roughly ten times more (see
firmware/docs/journal.md).
"""
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time

from parkgate import checkpoint, journal, lane, record
from parkgate_tools import runtime
from parkgate_tools.sim.gate import SimGate

INSIDE = 600         # cars the lot keeps inside (the table holds up to 768)
POOL = 5000          # plates that come and go
BOOTS = 3
START = 1795564800


def _flashdev():
    path = os.path.join(runtime.BOARDS, "unix-sim")
    if path not in sys.path:
        sys.path.insert(0, path)
    import flashdev
    return flashdev


def geometry():
    """(block size, block count, first journal block) of the unix-sim flash."""
    with open(os.path.join(runtime.BOARDS, "unix-sim", "board.json")) as f:
        flash = json.load(f)["flash"]
    return flash["block_size"], flash["block_count"], flash["fs_blocks"]


def fill(flash_path, checkpoints, inside=INSIDE, seed=7, every=checkpoint.EVERY,
         inside_max=1024, events=None, ack=True):
    """Fill the journal region of flash_path (a provisioned gate's flash.img)
    until the ring is full after more than one lap (or with that many
    events; ack False: none acknowledged). Returns a dict: events,
    records (application records in the ring), chunks (checkpoint records in
    the ring), inside (cars inside by the car stream), table (cars in the
    table the gate kept)."""
    flashdev = _flashdev()
    bs, count, first = geometry()
    device = flashdev.FlashDevice(flash_path, bs, count)
    j = journal.Journal(flashdev.Partition(device, first, count - first))
    j.mount()
    gate = lane.Lane("in", 0, inside_max)
    cp = checkpoint.Checkpointer(j, gate.inside, every) if checkpoints else None
    rng = random.Random(seed)
    cars = []
    waiting = ["粤B%05d" % i for i in range(POOL)]
    rng.shuffle(waiting)
    laps = 0
    limit = events
    events = 0
    full = False
    while True:
        enter = rng.random() < 0.5 + (inside - len(cars)) / 400.0
        if enter and waiting:
            plate = waiting.pop(rng.randrange(len(waiting)))
            cars.append(plate)
            kind = record.KIND_ENTRY
        else:
            plate = cars.pop(rng.randrange(len(cars)))
            waiting.append(plate)
            kind = record.KIND_EXIT
        event = record.Event(kind, START + events * 10, 6, plate, 1, 95)
        seq = j.append(kind, record.encode_body(event), kind == record.KIND_EXIT)
        gate.note(event)
        events += 1
        if ack and events % 16 == 0:
            j.ack(seq)
        tail = j._tail                      # the ring's own view: blocks in use
        while j.maintain() or (cp is not None and cp.service()):
            pass
        if j._tail != tail and j._tail == 0:
            laps += 1
        if events == limit:
            break
        if full or (laps >= 1 and (j._head + 2) % j.blocks == j._tail):
            # Full. With checkpoints, go on (the ring stays full) to the
            # worst case for a boot: the next checkpoint just about due.
            full = True
            if cp is None or j.next_seq - j.checkpoint_cover >= every - 1:
                break
    if ack:
        j.ack(j.next_seq - 1)
    j.maintain()
    records = chunks = chunk_bytes = record_bytes = 0
    for _, kind, body in j.records(True):
        if kind == journal.KIND_CHECKPOINT:
            chunks += 1
            chunk_bytes += 10 + len(body)
        elif kind <= journal.KIND_MAX_APP:
            records += 1
            record_bytes += 10 + len(body)
    device.close()
    return {"events": events, "records": records, "chunks": chunks, "inside": len(cars),
            "table": len(gate.inside), "share": chunk_bytes / float(chunk_bytes + record_bytes)}


def boot_times(gate, image, boots=BOOTS):
    """[(ms from process start to BOOT, BOOT line)] of boots from image."""
    flash = os.path.join(gate.dir, "flash.img")
    out = []
    for i in range(boots + 1):          # the first one starts the camera line: not counted
        shutil.copyfile(image, flash)
        t0 = time.perf_counter()
        gate.start()
        ms = (time.perf_counter() - t0) * 1000.0
        line = gate.lines(r" BOOT ")[-1]
        gate.kill()
        if i:
            out.append((ms, line))
    return out


def _field(line, name):
    found = re.search(r"\b%s=(\d+)" % name, line)
    return int(found.group(1)) if found else None


def measure(workdir, name, every):
    """every: checkpoint interval the ring is written with, 0 for none, -1
    for a journal of 10 records (the floor: what a boot costs besides the
    journal)."""
    gate = SimGate(workdir, name, "bench", "in", 1)
    gate.provision()
    flash = os.path.join(gate.dir, "flash.img")
    t0 = time.perf_counter()
    filled = fill(flash, every > 0, every=every, events=10 if every < 0 else None)
    fill_s = time.perf_counter() - t0
    image = flash + ".full"
    shutil.copyfile(flash, image)
    try:
        boots = boot_times(gate, image)
    finally:
        gate.stop()
    line = boots[-1][1]
    return {"name": name, "every": every, "ms": statistics.median(ms for ms, _ in boots),
            "ms_min": min(ms for ms, _ in boots), "ms_max": max(ms for ms, _ in boots),
            "replayed": _field(line, "replayed"), "table": _field(line, "inside"),
            "fill_s": fill_s, **filled}


def main():
    with tempfile.TemporaryDirectory() as workdir:
        rows = [measure(workdir, "checkpoint", checkpoint.EVERY),
                measure(workdir, "checkpoint-sparse", 4 * checkpoint.EVERY),
                measure(workdir, "baseline", 0), measure(workdir, "empty", -1)]
    print("boot to ready with a full journal ring (192 x 4 KiB), about %d cars inside;\n"
          "MicroPython unix port, 32-bit image, 64 KiB heap, on this machine (not an ESP32)"
          % INSIDE)
    print("%-32s %8s %9s %7s %8s %9s %8s %s" % (
        "ring written with", "records", "ckpt recs", "ckpt %", "replayed", "inside",
        "boot ms", "(min..max)"))
    for r in rows:
        if r["every"] < 0:
            label = "(10 records: the floor)"
        elif r["every"]:
            label = "checkpoint every %d%s" % (
                r["every"], " (default)" if r["every"] == checkpoint.EVERY else "")
        else:
            label = "no checkpoint (baseline)"
        print("%-32s %8d %9d %6.0f%% %8d %5d/%-3d %8.0f (%.0f..%.0f)" % (
            label, r["records"], r["chunks"], 100 * r["share"], r["replayed"], r["table"],
            r["inside"], r["ms"], r["ms_min"], r["ms_max"]))
    with_cp, base = rows[0], rows[2]
    print("inside: cars in the table the gate booted with / cars inside by the car stream;\n"
          "ckpt %: share of the ring's record bytes that are checkpoint chunks")
    print("default checkpoint against the baseline: %.1fx faster boot, %.0fx fewer records "
          "replayed" % (base["ms"] / with_cp["ms"], base["replayed"] / max(1, with_cp["replayed"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
