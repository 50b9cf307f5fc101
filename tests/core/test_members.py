# The member list: build, lookups by binary search on a file, deltas merged
# by streaming (small lists: both runtimes; 50,000 in test_members_large).
import gc
import io
import os
import sys
from binascii import hexlify

from check import raises
from parkgate import members
from parkgate.members import (BLACKLISTED, EXPIRED, MEMBER, OUTSIDE_WINDOW, UNKNOWN,
                              MemberError, MemberList)
from parkgate_host.member_lists import (apply_delta, apply_delta_bytes, apply_delta_file, build,
                                        make_delta)

E = members.EPOCH
DAY = 86400
NOW = E + 1000 * DAY + 12 * 3600          # 12:00 UTC


def sample():
    return [
        {"plate": "粤B12345", "from": NOW - DAY, "until": NOW + 30 * DAY},
        {"plate": "粤B-1234O", "from": NOW - 60 * DAY, "until": NOW - DAY},     # expired
        {"plate": "京A00001", "from": NOW + DAY, "until": NOW + 30 * DAY},     # not yet
        {"plate": "沪C99999", "window": [1320, 420]},                          # nights
        {"plate": "沪C88888", "window": [480, 1080], "until": None},           # 08-18
        {"plate": "ABC123", "blacklist": True},
        {"plate": "京AD12345"},
    ]


def table(ml, now, offset=0):
    out = []
    for m in sample():
        out.append(ml.lookup(m["plate"], now, offset)[0])
    return out


def test_build_header_and_lookups():
    data = build(sample(), 7)
    assert data[:4] == b"PGML" and len(data) == 32 + 16 * 7
    ml = MemberList(io.BytesIO(data))
    ml.verify()
    assert ml.version == 7 and ml.count == 7
    assert table(ml, NOW) == [MEMBER, EXPIRED, EXPIRED, OUTSIDE_WINDOW, MEMBER,
                              BLACKLISTED, MEMBER]
    assert table(ml, NOW + 11 * 3600)[3:5] == [MEMBER, OUTSIDE_WINDOW]     # 23:00
    # UTC+8: 12:00 UTC is 20:00 local, outside 08-18 and inside 22-07? no
    assert table(ml, NOW, 480)[3:5] == [OUTSIDE_WINDOW, OUTSIDE_WINDOW]
    assert table(ml, NOW, 660)[3:5] == [MEMBER, OUTSIDE_WINDOW]            # 23:00 local
    assert ml.lookup("粤B 12345", NOW) == (MEMBER, (NOW - DAY, NOW + 30 * DAY, -1, -1, False))
    assert ml.lookup("粤B12340", NOW)[0] == EXPIRED        # O -> 0 normalised
    assert ml.lookup("沪C99999", NOW)[1] == (0, None, 1320, 420, False)
    assert ml.lookup("粤B99999", NOW) == (UNKNOWN, None)
    assert ml.lookup("not a plate!", NOW) == (UNKNOWN, None)
    assert ml.lookup("ABC123", E - DAY)[0] == BLACKLISTED


def test_validity_edges_rounded_to_minutes():
    t0 = NOW + 30
    data = build([{"plate": "A1", "from": t0, "until": t0 + 3600}], 1)
    ml = MemberList(io.BytesIO(data))
    assert ml.lookup("A1", NOW + 59)[0] == EXPIRED         # from rounds up
    assert ml.lookup("A1", NOW + 60)[0] == MEMBER
    assert ml.lookup("A1", NOW + 3599)[0] == MEMBER        # until rounds down
    assert ml.lookup("A1", NOW + 3600)[0] == EXPIRED
    ml = MemberList(io.BytesIO(build([{"plate": "A1", "window": [0, 1440]}], 1)))
    assert ml.lookup("A1", NOW)[0] == MEMBER
    assert ml.lookup("A1", E - 5 * DAY)[0] == MEMBER


def test_empty_list_and_bad_input():
    ml = MemberList(io.BytesIO(build([], 0)))
    assert ml.count == 0 and ml.lookup("A1", NOW) == (UNKNOWN, None)
    ml.verify()
    for bad in ([{"plate": "A1"}, {"plate": "a-1"}], [{"plate": ""}],
                [{"plate": "A1", "window": [5, 5]}],
                [{"plate": "A1", "window": [0, 1441]}], [{"plate": "A1", "window": [1440, 5]}],
                [{"plate": "A1", "window": [1]}], [{"plate": "A1", "from": "x"}], ["A1"]):
        raises(ValueError, build, bad, 1)
    raises(ValueError, build, [], -1)
    data = bytearray(build(sample(), 3))
    raises(MemberError, MemberList, io.BytesIO(b"PGML"))
    for at in (0, 4, 5, 9):
        bad = bytearray(data)
        bad[at] ^= 1
        raises(MemberError, MemberList, io.BytesIO(bad))
    bad = bytearray(data)
    bad[40] ^= 1
    raises(MemberError, MemberList(io.BytesIO(bad)).verify)


def test_delta_equals_rebuild():
    old = build(sample(), 1)
    changes = [{"plate": "粤B12345", "remove": True},
               {"plate": "京A00001", "from": NOW - DAY, "until": NOW + DAY},
               {"plate": "桂A55555", "blacklist": True},
               {"plate": "Z9", "remove": True}]                 # absent: no-op
    new = apply_delta(old, changes, 2)
    want = [m for m in sample() if m["plate"] not in ("粤B12345", "京A00001")]
    want += [changes[1], changes[2]]
    assert new == build(want, 2)
    ml = MemberList(io.BytesIO(new))
    assert ml.version == 2 and ml.count == 7
    assert ml.lookup("京A00001", NOW)[0] == MEMBER
    assert ml.lookup("粤B12345", NOW)[0] == UNKNOWN
    assert ml.lookup("桂A55555", NOW)[0] == BLACKLISTED
    delta = make_delta(old, changes, 2)
    assert apply_delta_bytes(old, delta) == new
    raises(MemberError, apply_delta_bytes, new, delta)         # base version 1 != 2
    raises(ValueError, make_delta, old, [{"plate": "A1"}, {"plate": "a1", "remove": True}], 2)
    bad = bytearray(delta)
    bad[40] ^= 1
    raises(MemberError, apply_delta_bytes, old, bad)
    raises(MemberError, apply_delta_bytes, old, delta[:-1])


def _tmp():
    return "/tmp/pg_members_%s_%s.bin" % (sys.implementation.name,
                                           hexlify(os.urandom(4)).decode())


def test_apply_delta_file_streams_and_renames():
    old = build([{"plate": "京A%05d" % i} for i in range(100)], 4)
    changes = [{"plate": "京A%05d" % i, "remove": True} for i in range(0, 100, 7)]
    changes += [{"plate": "沪A%05d" % i, "until": NOW} for i in range(40)]
    delta = make_delta(old, changes, 5)
    path = _tmp()
    try:
        with open(path, "wb") as f:
            f.write(old)
        assert apply_delta_file(path, delta) == 5
        with open(path, "rb") as f:
            got = f.read()
        assert got == apply_delta(old, changes, 5)
        ml = MemberList(path)
        ml.verify()
        assert ml.count == 100 - 15 + 40
        assert ml.lookup("京A00007", NOW)[0] == UNKNOWN
        assert ml.lookup("京A00008", NOW)[0] == MEMBER
        assert ml.lookup("沪A00039", NOW - 60)[0] == MEMBER
        ml.close()
        # the same delta again: wrong base version, the file stays
        raises(MemberError, apply_delta_file, path, delta)
        with open(path, "rb") as f:
            assert f.read() == got
        raises(OSError, os.stat, path + ".new")
    finally:
        for p in (path, path + ".new"):
            try:
                os.remove(p)
            except OSError:
                pass


def test_lookup_allocates_little():
    if sys.implementation.name != "micropython" or not hasattr(gc, "mem_alloc"):
        return
    ml = MemberList(io.BytesIO(build([{"plate": "粤B%05d" % i} for i in range(200)], 1)))
    ml.lookup("粤B00001", NOW)
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        for i in range(20):
            assert ml.lookup("粤B%05d" % (i * 7), NOW)[0] == MEMBER
        grown = gc.mem_alloc() - before
    finally:
        gc.enable()
    assert grown < 20 * 2048, grown


def test_clock_before_2020_admits_only_open_ended_members():
    ml = MemberList(io.BytesIO(build(sample(), 1)))
    assert table(ml, 0) == [EXPIRED, EXPIRED, EXPIRED, MEMBER, OUTSIDE_WINDOW,
                            BLACKLISTED, MEMBER]
