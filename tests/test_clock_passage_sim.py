"""Clocks that stay right, the passage input and lane catch-up, on the gate's own image:
a clock that drifts is corrected while the gate stays connected, a gate
with no lot server takes its time from an NTP server, and an entry the
passage input never saw go through leaves no car inside."""
import socket
import struct
import threading
import time

import pytest

from parkgate.sntp import NTP_TO_UNIX


@pytest.fixture
def lot(sim_lot):
    return sim_lot("ck")


def event_times(gate):
    return [e["t"] for e in gate.events()]


def test_a_drifting_clock_is_corrected_while_connected(lot):
    # 20 % fast: a second gained every five. The gate asks the lot server
    # again every 8 s without a reconnect.
    gate = lot.gate("ck-in", "in", site_extra={"clock_resync_s": 8},
                    board_env={"PARKGATE_SIM_CLOCK_DRIFT_PPM": "200000"})
    gate.wait_line(r"CLOCK set from lot server", 10)
    gate.wait_line(r"CLOCK set from lot server: step -[1-9]", 30)   # drift taken back
    assert len(gate.lines(r"LINK up")) == 1
    time.sleep(1.0)
    gate.send_plate("京A35791")
    gate.wait_line(r"EVENT in seq=1 plate=京A35791", 5)
    assert abs(event_times(gate)[0] - lot.clock.now()) <= 2


class NtpServer:
    """A minimal SNTP server (RFC 4330 server side) on loopback, telling
    the time of the lot's simulated clock, stratum 2."""

    def __init__(self, clock):
        self.clock = clock
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.answered = 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _stamp(self, unix):
        seconds = unix + NTP_TO_UNIX
        return struct.pack(">II", int(seconds) & 0xFFFFFFFF, int((seconds % 1) * 2 ** 32))

    def _serve(self):
        while not self._stop:
            try:
                request, address = self.sock.recvfrom(48)
            except socket.timeout:
                continue
            if len(request) < 48:
                continue
            now = self._stamp(self.clock.now())
            reply = bytes([0x24, 2, 6, 0xEC]) + bytes(8) + b"LOCL" + now + request[40:48] + \
                now + now
            self.sock.sendto(reply, address)
            self.answered += 1

    def close(self):
        self._stop = True
        self._thread.join()
        self.sock.close()


def test_a_gate_with_no_lot_server_takes_ntp_time(lot):
    lot.bridge.stop()
    ntp = NtpServer(lot.clock)
    try:
        gate = lot.gate("ck-ntp", "in", clock=None,
                        site_extra={"ntp": "127.0.0.1:%d" % ntp.port})
        gate.wait_line(r"CLOCK set by NTP", 10)
        gate.send_plate("京A24680")
        gate.wait_line(r"EVENT in seq=1 plate=京A24680 .* q=4 ", 5)   # quality ntp
        assert abs(event_times(gate)[0] - lot.clock.now()) <= 2 and ntp.answered >= 1
    finally:
        ntp.close()


def test_an_entry_never_seen_going_through_leaves_no_car_inside(lot):
    passage = {"PARKGATE_SIM_PASSAGE": "1"}
    entry = lot.gate("ck-in", "in", site_extra={"passage_ms": 1500}, board_env=passage)
    exit_gate = lot.gate("ck-out", "out", site_extra={"exit_policy": "owed"})
    entry.send_plate("苏A13579")
    entry.wait_line(r"EVENT in seq=1 plate=苏A13579 ", 5)
    entry.pass_car()                                  # it went in
    entry.send_plate("苏A24680")                      # opened for, but it turned away
    entry.wait_line(r"EVENT in seq=2 plate=苏A24680 ", 5)
    entry.wait_line(r"PASSAGE none plate=苏A24680: entry voided", 5)
    entry.wait_line(r"EVENT in seq=3 plate=苏A24680 ", 5)
    voided = entry.events()[-1]
    assert voided["fl"] & 64 and voided["seq"] == 3
    assert not entry.lines(r"PASSAGE none plate=苏A13579")
    # The exit lane heard both entries and the void: the one that went in
    # is charged from its entry, the other is an exit without entry.
    exit_gate.send_plate("苏A13579")
    exit_gate.wait_line(r"EVENT out seq=1 plate=苏A13579 ", 10)
    exit_gate.send_plate("苏A24680")
    exit_gate.wait_line(r"EVENT out seq=2 plate=苏A24680 ", 10)
    went_in, turned_away = exit_gate.events()
    assert went_in["et"] > 0 and not went_in["fl"] & 1
    assert turned_away["et"] == 0 and turned_away["fl"] & 1


def test_an_exit_lane_that_was_away_catches_up_and_charges_from_the_right_entry(lot):
    # Ten cars come in while the exit lane is off; it boots, asks the lot
    # server for the entries it missed (pages of 8), and when the lot server
    # is then gone it charges their exits offline from those entries.
    entry = lot.gate("cu-in", "in")
    plates = ["鄂C%05d" % (11111 * (i % 9) + i // 9) for i in range(10)]
    for plate in plates:
        entry.send_plate(plate)
        entry.wait_line(r"EVENT in seq=\d+ plate=%s " % plate, 5)
    entered = {e["plate"]: e["t"] for e in entry.events()}
    lot.wait_stored("cu-in", len(plates))
    exit_gate = lot.gate("cu-out", "out", site_extra={"exit_policy": "owed"})
    exit_gate.wait_line(r"CATCHUP page=2 ", 10)
    pages = exit_gate.lines(r"CATCHUP page=")
    assert sum(int(line.split("entries=")[1].split()[0]) for line in pages) == len(plates)
    lot.bridge.stop()
    exit_gate.wait_line(r"LOT server gone", 10)
    for plate in plates[:3]:
        exit_gate.send_plate(plate)
        exit_gate.wait_line(r"EVENT out seq=\d+ plate=%s .* src=off " % plate, 5)
    for event in exit_gate.events():
        assert event["et"] == entered[event["plate"]] and not event["fl"] & 1
