# Benchmark: member lookups in a 50,000-member list on the gate's own
# 32-bit image (the firmware frozen in) in its 64 KiB heap, then a member
# update of that list (parkgate_tools.bench.members_update).
#
# `python -m parkgate_tools.bench.members` (or `make bench`) runs main() on
# CPython, which builds members.bin (member_lists.build) and the same
# list as text lines, then starts this same file under micropython, where
#   members.bin   1,000 lookups by binary search on the file (seek and
#                 readinto a 16-byte buffer): time per lookup, the worst
#                 one, and heap per lookup (gc.mem_alloc before and after
#                 each lookup with the collector disabled, so nothing
#                 allocated is hidden by a collection; gc.collect between);
#   dict          the naive design: every member read into a dict
#                 plate -> (from, until, window, blacklist); reports the
#                 member count at which it failed with MemoryError;
#   linear scan   the naive design that fits: read the text file line by
#                 line per lookup (20 lookups: it is slow);
# and prints the ratio linear scan / binary search.
import sys

N = 50000
LOOKUPS = 1000
SCANS = 20
TARGET_US = 5000
TARGET_HEAP = 2048


def run(bin_path, text_path, query_path):
    import gc
    import time
    from parkgate import members

    def queries(limit=LOOKUPS):
        # (plate, now) pairs streamed from the file: a list of 1,000 would
        # take a large part of the gate's 64 KiB heap
        with open(query_path) as f:
            for i in range(limit):
                text, now = f.readline().split()
                yield text, int(now)

    gc.collect()
    print("heap: %d bytes free, %d used before the lists"
          % (gc.mem_free(), gc.mem_alloc()))

    ml = members.MemberList(bin_path)
    t = time.ticks_us()
    ml.verify()
    print("members.bin: %d members, verify (CRC of %d bytes) %d us"
          % (ml.count, ml.count * 16, time.ticks_diff(time.ticks_us(), t)))
    found = 0
    worst = 0
    total = 0
    for text, now in queries():
        t = time.ticks_us()
        status = ml.lookup(text, now, 480)[0]
        us = time.ticks_diff(time.ticks_us(), t)
        total += us
        worst = max(worst, us)
        found += status != members.UNKNOWN
    heap_max = 0
    heap_sum = 0
    for text, now in queries():
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        ml.lookup(text, now, 480)
        grown = gc.mem_alloc() - before
        gc.enable()
        heap_max = max(heap_max, grown)
        heap_sum += grown
    ml.close()
    per = total / LOOKUPS
    print("binary search  %d lookups (%d known): %.1f us/lookup, worst %d us; "
          "heap/lookup mean %d B, max %d B"
          % (LOOKUPS, found, per, worst, heap_sum // LOOKUPS, heap_max))

    gc.collect()
    table = {}
    loaded = 0
    try:
        with open(text_path) as f:
            for line in f:
                p = line.split(",")
                table[p[0]] = (int(p[1]), int(p[2]), int(p[3]), int(p[4]), p[5] == "1\n")
                loaded += 1
        print("dict           all %d members loaded, heap used %d" % (loaded, gc.mem_alloc()))
    except MemoryError:
        free = gc.mem_free()
        table = None
        print("dict           failed with MemoryError at %d of %d members (%d bytes "
              "were free, in pieces: the growing dict needs one block)" % (loaded, N, free))
    table = None
    gc.collect()

    total = 0
    for text, now in queries(SCANS):
        prefix = text + ","
        t = time.ticks_us()
        with open(text_path) as f:
            for line in f:
                if line.startswith(prefix):
                    break
        total += time.ticks_diff(time.ticks_us(), t)
    scan = total / SCANS
    print("linear scan    %d lookups: %.0f us/lookup" % (SCANS, scan))
    print("ratio linear scan/binary search: %.0fx" % (scan / per))
    ok = worst < TARGET_US and heap_max < TARGET_HEAP
    print("target lookup < %d us and heap < %d B per lookup: %s"
          % (TARGET_US, TARGET_HEAP, "met" if ok else "MISSED"))
    return 0 if ok else 1


def _write_inputs(tmp):
    import os
    import random
    from parkgate import members
    from parkgate_host import member_lists
    provinces = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
    serial = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    rng = random.Random(7)
    now = members.EPOCH + 2000 * 86400
    seen = set()
    ms = []
    while len(ms) < N:
        text = (rng.choice(provinces) + rng.choice(serial[:24])
                + "".join(rng.choice(serial) for _ in range(5)))
        if text not in seen:
            seen.add(text)
            start = now + rng.randint(-300, 0) * 86400
            window = [1320, 420] if rng.random() < 0.2 else None
            ms.append({"plate": text, "from": start, "until": start + 365 * 86400,
                       "window": window, "blacklist": rng.random() < 0.01})
    bin_path = os.path.join(tmp, "members.bin")
    with open(bin_path, "wb") as f:
        f.write(member_lists.build(ms, 1))
    text_path = os.path.join(tmp, "members.txt")
    with open(text_path, "w") as f:
        for m in ms:
            w = m["window"] or [-1, -1]
            f.write("%s,%d,%d,%d,%d,%d\n" % (m["plate"], m["from"], m["until"], w[0], w[1],
                                            1 if m["blacklist"] else 0))
    query_path = os.path.join(tmp, "queries.txt")
    with open(query_path, "w") as f:
        for i in range(LOOKUPS):
            # half known members, half unknown plates (the scan reads the whole file)
            text = (rng.choice(ms)["plate"] if i % 2 else
                    rng.choice(provinces) + "Z" + "%05d" % rng.randint(0, 99999))
            f.write("%s %d\n" % (text, now + rng.randint(0, 86399)))
    print("N=%d members: members.bin %d bytes, as text %d bytes"
          % (N, os.path.getsize(bin_path), os.path.getsize(text_path)))
    return bin_path, text_path, query_path


def main():
    if sys.implementation.name == "micropython":
        return run(sys.argv[1], sys.argv[2], sys.argv[3])
    import os
    import subprocess
    import tempfile
    from parkgate_tools import runtime
    from parkgate_tools.bench import members_update
    sys.path.insert(0, runtime.FIRMWARE)
    with tempfile.TemporaryDirectory() as tmp:
        paths = _write_inputs(tmp)
        sys.stdout.flush()
        proc = subprocess.run(
            runtime.micropython_argv(os.path.abspath(__file__), *paths,
                                     heap=runtime.GATE_HEAP),
            env=runtime.micropython_env(), timeout=1800)
        if proc.returncode:
            raise RuntimeError("bench_members failed (exit %d)" % proc.returncode)
        members_update.run_on_image(tmp, paths[0], paths[2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
