"""The lane in the simulator: members and the blacklist with the lot server
unreachable, Vzenith cameras with GBK plates, plate normalisation."""
import time

import pytest

from parkgate import tariff
from parkgate_host import camera_frames, member_lists
from parkgate_tools.sim.gate import DEFAULT_TARIFF
from parkgate_tools.sim.lot import START   # 2026-11-25 08:00 in UTC+8

LOT = "lane"
MEMBER = "粤B12345"
BLACKLISTED = "沪A66666"
LAPSED = "京C00001"


@pytest.fixture
def member_file(tmp_path):
    data = member_lists.build([
        {"plate": MEMBER, "from": START - 86400, "until": START + 30 * 86400,
         "window": None, "blacklist": False},
        {"plate": BLACKLISTED, "from": None, "until": None, "window": None, "blacklist": True},
        {"plate": LAPSED, "from": START - 60 * 86400, "until": START - 30 * 86400,
         "window": None, "blacklist": False},
    ], version=7)
    path = tmp_path / "members.bin"
    path.write_bytes(data)
    return str(path)


def test_member_enters_and_leaves_free_and_blacklist_is_refused_offline(offline_gate,
                                                                        member_file):
    entry = offline_gate("in", "in", LOT, extra_files={"members.bin": member_file})
    exit_gate = offline_gate("out", "out", LOT, extra_files={"members.bin": member_file})
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


def test_vzenith_gbk_frame_yields_the_chinese_plate(offline_gate):
    gate = offline_gate("vz", "in", LOT, site_extra={"camera": "vz"})
    gate.write_raw(camera_frames.vz_frame(3, "粤S7Y12C", colour=0, confidence=96, sec=START,
                                          image=b"\xff\xd8jpeg\xff\xd9"))
    gate.write_raw(camera_frames.vz_frame(4, "", heartbeat=True))
    gate.wait_line(r"EVENT in seq=1 plate=粤S7Y12C ", 5)
    gate.write_raw(b"VZ\x00\x05garbage")
    gate.write_raw(camera_frames.vz_frame(5, "苏E00001", sec=START))
    gate.wait_line(r"EVENT in seq=2 plate=苏E00001 ", 5)
    assert gate.lines(r" REJECT ")


def test_plates_are_normalised_before_anything_else(offline_gate):
    gate = offline_gate("n", "in", LOT)
    gate.send_plate("粤b·1234o")          # lower case, separator, O for 0
    gate.wait_line(r"EVENT in seq=1 plate=粤B12340 ", 5)
    gate.send_plate("粤B12340")           # the same car read again: a repeat
    gate.wait_line(r"REPEAT plate=粤B12340", 5)
    gate.send_plate("!!")
    gate.wait_line(r"REJECT bad_plate", 5)
    assert len(gate.events()) == 1


def test_offline_exit_waits_for_the_attendant_and_records_the_fee(offline_gate):
    gate = offline_gate("out", "out", LOT, attendant=False)
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


def test_owed_policy_opens_at_once_and_flags_the_fee(offline_gate):
    gate = offline_gate("out", "out", LOT, site_extra={"exit_policy": "owed"})
    gate.send_plate("粤B00079")
    gate.wait_line(r"EVENT out seq=1 plate=粤B00079 .* fee=2000 src=off .* fl=9$", 5)
    assert gate.relay_openings() == 1
    assert gate.display_lines()[-1] == "粤B00079 20.00 yuan owed"


def test_reboot_with_no_clock_bills_from_camera_time_and_never_from_the_epoch(sim_lot):
    """Both lanes boot with no clock and no lot server (a broker, no bridge):
    camera timestamps date the events (quality 2) and the fee is the tariff's
    for that stay; a read without camera time is not billed from 2000."""
    lot = sim_lot(LOT, site={"fee_timeout_ms": 300}, bridge=False)
    gates = []
    for name, direction in (("in", "in"), ("out", "out")):
        gate = lot.gate(name, direction, clock=None)
        gates.append(gate)
        assert "clock=unset" in gate.lines(r" BOOT ")[-1]
    entry, exit_gate = gates
    exit_gate.wait_line(r"LINK up", 10)
    entry.send_plate("粤B00080", camera_time=START)
    entry.wait_line(r"EVENT in seq=1 plate=粤B00080 t=%d q=2 " % START, 5)
    entry.wait_line(r"LINK up", 10)
    time_out = START + 2 * 3600 + 60
    exit_gate.wait_for(lambda: exit_gate.lines(r"LINK up"), 10)
    time.sleep(0.5)                            # the exit lane hears the entry
    exit_gate.send_plate("粤B00080", camera_time=time_out)
    exit_gate.wait_line(r"EVENT out seq=1 plate=粤B00080 t=%d q=2 " % time_out, 5)
    table = tariff.loads(open(DEFAULT_TARIFF, encoding="utf-8").read())
    event = exit_gate.events()[0]
    assert event["fee"] == tariff.quote(table, START, time_out).fee == 500
    assert event["et"] == START and event["src"] == "off"
    exit_gate.send_plate("粤B00081")           # a camera without a clock
    exit_gate.wait_line(r"EVENT out seq=2 plate=粤B00081 .* q=0 fee=2000 .* fl=17$", 5)
