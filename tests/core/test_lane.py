from check import raises

from parkgate import lane, record
from parkgate.compat import ticks_add


class Read:
    def __init__(self, plate, colour=0, confidence=90, camera_time=0):
        self.plate = plate
        self.colour = colour
        self.confidence = confidence
        self.camera_time = camera_time
        self.seq = 1


def test_direction_is_checked():
    raises(ValueError, lane.Lane, "sideways")


def test_entry_then_exit_tracks_cars_inside():
    entry_lane = lane.Lane("in")
    event = entry_lane.entry(Read("京A12345"), 1000, 5)
    assert event.kind == record.KIND_ENTRY and event.time == 1000 and event.flags == 0
    entry_lane.note(event)
    assert entry_lane.inside.get("京A12345") == 1000 and len(entry_lane.inside) == 1
    exit_lane = lane.Lane("out")
    exit_lane.note(event)   # heard from the entry lane
    pending = exit_lane.start_exit(Read("京A12345"), 4600, 5)
    assert pending.entry_time == 1000
    done = exit_lane.finish_exit(pending, 300, record.FEE_ONLINE, 2, 1000)
    assert done.kind == record.KIND_EXIT and done.fee == 300 and done.entry_time == 1000
    assert done.flags == 0
    exit_lane.note(done)
    assert len(exit_lane.inside) == 0


def test_exit_without_entry_is_flagged():
    exit_lane = lane.Lane("out")
    pending = exit_lane.start_exit(Read("沪B00001"), 5000, 5)
    assert pending.entry_time is None
    done = exit_lane.finish_exit(pending, 2000, record.FEE_ONLINE, 1, None)
    assert done.flags & record.FLAG_NO_ENTRY and done.entry_time == 0


def test_reentry_is_flagged():
    entry_lane = lane.Lane("in")
    entry_lane.note(entry_lane.entry(Read("粤B1"), 100, 5))
    again = entry_lane.entry(Read("粤B1"), 200, 5)
    assert again.flags & record.FLAG_REENTRY
    entry_lane.note(again)
    assert entry_lane.inside.get("粤B1") == 200


def test_older_events_do_not_override_newer_ones():
    l = lane.Lane("out")
    l.note(record.Event(record.KIND_ENTRY, 500, 5, "P1"))
    l.note(record.Event(record.KIND_ENTRY, 300, 5, "P1"))   # a late replay
    assert l.inside.get("P1") == 500
    l.note(record.Event(record.KIND_EXIT, 400, 5, "P1"))    # exit of the earlier visit
    assert l.inside.get("P1") == 500
    l.note(record.Event(record.KIND_EXIT, 600, 5, "P1"))
    assert "P1" not in l.inside


def test_repeat_reads_within_window_are_one():
    l = lane.Lane("in", repeat_window_ms=1000)
    assert not l.is_repeat("P1", 0)
    assert l.is_repeat("P1", 500)
    assert l.is_repeat("P1", 999)
    assert not l.is_repeat("P2", 999)
    assert not l.is_repeat("P1", 1000)


def test_repeat_memory_is_bounded():
    l = lane.Lane("in", repeat_window_ms=10000)
    glyphs = "39CEFHJK"   # none of them confused with another (plate.similar)
    for i in range(200):
        assert not l.is_repeat("P" + glyphs[i // 64] + glyphs[i // 8 % 8] + glyphs[i % 8], i)
    assert len(l._recent) <= 32


def test_cars_inside_are_bounded_forgetting_the_oldest():
    l = lane.Lane("out", inside_max=5)   # holds 3
    for i, t in enumerate((500, 100, 300, 400)):
        l.note(record.Event(record.KIND_ENTRY, t, 5, "P%d" % i))
    assert l.inside.get("P1") is None and l.inside.forgotten == 1 and len(l.inside) == 3
    assert [l.inside.get(p) for p in ("P0", "P2", "P3")] == [500, 300, 400]
    l.note(record.Event(record.KIND_ENTRY, 600, 5, "P2"))    # known plate: updated
    assert l.inside.get("P2") == 600 and len(l.inside) == 3


def test_an_exit_timed_before_its_entry_is_charged_as_the_shortest_stay():
    from parkgate import tariff
    table = tariff.loads(open("firmware/tariffs/default.json").read())
    l = lane.Lane("out")
    l.note(record.Event(record.KIND_ENTRY, 5000, 5, "P1"))
    pending = l.start_exit(Read("P1"), 4000, 5)      # the exit lane's clock is behind
    event = l.offline_exit(pending, table)
    assert event.fee == tariff.quote(table, 5000, 5000).fee == 0
    assert event.entry_time == 5000 and event.time == 4000


def test_repeat_window_across_the_ticks_wrap():
    # On the gate's 32-bit image ticks wrap at 2**30 ms; on CPython they do not.
    l = lane.Lane("in", repeat_window_ms=30000)
    t0 = ticks_add(0, -5000)                         # 5 s before the wrap
    assert not l.is_repeat("P1", t0)
    assert l.is_repeat("P1", ticks_add(t0, 10000))   # 10 s later, past the wrap
    assert not l.is_repeat("P1", ticks_add(t0, 31000))


def test_a_quiet_lane_opens_for_a_car_seen_again_13_days_later():
    # The gate's idle loop expires old reads; a plate back after one ticks
    # period plus 10 s (or 13 days, or half a period) is a new car.
    day = 24 * 3600 * 1000
    for gap in (2 ** 30 + 10000, 13 * day, 2 ** 29 + 10000, 7 * day):
        l = lane.Lane("in", repeat_window_ms=30000)
        t = ticks_add(0, -5000)
        assert not l.is_repeat("P1", t)
        left = gap
        while left > 0:                                # the quiet loop, once a minute
            step = min(left, 60000)
            t = ticks_add(t, step)
            left -= step
            l.expire(t)
        assert not l.is_repeat("P1", t), gap


def test_an_entry_flagged_no_passage_voids_that_entry_only():
    l = lane.Lane("out")
    l.note(record.Event(record.KIND_ENTRY, 1000, 5, "P1"))
    l.note(record.Event(record.KIND_ENTRY, 900, 5, "P1", flags=record.FLAG_NO_PASSAGE))
    assert l.inside.get("P1") == 1000          # another entry's void: kept
    l.note(record.Event(record.KIND_ENTRY, 1000, 5, "P1", flags=record.FLAG_NO_PASSAGE))
    assert l.inside.get("P1") is None
    l.note(record.Event(record.KIND_ENTRY, 2000, 5, "P2"))
    l.note(record.Event(record.KIND_EXIT, 2000, 5, "P2", flags=record.FLAG_NO_PASSAGE))
    assert l.inside.get("P2") == 2000          # a flagged exit closes nothing


def test_a_car_that_just_left_is_known_until_it_comes_back_in():
    l = lane.Lane("out")
    l.note(record.Event(record.KIND_EXIT, 5000, 5, "粤B00077"))
    assert l.just_left("粤B00077", 5100) and l.just_left("粤BD0077", 5020)
    assert not l.just_left("粤BD0077", 5100)            # a misread: the repeat window only
    assert not l.just_left("粤B00077", 5600) and not l.just_left("粤B00078", 5020)
    l.note(record.Event(record.KIND_ENTRY, 5200, 5, "粤B00077"))
    assert not l.just_left("粤B00077", 5300)
