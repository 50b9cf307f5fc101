import random

from check import raises

import exit_lane_model
from parkgate import exit_lane, lane, members, record
from parkgate.compat import ticks_add

TARIFF = exit_lane_model.TARIFF
CAR = "粤B00077"
NEXT = "粤B00078"


class Port:
    """The gate's side of the machine, recording what it is asked to do."""

    def __init__(self, link=True):
        self.link = link
        self.released = []
        self.marked = []
        self.queries = []
        self.shown = []
        self.logs = []
        self.member = None

    def release(self, event):
        self.released.append(event)

    def mark(self, event):
        self.marked.append(event)

    def ask_fee(self, query):
        if self.link:
            self.queries.append(query)
        return self.link

    def next_request(self):
        return 100 + len(self.queries)

    def member_status(self, read, time, quality):
        return members.MEMBER if read.plate == self.member else members.UNKNOWN

    def show(self, text):
        self.shown.append(text)

    def log(self, line):
        self.logs.append(line)


def machine(policy="confirm", passage_ms=0, link=True, entered=None):
    port = Port(link)
    the_lane = lane.Lane("out", 30000, 64)
    if entered is not None:
        the_lane.note(record.Event(record.KIND_ENTRY, entered, 5, CAR))
    m = exit_lane.ExitLane(the_lane, port, policy, 1500, 800, passage_ms)
    m.tariff = TARIFF
    m.link(link, 0)
    return m, port


def read(m, plate, now, time=1750003600):
    return m.read(exit_lane_model.Read(plate, 0), time, 5, now)


def test_a_fee_answer_for_the_car_asked_about_charges_it():
    m, port = machine(entered=1750000000)
    assert read(m, CAR, 0) == exit_lane.READ_STARTED and m.state == exit_lane.ASKING
    query = port.queries[0]
    assert query["p"] == CAR and query["et"] == 1750000000
    assert not m.fee_answer(query["r"] + 1, CAR, 500, 2, 1750000000, 10)   # another query
    assert not m.fee_answer(query["r"], NEXT, 500, 2, 1750000000, 10)      # another plate
    assert m.state == exit_lane.ASKING
    assert m.fee_answer(query["r"], CAR, 500, 2, 1750000000, 20)
    assert m.state == exit_lane.PAYING and not port.released


def test_no_read_opens_the_barrier_past_an_unpaid_car():
    m, port = machine()
    port.member = NEXT
    read(m, CAR, 0)
    m.tick(2000)                       # the lot server is silent: charged offline
    assert m.state == exit_lane.PAYING
    assert read(m, NEXT, 2100) == exit_lane.READ_QUEUED   # a member, behind it
    m.tick(2200)
    assert not port.released
    assert not m.paid(CAR, m.event.fee + 1, "lot server", 2300)   # the wrong amount
    assert m.paid(CAR, m.event.fee, "lot server", 2400)
    assert [e.plate for e in port.released] == [CAR]
    m.tick(3300)                       # the pulse is over: the member moves up
    assert [e.plate for e in port.released] == [CAR, NEXT]
    assert port.released[1].flags & record.FLAG_MEMBER


def test_a_misread_of_the_car_at_the_barrier_is_the_same_car():
    m, port = machine()
    read(m, CAR, 0)
    assert read(m, "粤B0OO77".replace("O", "D"), 5000) == exit_lane.READ_REPEAT
    assert read(m, "京B00077", 40000) == exit_lane.READ_SAME
    assert not m.queue


def test_the_queue_is_bounded_and_a_read_it_drops_counts_again():
    m, port = machine()
    read(m, CAR, 0)
    plates = ["沪C%05d" % (11111 * i) for i in range(exit_lane.QUEUE_MAX + 1)]
    outcomes = [read(m, p, 10) for p in plates]
    assert outcomes[-1] == exit_lane.READ_FULL
    assert outcomes.count(exit_lane.READ_QUEUED) == exit_lane.QUEUE_MAX
    assert "WAIT full" in port.logs[-1]
    assert read(m, plates[-1], 20) == exit_lane.READ_FULL   # not taken for a repeat


def test_a_known_absent_lot_server_means_offline_at_once():
    m, port = machine()
    m.presence(False, 0)
    read(m, CAR, 0)
    assert not port.queries and m.state == exit_lane.PAYING
    assert "lot server gone" in port.logs[-2]


def test_the_link_dropping_while_asking_charges_offline():
    m, port = machine(policy="owed")
    read(m, CAR, 0)
    m.link(False, 10)
    assert port.released and port.released[0].flags & record.FLAG_OWED
    assert port.released[0].fee_source == record.FEE_OFFLINE


def test_the_fee_timeout_holds_across_the_ticks_wrap():
    start = ticks_add(0, -700)
    m, port = machine()
    read(m, CAR, start)
    m.tick(ticks_add(start, 1400))
    assert m.state == exit_lane.ASKING
    m.tick(ticks_add(start, 1500))
    assert m.state == exit_lane.PAYING


def test_an_exit_the_passage_input_does_not_see_is_flagged():
    m, port = machine(policy="owed", passage_ms=5000)
    read(m, CAR, 0)
    m.link(False, 0)
    m.tick(4000)
    assert m.state == exit_lane.OPENING
    m.tick(5001)
    assert m.state == exit_lane.IDLE and port.marked[0].flags & record.FLAG_NO_PASSAGE
    read(m, "沪C00010", 6000)
    m.link(False, 6000)
    m.passage(6500)
    assert m.state == exit_lane.IDLE and len(port.marked) == 1


def test_a_car_read_again_after_a_reboot_is_not_charged_twice():
    m, port = machine(policy="owed", entered=1750000000)
    read(m, CAR, 0)
    m.link(False, 0)
    event = port.released[0]
    rebooted = lane.Lane("out", 30000, 64)
    rebooted.note(record.Event(record.KIND_ENTRY, 1750000000, 5, CAR))
    rebooted.note(event)                         # the journal replayed
    again = exit_lane.ExitLane(rebooted, port, "owed")
    assert again.read(exit_lane_model.Read(CAR, 0), event.time + 10, 5, 0) == \
        exit_lane.READ_REPEAT
    assert again.read(exit_lane_model.Read(CAR, 0), event.time + 590, 5, 40000) == \
        exit_lane.READ_REPEAT                     # still the same car, after a long wait
    rebooted.note(record.Event(record.KIND_ENTRY, event.time + 700, 5, CAR))
    assert again.read(exit_lane_model.Read(CAR, 0), event.time + 800, 5, 80000) == \
        exit_lane.READ_STARTED                    # it came back in: a new visit


def test_the_policy_is_checked():
    raises(ValueError, exit_lane.ExitLane, lane.Lane("out"), Port(), "free")


def test_random_interleavings_keep_every_promise():
    # Thousands of seeded runs of the physical lane (tests/core/exit_lane_model.py),
    # here and on the gate's MicroPython.
    assert exit_lane_model.run_cases(1, 4000, random) == 4000



def test_with_no_fee_to_be_found_the_car_waits_until_the_attendant_lets_it_out():
    m, port = machine(link=False)
    m.tariff = None
    read(m, CAR, 0)
    m.tick(5000)
    assert m.state == exit_lane.ASKING and not port.released
    assert len([line for line in port.logs if "FEE unavailable" in line]) == 1
    m.confirm(5100)
    event = port.released[0]
    assert event.flags & record.FLAG_OWED and event.fee == 0
    assert event.fee_source == record.FEE_NONE
