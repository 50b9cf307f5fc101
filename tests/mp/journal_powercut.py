# Power-cut campaign for the journal, run by tests/test_journal_powercut.py
# under the MicroPython unix port (and importable on CPython).
#
# usage: micropython journal_powercut.py MODE SAMPLE SEED
#   MODE    none | partial (flashdev TORN_NONE / TORN_PARTIAL)
#   SAMPLE  cut points to draw at random (seeded by SEED); 0 = every one
# A workload of 1,000 events (appends interleaved with acks, maintain()
# and clean reboots; an offline stretch fills the ring, then a stretch with
# maintain() rarely called makes appends erase and acks wait) runs first without
# a cut to count its program/erase operations T and to check it; then, for
# each chosen cut point c in 1..T, the device image is reset to the starting
# snapshot, power is cut at operation c and the journal is remounted and
# checked. Prints one line per failure and a closing summary line:
#   "powercut mode=.. seed=.. ops=T points=N failures=F full=.. erases=.."
# Exits 1 if anything failed.
import sys

from parkgate.journal import Journal, JournalFull
from flashdev import FlashDevice, Partition, PowerCut, XorShift, TORN_NONE, TORN_PARTIAL

BS = 512
BLOCKS = 8          # the journal region; blocks 0 and 1 stand for littlefs
EVENTS = 1000
OFFLINE = (450, 650)    # events without acks: the ring fills up
BUSY = (650, 800)       # maintain() seldom called: appends erase, acks wait


def kind_of(seq):
    return 1 + seq % 2      # 1 entry, 2 exit


def body_of(seq):
    return bytes((seq * 13 + k) & 0xFF for k in range(seq * 7 % 41))


class State:
    def __init__(self):
        self.jid = 0        # journal id once formatted
        self.top = 0        # highest seq whose append returned
        self.inflight = 0   # seq of the append under way
        self.ack_req = 0    # highest ack asked for
        self.full = 0       # appends refused with JournalFull
        self.reboots = 0


def workload(part, st):
    rng = XorShift(2024)
    j = Journal(part)
    j.mount()
    st.jid = j.journal_id
    for i in range(EVENTS):
        if not OFFLINE[0] <= i < OFFLINE[1] and st.top > j.acked and rng.below(3) == 0:
            upto = st.top - rng.below(min(12, st.top - j.acked))
            st.ack_req = max(st.ack_req, upto)
            j.ack(upto)
        seq = j.next_seq
        st.inflight = seq
        try:
            s = j.append(kind_of(seq), body_of(seq), kind_of(seq) == 2)
        except JournalFull:
            st.full += 1
            s = 0
        st.inflight = 0
        if s:
            if s != st.top + 1:
                raise AssertionError("append returned seq %d after %d" % (s, st.top))
            st.top = s
        if rng.below(20 if BUSY[0] <= i < BUSY[1] else 3) == 0:
            j.maintain()
        if i % 300 == 299:
            st.reboots += 1
            j = Journal(part)
            j.mount()
    return j


def check(part, st, fresh):
    # Remount after a cut; returns a failure text or None.
    j = Journal(part)
    j.mount()
    if st.top and (j.formatted or j.journal_id != st.jid):
        return "journal reformatted, events lost"
    if not fresh and j.formatted:
        return "formatted again"
    seen = bytearray(EVENTS + 2)
    for seq, kind, body in j.records():
        if seq > st.top and seq != st.inflight:
            return "record seq %d never journaled (top %d)" % (seq, st.top)
        if kind != kind_of(seq) or body != body_of(seq):
            return "record seq %d corrupt" % seq
        if seen[seq]:
            return "record seq %d twice" % seq
        seen[seq] = 1
    if j.acked > st.ack_req:
        return "acked %d above any ack %d" % (j.acked, st.ack_req)
    for s in range(j.acked + 1, st.top + 1):
        if not seen[s]:
            return "event seq %d lost (acked %d, top %d)" % (s, j.acked, st.top)
    if j.next_seq <= st.top or (st.inflight and seen[st.inflight] and j.next_seq <= st.inflight):
        return "next_seq %d not above seq %d" % (j.next_seq, st.top)
    want = j.acked + 1
    while True:
        got = j.pending(8, want - 1)
        if not got:
            break
        for p in got:
            if p[0] != want:
                return "pending() not the unacknowledged records"
            want += 1
    if want != j.next_seq:
        return "pending() short"
    j.maintain()
    try:
        s = j.append(1, b"after")
    except JournalFull:
        # Legitimate only if the ring is full of unacknowledged records.
        if not j.stats()["full"]:
            return "JournalFull but not full"
        j.ack(j.next_seq - 1)
        j.maintain()
        s = j.append(1, b"after")
    k = Journal(part)
    k.mount()
    last = None
    for last in k.records():
        pass
    if s < st.top + 1 or last != (s, 1, b"after") or k.next_seq != s + 1:
        return "append after the cut lost"
    return None


def start_image():
    # Blocks 0-1: "littlefs" data the journal must not touch; the journal
    # region: garbage, so the first mount formats it.
    dev = FlashDevice(None, BS, BLOCKS + 2)
    for b in range(BLOCKS + 2):
        dev.writeblocks(b, bytes((b * 29 + i * 7) & 0xFF for i in range(BS)), 0)
    dev.reset_counters()
    return dev


def run(mode, sample, seed):
    dev = start_image()
    part = Partition(dev, 2, BLOCKS)
    image = dev.snapshot()
    lfs = image[0:2]
    st = State()
    workload(part, st)
    total = dev.programs + dev.erases
    erases = dev.erases
    full = st.full
    failures = 0
    why = check(part, st, True)
    if why or not st.full or erases < 3 * BLOCKS or st.top < EVENTS // 2:
        print("FAIL clean run: %s full=%d erases=%d top=%d" % (why, st.full, erases, st.top))
        failures += 1
    if sample and sample < total:
        rng = XorShift(seed)
        points = []
        while len(points) < sample:
            c = 1 + rng.below(total)
            if c not in points:
                points.append(c)
    else:
        points = range(1, total + 1)
    torn = TORN_PARTIAL if mode == "partial" else TORN_NONE
    for c in points:
        dev.restore(image)
        dev.cut_after(c, torn, seed * 7919 + c)
        st = State()
        try:
            workload(part, st)
            why = "cut point not reached"
        except PowerCut:
            dev.power_on()
            why = check(part, st, st.jid == 0)
        if not why and (dev._mem[0] != lfs[0] or dev._mem[1] != lfs[1]):
            why = "blocks outside the journal region changed"
        if why:
            failures += 1
            print("FAIL mode=%s seed=%d cut=%d: %s" % (mode, seed, c, why))
    print("powercut mode=%s seed=%d ops=%d points=%d failures=%d full=%d erases=%d"
          % (mode, seed, total, len(points), failures, full, erases))
    return failures


if __name__ == "__main__":
    sys.exit(1 if run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])) else 0)
