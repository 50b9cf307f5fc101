# Power-cut campaign for the journal, run by tests/test_journal_powercut.py
# under the MicroPython unix port (and importable on CPython).
#
# usage: micropython journal_powercut.py MODE SAMPLE SEED
#   MODE    none | partial (flashdev TORN_NONE / TORN_PARTIAL)
#   SAMPLE  cut points to draw at random (seeded by SEED); 0 = every one
# A workload of 1,000 events (entries and exits of a pool of plates,
# interleaved with acks, idle moments that run maintain() and the
# checkpointer as the gate does, and clean reboots that rebuild the
# cars-inside table from the newest checkpoint; an offline stretch fills the
# ring, then a stretch with few idle moments makes appends erase and acks
# wait) runs first without a cut to count its program/erase operations T and
# to check it; then, for each chosen cut point c in 1..T, the device image is
# reset to the starting snapshot, power is cut at operation c and the journal
# is remounted and checked, the table rebuilt from it included: it must equal
# what a replay of every durable record gives. Prints one line per failure
# and a closing summary line:
#   "powercut mode=.. seed=.. ops=T points=N failures=F full=.. erases=..
#    checkpoints=.. cp_cuts=.. restored=.. fallbacks=.."
# (checkpoints completed by the clean run; cuts that landed while a
# checkpoint was being written; remounts that rebuilt the table from a
# checkpoint; remounts that found none after records had been reclaimed and
# so fell back to a replay of the ring). Exits 1 if anything failed.
import sys

from parkgate import record
from parkgate.checkpoint import Checkpointer
from parkgate.journal import Journal, JournalFull
from parkgate.lane import Lane
from flashdev import FlashDevice, Partition, PowerCut, XorShift, TORN_NONE, TORN_PARTIAL

BS = 512
BLOCKS = 8          # the journal region; blocks 0 and 1 stand for littlefs
EVENTS = 1000
OFFLINE = (450, 650)    # events without acks: the ring fills up
BUSY = (650, 800)       # few idle moments: appends erase, acks wait
PLATES = 40             # the pool: at most 40 cars inside, checkpoints of 1..5 chunks
EVERY = 25              # records between checkpoints
INSIDE_MAX = 64         # the table holds 48: never full, nothing forgotten


def kind_of(seq):
    return 1 + seq // 3 % 2     # 1 entry, 2 exit: runs of three


def plate_of(seq):
    p = seq * 7 % PLATES
    return "P" + "ABCDEFGHIJKL"[:p % 12] + "%02d" % p


def event_of(seq):
    return record.Event(kind_of(seq), 100000 + seq, 6, plate_of(seq), seq % 5, 90)


def body_of(seq):
    return record.encode_body(event_of(seq))


def new_lane():
    return Lane("in", 0, INSIDE_MAX)


def same_table(a, b):
    # a, b: OpenSessions. None if equal, else the first plate that differs.
    if len(a) != len(b):
        return "%d cars against %d" % (len(a), len(b))
    for p in range(PLATES):
        plate = plate_of(p * 23 % PLATES)   # (p * 23 * 7) % 40 runs over every plate
        if a.get(plate) != b.get(plate):
            return "%s: %r against %r" % (plate, a.get(plate), b.get(plate))
    return None


class State:
    def __init__(self):
        self.jid = 0        # journal id once formatted
        self.top = 0        # highest seq whose append returned
        self.inflight = 0   # seq of the append under way
        self.ack_req = 0    # highest ack asked for
        self.full = 0       # appends refused with JournalFull
        self.reboots = 0
        self.in_cp = False  # the checkpointer is writing
        self.checkpoints = 0


def idle(j, cp, st, rounds):
    # An idle moment of the gate loop: maintain() first, else the checkpointer.
    for _ in range(rounds):
        if not j.maintain():
            st.in_cp = True
            cp.service()
            st.in_cp = False


def boot(part):
    j = Journal(part)
    j.mount()
    lane = new_lane()
    cp = Checkpointer(j, lane.inside, EVERY, 2)
    cp.restore(lane.note)
    return j, lane, cp


def workload(part, st):
    rng = XorShift(2024)
    j, lane, cp = boot(part)
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
            lane.note(event_of(s))
        if rng.below(20 if BUSY[0] <= i < BUSY[1] else 3) == 0:
            idle(j, cp, st, 1 + rng.below(6))
        if i % 300 == 299:
            st.reboots += 1
            st.checkpoints += cp.written
            j, again, cp = boot(part)
            why = same_table(again.inside, lane.inside)
            if why:
                raise AssertionError("table rebuilt at reboot %d differs: %s" % (st.reboots, why))
            lane = again
    st.checkpoints += cp.written
    j, again, cp = boot(part)      # reads: a cut at the last operation shows
    why = same_table(again.inside, lane.inside)
    if why:
        raise AssertionError("table rebuilt at the end differs: %s" % why)
    return j


class Oracle:
    # The table a replay of every durable record gives (seq 1..upto), kept
    # up to date as cut points come in order (started again if upto falls).
    def __init__(self):
        self.lane = new_lane()
        self.upto = 0

    def table(self, upto):
        if upto < self.upto:
            self.__init__()
        while self.upto < upto:
            self.upto += 1
            self.lane.note(event_of(self.upto))
        return self.lane.inside


def check(part, st, fresh, oracle, tally):
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
    # The table as the gate rebuilds it at boot, against a replay of every
    # durable record (those whose append returned, and the one under way if
    # it landed). With no checkpoint once records were reclaimed, the gate
    # can only replay the ring: then it must equal that.
    lane = new_lane()
    cp = Checkpointer(j, lane.inside, EVERY)
    replayed = cp.restore(lane.note)
    durable = st.inflight if st.inflight and seen[st.inflight] else st.top
    first = 0
    for first, _, _ in j.records():
        break
    if j.checkpoint_cover:
        tally[0] += 1
        if j.checkpoint_cover > durable + 1:
            return "checkpoint covers seq %d, beyond seq %d" % (j.checkpoint_cover, durable)
        if replayed != durable - j.checkpoint_cover + 1:
            return "replayed %d records after checkpoint %d, durable up to %d" % (
                replayed, j.checkpoint_cover, durable)
        why = same_table(lane.inside, oracle.table(durable))
    elif first <= 1:
        why = same_table(lane.inside, oracle.table(durable))
    else:
        tally[1] += 1
        ring = new_lane()
        for seq, kind, body in j.records():
            ring.note(record.decode_body(kind, seq, body))
        why = same_table(lane.inside, ring.inside)
    if why:
        return "table rebuilt from checkpoint %d differs from the replay: %s" % (
            j.checkpoint_cover, why)
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
    tally = [0, 0]      # remounts restored from a checkpoint, fallbacks to the ring
    workload(part, st)
    total = dev.programs + dev.erases
    erases = dev.erases
    full = st.full
    checkpoints = st.checkpoints
    failures = 0
    why = check(part, st, True, Oracle(), tally)
    if why or not st.full or erases < 3 * BLOCKS or st.top < EVENTS // 2 or not tally[0] \
            or checkpoints < 10:
        print("FAIL clean run: %s full=%d erases=%d top=%d checkpoints=%d restored=%d"
              % (why, st.full, erases, st.top, checkpoints, tally[0]))
        failures += 1
    tally = [0, 0]
    if sample and sample < total:
        rng = XorShift(seed)
        points = []
        while len(points) < sample:
            c = 1 + rng.below(total)
            if c not in points:
                points.append(c)
        points.sort()
    else:
        points = range(1, total + 1)
    torn = TORN_PARTIAL if mode == "partial" else TORN_NONE
    oracle = Oracle()
    cp_cuts = 0
    for c in points:
        dev.restore(image)
        dev.cut_after(c, torn, seed * 7919 + c)
        st = State()
        try:
            workload(part, st)
            why = "cut point not reached"
        except PowerCut:
            dev.power_on()
            cp_cuts += st.in_cp
            why = check(part, st, st.jid == 0, oracle, tally)
        if not why and (dev._mem[0] != lfs[0] or dev._mem[1] != lfs[1]):
            why = "blocks outside the journal region changed"
        if why:
            failures += 1
            print("FAIL mode=%s seed=%d cut=%d: %s" % (mode, seed, c, why))
    print("powercut mode=%s seed=%d ops=%d points=%d failures=%d full=%d erases=%d "
          "checkpoints=%d cp_cuts=%d restored=%d fallbacks=%d"
          % (mode, seed, total, len(points), failures, full, erases, checkpoints, cp_cuts,
             tally[0], tally[1]))
    return failures


if __name__ == "__main__":
    sys.exit(1 if run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])) else 0)
