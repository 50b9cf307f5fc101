"""The ESP32 board adapters type-check against the MicroPython ESP32 stubs
(micropython-esp32-stubs, pinned in requirements.txt) with boards/mypy.ini,
and the check catches a wrong call into machine/network in a copy."""
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys

import pytest

from parkgate_tools import runtime

MYPY_INI = os.path.join(runtime.BOARDS, "mypy.ini")
STUB_DISTS = ("micropython-esp32-stubs", "micropython-stdlib-stubs")


def esp32_boards():
    names = []
    for name in sorted(os.listdir(runtime.BOARDS)):
        path = os.path.join(runtime.BOARDS, name, "board.json")
        if os.path.exists(path):
            with open(path) as f:
                if json.load(f).get("port") == "esp32":
                    names.append(name)
    return names


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    """The two stub distributions gathered into one folder: mypy refuses
    site-packages on its path, and the stdlib stubs replace typeshed."""
    folder = tmp_path_factory.mktemp("stubs")
    for dist_name in STUB_DISTS:
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            pytest.fail("%s is not installed: pip install -r requirements.txt" % dist_name)
        for item in dist.files:
            name = str(item)
            if ".dist-info" in name or not name.endswith((".pyi", "VERSIONS")):
                continue
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(item.locate(), target)
    assert (folder / "machine.pyi").exists() and (folder / "stdlib" / "VERSIONS").exists()
    return str(folder)


def mypy(stubs, path):
    env = dict(os.environ)
    env["MYPYPATH"] = os.pathsep.join([stubs, runtime.FIRMWARE])
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", MYPY_INI,
                           "--custom-typeshed-dir", stubs, path],
                          env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def test_there_are_esp32_boards():
    assert {"esp32-devkitc", "wt32-eth01", "esp32-s3-devkitc-1-n8r8"} <= set(esp32_boards())


@pytest.mark.parametrize("board", esp32_boards())
def test_board_adapter_type_checks_against_the_esp32_stubs(stubs, board):
    code, output = mypy(stubs, os.path.join(runtime.BOARDS, board, "board.py"))
    assert code == 0, output
    assert "Success" in output


@pytest.mark.parametrize("board,original,mutated,expected", [
    # a misspelt UART keyword
    ("esp32-devkitc", "baudrate=UART_BAUD", "baud=UART_BAUD", 'No overload variant of "UART"'),
    # a UART argument of the wrong type
    ("wt32-eth01", "rxbuf=UART_RXBUF", "rxbuf=\"4k\"", 'No overload variant of "UART"'),
    # a Pin method that does not exist, on the ESP32-S3 board
    ("esp32-s3-devkitc-1-n8r8", "self._pin.value(RELAY_ACTIVE_LEVEL",
     "self._pin.level(RELAY_ACTIVE_LEVEL", '"level"'),
    # a Pin constant that does not exist
    ("esp32-devkitc", "machine.Pin.OUT,", "machine.Pin.OUTPUT,", '"OUTPUT"'),
    # a network constant that does not exist
    ("esp32-devkitc", "network.STA_IF", "network.STATION", '"STATION"'),
])
def test_the_check_catches_a_wrong_call(stubs, tmp_path, board, original, mutated, expected):
    with open(os.path.join(runtime.BOARDS, board, "board.py")) as f:
        source = f.read()
    assert source.count(original) == 1, "the mutation no longer applies to %s" % board
    copy = tmp_path / "board.py"
    copy.write_text(source.replace(original, mutated))
    code, output = mypy(stubs, str(copy))
    assert code == 1, output
    assert expected in output, output
