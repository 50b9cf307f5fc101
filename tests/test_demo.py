"""The demo scenario end to end: real mosquitto, the lot bridge, an entry and
an exit gate running the firmware, the broker killed for part of the run."""
import io
import subprocess

import pytest

from parkgate_tools.sim import demo


def test_demo_loses_nothing_and_charges_offline_exits_from_local_records(tmp_path):
    out = io.StringIO()
    report = demo.run(str(tmp_path), out=out)
    cars = report["cars"]
    assert cars == 60
    assert report["cars_in"] == report["cars_out"] == cars
    for name, gate in report["gates"].items():
        assert gate["journaled"] == cars, name
        assert gate["relay_openings"] == cars, name
        assert gate["stored"] == cars and gate["missing"] == 0, name
    assert report["stored_rows"] == 2 * cars
    assert report["lost"] == 0 and report["duplicates"] == 0
    # the broker was down for part of the run: some exits were charged on
    # the gate, some by the bridge, and every fee is the tariff's quote
    assert report["exits_offline"] > 0 and report["exits_online"] > 0
    assert report["exits_offline"] + report["exits_online"] == cars
    assert report["fee_errors"] == []
    text = out.getvalue()
    assert "broker killed" in text and "broker restarted" in text
    assert "lost 0; duplicated 0" in text


def test_a_gate_that_fails_to_boot_leaves_no_process_behind(tmp_path):
    # 8 KiB cannot hold a gate: its boot fails, and the demo stops the
    # broker, the bridge and every camera line it had started.
    with pytest.raises((RuntimeError, TimeoutError)):
        demo.run(str(tmp_path), cars=2, gate_heap="8k", out=io.StringIO())
    left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert left.stdout == "", "still running: " + left.stdout
