"""The lane in the simulator: members and the blacklist with the lot server
unreachable, Vzenith cameras with GBK plates, plate normalisation."""
import pytest

from parkgate import members, vzenith
from parkgate_tools.sim.broker import free_port
from parkgate_tools.sim.gate import SimClock, SimGate

START = 1795564800            # 2026-11-25 08:00 in UTC+8
MEMBER = "粤B12345"
BLACKLISTED = "沪A66666"
LAPSED = "京C00001"


@pytest.fixture
def member_file(tmp_path):
    data = members.build([
        {"plate": MEMBER, "from": START - 86400, "until": START + 30 * 86400,
         "window": None, "blacklist": False},
        {"plate": BLACKLISTED, "from": None, "until": None, "window": None, "blacklist": True},
        {"plate": LAPSED, "from": START - 60 * 86400, "until": START - 30 * 86400,
         "window": None, "blacklist": False},
    ], version=7)
    path = tmp_path / "members.bin"
    path.write_bytes(data)
    return str(path)


def offline_gate(tmp_path, name, direction, member_file=None, **site):
    """A gate whose broker address has nobody listening: the lot server is gone."""
    gate = SimGate(str(tmp_path), name, "lane", direction, free_port(), SimClock(START, 60),
                   site_extra=site)
    gate.provision({"members.bin": member_file} if member_file else None)
    return gate.start()


def test_member_enters_and_leaves_free_and_blacklist_is_refused_offline(tmp_path, member_file):
    entry = offline_gate(tmp_path, "in", "in", member_file)
    exit_gate = offline_gate(tmp_path, "out", "out", member_file)
    try:
        entry.send_plate(MEMBER)
        entry.wait_line(r"EVENT in seq=1 plate=%s .* fl=4$" % MEMBER, 5)
        entry.send_plate(BLACKLISTED)
        entry.wait_line(r"DENIED plate=%s blacklisted" % BLACKLISTED, 5)
        entry.send_plate(LAPSED)                       # lapsed pass: a visitor
        entry.wait_line(r"EVENT in seq=2 plate=%s .* fl=0$" % LAPSED, 5)
        assert entry.relay_openings() == 2
        exit_gate.send_plate(MEMBER)
        exit_gate.wait_line(r"EVENT out seq=1 plate=%s .* fee=0 src=off" % MEMBER, 5)
        assert exit_gate.events()[0]["fl"] & 4 and exit_gate.relay_openings() == 1
    finally:
        entry.stop()
        exit_gate.stop()


def test_vzenith_gbk_frame_yields_the_chinese_plate(tmp_path):
    gate = offline_gate(tmp_path, "vz", "in", camera="vz")
    try:
        gate.write_raw(vzenith.encode(3, "粤S7Y12C", colour=0, confidence=96, sec=START,
                                      image=b"\xff\xd8jpeg\xff\xd9"))
        gate.write_raw(vzenith.encode(4, "", heartbeat=True))
        gate.wait_line(r"EVENT in seq=1 plate=粤S7Y12C ", 5)
        gate.write_raw(b"VZ\x00\x05garbage")
        gate.write_raw(vzenith.encode(5, "苏E00001", sec=START))
        gate.wait_line(r"EVENT in seq=2 plate=苏E00001 ", 5)
        assert gate.lines(r" REJECT ")
    finally:
        gate.stop()


def test_plates_are_normalised_before_anything_else(tmp_path):
    gate = offline_gate(tmp_path, "n", "in")
    try:
        gate.send_plate("粤b·1234o")          # lower case, separator, O for 0
        gate.wait_line(r"EVENT in seq=1 plate=粤B12340 ", 5)
        gate.send_plate("粤B12340")           # the same car read again: a repeat
        gate.wait_line(r"REPEAT plate=粤B12340", 5)
        gate.send_plate("!!")
        gate.wait_line(r"REJECT bad_plate", 5)
        assert len(gate.events()) == 1
    finally:
        gate.stop()


def test_offline_exit_waits_for_the_attendant_and_records_the_fee(tmp_path):
    gate = SimGate(str(tmp_path), "out", "lane", "out", free_port(), SimClock(START, 60),
                   attendant=False)
    gate.provision()
    gate.start()
    try:
        gate.send_plate("粤B00077")                 # no entry known: the no-entry fee
        gate.wait_line(r"AWAIT payment plate=粤B00077 fee=2000 src=off", 5)
        gate.send_plate("粤B00078")                 # the next car waits its turn
        gate.wait_line(r"WAIT plate=粤B00078: 粤B00077 is paying", 5)
        assert gate.events() == [] and gate.relay_openings() == 0
        assert gate.display_lines()[-1] == "粤B00077 20.00 yuan please pay"
        gate.press_confirm()
        gate.wait_line(r"PAID plate=粤B00077 fee=2000 by attendant", 5)
        gate.wait_line(r"EVENT out seq=1 plate=粤B00077 .* fee=2000 src=off .* fl=1$", 5)
        assert gate.relay_openings() == 1
        assert "粤B00077 paid, thank you" in gate.display_lines()
        # the car that waited behind moves up and is asked to pay in turn
        gate.wait_line(r"AWAIT payment plate=粤B00078 fee=2000 src=off", 5)
        assert gate.display_lines()[-1] == "粤B00078 20.00 yuan please pay"
    finally:
        gate.stop()


def test_owed_policy_opens_at_once_and_flags_the_fee(tmp_path):
    gate = offline_gate(tmp_path, "out", "out", exit_policy="owed")
    try:
        gate.send_plate("粤B00079")
        gate.wait_line(r"EVENT out seq=1 plate=粤B00079 .* fee=2000 src=off .* fl=9$", 5)
        assert gate.relay_openings() == 1
        assert gate.display_lines()[-1] == "粤B00079 20.00 yuan owed"
    finally:
        gate.stop()


def test_reboot_with_no_clock_bills_from_camera_time_and_never_from_the_epoch(tmp_path):
    """Both lanes boot with no clock and no lot server (a broker, no bridge):
    camera timestamps date the events (quality 2) and the fee is the tariff's
    for that stay; a read without camera time is not billed from 2000."""
    from parkgate import tariff
    from parkgate_tools.sim.broker import Broker
    from parkgate_tools.sim.gate import DEFAULT_TARIFF
    broker = Broker(str(tmp_path / "broker"))
    broker.start()
    gates = []
    try:
        for name, direction in (("in", "in"), ("out", "out")):
            gate = SimGate(str(tmp_path), name, "lane", direction, broker.port, clock=None,
                           site_extra={"fee_timeout_ms": 300})
            gate.provision()
            gates.append(gate.start())
            assert "clock=unset" in gate.lines(r" BOOT ")[-1]
        entry, exit_gate = gates
        exit_gate.wait_line(r"LINK up", 10)
        entry.send_plate("粤B00080", camera_time=START)
        entry.wait_line(r"EVENT in seq=1 plate=粤B00080 t=%d q=2 " % START, 5)
        entry.wait_line(r"LINK up", 10)
        time_out = START + 2 * 3600 + 60
        exit_gate.wait_for(lambda: exit_gate.lines(r"LINK up"), 10)
        import time as host_time
        host_time.sleep(0.5)                       # the exit lane hears the entry
        exit_gate.send_plate("粤B00080", camera_time=time_out)
        exit_gate.wait_line(r"EVENT out seq=1 plate=粤B00080 t=%d q=2 " % time_out, 5)
        table = tariff.loads(open(DEFAULT_TARIFF, encoding="utf-8").read())
        event = exit_gate.events()[0]
        assert event["fee"] == tariff.quote(table, START, time_out).fee == 500
        assert event["et"] == START and event["src"] == "off"
        exit_gate.send_plate("粤B00081")           # a camera without a clock
        exit_gate.wait_line(r"EVENT out seq=2 plate=粤B00081 .* q=0 fee=2000 .* fl=17$", 5)
    finally:
        for gate in gates:
            gate.stop()
        broker.stop()
