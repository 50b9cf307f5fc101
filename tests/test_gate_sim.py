"""The gate firmware in the simulator, against a real mosquitto and the lot
bridge: camera line faults, power cuts, and a broker that goes away."""
import os
import random
import time

import pytest

from parkgate import tariff
from parkgate_host import camera_frames
from parkgate_tools.sim.gate import DEFAULT_TARIFF

LOT = "t"


@pytest.fixture
def lot(sim_lot):
    # The lot server's clock, every gate's too, 60 simulated seconds a second.
    return sim_lot(LOT, rate=60)


def test_bad_camera_bytes_are_rejected_and_the_gate_keeps_going(lot):
    gate = lot.gate("g-in", "in")
    good = camera_frames.pg_frame(1, "京A12345")
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0xFF
    rng = random.Random(7)
    gate.write_raw(bytes(bad_crc))                                  # bad CRC
    gate.write_raw(good[:9])                                        # truncated, then quiet
    time.sleep(0.2)
    gate.write_raw(b"\x50\x47\x01\x02\x00\x00" + b"\x00" * 4)      # length 0
    gate.write_raw(bytes(rng.getrandbits(8) for _ in range(3000)))  # noise
    time.sleep(0.3)
    rejects = gate.lines(r" REJECT ")
    assert any("bad_crc" in line for line in rejects)
    assert any("truncated" in line for line in rejects)
    assert any("bad_length" in line for line in rejects)
    assert any("garbage" in line for line in rejects)
    assert gate.events() == [] and gate.relay_openings() == 0
    gate.send_plate("京A12345")
    gate.wait_line(r"EVENT in seq=1 plate=京A12345", 5)
    assert gate.alive and gate.relay_openings() == 1


def test_power_cut_at_random_moments_loses_nothing(lot):
    """Kill the gate (SIGKILL) at random moments while cars arrive; every
    event it journaled is re-sent after the reboot and stored once."""
    gate = lot.gate("g-in", "in")
    rng = random.Random(int(os.environ.get("PARKGATE_SEED", "5")))
    plates = ["苏E%05d" % i for i in range(40)]
    cut_after = sorted(rng.sample(range(5, 35), 3))
    for i, plate in enumerate(plates):
        gate.send_plate(plate)
        time.sleep(rng.uniform(0.0, 0.05))
        if i in cut_after:
            time.sleep(rng.uniform(0.0, 0.05))
            gate.kill()
            lot.broker.kill() if i == cut_after[1] else None   # one cut with the broker gone too
            gate.start()
            if not lot.broker.alive:
                lot.broker.start()
    time.sleep(0.5)
    journaled = max(e["seq"] for e in gate.events())
    journals = lot.wait_stored("g-in", journaled)
    assert len(journals) == 1, "the journal identity survived the reboots"
    assert journals[0]["missing"] == 0 and journals[0]["max_seq"] == journaled
    summary = lot.bridge.store.summary()
    assert summary["rows"] == summary["identities"] == journaled
    assert gate.boots == 4


def test_broker_down_gate_still_opens_on_time_and_charges_offline(lot):
    entry = lot.gate("g-in", "in")
    exit_gate = lot.gate("g-out", "out")
    exit_gate.wait_line(r"LINK up", 10)
    entry.send_plate("粤B00001")
    entry.wait_line(r"EVENT in seq=1", 5)
    time.sleep(0.3)   # the exit lane hears the entry
    lot.broker.kill()
    sent = []
    for i in range(2, 6):
        sent.append(entry.send_plate("粤B%05d" % i))
        time.sleep(0.3)
    sent_exit = exit_gate.send_plate("粤B00001")
    exit_gate.wait_line(r"EVENT out seq=1", 5)
    out = exit_gate.events()[0]
    assert out["src"] == "off"
    table = tariff.loads(open(DEFAULT_TARIFF, encoding="utf-8").read())
    entry_time = entry.events()[0]["t"]
    assert out["et"] == entry_time
    assert out["fee"] == tariff.quote(table, entry_time, out["t"]).fee
    # Every car got the barrier within 100 ms of its frame while the broker was down.
    openings = [t for t, level in entry.relay_edges() if level == 1][1:]
    assert len(openings) == 4
    for frame_at, opened_at in zip(sent, openings):
        assert 0 <= opened_at - frame_at < 0.1, (frame_at, opened_at)
    exit_openings = [t for t, level in exit_gate.relay_edges() if level == 1]
    assert 0 <= exit_openings[0] - sent_exit < 0.1
    lot.broker.start()
    lot.wait_stored("g-in", 5)
    lot.wait_stored("g-out", 1)


def test_a_gate_without_a_clock_takes_the_lot_servers_time(lot):
    """Booted with no battery clock (time at the 2000 epoch, quality unset),
    the gate asks the lot server on connecting and stamps events with it."""
    lot.bridge.wait_live()
    gate = lot.gate("g-clock", "in", clock=None)
    assert "clock=unset" in gate.lines(r" BOOT ")[-1]
    gate.wait_line(r"CLOCK set from lot server", 10)
    gate.send_plate("京A00001")
    gate.wait_line(r"EVENT in seq=1", 5)
    event = gate.events()[0]
    assert event["q"] == 5
    assert abs(event["t"] - lot.clock.now()) < 120     # within two simulated minutes
