"""Shared test set-up. Puts the firmware, the unix-sim board and the core
tests on sys.path, and gives every test module these fixtures:

- from fixtures_mqtt: ``broker`` (a mosquitto on a free port), ``bridge`` /
  ``make_bridge`` (the lot bridge on it), ``gates`` (fake gates: raw paho
  clients), ``db_path`` over both store backends (``backend``, ``pg_server``);
- simulated gates on the gate's own image (parkgate_tools.sim):
  ``sim_lot`` (a broker, the bridge and gates sharing the lot's clock),
  ``offline_gate`` (a gate whose lot server is unreachable) and
  ``downlink_lane`` (downlink_lane.DownlinkLane: a linked gate and an
  operator pushing downlink messages to it).

Each is a factory or a running thing that is stopped after the test."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "core"))
sys.path.insert(0, os.path.join(ROOT, "firmware"))
sys.path.insert(0, os.path.join(ROOT, "boards", "unix-sim"))

import pytest  # noqa: E402

from fixtures_mqtt import (  # noqa: E402,F401  (fixtures for every test module)
    backend, bridge, broker, db_path, gates, make_bridge, pg_server)
from parkgate_tools.sim.broker import free_port  # noqa: E402
from parkgate_tools.sim.gate import SimClock, SimGate  # noqa: E402
from parkgate_tools.sim.lot import START, SimLot  # noqa: E402


@pytest.fixture
def sim_lot(tmp_path):
    """Factory: sim_lot(lot, **options) -> a SimLot in tmp_path (options go
    to SimLot: rate, start, site, bridge, ...); stopped after the test."""
    made = []

    def make(lot="t", **options):
        made.append(SimLot(str(tmp_path), lot, **options))
        return made[-1]

    yield make
    for lot in made:
        lot.stop()


@pytest.fixture
def offline_gate(tmp_path):
    """Factory: offline_gate(name, direction, lot, start=START, rate=60,
    extra_files=None, **options) -> a provisioned, booted SimGate in
    tmp_path whose broker address has nobody listening (the lot server is
    gone), on its own SimClock(start, rate); options go to SimGate
    (site_extra, attendant, ...). Stopped after the test."""
    made = []

    def make(name, direction, lot, start=START, rate=60, extra_files=None, **options):
        gate = SimGate(str(tmp_path), name, lot, direction, free_port(),
                       SimClock(start, rate), **options)
        made.append(gate)
        gate.provision(extra_files)
        return gate.start()

    yield make
    for gate in made:
        gate.stop()


@pytest.fixture
def downlink_lane(tmp_path):
    """Factory: downlink_lane(lot, gate, direction, key=None, **options) ->
    a downlink_lane.DownlinkLane in tmp_path; closed after the test."""
    from downlink_lane import DownlinkLane
    made = []

    def make(lot, gate, direction, **options):
        made.append(DownlinkLane(str(tmp_path), lot, gate, direction, **options))
        return made[-1]

    yield make
    for lane in made:
        lane.close()
