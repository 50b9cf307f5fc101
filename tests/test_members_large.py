"""50,000 members: built on CPython, looked up on CPython and under the
MicroPython unix port (compiled firmware, the gate's heap) with identical
answers for a sample; a delta applied (host merge, and the gate's streaming
apply_delta_file under micropython) equals a rebuild."""
import io
import os
import random
import subprocess

import pytest

from parkgate import members
from parkgate_tools import runtime

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
    data = members.build(ms, 11)
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
from parkgate import members
with open(sys.argv[2], "rb") as f:
    delta = f.read()
print(members.apply_delta_file(sys.argv[1], delta))
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
    new = members.apply_delta(data, changes, 12)
    keep = {m["plate"]: m for m in ms if m["plate"] not in gone}
    for m in renewed + added:
        keep[m["plate"]] = m
    assert new == members.build(list(keep.values()), 12)
    delta = members.make_delta(data, changes, 12)
    assert len(delta) == 32 + 17 * len(changes)
    gate_file = tmp_path / "members.bin"
    gate_file.write_bytes(data)
    dfile = tmp_path / "delta.bin"
    dfile.write_bytes(delta)
    assert run_mp(tmp_path, MP_DELTA, str(gate_file), str(dfile)) == ["12"]
    assert gate_file.read_bytes() == new
    assert not os.path.exists(str(gate_file) + ".new")
