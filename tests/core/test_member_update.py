# Member updates in signed parts (parkgate.member_update): staged on flash,
# checked whole, installed a slice at a time; forged, stale, oversize and
# malformed parts refused, and too little flash refused before anything is
# written. Power cuts: test_member_update_cuts.py. Small lists: this runs
# in a 256 KiB heap on the gate's image; 50,000 members in
# tests/test_members_large.py.
import binascii
import hashlib
import os
import sys

from check import raises
from parkgate import members
from parkgate_host import member_lists, signing
from parkgate.member_update import MemberStore, Refused

KEY = b"0123456789abcdef0123456789abcdef"
GATE = "g1"
PART = 96                        # small parts: several of them for small lists
E = members.EPOCH
NOW = E + 1000 * 86400
BIG = 10 ** 9                    # free flash when space does not matter


def plates(prefix, n, step=1):
    return [prefix + "%05d" % i for i in range(0, n * step, step)]


def listed(names, until=None):
    return [{"plate": p, "until": until} for p in names]


def parts(data, size=PART, key=KEY, gate=GATE, version=None):
    v = member_lists.version_of(data) if version is None else version
    h = binascii.hexlify(hashlib.sha256(data).digest()).decode()
    n = max(1, (len(data) + size - 1) // size)
    out = []
    for i in range(n):
        body = binascii.b2a_base64(data[i * size:(i + 1) * size]).decode().strip()
        out.append(signing.sign(key, "members", gate, v, body, part=(i, n, len(data), h)))
    return out


class Folder:
    """A fresh folder standing for the gate's filesystem, a log, and the
    free flash the store is told of."""

    def __init__(self):
        self.path = "/tmp/pg_mu_%s_%s" % (sys.implementation.name,
                                          binascii.hexlify(os.urandom(4)).decode())
        os.mkdir(self.path)
        self.lines = []
        self.free = BIG

    def store(self):
        return MemberStore(self.path, lambda path: self.free, self.lines.append)

    def files(self):
        return sorted(os.listdir(self.path))

    def write(self, name, data):
        with open(self.path + "/" + name, "wb") as f:
            f.write(data)

    def read(self, name):
        with open(self.path + "/" + name, "rb") as f:
            return f.read()

    def logged(self, text):
        return [line for line in self.lines if text in line]

    def remove(self):
        for name in os.listdir(self.path):
            os.remove(self.path + "/" + name)
        os.rmdir(self.path)


def run(store, limit=100000):
    """step() until there is nothing left; the results of every call."""
    out = []
    while len(out) < limit:
        r = store.step()
        out.append(r)
        if r == 0:
            return out
    raise AssertionError("no end after %d steps" % limit)


def offer_all(store, envelopes):
    return [store.offer(e, KEY, GATE) for e in envelopes]


def answers(ml, names):
    return [ml.lookup(p, NOW)[0] for p in names]


def _bytes_io(data):
    import io
    return io.BytesIO(data)


def power_cut(store):
    # the process dies: its open files are closed by the system (nothing
    # the store buffers survives), the object is never used again
    store._close_files()
    if store.current is not None:
        try:
            store.current.close()
        except OSError:
            pass


def test_a_whole_list_in_parts():
    d = Folder()
    try:
        store = d.store()
        assert store.current is None and store.step() == 0
        names = plates("京A", 60)
        data = member_lists.build(listed(names), 3)
        envelopes = parts(data)
        assert len(envelopes) == 11
        assert offer_all(store, envelopes) == [True] * 11
        assert store.current is None                  # nothing applied yet
        steps = run(store)
        assert steps.count(2) == 1 and steps[-1] == 0
        assert store.current.version == 3 and store.current.count == 60
        assert answers(store.current, names[:5] + ["京B00001"]) == [members.MEMBER] * 5 + [
            members.UNKNOWN]
        assert d.files() == ["members.bin"] and d.read("members.bin") == data
        assert d.logged("MEMBERS installed version=3 count=60")
        # the same list again: stale
        assert "stale" in str(raises(Refused, store.offer, envelopes[0], KEY, GATE))
    finally:
        d.remove()


def test_a_delta_in_parts_kept_as_an_overlay_then_folded_in():
    d = Folder()
    try:
        names = plates("京A", 120)
        old = member_lists.build(listed(names), 1)
        d.write("members.bin", old)             # as a field tool deploy writes it
        store = d.store()
        assert store.current.version == 1
        gone = names[0:120:4]
        added = plates("沪C", 25)
        changes = [{"plate": p, "remove": True} for p in gone] + listed(added, NOW + 60)
        changes.append({"plate": "粤Z99999", "remove": True})      # not a member: dropped
        delta = member_lists.make_delta(old, changes, 2)
        d.free = 10 * 4096                    # room for the install, checked at part 0
        offer_all(store, parts(delta))
        d.free = 8 * 4096 - 1                 # then not for a second copy of the list
        assert run(store).count(2) == 1
        cur = store.current
        assert cur.version == 2 and cur.count == 120 - 30 + 25 and cur.changes == 55
        assert d.files() == ["members.bin", "members.ovl"]
        assert d.read("members.bin") == old       # the list itself was not rewritten
        want = members.MemberList(_bytes_io(member_lists.apply_delta(old, changes, 2)))
        probe = names + added + ["粤Z99999"]
        assert answers(cur, probe) == answers(want, probe)
        assert answers(cur, gone[:3]) == [members.UNKNOWN] * 3
        assert d.logged("changes kept beside the list")
        # a second delta merges with the overlay; then there is room to fold
        new = member_lists.apply_delta(old, changes, 2)
        more = [{"plate": added[0], "remove": True}, {"plate": gone[0]}] + listed(
            plates("浙D", 10))
        delta3 = member_lists.make_delta(new, more, 3)
        d.free = BIG
        offer_all(store, parts(delta3))
        steps = run(store)
        assert steps.count(2) == 1
        assert d.logged("MEMBERS compacted version=3 count=%d" % (115 - 1 + 1 + 10))
        assert d.files() == ["members.bin"]
        assert d.read("members.bin") == member_lists.apply_delta(new, more, 3)
        assert store.current.version == 3 and not store.current.overlaid
    finally:
        d.remove()


def test_parts_repeated_out_of_order_and_missing():
    d = Folder()
    try:
        d.write("members.bin", member_lists.build(listed(plates("京A", 10)), 1))
        store = d.store()
        data = member_lists.build(listed(plates("京B", 40)), 2)
        envelopes = parts(data)
        n = len(envelopes)
        assert n == 7
        assert "before its part 0" in str(raises(Refused, store.offer, envelopes[1], KEY, GATE))
        assert store.offer(envelopes[0], KEY, GATE)
        assert not store.offer(envelopes[0], KEY, GATE)              # a repeat
        assert store.offer(envelopes[1], KEY, GATE)
        why = str(raises(Refused, store.offer, envelopes[3], KEY, GATE))
        assert "out of order: part 2 is next" in why
        assert store.offer(envelopes[2], KEY, GATE)
        assert run(store) == [0]                  # parts 3.. missing: nothing to do
        assert store.current.version == 1
        # the lot server sends all of them again: repeats are taken as had
        assert offer_all(store, envelopes) == [False] * 3 + [True] * (n - 3)
        assert run(store).count(2) == 1 and store.current.version == 2
    finally:
        d.remove()


def test_a_forged_part_is_refused():
    d = Folder()
    try:
        old = member_lists.build(listed(plates("京A", 10)), 1)
        d.write("members.bin", old)
        store = d.store()
        data = member_lists.build(listed(plates("京B", 40)), 2)
        good = parts(data)
        other = parts(member_lists.build(listed(plates("京C", 40)), 2))    # signed, other payload
        tampered = dict(good[1], b=good[2]["b"])
        moved = dict(good[1], i=2)
        resized = dict(good[0], z=good[0]["z"] + 1)
        b = good[0]["b"]
        flipped = b[:20] + ("A" if b[20] != "A" else "B") + b[21:]
        cases = [(dict(good[0], b=flipped), "bad signature"),
                 (parts(data, key=b"another key")[0], "bad signature"),
                 (parts(data, gate="g2")[0], "for members/g2"),
                 (dict(good[0], h="0" * 64), "bad signature"),
                 (resized, "bad signature"),
                 ({k: v for k, v in good[0].items() if k != "s"}, "unsigned"),
                 ({k: v for k, v in good[0].items() if k != "i"}, "bad signature"),
                 # a part passed off as one whole message: its signed part
                 # line moved into the body
                 (dict({k: v for k, v in good[0].items() if k not in "inzh"},
                       b="0/7/%d/%s\n%s" % (len(data), good[0]["h"], good[0]["b"])),
                  "a newline in the body"),
                 (dict(good[0], i="0"), "malformed part fields")]
        for envelope, why in cases:
            assert why in str(raises(Refused, store.offer, envelope, KEY, GATE)), why
        assert d.files() == ["members.bin"]
        assert store.offer(good[0], KEY, GATE)
        for envelope, why in ((tampered, "bad signature"), (moved, "bad signature"),
                              (other[1], "another payload")):
            assert why in str(raises(Refused, store.offer, envelope, KEY, GATE)), why
        assert "no downlink key" in str(raises(Refused, store.offer, good[1], b"", GATE))
        offer_all(store, good)
        assert run(store).count(2) == 1 and store.current.version == 2
        # a payload whose parts are all signed but whose SHA-256 is false:
        # staged, found out when checked whole, never installed
        bad = member_lists.build(listed(plates("京D", 20)), 3)
        lie = "f" * 64
        forged = [signing.sign(KEY, "members", GATE, 3, e["b"], part=(e["i"], e["n"], e["z"], lie))
                  for e in parts(bad)]
        offer_all(store, forged)
        assert 2 not in run(store)
        assert store.current.version == 2 and store.failure == (3, "payload SHA-256 mismatch")
        assert d.files() == ["members.bin"]
    finally:
        d.remove()


def test_one_envelope_without_part_fields_is_a_one_part_update():
    d = Folder()
    try:
        store = d.store()
        data = member_lists.build(listed(plates("京A", 40)), 1)             # 672 bytes
        envelope = signing.sign(KEY, "members", GATE, 1,
                             binascii.b2a_base64(data).decode().strip())
        assert store.offer(envelope, KEY, GATE)
        assert run(store).count(2) == 1 and store.current.count == 40
        assert "stale" in str(raises(Refused, store.offer, envelope, KEY, GATE))
        big = member_lists.build(listed(plates("京B", 50)), 2)              # 832 bytes
        envelope = signing.sign(KEY, "members", GATE, 2, binascii.b2a_base64(big).decode().strip())
        assert "send parts" in str(raises(Refused, store.offer, envelope, KEY, GATE))
    finally:
        d.remove()


def test_stale_and_oversize_and_malformed():
    d = Folder()
    try:
        old = member_lists.build(listed(plates("京A", 10)), 5)
        d.write("members.bin", old)
        store = d.store()
        why = str(raises(Refused, store.offer, parts(member_lists.build([], 4))[0], KEY, GATE))
        assert why.startswith("stale: version 4, 5 applied"), why
        v7 = parts(member_lists.build(listed(plates("京B", 30)), 7))
        store.offer(v7[0], KEY, GATE)
        why = str(raises(Refused, store.offer, parts(member_lists.build([], 6))[0], KEY, GATE))
        assert "stale: version 6, version 7 is being received" in why
        # a delta for another list, one that makes another version
        delta = member_lists.make_delta(member_lists.build([], 4), listed(["京C00001"]), 9)
        assert "delta for list version 4, the gate has 5" in str(
            raises(Refused, store.offer, parts(delta)[0], KEY, GATE))
        delta = member_lists.make_delta(old, listed(["京C00001"]), 9)
        assert "delta makes version 9, the envelope says 8" in str(
            raises(Refused, store.offer, parts(delta, version=8)[0], KEY, GATE))
        assert "not a PGML file" in str(raises(Refused, store.offer, parts(
            b"NOPE" + bytes(60), version=8)[0], KEY, GATE))
        big = parts(member_lists.build(listed(plates("京B", 60)), 8), size=700)[0]
        assert "base64 characters" in str(raises(Refused, store.offer, big, KEY, GATE))
        h = "0" * 64
        huge = signing.sign(KEY, "members", GATE, 9, "AAAA", part=(0, 2, 2 * 10 ** 6, h))
        assert "payload of 2000000 bytes" in str(raises(Refused, store.offer, huge, KEY, GATE))
        beyond = signing.sign(KEY, "members", GATE, 9, "AAAA", part=(3, 2, 1000, h))
        assert "part 3 of 2" in str(raises(Refused, store.offer, beyond, KEY, GATE))
        short = parts(member_lists.build(listed(plates("京B", 30)), 8), size=32)[0]
        assert "do not make" in str(raises(Refused, store.offer, short, KEY, GATE))
        # version 7 is still being received after all that
        assert offer_all(store, v7)[1:] == [True] * (len(v7) - 1)
        assert run(store).count(2) == 1 and store.current.version == 7
    finally:
        d.remove()


def test_not_enough_flash_is_refused_before_anything_is_written():
    d = Folder()
    try:
        old = member_lists.build(listed(plates("京A", 50)), 1)
        d.write("members.bin", old)
        store = d.store()
        before = d.files()
        data = member_lists.build(listed(plates("京B", 200)), 2)        # 3,232 bytes
        # a block for it, one more while its last block is rewritten, and a
        # reserve of 6 blocks: 8 blocks
        d.free = 8 * 4096 - 1
        why = str(raises(Refused, store.offer, parts(data)[0], KEY, GATE))
        assert why == "not enough flash: version 2 needs %d bytes, %d free" % (
            8 * 4096, 8 * 4096 - 1), why
        assert d.files() == before and d.read("members.bin") == old
        delta = member_lists.make_delta(old, listed(plates("京C", 300)), 2)      # 5,132 bytes
        d.free = 12 * 4096 - 1   # the staged delta and the new overlay take 3 blocks each
        assert "not enough flash: version 2 needs %d" % (12 * 4096) in str(
            raises(Refused, store.offer, parts(delta)[0], KEY, GATE))
        assert d.files() == before
        d.free = 12 * 4096
        offer_all(store, parts(delta))
        assert run(store).count(2) == 1 and store.current.count == 350
    finally:
        d.remove()
