# Benchmark: a member update on the gate's own 32-bit image and 64 KiB heap,
# on the board's own flash (boards/unix-sim: littlefs on its 1.25 MiB
# region, 320 blocks of 4 KiB); the second half of the members bench
# (parkgate_tools.bench.members runs it after the lookups, on the same
# 50,000-member list).
#
# On CPython, run_on_image() writes the inputs (write_inputs) and starts this
# same file under micropython, where install() puts the 50,000-member list
# on the filesystem beside a tariff and a site config, and installs a delta
# of 1,000 changes sent as signed parts (parkgate_tools.lot.downlink
# .members_parts) by parkgate.member_update.MemberStore, offer() per part
# and step() until done, against two baselines measured in the same run: the
# same delta as one message (the heap must hold it, its parse and its
# decoding at once), and the delta applied as before by apply_delta_file (a
# second copy of the list beside the first). It reports time, heap (in use
# after a collection, at most; the least free), the filesystem's use at its
# peak against its size, and checks the installed list's answers for 1,000
# plates against the host's; then a whole 50,000-member list sent to a gate
# holding one (refused: it does not fit) and to an empty gate.
import sys

KEY = b"bench-members-key-32-bytes-long!"
GATE = "bench"
CHANGES = 1000
FS_SIZE = 320 * 4096             # boards/unix-sim FS_BLOCKS, the ESP32 boards' vfs


def install(bin_path, parts_path, single_path, delta_path, expect_path, whole_path):
    """On the image: the update bench (see the top of this file)."""
    import gc
    import json
    import os
    import time
    import board
    from parkgate.member_update import MemberStore, Refused

    fs = board.mount_flash()
    dev = board.flash_device()

    def used():
        st = os.statvfs(fs)
        return (st[2] - st[3]) * st[0]

    def copy(src, dst):
        buf = bytearray(512)
        with open(src, "rb") as f, open(dst, "wb") as g:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                g.write(memoryview(buf)[0:n])

    for name in os.listdir(fs):
        os.remove(fs + "/" + name)
    copy(bin_path, fs + "/members.bin")
    with open(fs + "/tariff.json", "w") as f:
        f.write("x" * 3000)              # what else a gate keeps there
    with open(fs + "/site.json", "w") as f:
        f.write("y" * 400)
    gc.collect()
    print("filesystem: %d bytes (%d blocks of %d); with the list, a tariff and a site "
          "config %d used, %d free" % (FS_SIZE, FS_SIZE // 4096, 4096, used(),
                                        board.free_flash(fs)))

    # baseline 1: apply_delta_file, the delta in RAM and a second copy of
    # the list beside the first. It is the host side's now (parkgate_host,
    # not in the image): loaded for this baseline only, unloaded after it.
    gc.collect()
    from parkgate_host import member_lists
    t = time.ticks_ms()
    try:
        delta = bytearray(os.stat(delta_path)[6])
        with open(delta_path, "rb") as f:
            f.readinto(delta)
        member_lists.apply_delta_file(fs + "/members.bin", delta)
        print("baseline: apply_delta_file installed the delta (a second copy fitted)")
    except (OSError, MemoryError) as exc:
        print("baseline: apply_delta_file (the delta in RAM, a second copy of the list "
              "beside it): %r after %d ms; the list kept" % (
                  exc, time.ticks_diff(time.ticks_ms(), t)))
    delta = member_lists = None
    for name in ("parkgate_host.member_lists", "parkgate_host"):
        sys.modules.pop(name, None)
    gc.collect()
    # baseline 2: the delta as one message, parsed and decoded at once
    free0 = gc.mem_free()
    try:
        with open(single_path) as f:
            text = f.read()
        envelope = json.loads(text)
        data = __import__("binascii").a2b_base64(envelope["b"])
        print("baseline: one message (%d bytes): parsed and decoded, %d bytes of heap"
              % (len(text), free0 - gc.mem_free()))
    except MemoryError:
        print("baseline: one message of the %d-change delta (%d bytes): MemoryError "
              "(%d bytes were free)" % (CHANGES, os.stat(single_path)[6], free0))
    text = envelope = data = None
    gc.collect()

    lines = []
    store = MemberStore(fs, board.free_flash, lines.append)
    gc.collect()
    base_heap = gc.mem_alloc()
    listed = store.current.count     # the lookup bench's list, N members
    print("MemberStore at boot: %s; heap in use %d, free %d" % (
        " / ".join(lines), base_heap, gc.mem_free()))
    del lines[:]

    def timed_lookups(ml):
        # us per lookup of the expected answers' plates, and how many agree
        total = n = agree = 0
        with open(expect_path) as f:
            f.readline()
            for line in f:
                text, now, want = line.split()
                t = time.ticks_us()
                got = ml.lookup(text, int(now), 480)[0]
                total += time.ticks_diff(time.ticks_us(), t)
                n += 1
                agree += got == int(want)
        return total / n, agree, n

    before_us = timed_lookups(store.current)[0]
    gc.collect()
    base_heap = gc.mem_alloc()       # what the install adds is measured from here
    peak_used = used()
    peak_live = base_heap
    least_free = gc.mem_free()
    dev.reset_counters()
    t0 = time.ticks_ms()
    worst_offer = 0
    n_parts = 0
    with open(parts_path) as f:
        for line in f:
            envelope = json.loads(line)
            t = time.ticks_us()
            store.offer(envelope, KEY, GATE)
            worst_offer = max(worst_offer, time.ticks_diff(time.ticks_us(), t))
            envelope = None
            n_parts += 1
            gc.collect()
            peak_live = max(peak_live, gc.mem_alloc())
            least_free = min(least_free, gc.mem_free())
            peak_used = max(peak_used, used())
    receive_ms = time.ticks_diff(time.ticks_ms(), t0)
    programs, nbytes, erases = dev.programs, dev.bytes_programmed, dev.erases
    dev.reset_counters()
    steps = 0
    worst = 0
    busy_us = 0
    installed_at = None
    while True:
        t = time.ticks_us()
        r = store.step()
        us = time.ticks_diff(time.ticks_us(), t)
        if r == 0:
            break
        steps += 1
        busy_us += us
        worst = max(worst, us)
        if r == 2:
            installed_at = steps
        peak_used = max(peak_used, used())
        gc.collect()
        peak_live = max(peak_live, gc.mem_alloc())
        least_free = min(least_free, gc.mem_free())
    ml = store.current
    print("update: %d parts received in %d ms (worst offer %d us), flash: %d programs "
          "(%d bytes), %d erases" % (n_parts, receive_ms, worst_offer, programs, nbytes, erases))
    print("update: installed in %d steps, %d ms of step() (worst step %d us, mean %d us); "
          "flash: %d programs (%d bytes), %d erases" % (
              installed_at or -1, busy_us // 1000, worst, busy_us // max(steps, 1),
              dev.programs, dev.bytes_programmed, dev.erases))
    stall_ms = (((programs + dev.programs) * 700 + (erases + dev.erases) * 45000) // 1000)
    print("update: on an ESP32 the flash would stall the gate about %d ms more in all "
          "(0.7 ms a program, 45 ms an erase: boards/unix-sim's model)" % stall_ms)
    print("update: %s" % " / ".join(lines))
    print("update: heap in use after a collection at most %d bytes (%d before, +%d); "
          "least free %d" % (peak_live, base_heap, peak_live - base_heap, least_free))
    print("update: filesystem use at its peak %d of %d bytes (%d%%); after it %d" % (
        peak_used, FS_SIZE, peak_used * 100 // FS_SIZE, used()))
    with open(expect_path) as f:
        want_version, want_count = [int(x) for x in f.readline().split()]
    after_us, agree, n = timed_lookups(ml)
    ok = ml.version == want_version and ml.count == want_count and agree == n and \
        peak_used < FS_SIZE and installed_at is not None
    print("update: list version %d, %d members, %d changes beside members.bin; %d of %d "
          "lookups as on the host; on this flash %.1f us/lookup with the overlay, %.1f "
          "before it (members.bin alone)" % (ml.version, ml.count, ml.changes, agree, n,
                                             after_us, before_us))
    print("target: the %d-change update of %d members installs within the %d-byte "
          "filesystem and the gate's heap: %s" % (CHANGES, listed, FS_SIZE,
                                                  "met" if ok else "MISSED"))

    # a whole list: refused beside a list, then installed on an empty gate
    del lines[:]
    with open(whole_path) as f:
        first = json.loads(f.readline())
    try:
        store.offer(first, KEY, GATE)
        print("whole list beside the list: taken")
    except Refused as exc:
        print("whole list of %d members beside the list: refused (%s)" % (listed, exc))
    first = None
    ml.close()
    for name in os.listdir(fs):
        if name.startswith("members"):
            os.remove(fs + "/" + name)
    store = MemberStore(fs, board.free_flash, lines.append)
    peak_used = used()
    t0 = time.ticks_ms()
    with open(whole_path) as f:
        for line in f:
            store.offer(json.loads(line), KEY, GATE)
            gc.collect()
    receive_ms = time.ticks_diff(time.ticks_ms(), t0)
    t0 = time.ticks_ms()
    steps = 0
    while store.step():
        steps += 1
        peak_used = max(peak_used, used())
    print("whole list on an empty gate: %d ms to receive, %d steps, %d ms to install; "
          "%s; filesystem peak %d of %d" % (receive_ms, steps,
                                            time.ticks_diff(time.ticks_ms(), t0),
                                            lines[-1], peak_used, FS_SIZE))
    store.current.close()
    return 0 if ok else 1


def write_inputs(tmp, bin_path, query_path):
    """On the host: the delta, its parts, the one-message form, a whole list
    in parts and the expected answers, from the lookup bench's inputs in tmp
    (bin_path, query_path and members.txt); returns install()'s arguments."""
    import io
    import json
    import os
    import random
    from parkgate import members
    from parkgate_host import member_lists
    from parkgate_tools.lot import downlink
    with open(bin_path, "rb") as f:
        old = f.read()
    ml = members.MemberList(io.BytesIO(old))
    rng = random.Random(11)
    now = members.EPOCH + 2000 * 86400
    # plates are not in members.bin (keys only): take them from the text list
    with open(os.path.join(tmp, "members.txt")) as f:
        plates = [line.split(",", 1)[0] for line in f]
    picked = rng.sample(plates, 700)
    changes = [{"plate": p, "remove": True} for p in picked[:300]]
    changes += [{"plate": p, "from": now - 86400, "until": now + 400 * 86400}
                for p in picked[300:]]
    known = set(plates)
    serial = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    while len(changes) < CHANGES:
        text = "浙" + rng.choice(serial[:24]) + "".join(rng.choice(serial) for _ in range(5))
        if text not in known:
            known.add(text)
            changes.append({"plate": text, "until": now + 30 * 86400})
    delta = member_lists.make_delta(old, changes, 2)
    new = member_lists.apply_delta_bytes(old, delta)
    paths = {"delta": os.path.join(tmp, "delta.bin")}
    with open(paths["delta"], "wb") as f:
        f.write(delta)
    parts = downlink.members_parts(KEY, GATE, delta)
    paths["parts"] = os.path.join(tmp, "parts.jsonl")
    with open(paths["parts"], "wb") as f:
        for envelope in parts:
            f.write(downlink.encode(envelope) + b"\n")
    paths["single"] = os.path.join(tmp, "single.json")
    with open(paths["single"], "wb") as f:
        f.write(downlink.encode(downlink.members_envelope(KEY, GATE, delta)))
    whole = downlink.members_parts(KEY, GATE, member_lists.build(
        [{"plate": p} for p in plates], 3))
    paths["whole"] = os.path.join(tmp, "whole.jsonl")
    with open(paths["whole"], "wb") as f:
        for envelope in whole:
            f.write(downlink.encode(envelope) + b"\n")
    want = members.MemberList(io.BytesIO(new))
    paths["expect"] = os.path.join(tmp, "expect.txt")
    with open(query_path) as q, open(paths["expect"], "w") as f:
        f.write("%d %d\n" % (want.version, want.count))
        for p in changes[:200]:
            f.write("%s %d %d\n" % (p["plate"], now, want.lookup(p["plate"], now, 480)[0]))
        for line in q:
            text, t = line.split()
            f.write("%s %s %d\n" % (text, t, want.lookup(text, int(t), 480)[0]))
    print("update: a delta of %d changes (%d bytes) to the %d-member list in %d parts of "
          "at most %d bytes (largest envelope %d bytes); the whole list in %d parts" % (
              len(changes), len(delta), ml.count, len(parts), downlink.PART_BYTES,
              max(len(downlink.encode(e)) for e in parts), len(whole)))
    return (bin_path, paths["parts"], paths["single"], paths["delta"], paths["expect"],
            paths["whole"])


def run_on_image(tmp, bin_path, query_path):
    """On the host: write the inputs in tmp and run install() on the gate's image."""
    import os
    import subprocess
    from parkgate_tools import runtime
    inputs = write_inputs(tmp, bin_path, query_path)
    sys.stdout.flush()
    env = runtime.micropython_env()
    env["PARKGATE_SIM_DIR"] = tmp           # the board's flash.img
    env["PARKGATE_SIM_FLASH_STALL"] = "0,0"  # CPU time; stalls are modelled from counts
    proc = subprocess.run(
        runtime.micropython_argv(os.path.abspath(__file__), *inputs, heap=runtime.GATE_HEAP),
        env=env, timeout=1800)
    if proc.returncode:
        raise RuntimeError("bench_members update failed (exit %d)" % proc.returncode)


if __name__ == "__main__" and sys.implementation.name == "micropython":
    sys.exit(install(*sys.argv[1:]))
