"""The ESP32 board adapters type-check against the MicroPython ESP32 stubs
(micropython-esp32-stubs, pinned in requirements.txt) with boards/mypy.ini:
each ESP32 board's board.py with the shared boards/esp32/esp32_board.py, and
the board module against the board interface (boards/interface.py,
PassageBoard). The check catches a wrong call into machine/network, a name
the board lacks and an adapter off the interface, in a copy."""
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys

import pytest

from parkgate_tools import runtime

MYPY_INI = os.path.join(runtime.BOARDS, "mypy.ini")
ESP32_SHARED = os.path.join(runtime.BOARDS, "esp32")
# The board module where the gate expects a board (mypy takes a module
# where a protocol is expected).
CONFORMS = "import board\nimport interface\n\nchecked: interface.PassageBoard = board\n"
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


def mypy(stubs, board_dir, shared_dir, work):
    """mypy on a board folder's board.py, the shared ESP32 adapters and a
    file that puts the board module where interface.PassageBoard is expected."""
    conforms = os.path.join(str(work), "conforms.py")
    with open(conforms, "w") as f:
        f.write(CONFORMS)
    env = dict(os.environ)
    env["MYPYPATH"] = os.pathsep.join([stubs, runtime.FIRMWARE, board_dir, shared_dir,
                                       runtime.BOARDS])
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", MYPY_INI,
                           "--custom-typeshed-dir", stubs, os.path.join(board_dir, "board.py"),
                           os.path.join(shared_dir, "esp32_board.py"), conforms],
                          env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def mutated_copy(board, original, mutated, folder):
    """board.py and esp32_board.py of the board in folder, original replaced
    by mutated in the one file that has it."""
    sources = {}
    for path in (os.path.join(runtime.BOARDS, board, "board.py"),
                 os.path.join(ESP32_SHARED, "esp32_board.py")):
        with open(path) as f:
            sources[os.path.basename(path)] = f.read()
    source = "".join(sources.values())
    assert source.count(original) == 1, "the mutation no longer applies to %s" % board
    for name, text in sources.items():
        (folder / name).write_text(text.replace(original, mutated))
    return str(folder)


def test_there_are_esp32_boards():
    assert {"esp32-devkitc", "wt32-eth01", "esp32-s3-devkitc-1-n8r8"} <= set(esp32_boards())


@pytest.mark.parametrize("board", esp32_boards())
def test_board_adapter_type_checks_against_the_esp32_stubs(stubs, board, tmp_path):
    code, output = mypy(stubs, os.path.join(runtime.BOARDS, board), ESP32_SHARED, tmp_path)
    assert code == 0, output
    assert "Success" in output


@pytest.mark.parametrize("board,original,mutated,expected", [
    # a misspelt UART keyword
    ("esp32-devkitc", "baudrate=UART_BAUD", "baud=UART_BAUD", 'No overload variant of "UART"'),
    # a UART argument of the wrong type
    ("wt32-eth01", "rxbuf=UART_RXBUF", "rxbuf=\"4k\"", 'No overload variant of "UART"'),
    # a Pin method that does not exist, on the ESP32-S3 board
    ("esp32-s3-devkitc-1-n8r8", "self._pin.value(self._on_level",
     "self._pin.level(self._on_level", '"level"'),
    # a Pin constant that does not exist
    ("esp32-devkitc", "machine.Pin.OUT,", "machine.Pin.OUTPUT,", '"OUTPUT"'),
    # a network constant that does not exist
    ("esp32-devkitc", "network.STA_IF", "network.STATION", '"STATION"'),
])
def test_the_check_catches_a_wrong_call(stubs, tmp_path, board, original, mutated, expected):
    folder = mutated_copy(board, original, mutated, tmp_path)
    code, output = mypy(stubs, folder, folder, tmp_path)
    assert code == 1, output
    assert expected in output, output


@pytest.mark.parametrize("board,original,mutated,expected", [
    # a name the gate takes from every board, left out of a board
    ("esp32-devkitc", "reset, ticks_ms, udp_socket)", "reset, udp_socket)",
     'missing following "PassageBoard" protocol member:\n'),
    # the network start of one board, misspelt
    ("wt32-eth01", "def start_network(site):", "def start_net(site):", "start_network"),
    # an adapter whose method takes other arguments than the interface says
    ("esp32-s3-devkitc-1-n8r8", "    def wait(self, ms):\n        time.sleep_ms(ms)",
     "    def wait(self):\n        time.sleep_ms(5)", "def Uart() -> CameraUart"),
    # the optional passage input's adapter without its method
    ("wt32-eth01", "    def passed(self):", "    def went_by(self):",
     "def PassageSensor() -> PassageInput"),
])
def test_the_check_catches_a_board_off_the_interface(stubs, tmp_path, board, original, mutated,
                                                     expected):
    folder = mutated_copy(board, original, mutated, tmp_path)
    code, output = mypy(stubs, folder, folder, tmp_path)
    assert code == 1, output
    assert "conforms.py" in output and expected in output, output
