# Member updates under power cuts (parkgate.member_update): a cut between
# any two install steps leaves the old list or the new one (both runtimes,
# a host folder), a reboot while parts come resumes the reception,
# leftovers are cleaned at boot, and on MicroPython a cut at every flash
# operation of littlefs on the emulated NOR flash. Helpers: test_member_update.
import os

from check import raises
from parkgate import members
from parkgate_host import member_lists
from parkgate.member_update import MemberStore, Refused
from test_member_update import (GATE, KEY, NOW, Folder, _bytes_io, answers, listed, offer_all,
                                parts, plates, power_cut, run)


def _check_version(ml, versions, probe):
    # the list in use is one of the versions, and answers exactly as it
    assert ml is not None
    assert ml.version in versions, ml.version
    want = versions[ml.version]
    assert ml.count == want.count
    assert answers(ml, probe) == answers(want, probe)


class NoFold(MemberStore):
    # a store that never folds its overlay in, as on a gate whose list
    # leaves no room for a second copy
    def _maybe_compact(self):
        pass


def _cut_sweep(old, payload, new, step_limit, prior=None):
    """For every k: all parts in, k slices of work (finer than step(),
    which does up to STEP_SLICES of them), a power cut, a reboot: the list
    is the old or the new one; the next boot finishes the install. Returns
    how many slices the install and its compaction took."""
    versions = {}
    for data in ((old if prior is None else member_lists.apply_delta_bytes(old, prior)), new):
        ml = members.MemberList(_bytes_io(data))
        versions[ml.version] = ml
    k = 0
    total = None
    while total is None or k <= total:
        d = Folder()
        try:
            d.write("members.bin", old)
            store = d.store()
            if prior is not None:           # the old list: members.bin and an overlay
                store = NoFold(d.path, lambda path: d.free, d.lines.append)
                offer_all(store, parts(prior))
                run(store)
                assert store.current.overlaid
            offer_all(store, parts(payload))
            done = 0
            for _ in range(k):
                if store._slice() == 0:
                    break
                done += 1
            if total is None and store._slice() == 0:
                total = done
            power_cut(store)
            again = d.store() if prior is None else NoFold(d.path, lambda path: d.free,
                                                           d.lines.append)
            _check_version(again.current, versions, PROBE)
            run(again)
            _check_version(again.current, versions, PROBE)
            assert again.current.version == max(versions)
            assert d.files() in (["members.bin"], ["members.bin", "members.ovl"]), d.files()
        finally:
            d.remove()
        k += 1
        assert k < step_limit
    return total


PROBE = plates("京A", 90) + plates("沪C", 20) + plates("浙E", 10)


def test_a_power_cut_between_any_two_steps_leaves_the_old_list_or_the_new():
    names = plates("京A", 90)
    old = member_lists.build(listed(names), 1)
    changes = [{"plate": p, "remove": True} for p in names[0:90:5]] + listed(
        plates("沪C", 20)) + listed(names[1:30:5], NOW - 60)
    delta = member_lists.make_delta(old, changes, 2)
    new = member_lists.apply_delta(old, changes, 2)
    steps = _cut_sweep(old, delta, new, 200)
    assert steps > 10, steps            # checking, merging, reading back, folding in
    whole = member_lists.build(listed(plates("沪C", 20)), 2)
    assert _cut_sweep(old, whole, whole, 200) >= 2
    # from a list that already has an overlay: the install merges with it
    more = [{"plate": p, "remove": True} for p in plates("沪C", 20)[::3]] + listed(
        names[0:90:5]) + listed(plates("浙E", 10), NOW + 600)
    delta3 = member_lists.make_delta(new, more, 3)
    assert _cut_sweep(old, delta3, member_lists.apply_delta_bytes(new, delta3), 200,
                      prior=delta) > 5


def test_a_reboot_while_parts_come_resumes_the_reception():
    d = Folder()
    try:
        d.write("members.bin", member_lists.build(listed(plates("京A", 10)), 1))
        store = d.store()
        envelopes = parts(member_lists.build(listed(plates("京B", 40)), 2))
        offer_all(store, envelopes[:4])
        power_cut(store)
        store = d.store()
        assert d.logged("MEMBERS resuming version=2 at part 4 of 7")
        assert "part 5 of version 2 out of order: part 4 is next" in str(
            raises(Refused, store.offer, envelopes[5], KEY, GATE))
        assert offer_all(store, envelopes) == [False] * 4 + [True] * 3
        assert run(store).count(2) == 1 and store.current.version == 2
    finally:
        d.remove()


def test_leftovers_are_cleaned_at_boot():
    d = Folder()
    try:
        old = member_lists.build(listed(plates("京A", 10)), 4)
        d.write("members.bin", old)
        d.write("members.bin.new", old[:100])              # an old-style install cut short
        d.write("members.ovn", b"\x01" * 40)
        d.write("members.stg", b"PGML")                    # no description
        other = member_lists.build(listed(plates("京B", 3)), 3)
        ml = members.MemberList(_bytes_io(other))          # an overlay for another list
        d.write("members.ovl", bytes(members.overlay_trailer(
            3, ml.count, ml.base_crc, 5, 3, ml.base_crc, 0, 0)))
        store = d.store()
        assert d.files() == ["members.bin"]
        assert store.current.version == 4 and not store.current.overlaid
        assert len(d.logged("left by an install cut short")) == 2
        assert d.logged("without its description") and d.logged("removed overlay")
        # a staged update for a version already installed (a cut after the rename)
        d.write("members.upd", b"4 1 32 32 " + b"0" * 64 + b"\n")
        d.write("members.stg", old[:32])
        d.store()
        assert d.files() == ["members.bin"]
        assert d.logged("removed staged update version=4: version 4 installed")
        # a field tool deploy of another list under a staged delta
        delta = member_lists.make_delta(old, listed(["京C00001"]), 5)
        store = d.store()
        offer_all(store, parts(delta)[:1])
        d.write("members.bin", member_lists.build([], 6))
        assert d.store().current.version == 6 and d.files() == ["members.bin"]
        # an unusable list: no list, and a whole list may replace it
        d.write("members.bin", old[:40])
        store = d.store()
        assert store.current is None and d.logged("ALARM member list unusable")
        offer_all(store, parts(member_lists.build(listed(plates("京B", 3)), 1)))
        assert run(store).count(2) == 1 and store.current.count == 3
    finally:
        d.remove()


class CutFlash:
    """littlefs's block device for the sweep: blocks in RAM; the k-th
    program or erase from arm() is torn (a prefix of it lands) and every
    later one is lost, all without an error, as when the power goes. (A
    Python exception raised through littlefs's C code, as FlashDevice's
    PowerCut is, would leave littlefs half-way through in this process.)"""

    def __init__(self, block_size, count):
        self.bs = block_size
        self.count = count
        self.blocks = [bytearray(b"\xff" * block_size) for _ in range(count)]
        self.left = 0
        self.dead = False
        self.rng = None

    def arm(self, k, seed):
        from flashdev import XorShift
        self.left = k
        self.dead = False
        self.rng = XorShift(seed)

    def power_on(self):
        self.left = 0
        self.dead = False

    def _land(self, n):
        # how many of n bytes land: all, a torn prefix, or none
        if self.dead:
            return 0
        if self.left:
            self.left -= 1
            if not self.left:
                self.dead = True
                return self.rng.below(n + 1)
        return n

    def readblocks(self, block, buf, offset=0):
        buf[0:len(buf)] = memoryview(self.blocks[block])[offset:offset + len(buf)]

    def writeblocks(self, block, buf, offset=None):
        if offset is None:
            for b in range(len(buf) // self.bs):
                self.ioctl(6, block + b)
            offset = 0
        n = self._land(len(buf))
        self.blocks[block][offset:offset + n] = memoryview(buf)[0:n]

    def ioctl(self, op, arg):
        if op == 4:
            return self.count
        if op == 5:
            return self.bs
        if op == 6:
            n = self._land(self.bs)
            self.blocks[arg][0:n] = b"\xff" * n
        return 0


def _littlefs_sweep(vfs, old, prior, delta, probe):
    # the sweep on littlefs from the list old (with prior applied, as an
    # overlay, when given) to old + prior + delta; returns (cuts, versions seen)
    mid = old if prior is None else member_lists.apply_delta_bytes(old, prior)
    new = member_lists.apply_delta_bytes(mid, delta)
    versions = {}
    for data in (mid, new):
        ml = members.MemberList(_bytes_io(data))
        versions[ml.version] = ml
    envelopes = parts(delta)
    mount = "/pgmu"
    dev = CutFlash(512, 40)

    def free(path):
        st = os.statvfs(path)
        return st[0] * st[3]

    def store():
        return NoFold(mount, free, lambda line: None)

    k = 0
    seen = {}
    while True:
        k += 1
        dev.power_on()
        vfs.VfsLfs2.mkfs(dev)
        vfs.mount(vfs.VfsLfs2(dev), mount)
        with open(mount + "/members.bin", "wb") as f:
            f.write(old)
        s = store()
        if prior is not None:
            offer_all(s, parts(prior))
            run(s)
            assert s.current.overlaid
        dev.arm(k, k)
        try:
            offer_all(s, envelopes)
            run(s)
        except (OSError, Refused):
            pass                        # littlefs found the lost writes out
        cut = dev.dead
        power_cut(s)
        vfs.umount(mount)
        dev.power_on()                  # the reboot
        vfs.mount(vfs.VfsLfs2(dev), mount)
        s = store()
        _check_version(s.current, versions, probe)
        seen[s.current.version] = 1
        offer_all(s, [e for e in envelopes if s.current.version < max(versions)])
        run(s)
        _check_version(s.current, versions, probe)
        assert s.current.version == max(versions)
        s.current.close()
        vfs.umount(mount)
        if not cut:
            return k, len(seen)


def test_on_littlefs_a_power_cut_at_every_flash_operation():
    try:
        import vfs
    except ImportError:
        return                          # CPython: the host folder sweep above
    if not hasattr(vfs, "VfsLfs2"):
        return
    names = plates("京A", 70)
    old = member_lists.build(listed(names), 1)
    changes = [{"plate": p, "remove": True} for p in names[0:70:6]] + listed(plates("沪C", 12))
    delta = member_lists.make_delta(old, changes, 2)
    probe = names[:20] + plates("沪C", 12) + plates("浙E", 8)
    cuts, seen = _littlefs_sweep(vfs, old, None, delta, probe)
    assert cuts > 40 and seen == 2, (cuts, seen)
    # from a list that already has an overlay
    mid = member_lists.apply_delta_bytes(old, delta)
    more = [{"plate": p, "remove": True} for p in plates("沪C", 12)[::2]] + listed(
        plates("浙E", 8)) + listed(names[1:70:6], NOW + 600)
    cuts, seen = _littlefs_sweep(vfs, old, delta, member_lists.make_delta(mid, more, 3), probe)
    assert cuts > 40 and seen == 2, (cuts, seen)
