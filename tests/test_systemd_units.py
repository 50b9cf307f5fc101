"""The systemd units in host_tools/systemd/: `systemd-analyze verify` finds
nothing to say about them, they restart on failure, run as the parkgate
user with hardening, hold no secrets, and name the lot directory's files
where `parkgate lot init` writes them."""
import os
import re
import shutil
import subprocess
import sys

import pytest

from parkgate_tools import runtime
from parkgate_tools.lot import config, lot_cli

UNITS = os.path.join(runtime.ROOT, "host_tools", "systemd")
INSTALLED_PARKGATE = "/opt/parkgate/venv/bin/parkgate"
LOT_DIR = "/var/lib/parkgate/%i"
NAMES = ("parkgate-mosquitto@.service", "parkgate-lot@.service")
HARDENING = os.path.join("parkgate-.service.d", "hardening.conf")   # a drop-in for both


def unit_text(name):
    with open(os.path.join(UNITS, name)) as f:
        return f.read()


def settings(text):
    """{key: [values]} of a unit's non-comment lines."""
    found = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def verify(tmp_path, texts, hardening=None):
    """systemd-analyze verify on instance lot1 of each {name: text}, with the
    hardening drop-in (its text, default the shipped one); its (exit code,
    what it printed about these units)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    (tmp_path / os.path.dirname(HARDENING)).mkdir(parents=True)
    (tmp_path / HARDENING).write_text(hardening or unit_text(HARDENING))
    paths = []
    for name, text in texts.items():
        # the installed parkgate is this tree's here
        text = text.replace(INSTALLED_PARKGATE, os.path.join(os.path.dirname(sys.executable),
                                                             "parkgate"))
        (tmp_path / name).write_text(text)
        instance = tmp_path / name.replace("@.", "@lot1.")
        instance.symlink_to(tmp_path / name)
        paths.append(str(instance))
    done = subprocess.run([analyze, "verify"] + paths, capture_output=True, text=True,
                          timeout=120)
    said = [line for line in (done.stdout + done.stderr).splitlines()
            if any(name.split("@")[0] in line for name in texts) or HARDENING in line]
    return done.returncode, said


def test_systemd_analyze_verify_finds_nothing(tmp_path):
    assert verify(tmp_path, {name: unit_text(name) for name in NAMES}) == (0, [])


def test_the_check_would_see_a_broken_unit_or_drop_in(tmp_path):
    broken = unit_text(NAMES[1]).replace("Restart=on-failure", "Restart=on-fail")
    _, said = verify(tmp_path / "unit", {NAMES[1]: broken})
    assert said and "on-fail" in said[0]
    broken = unit_text(HARDENING).replace("ProtectSystem=strict", "ProtectSystem=stricter")
    _, said = verify(tmp_path / "drop-in", {NAMES[1]: unit_text(NAMES[1])}, broken)
    assert said and "stricter" in said[0]


@pytest.mark.parametrize("name", NAMES)
def test_units_restart_run_as_parkgate_hardened_and_hold_no_secret(name):
    unit = settings(unit_text(name) + unit_text(HARDENING))
    assert unit["Restart"] == ["on-failure"]
    assert unit["User"] == ["parkgate"] and unit["Group"] == ["parkgate"]
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
                       ("CapabilityBoundingSet", "")):
        assert unit[key] == [value], key
    assert unit["ReadWritePaths"] == [LOT_DIR + "/state"]
    for key in ("ExecStart", "Environment"):
        for value in unit.get(key, []):
            assert not re.search(r"pass|token|secret|key", value, re.I), value


def lot_at(lot_dir):
    """The LotConfig of a lot directory at lot_dir (the files need not exist)."""
    return config.parse(lot_dir, {"lot": {"id": "lot1"}})


def test_units_name_the_lot_directorys_files():
    cfg = lot_at(LOT_DIR)
    broker = settings(unit_text(NAMES[0]))
    assert broker["ExecStart"] == ["/usr/sbin/mosquitto -c %s/mosquitto.conf"
                                   % cfg.mosquitto_dir]
    assert broker["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert broker["ReadWritePaths"] == [cfg.state_dir]
    server = settings(unit_text(NAMES[1]))
    assert server["ExecStart"] == ["%s lot run %s" % (INSTALLED_PARKGATE, cfg.dir)]
    assert "run" in [entry[0] for entry in lot_cli.command_table()]
    assert "parkgate-mosquitto@%i.service" in server["After"][0]
