"""The demo scenario end to end: real mosquitto, the lot bridge, an entry and
an exit gate running the firmware, the broker killed for part of the run;
at its end screenshots of the web application's main pages (headless
Chromium), their paths in the report, or a clear line without chromium."""
import io
import os
import pathlib
import struct
import subprocess

import pytest

from parkgate_tools.lot.store import Store
from parkgate_tools.lot.web.auth import verify_password
from parkgate_tools.sim import browser, demo, demo_web

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """(width, height) from a PNG's header; AssertionError if it is no PNG."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_MAGIC and head[12:16] == b"IHDR", "%s is not a PNG" % path
    return struct.unpack(">II", head[16:24])


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
    # the accounts, and a screenshot of each main page named in the report
    for role, (name, password) in report["accounts"].items():
        assert "%s: user %s, password %s" % (role, name, password) in text
    shots = report["screenshots"]
    assert [os.path.basename(p) for p in shots] == [n for n, _, _ in demo_web.pages("/", "")]
    for path in shots:
        assert os.path.dirname(path) == str(tmp_path / "screenshots")
        assert "screenshot: %s" % path in text
        width, height = png_size(path)
        assert width == 1280 and 600 <= height <= 4000, (path, width, height)
        assert 10_000 < os.path.getsize(path) < 5_000_000, path   # a rendered page, not blank
    assert len({pathlib.Path(p).read_bytes() for p in shots}) == len(shots), "one per page"


def test_without_chromium_the_demo_says_so_and_finishes(tmp_path, monkeypatch):
    def missing():
        raise browser.BrowserMissing("chromium and chromium-driver are not installed")
    monkeypatch.setattr(browser, "find_chromium", missing)
    out = io.StringIO()
    report = demo.run(str(tmp_path), cars=4, outage=(2.0, 4.0), out=out)
    assert report["lost"] == 0 and report["screenshots"] == []
    assert ("screenshots skipped: chromium and chromium-driver are not installed"
            in out.getvalue())
    assert not os.path.exists(tmp_path / "screenshots")


def test_a_gate_that_fails_to_boot_leaves_no_process_behind(tmp_path):
    # 8 KiB cannot hold a gate: its boot fails, and the demo stops the
    # broker, the bridge and every camera line it had started.
    with pytest.raises((RuntimeError, TimeoutError)):
        demo.run(str(tmp_path), cars=2, gate_heap="8k", out=io.StringIO())
    left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert left.stdout == "", "still running: " + left.stdout


def test_a_demo_run_again_in_its_folder_gives_its_accounts_new_passwords(tmp_path):
    store = Store(str(tmp_path / "lot.sqlite"), demo.LOT)
    try:
        first, again = demo_web.make_accounts(store), demo_web.make_accounts(store)
        assert set(first) == set(again) == {"attendant", "manager"}
        for role, (name, password) in again.items():
            user = store.user(name)
            assert user["role"] == role and password != first[role][1]
            assert verify_password(user["password_hash"], password)
    finally:
        store.close()
