"""The lane in the simulator: members and the blacklist with the lot server
unreachable, Vzenith cameras with GBK plates, plate normalisation."""
import pytest

from parkgate import members, vzenith
from parkgate_tools.broker import free_port
from parkgate_tools.sim import SimClock, SimGate

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
