"""What an ESP32 does that a host would hide, on the gate's own 32-bit image
(boards/unix-sim/board.py models it): ticks that wrap at 2**30 ms, a flash
that stalls the whole chip while the camera's bytes keep coming, and a
watchdog that resets a gate that stops feeding it."""
import os
import time

import pytest

from parkgate_host import camera_frames
from parkgate_tools.sim.lot import SimLot

from fixtures_mqtt import FakeGate

TICKS_PERIOD = 2 ** 30


@pytest.fixture
def lot(tmp_path):
    with SimLot(str(tmp_path)) as lot:
        yield lot


def ticks_of(line):
    return int(line.split(" ", 1)[0])


def wait_until(predicate, timeout, what):
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.02)


def test_entry_lane_across_the_ticks_wrap(lot):
    # Ticks start 2 s before the wrap: a car before it, its repeat read and
    # its relay pulse across it, and another car after it.
    gate = lot.gate("wrap-in", "in", board_env={"PARKGATE_SIM_TICKS": "2000"})
    boot = gate.lines(r" BOOT ")[-1]
    assert TICKS_PERIOD - ticks_of(boot) <= 2000
    booted = time.time()
    gate.send_plate("京A12345")
    gate.wait_line(r"EVENT in seq=1 plate=京A12345", 5)
    first = ticks_of(gate.lines(r"EVENT in seq=1")[-1])
    time.sleep(max(0.0, booted + 1.6 - time.time()))  # its relay pulse spans the wrap
    time.sleep(0.8)
    gate.send_plate("京A12345")                       # the same car, read again
    gate.wait_line(r"REPEAT plate=京A12345", 5)
    assert ticks_of(gate.lines(r"REPEAT")[-1]) < first          # after the wrap
    gate.send_plate("京B67890")
    gate.wait_line(r"EVENT in seq=2 plate=京B67890", 5)
    time.sleep(1.0)
    edges = gate.relay_edges()
    assert [level for _, level in edges] == [1, 0, 1, 0]
    for (on_at, _), (off_at, _) in zip(edges[0::2], edges[1::2]):
        assert 0.7 < off_at - on_at < 1.2        # relay_pulse_ms 800, across the wrap too
    wait_until(lambda: lot.stored("wrap-in") == 2, 20, "both cars stored")


def test_fee_timeout_across_the_ticks_wrap(lot):
    # A lot server that is there but does not answer (its presence still
    # online): the exit's fee query times out after 1.5 s, with the wrap in
    # between, and the exit is charged offline.
    lot.bridge.stop()
    hung = FakeGate(lot.broker, lot.lot, "server")
    hung.publish("status", {"on": 1}, retain=True)
    hung.close()
    gate = lot.gate("wrap-out", "out", board_env={"PARKGATE_SIM_TICKS": "800"})
    # The car comes once the link is up and the retained presence is in (a
    # car read before that is charged offline at once, "link down", which is
    # right but is not what this test is about).
    gate.wait_line(r"LINK up", 10)
    time.sleep(0.3)
    gate.send_plate("粤B11111")
    gate.wait_line(r"EVENT out seq=1 plate=粤B11111 .* src=off", 10)
    assert gate.lines(r"FEE offline plate=粤B11111: fee timeout")
    asked = ticks_of(gate.lines(r"BOOT")[-1])
    charged = ticks_of(gate.lines(r"EVENT out seq=1")[-1])
    assert charged < asked          # the wrap came in between
    assert 1400 <= (charged - asked) % TICKS_PERIOD < 4000


def _cars_until_an_erase(gate, burst, prefix):
    """Send cars until the journal erases a block, then write burst frames
    at once while the erase stalls the gate. Returns the burst's plates."""
    erases = len(gate.lines(r"STALL erase"))
    plates = []
    for i in range(200):
        gate.send_plate("%s%05d" % (prefix, i))
        deadline = time.time() + 0.08
        while time.time() < deadline:
            if len(gate.lines(r"STALL erase")) > erases:
                plates = ["%s9%04d" % (prefix, k) for k in range(burst)]
                gate.write_raw(b"".join(camera_frames.pg_frame(k + 1, p)
                                        for k, p in enumerate(plates)))
                return plates, i + 1
            time.sleep(0.0005)
    raise AssertionError("the journal never erased")


def test_back_to_back_cars_lose_no_frame_while_the_journal_erases(lot):
    # An 80 ms sector erase (as bad as FIELD_NOTES reports) starts; two cars'
    # frames (24 B each) arrive during it: the 128 B FIFO holds both.
    gate = lot.gate("erase-in", "in", site_extra={"relay_pulse_ms": 20},
                    board_env={"PARKGATE_SIM_FLASH_STALL": "700,80000"})
    plates, sent = _cars_until_an_erase(gate, 2, "苏E")
    for plate in plates:
        gate.wait_line(r"EVENT in seq=\d+ plate=%s" % plate, 5)
    assert gate.lines(r"UART overrun") == []
    gate.wait_line(r"EVENT in seq=%d " % (sent + 2), 5)
    wait_until(lambda: lot.stored("erase-in") == sent + 2, 20, "all stored")


def test_a_burst_beyond_the_fifo_during_an_erase_is_lost_as_on_the_board(lot):
    # The model bites: eight frames (192 B) during an erase overflow the FIFO.
    gate = lot.gate("burst-in", "in", site_extra={"relay_pulse_ms": 20},
                    board_env={"PARKGATE_SIM_FLASH_STALL": "700,80000"})
    plates, _ = _cars_until_an_erase(gate, 8, "浙F")
    gate.wait_line(r"UART overrun: \d+ bytes lost", 5)
    time.sleep(0.5)
    seen = [p for p in plates if gate.lines(r"EVENT in seq=\d+ plate=%s" % p)]
    assert 0 < len(seen) < len(plates)


def test_a_hung_adapter_is_reset_by_the_watchdog_and_nothing_is_lost(lot):
    gate = lot.gate("wdt-in", "in", board_env={"PARKGATE_SIM_WDT_MS": "1500"})
    gate.send_plate("鲁A00001")
    gate.wait_line(r"EVENT in seq=1 ", 5)
    wait_until(lambda: lot.stored("wdt-in") == 1, 20, "the first car stored")
    time.sleep(1.0)                       # the first car's relay pulse is over
    open(os.path.join(gate.dir, "hang.relay"), "w").close()
    gate.send_plate("鲁A00002")           # journaled, then the relay adapter hangs
    gate.wait_line(r"HANG relay adapter stuck", 5)
    assert gate.lines(r"EVENT in seq=2 ") == []    # it hung before the barrier opened
    gate.wait_line(r"SIM RESET watchdog not fed", 10)
    gate.wait_for(lambda: gate.boots == 2, 20, "the reboot")
    boot = gate.lines(r" BOOT ")[-1]
    assert "next_seq=3" in boot and "replayed=2" in boot
    wait_until(lambda: lot.stored("wdt-in") == 2, 20, "the second car stored")
    summary = lot.bridge.store.summary()
    journal, = [j for j in summary["journals"] if j["gate"] == "wdt-in"]
    assert journal["max_seq"] == 2 and journal["missing"] == 0
    assert summary["rows"] == summary["identities"]          # nothing twice
    assert gate.watchdog_resets == 1
    time.sleep(2.0)                       # fed again: no second reset
    assert gate.watchdog_resets == 1


def test_reconnect_backoff_and_keepalive_across_the_ticks_wrap(lot):
    # The broker goes away 1 s before the wrap and comes back 3 s after it:
    # the link's backoff, its keepalive (2 s) and the backlog work across it.
    gate = lot.gate("wrap-link", "in", site_extra={"keepalive_s": 2},
                    board_env={"PARKGATE_SIM_TICKS": "4000"})
    booted = time.time()
    gate.send_plate("闽D00001")
    gate.wait_line(r"EVENT in seq=1 ", 5)
    time.sleep(max(0.0, booted + 3.0 - time.time()))
    lot.broker.kill()
    gate.wait_line(r"LINK down", 10)
    gate.send_plate("闽D00002")                  # journaled while the broker is gone
    gate.wait_line(r"EVENT in seq=2 ", 5)
    time.sleep(max(0.0, booted + 7.0 - time.time()))
    lot.broker.start()
    gate.wait_line(r"LINK up", 15, count=2)
    assert ticks_of(gate.lines(r"LINK up")[-1]) < ticks_of(gate.lines(r"LINK down")[-1])
    wait_until(lambda: lot.stored("wrap-link") == 2, 20, "the backlog drained")
    time.sleep(5.0)                              # two keepalive periods past the wrap
    assert len(gate.lines(r"LINK down")) == 1    # no false keepalive timeout
