"""50,000 members: built on CPython, looked up on CPython and under the
MicroPython unix port (compiled firmware, the gate's heap) with identical
answers for a sample; a delta applied (host merge, and the gate's streaming
apply_delta_file under micropython) equals a rebuild. A delta of 1,000
changes sent in signed parts (parkgate_tools.downlink.members_parts) and
installed by parkgate.member_update within the boards' 1.25 MiB
filesystem: on CPython against a littlefs space model, and on the gate's
image on the board's own littlefs in its 64 KiB heap."""
import io
import json
import os
import random
import subprocess

import pytest

from parkgate import member_merge, member_update, members
from parkgate_host import member_lists
from parkgate_tools import runtime
from parkgate_tools.lot import downlink

E = members.EPOCH
DAY = 86400
NOW = E + 1500 * DAY
PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
SERIAL = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"


def make_members(n, seed=1):
    rng = random.Random(seed)
    seen = set()
    out = []
    while len(out) < n:
        text = (rng.choice(PROVINCES) + rng.choice(SERIAL[:24])
                + "".join(rng.choice(SERIAL) for _ in range(rng.choice((5, 5, 5, 6)))))
        if text in seen:
            continue
        seen.add(text)
        start = NOW + rng.randint(-400, 30) * DAY + rng.randint(0, 86399)
        m = {"plate": text, "from": start, "until": start + rng.choice((30, 90, 365)) * DAY}
        if rng.random() < 0.2:
            a = rng.randint(0, 1439)
            b = rng.randint(0, 1440)
            m["window"] = [a, b if b != a else (a + 1)]
        if rng.random() < 0.02:
            m["blacklist"] = True
        if rng.random() < 0.05:
            m["from"] = None
            m["until"] = None
        out.append(m)
    return out


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    ms = make_members(50000)
    data = member_lists.build(ms, 11)
    path = tmp_path_factory.mktemp("members") / "members.bin"
    path.write_bytes(data)
    return ms, data, str(path)


def queries(ms, n=600, seed=2):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 3 == 0:
            text = rng.choice(PROVINCES) + "Z" + "%05d" % rng.randint(0, 99999)   # mostly unknown
        else:
            text = rng.choice(ms)["plate"]
        out.append((text, NOW + rng.randint(-60, 60) * DAY + rng.randint(0, 86399),
                    rng.choice((0, 480, -300))))
    return out


MP_LOOKUP = """
import sys
from parkgate import members
ml = members.MemberList(sys.argv[1])
with open(sys.argv[2]) as f:
    for line in f:
        text, now, offset = line.rstrip("\\n").split("\\t")
        status, rec = ml.lookup(text, int(now), int(offset))
        print("%d %r" % (status, rec))
ml.close()
"""

MP_DELTA = """
import sys
from parkgate_host import member_lists
with open(sys.argv[2], "rb") as f:
    delta = f.read()
print(member_lists.apply_delta_file(sys.argv[1], delta))
"""


def run_mp(tmp_path, source, *args):
    script = tmp_path / "script.py"
    script.write_text(source)
    proc = subprocess.run(
        runtime.micropython_argv(str(script), *args, heap=runtime.GATE_HEAP),
        env=runtime.micropython_env(), capture_output=True, text=True,
        timeout=600, cwd=runtime.ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.splitlines()


def test_lookups_agree_with_a_dict_on_cpython(big):
    ms, data, _ = big
    ml = members.MemberList(io.BytesIO(data))
    ml.verify()
    assert ml.count == 50000 and len(data) == 32 + 16 * 50000
    by_plate = {m["plate"]: m for m in ms}
    for text, now, offset in queries(ms):
        status, rec = ml.lookup(text, now, offset)
        m = by_plate.get(text)
        if m is None:
            assert status == members.UNKNOWN
            continue
        minute = (now + offset * 60) // 60 % 1440
        if m.get("blacklist"):
            want = members.BLACKLISTED
        elif ((m["from"] is not None and now < (m["from"] + 59) // 60 * 60)
              or (m["until"] is not None and now >= m["until"] // 60 * 60)):
            want = members.EXPIRED
        elif m.get("window") and not (
                m["window"][0] <= minute < m["window"][1] if m["window"][0] < m["window"][1]
                else minute >= m["window"][0] or minute < m["window"][1]):
            want = members.OUTSIDE_WINDOW
        else:
            want = members.MEMBER
        assert status == want, (text, now, offset, m, rec)


def test_micropython_gives_the_same_answers(big, tmp_path):
    ms, data, path = big
    qs = queries(ms)
    qfile = tmp_path / "queries.tsv"
    qfile.write_text("".join("%s\t%d\t%d\n" % q for q in qs))
    got = run_mp(tmp_path, MP_LOOKUP, path, str(qfile))
    ml = members.MemberList(io.BytesIO(data))
    want = ["%d %r" % ml.lookup(*q) for q in qs]
    assert got == want
    statuses = set(line.split()[0] for line in got)
    assert statuses == set("01234"), statuses


def test_delta_equals_rebuild_on_host_and_on_the_gate(big, tmp_path):
    ms, data, path = big
    rng = random.Random(3)
    gone = set(m["plate"] for m in rng.sample(ms, 300))
    renewed = [dict(m, until=NOW + 400 * DAY) for m in rng.sample(ms, 300)
               if m["plate"] not in gone]
    known = set(x["plate"] for x in ms)
    added = [m for m in make_members(200, seed=99) if m["plate"] not in known]
    changes = ([{"plate": p, "remove": True} for p in sorted(gone)] + renewed + added)
    new = member_lists.apply_delta(data, changes, 12)
    keep = {m["plate"]: m for m in ms if m["plate"] not in gone}
    for m in renewed + added:
        keep[m["plate"]] = m
    assert new == member_lists.build(list(keep.values()), 12)
    delta = member_lists.make_delta(data, changes, 12)
    assert len(delta) == 32 + 17 * len(changes)
    gate_file = tmp_path / "members.bin"
    gate_file.write_bytes(data)
    dfile = tmp_path / "delta.bin"
    dfile.write_bytes(delta)
    assert run_mp(tmp_path, MP_DELTA, str(gate_file), str(dfile)) == ["12"]
    assert gate_file.read_bytes() == new
    assert not os.path.exists(str(gate_file) + ".new")


KEY = bytes(range(32))
GATE = "gate-large"
FS_BLOCKS = 320                  # boards/unix-sim FS_BLOCKS: the ESP32 boards' vfs
BLOCK = 4096


class LittlefsModel:
    """Free space of a folder as littlefs on 320 blocks of 4 KiB would
    report it: superblock and root directory pairs, each file its data in
    whole blocks less its skip-list pointers, tiny files inline; and the
    most ever used."""

    def __init__(self, path, other=3400):
        self.path = path
        self.other = other           # site.json and a tariff beside the list
        self.peak = 0

    def used(self):
        blocks = 4 + (self.other + BLOCK - 9) // (BLOCK - 8)
        for name in os.listdir(self.path):
            size = os.path.getsize(os.path.join(self.path, name))
            if size > 64:
                blocks += (size + BLOCK - 9) // (BLOCK - 8)
        return blocks * BLOCK

    def __call__(self, path):
        used = self.used()
        self.peak = max(self.peak, used)
        return FS_BLOCKS * BLOCK - used


def big_delta(ms, data, seed=4, n=1000, version=12):
    rng = random.Random(seed)
    picked = rng.sample(ms, n * 7 // 10)
    changes = [{"plate": m["plate"], "remove": True} for m in picked[:n * 3 // 10]]
    changes += [dict(m, until=NOW + 500 * DAY) for m in picked[n * 3 // 10:]]
    known = set(m["plate"] for m in ms)
    changes += [m for m in make_members(400, seed=seed + 50) if m["plate"] not in known][
        :n - len(changes)]
    assert len(changes) == n
    return changes, member_lists.make_delta(data, changes, version)


def test_a_delta_of_1000_changes_in_parts_fits_the_boards_filesystem(big, tmp_path):
    ms, data, _ = big
    changes, delta = big_delta(ms, data)
    new = member_lists.apply_delta_bytes(data, delta)
    parts = downlink.members_parts(KEY, GATE, delta)
    assert len(parts) == 36 and max(len(downlink.encode(p)) for p in parts) < 900
    fs = tmp_path / "fs"
    fs.mkdir()
    (fs / "members.bin").write_bytes(data)
    space = LittlefsModel(str(fs))
    lines = []
    store = member_update.MemberStore(str(fs), space, lines.append)
    assert space(str(fs)) < 2 * len(data)           # no room for a second copy
    # a whole list beside the list: refused before anything is written
    whole = downlink.members_parts(KEY, GATE, member_lists.build(ms[:49000], 12))
    with pytest.raises(member_update.Refused, match="not enough flash"):
        store.offer(whole[0], KEY, GATE)
    assert os.listdir(str(fs)) == ["members.bin"]
    for envelope in parts:
        store.offer(envelope, KEY, GATE)
        space(str(fs))
    steps = []
    while True:
        r = store.step()
        space(str(fs))
        if r == 0:
            break
        steps.append(r)
    assert steps.count(2) == 1
    assert space.peak < FS_BLOCKS * BLOCK
    assert space.peak - LittlefsModel(str(fs)).used() < 64 * 1024
    assert any("changes kept beside the list" in line for line in lines)
    cur = store.current
    assert (cur.version, cur.count, cur.changes) == (12, len(new) // 16 - 2, 1000)
    assert (fs / "members.bin").read_bytes() == data          # not rewritten
    # base + overlay is the host's merge, record for record
    out = io.BytesIO()
    with open(str(fs / "members.bin"), "rb") as base, open(str(fs / "members.ovl"), "rb") as ovl:
        base.seek(32)
        merger = member_merge.Merger(base, 50000, newer=ovl, newer_count=cur.changes,
                                out_records=out)
        while merger.step():
            pass
    assert out.getvalue() == new[32:]
    want = members.MemberList(io.BytesIO(new))
    for text, now, offset in queries(ms) + [(c["plate"], NOW, 0) for c in changes]:
        assert cur.lookup(text, now, offset) == want.lookup(text, now, offset), text
    # the next delta merges with the overlay
    changes2, delta2 = big_delta(ms, new, seed=9, n=500, version=13)
    for envelope in downlink.members_parts(KEY, GATE, delta2):
        store.offer(envelope, KEY, GATE)
    while store.step():
        space(str(fs))
    newer = member_lists.apply_delta_bytes(new, delta2)
    want = members.MemberList(io.BytesIO(newer))
    assert store.current.version == 13 and store.current.count == want.count
    for text, now, offset in queries(ms, 200, seed=5) + [(c["plate"], NOW, 0)
                                                         for c in changes2 + changes]:
        assert store.current.lookup(text, now, offset) == want.lookup(text, now, offset)
    assert space.peak < FS_BLOCKS * BLOCK


MP_INSTALL = """
import json, sys
import board
from parkgate.member_update import MemberStore
fs = board.mount_flash()
buf = bytearray(512)
with open(sys.argv[1], "rb") as f, open(fs + "/members.bin", "wb") as g:
    while True:
        n = f.readinto(buf)
        if not n:
            break
        g.write(memoryview(buf)[0:n])
store = MemberStore(fs, board.free_flash, print)
with open(sys.argv[2]) as f:
    for line in f:
        store.offer(json.loads(line), bytes(range(32)), "gate-large")
while store.step():
    pass
ml = store.current
print("LIST %d %d %d" % (ml.version, ml.count, ml.changes))
with open(sys.argv[3]) as f:
    for line in f:
        text, now, offset = line.rstrip("\\n").split("\\t")
        print("%d %r" % ml.lookup(text, int(now), int(offset)))
"""


def test_the_gate_installs_the_delta_on_its_littlefs_in_its_heap(big, tmp_path):
    ms, data, path = big
    changes, delta = big_delta(ms, data)
    new = member_lists.apply_delta_bytes(data, delta)
    parts_file = tmp_path / "parts.jsonl"
    parts_file.write_bytes(b"".join(downlink.encode(p) + b"\n"
                                    for p in downlink.members_parts(KEY, GATE, delta)))
    qs = queries(ms, 300) + [(c["plate"], NOW, 0) for c in changes[::5]]
    qfile = tmp_path / "queries.tsv"
    qfile.write_text("".join("%s\t%d\t%d\n" % q for q in qs))
    script = tmp_path / "install.py"
    script.write_text(MP_INSTALL)
    env = runtime.micropython_env()
    env["PARKGATE_SIM_DIR"] = str(tmp_path)
    env["PARKGATE_SIM_FLASH_STALL"] = "0,0"
    proc = subprocess.run(
        runtime.micropython_argv(str(script), path, str(parts_file), str(qfile),
                                 heap=runtime.GATE_HEAP),
        env=env, capture_output=True, text=True, timeout=600, cwd=runtime.ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout.splitlines()
    assert "MEMBERS installed version=12 count=%d" % (len(new) // 16 - 2) in out, out[:10]
    assert "LIST 12 %d 1000" % (len(new) // 16 - 2) in out
    want = members.MemberList(io.BytesIO(new))
    got = out[out.index("LIST 12 %d 1000" % (len(new) // 16 - 2)) + 1:]
    assert got == ["%d %r" % want.lookup(*q) for q in qs]
