# Checkpoints of the cars-inside table in the journal (parkgate.checkpoint,
# the checkpoint records of parkgate.journal, OpenSessions.dump/load), on an
# in-memory emulated NOR flash, on CPython and on the gate's MicroPython
# image alike. Longer runs with power cuts: tests/test_journal_powercut.py.
import gc

from parkgate import record
from parkgate.checkpoint import Checkpointer
from parkgate.journal import (CP_DONE, CP_MORE, CP_WAIT, CHECKPOINT_PAYLOAD, Journal,
                              JournalError, JournalFull, KIND_CHECKPOINT)
from parkgate.lane import Lane
from parkgate.sessions import OpenSessions
from flashdev import FlashDevice, Partition, PowerCut, TORN_PARTIAL
from check import raises


def plate(i):
    return "粤B%04d" % i


def event(seq, kind, i):
    return record.Event(kind, 100000 + seq, 6, plate(i), 1, 90)


class Gate:
    """The journal, the lane and the checkpointer the way app.Gate wires them."""

    def __init__(self, part, every=20, inside_max=128):
        self.part = part
        self.journal = Journal(part)
        self.journal.mount()
        self.lane = Lane("in", 0, inside_max)
        self.cp = Checkpointer(self.journal, self.lane.inside, every, 1)
        self.replayed = self.cp.restore(self.lane.note)

    def car(self, kind, i):
        j = self.journal
        ev = event(j.next_seq, kind, i)
        ev.seq = j.append(kind, record.encode_body(ev), kind == record.KIND_EXIT)
        self.lane.note(ev)
        return ev.seq

    def idle(self, rounds=20):
        # The gate loop while no car comes: maintain() first, else checkpoints.
        for _ in range(rounds):
            self.journal.maintain() or self.cp.service()

    def traffic(self, n, start=0, ack=True):
        # n cars: plates 0..29 enter and leave in turn, idle time after each.
        for k in range(start, start + n):
            kind = record.KIND_EXIT if k % 3 == 2 else record.KIND_ENTRY
            s = self.car(kind, k * 7 % 30)
            if ack:
                self.journal.ack(s)
            self.idle()


def device(blocks=12, bs=512):
    dev = FlashDevice(None, bs, blocks + 2)
    return dev, Partition(dev, 2, blocks)


def full_replay(part, inside_max=128):
    # What the gate rebuilt before checkpoints: every record of the ring.
    j = Journal(part)
    j.mount()
    lane = Lane("in", 0, inside_max)
    for seq, kind, body in j.records():
        lane.note(record.decode_body(kind, seq, body))
    return lane.inside


def table(sessions):
    return [sessions.get(plate(i)) for i in range(30)]


def chunks(journal):
    return [r for r in journal.records(True) if r[1] == KIND_CHECKPOINT]


def test_sessions_dump_and_load_round_trip():
    s = OpenSessions(100)
    for i in range(40):
        s.put(plate(i), 5000 + i)
    s.remove(plate(3))
    buf = bytearray(9 * 12)
    mv = memoryview(buf)
    t = OpenSessions(64)          # another capacity: entries go in by key
    slot = 0
    while slot < s.capacity:
        slot, n = s.dump(slot, mv)
        assert n % 12 == 0 and (n == len(buf) or slot == s.capacity)
        assert t.load(mv[0:n])
    assert len(t) == len(s) == 39
    assert [t.get(plate(i)) for i in range(40)] == [s.get(plate(i)) for i in range(40)]
    assert not t.load(bytes(12)) and not t.load(bytes(5))   # a zero time, a short entry
    c = t.changes
    t.clear()
    assert len(t) == 0 and t.get(plate(1)) is None and t.changes != c
    t.put(plate(1), 7)
    assert t.get(plate(1)) == 7


def test_boot_loads_the_checkpoint_and_replays_only_what_came_after():
    dev, part = device()
    g = Gate(part)
    g.traffic(70)
    assert g.cp.written >= 2 and g.journal.checkpoint_cover > 1
    cover = g.journal.checkpoint_cover
    g.traffic(5, 70)
    h = Gate(part)
    assert h.journal.checkpoint_cover == cover
    assert h.replayed == g.journal.next_seq - cover == 5 + (70 - cover + 1)
    assert table(h.lane.inside) == table(g.lane.inside) == table(full_replay(part))
    assert len(h.lane.inside) == len(g.lane.inside) > 5
    # Checkpoint chunks are journal records, never events: neither
    # records() nor pending() (what the uplink sends) yields them.
    assert chunks(h.journal)
    assert all(r[1] in record.KIND_NAMES for r in h.journal.records())
    g.journal.ack(10)
    h = Gate(part)
    assert all(r[1] in record.KIND_NAMES for r in h.journal.pending(1000))
    assert len(h.journal.pending(1000)) == h.journal.next_seq - 1 - h.journal.acked


def test_no_checkpoint_is_a_full_replay():
    dev, part = device()
    g = Gate(part, every=10000)
    g.traffic(40)
    assert g.cp.written == 0 and not chunks(g.journal)
    h = Gate(part)
    assert h.journal.checkpoint_cover == 0 and h.replayed == 40
    assert table(h.lane.inside) == table(g.lane.inside)


def newest_chunks(g):
    # (block, offset) of every chunk of the newest checkpoint, oldest first.
    j = g.journal
    found = []
    for b in range(j.blocks):
        if not j._base[b]:
            continue
        seed = j._seed_of(b)
        off = 24
        while True:
            r = j._read(b, off, seed)
            if r <= 0:
                break
            if j._rk == KIND_CHECKPOINT and j._rs == j.checkpoint_cover:
                found.append(((j._hgen - (j._head - b) % j.blocks), off, b))
            off += r
    found.sort()
    return [(b, off) for _, off, b in found]


def spoil(part, b, off, at):
    # Clear one bit of the byte at `at` in the record at (b, off): what a
    # torn program or a worn cell leaves. NOR only clears bits.
    one = bytearray(1)
    part.readblocks(b, one, off + at)
    assert one[0]
    part.writeblocks(b, bytes((one[0] & (one[0] - 1),)), off + at)


def until_checkpoint(g, start):
    # Cars until a checkpoint has just been written; nothing after it.
    written = g.cp.written
    k = start
    while g.cp.written == written:
        g.traffic(1, k)
        k += 1
    return k


def test_a_chunk_that_does_not_check_falls_back_to_the_previous_checkpoint():
    # A record that does not check ends what is read of its block (the
    # journal's rule), so the spoiled chunks here have only chunks after
    # them in their block: what is lost is the checkpoint alone.
    for which in (0, -1):             # chunk 0, the last chunk
        dev, part = device()
        g = Gate(part, inside_max=256)
        k = until_checkpoint(g, 0)
        k = until_checkpoint(g, k)
        older = g.journal.checkpoint_cover
        until_checkpoint(g, k)
        newest = g.journal.checkpoint_cover
        assert newest > older > 0
        h = Gate(part)        # chunks end the head block: they give no seq
        assert h.journal.checkpoint_cover == newest and h.replayed == 0
        assert h.journal.next_seq == g.journal.next_seq == newest
        spots = newest_chunks(g)
        assert len(spots) >= 3
        b, off = spots[which]
        spoil(part, b, off, 20)       # a byte of an entry: only the CRC tells
        h = Gate(part)
        assert h.journal.checkpoint_cover == older, which
        assert table(h.lane.inside) == table(g.lane.inside)
        assert h.replayed == g.journal.next_seq - older


def test_a_checkpoint_cut_short_is_not_used():
    dev, part = device()
    g = Gate(part, every=1000, inside_max=256)
    g.traffic(30)
    g.cp.every = 1
    g.traffic(1, 30)                  # a first checkpoint
    first = g.journal.checkpoint_cover
    g.traffic(6, 31)
    assert g.journal.checkpoint_cover > first
    # The next one: begun, two chunks written, the rest never (power cut,
    # reboot): the boot takes the checkpoint before it.
    j = g.journal
    newest = j.checkpoint_cover
    g.car(record.KIND_ENTRY, 29)
    assert j.checkpoint_begin(4)
    assert j.checkpoint_put(b"") == CP_MORE and j.checkpoint_put(b"") == CP_MORE
    h = Gate(part)
    assert h.journal.checkpoint_cover == newest
    assert table(h.lane.inside) == table(g.lane.inside)
    # A torn last chunk: the same.
    g = Gate(part, every=1)
    g.car(record.KIND_ENTRY, 28)
    dev.cut_after(1, TORN_PARTIAL, 5)
    try:
        g.idle()
    except PowerCut:
        pass
    dev.power_on()
    h = Gate(part)
    assert h.journal.checkpoint_cover in (newest, g.journal.next_seq)
    assert table(h.lane.inside) == table(g.lane.inside)


def test_power_cut_at_every_operation_of_a_checkpoint():
    # Cut at each program of a checkpoint of several blocks, torn: the boot
    # always rebuilds the same table, from the old checkpoint or the new.
    dev, part = device(16)
    g = Gate(part, every=1000, inside_max=256)
    g.traffic(45)
    g.cp.every = 1
    g.traffic(1, 45)
    before = g.journal.checkpoint_cover
    want = table(g.lane.inside)
    image = dev.snapshot()
    cut = 1
    seen = []
    while True:
        dev.restore(image)
        g = Gate(part, every=1)
        assert g.journal.checkpoint_cover == before
        g.car(record.KIND_ENTRY, 5)        # due again
        want = table(g.lane.inside)
        dev.reset_counters()
        dev.cut_after(cut, TORN_PARTIAL, cut)
        try:
            g.idle()
        except PowerCut:
            dev.power_on()
            h = Gate(part)
            assert table(h.lane.inside) == want, cut
            seen.append(h.journal.checkpoint_cover)
            cut += 1
            continue
        break
    assert cut > 4 and seen[0] == before and seen[-1] > before


def peers(g, n):
    # Entries heard from other lanes: in the table, not in this journal.
    for i in range(n):
        g.lane.note(record.Event(record.KIND_ENTRY, 90000 + i, 6, "沪C%04d" % i))


def test_a_table_change_drops_the_checkpoint_being_written():
    dev, part = device()
    g = Gate(part, every=1000, inside_max=256)
    g.traffic(40)
    peers(g, 80)                      # a checkpoint of about 11 chunks: 4 blocks
    j = g.journal
    g.cp.every = 1
    g.car(record.KIND_ENTRY, 1)
    # Write chunks until one waits for an erase, then a car comes.
    while j.maintain():
        pass
    for _ in range(10):
        if not g.cp.service():
            break
    assert j.checkpoint_writing()
    g.car(record.KIND_ENTRY, 2)       # a new car inside: the snapshot is stale
    assert not g.cp.service() and not j.checkpoint_writing() and g.cp.dropped == 1
    g.idle()
    assert g.cp.written == 1
    h = Gate(part, inside_max=256)
    assert h.journal.checkpoint_cover == j.checkpoint_cover
    assert table(h.lane.inside) == table(g.lane.inside) and len(h.lane.inside) == len(g.lane.inside)
    assert h.lane.inside.get("沪C0079") == 90079   # the peers' entries too


def test_a_car_that_changes_nothing_does_not_drop_it():
    dev, part = device()
    g = Gate(part, every=1000, inside_max=256)
    g.traffic(40)
    peers(g, 80)
    j = g.journal
    g.cp.every = 1
    g.car(record.KIND_ENTRY, 1)
    while j.maintain():
        pass
    while g.cp.service():
        pass
    assert j.checkpoint_writing()
    g.cp.every = 1000
    g.car(record.KIND_EXIT, 45)       # not inside: the table stays as it was
    g.idle()
    assert g.cp.dropped == 0 and g.cp.written == 1
    h = Gate(part, inside_max=256)
    assert table(h.lane.inside) == table(g.lane.inside) and len(h.lane.inside) == len(g.lane.inside)
    assert h.replayed == 1 and h.journal.checkpoint_cover == j.next_seq - 1


def test_the_ring_never_reclaims_the_newest_checkpoint():
    # every is too large to matter: only the guard writes checkpoints, just
    # before the ring would reclaim the block of the newest one. Many laps
    # later the table still holds cars whose entries left the ring long ago.
    dev, part = device(12)
    g = Gate(part, every=100000)
    g.car(record.KIND_ENTRY, 40)       # a car that stays: its entry is seq 1
    g.cp.every = 1
    g.idle()
    g.cp.every = 100000
    j = g.journal
    for k in range(1, 401):
        kind = record.KIND_EXIT if k % 3 == 2 else record.KIND_ENTRY
        j.ack(g.car(kind, k * 7 % 30))
        for _ in range(20):
            j.maintain() or g.cp.service()
            assert j.checkpoint_cover, k          # never lost, not even for a moment
    assert g.cp.written >= 5
    assert g.journal.checkpoint_cover and g.journal.checkpoint_room() >= 0
    h = Gate(part)
    assert h.journal.checkpoint_cover > 1 and h.lane.inside.get(plate(40)) == 100001
    assert full_replay(part).get(plate(40)) is None          # what the ring alone knows
    assert table(h.lane.inside) == table(g.lane.inside)


def test_checkpoint_writes_never_erase_and_keep_the_reserve():
    dev, part = device(12)
    g = Gate(part, every=5, inside_max=256)
    g.traffic(20, ack=False)
    peers(g, 80)
    j = g.journal
    raises(JournalError, j.checkpoint_put, b"")              # none begun
    assert j.checkpoint_begin(1)
    raises(JournalError, j.checkpoint_put, bytes(CHECKPOINT_PAYLOAD + 1))
    j.checkpoint_abort()
    # Service calls alone: they fill the head block, then wait for maintain().
    g.car(record.KIND_ENTRY, 3)
    e = dev.erases
    waited = False
    for _ in range(60):
        g.cp.service()
        waited = waited or (j.checkpoint_writing() and not g.cp.service())
    assert dev.erases == e and waited
    # A ring full of unacknowledged records: no checkpoint begins, and one
    # under way gives up rather than take the exits' reserve block.
    try:
        while True:
            g.car(record.KIND_ENTRY, 4)
            j.maintain()
    except JournalFull:
        pass
    assert not j.checkpoint_begin(1)
    assert j.stats()["full"]
    assert not g.cp.service()


class QuietFlash:
    # NOR flash, one bytearray per block, that allocates next to nothing per
    # call (flashdev's in-memory device builds bytes objects), so that what
    # service() allocates is what is measured.
    def __init__(self, bs, n):
        self.bs = bs
        self.n = n
        self.mem = [bytearray(b"\xff" * bs) for _ in range(n)]
        self.mv = [memoryview(m) for m in self.mem]

    def readblocks(self, b, buf, off=0):
        buf[0:len(buf)] = self.mv[b][off:off + len(buf)]

    def writeblocks(self, b, buf, off=0):
        m = self.mem[b]
        for i in range(len(buf)):
            m[off + i] &= buf[i]

    def ioctl(self, op, arg):
        if op == 4:
            return self.n
        if op == 5:
            return self.bs
        if op == 6:
            m = self.mem[arg]
            for i in range(self.bs):
                m[i] = 0xFF
        return 0


def test_service_allocates_little():
    # Chunks stream from the table through preallocated buffers: a call
    # allocates a few small objects, not the table.
    part = QuietFlash(4096, 12)
    g = Gate(part, every=1000, inside_max=1024)
    for i in range(600):
        g.lane.inside.put("苏E%05d" % i, 1000 + i)
    g.car(record.KIND_ENTRY, 1)
    g.cp.every = 1
    while g.journal.maintain():
        pass
    worst = 0
    calls = 0
    while True:
        gc.collect()
        before = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
        wrote = g.cp.service()
        after = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
        worst = max(worst, after - before)
        if not wrote and not g.journal.maintain():
            break
        calls += 1
    assert g.cp.written == 1 and calls > 8
    print("most allocated by one service() call: %d bytes" % worst)
    assert worst < 3000, worst            # the table is 600 x 12 = 7,200 bytes
    h = Gate(part, inside_max=1024)
    assert len(h.lane.inside) == 601 and h.lane.inside.get("苏E00599") == 1599


def test_chunks_must_start_where_they_say_chunk_0_is():
    # Chunks whose chunk-0 position holds an event (not a checkpoint this
    # firmware writes: each chunk 0 names its own place) are not used.
    import struct
    dev, part = device()
    g = Gate(part, every=1000)
    g.traffic(10)
    j = g.journal
    cover = j.next_seq
    event_at = 24                         # the first record of the head block
    gen = j._hgen
    assert j._off > event_at
    for i in range(3):
        body = struct.pack("<HHIH", i, 3, gen, event_at)
        j._write(KIND_CHECKPOINT, cover, body, False)
    assert [r[2][0] for r in chunks(j)] == [0, 1, 2]
    h = Gate(part)
    assert h.journal.checkpoint_cover == 0 and h.replayed == 10
    assert table(h.lane.inside) == table(g.lane.inside)


def test_a_removal_under_the_dump_cursor_would_lose_a_car():
    # Why an attempt is dropped when the table changes: cars A and B share a
    # home slot h (B sits in h+1); chunk 0 ends with A, the dump goes on from
    # h+1; then A leaves and B shifts back into h, behind the cursor. Going
    # on would checkpoint a table without B, whose entry is older than the
    # cover: the boot would lose B.
    from binascii import crc32
    cap = 128
    home = {}
    for i in range(4000):
        home.setdefault(crc32(plate(i).encode()) % cap, []).append(i)
    h = 100
    a, b = home[h][:2]
    before = [home[s][0] for s in range(0, 80, 10)]     # eight cars, one per run
    dev, part = device()
    g = Gate(part, every=100000, inside_max=cap)
    for i in before + [a, b]:
        g.car(record.KIND_ENTRY, i)
    j = g.journal
    while not 128 <= j._bs - j._off < 160:     # room for chunk 0 in the head, not chunk 1 too
        g.car(record.KIND_EXIT, 3999)      # a car never seen: changes nothing
    g = Gate(part, every=1, inside_max=cap)    # a reboot: the next block is not pre-erased
    j = g.journal
    live = g.lane.inside
    assert len(live) == 10 and live.get(plate(b)) and not j.checkpoint_writing()
    assert g.cp.service() and j.checkpoint_writing()    # chunk 0 written, chunk 1 waits
    g.car(record.KIND_EXIT, a)
    assert live.get(plate(b)) and live.get(plate(a)) is None
    for _ in range(50):                   # idle until a checkpoint is complete; boot
        if g.cp.written:
            break
        j.maintain() or g.cp.service()
    assert g.cp.written == 1 and g.cp.dropped == 1
    k = Gate(part, inside_max=cap)
    assert k.journal.checkpoint_cover == j.checkpoint_cover
    for i in before + [a, b]:
        assert k.lane.inside.get(plate(i)) == live.get(plate(i)), i
