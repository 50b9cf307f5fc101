"""Every board keeps the board interface (boards/interface.py), and the gate
takes its adapters through it.

The interface's protocols give a spec (each name, its kind, its parameters,
what it returns); tests/board_conformance.py calls each name of a board
module with it and checks the answers: the ESP32 boards on CPython with the
fake ESP32 port of tests/fakes/esp32_port (machine, network, esp32) on their
path (and, with the same fakes, they load on MicroPython), the simulator's
board on its own 32-bit image, as it is frozen there, and the fake board of
tests/fakes/board.py. Then the gate runs on that fake
board, from a car's camera bytes to the relay, on CPython and on the image.
The checks bite: a board without a name, or an adapter with other
arguments, fails."""
import binascii
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
import typing

import pytest

from parkgate_host.camera_frames import pg_frame
from parkgate_tools import runtime

from board_conformance import check
from fakes.board import FakeBoard, gate_a_car

TESTS = os.path.join(runtime.ROOT, "tests")
CONFORMANCE = os.path.join(TESTS, "board_conformance.py")
ESP32_PORT = os.path.join(TESTS, "fakes", "esp32_port")
ESP32_SHARED = os.path.join(runtime.BOARDS, "esp32")
# The image's heap for the checks: the check and the fake board's RAM flash
# live in it too (the board code is frozen).
CHECK_HEAP = "256k"
SITE = {"lot": "t", "gate": "g1", "direction": "in", "broker": "127.0.0.1"}
NOT_CALLED = ["writeblocks",     # the journal device is read, never written
              "reset"]           # the board's restart: it would end the check


def _interface():
    spec = importlib.util.spec_from_file_location(
        "board_interface", os.path.join(runtime.BOARDS, "interface.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


INTERFACE = _interface()


def _kind(annotation):
    if annotation in (int, str, bool, bytes):
        return annotation.__name__
    if annotation is type(None):
        return "none"
    origin = typing.get_origin(annotation)
    if origin in (dict, tuple):
        return origin.__name__
    return "any"


def _parameters(fn):
    return [name for name in inspect.signature(fn).parameters if name != "self"]


def _method_spec(fn):
    return {"args": _parameters(fn), "returns": _kind(typing.get_type_hints(fn).get("return"))}


def _members(protocol):
    """(annotated values, methods) a protocol declares itself, in order."""
    values = {name: _kind(kind) for name, kind in protocol.__annotations__.items()}
    methods = {name: fn for name, fn in vars(protocol).items()
               if inspect.isfunction(fn) and not name.startswith("_")}
    return values, methods


def interface_spec():
    """The spec tests/board_conformance.py checks, read from the protocols:
    a member returning an adapter protocol is an adapter (its methods and
    values checked on what it returns); PassageBoard's own are optional."""
    spec = {"values": {}, "functions": {}, "adapters": {}, "optional": [],
            "not_called": NOT_CALLED}
    for protocol in (INTERFACE.Board, INTERFACE.PassageBoard):
        values, methods = _members(protocol)
        if protocol is INTERFACE.PassageBoard:
            spec["optional"] = sorted(list(values) + list(methods))
        spec["values"].update(values)
        for name, fn in methods.items():
            returns = typing.get_type_hints(fn).get("return")
            if inspect.isclass(returns) and getattr(returns, "_is_protocol", False):
                adapter_values, adapter_methods = _members(returns)
                spec["adapters"][name] = {
                    "args": _parameters(fn), "values": adapter_values,
                    "methods": {m: _method_spec(f) for m, f in adapter_methods.items()}}
            else:
                spec["functions"][name] = _method_spec(fn)
    return spec


def boards():
    return sorted(name for name in os.listdir(runtime.BOARDS)
                  if os.path.isfile(os.path.join(runtime.BOARDS, name, "board.json")))


def board_doc(name):
    with open(os.path.join(runtime.BOARDS, name, "board.json")) as f:
        return json.load(f)


ESP32_BOARDS = [name for name in boards() if board_doc(name).get("port") == "esp32"]


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "spec.json"
    path.write_text(json.dumps(interface_spec()))
    return str(path)


def site_file(folder, board, extra):
    with open(os.path.join(runtime.BOARDS, board, "site.example.json")) as f:
        site = json.load(f)
    site.update(extra)
    path = os.path.join(str(folder), "site.json")
    with open(path, "w") as f:
        json.dump(site, f)
    return path


def esp32_check(spec_file, tmp_path, board_dir, shared_dir, board="esp32-devkitc"):
    """tests/board_conformance.py on CPython for an ESP32 board's folder."""
    # What the site fits: the passage input, the DS3231, an SNTP server.
    site = site_file(tmp_path, board, {"passage": True, "rtc": "ds3231", "ntp": "192.168.10.1"})
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ESP32_PORT, board_dir, shared_dir, runtime.FIRMWARE,
                                         runtime.BUILD_LIB])
    env["PARKGATE_FAKE_SITE"] = site
    proc = subprocess.run([sys.executable, CONFORMANCE, spec_file, site, "mp_host"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    return proc.returncode, proc.stdout + proc.stderr


def sim_check(spec_file, tmp_path, extra_paths=()):
    """tests/board_conformance.py on the simulator's image, its board frozen
    there (unless extra_paths shadow it), in a folder of its own."""
    folder = tmp_path / "sim"
    folder.mkdir()
    site = site_file(tmp_path, "unix-sim", {})
    env = runtime.micropython_env(extra_paths)
    env.update({"PARKGATE_SIM_DIR": str(folder), "PARKGATE_SIM_PASSAGE": "1",
                "PARKGATE_SIM_FLASH_STALL": "0,0"})
    subprocess.run(runtime.micropython_argv(["-m", "provision"], "site.json=" + site),
                   env=runtime.micropython_env() | {"PARKGATE_SIM_DIR": str(folder)},
                   check=True, capture_output=True, timeout=60)
    proc = subprocess.run(runtime.micropython_argv(CONFORMANCE, spec_file, site, heap=CHECK_HEAP),
                          env=env, capture_output=True, text=True, timeout=120, cwd=str(folder))
    return proc.returncode, proc.stdout + proc.stderr


def test_the_spec_is_the_interface():
    spec = interface_spec()
    assert {"NAME", "BOOT_CLOCK_QUALITY", "PASSAGE"} == set(spec["values"])
    assert spec["functions"]["free_flash"] == {"args": ["path"], "returns": "int"}
    assert spec["functions"]["mqtt"]["returns"] == "tuple"
    assert spec["adapters"]["Uart"]["methods"]["readinto"] == {"args": ["buf"], "returns": "int"}
    assert spec["adapters"]["Relay"]["values"] == {"on": "bool"}
    assert spec["optional"] == ["PASSAGE", "PassageSensor"]
    # Every name the gate's code takes from its board is in the interface.
    used = set()
    for folder, _, names in os.walk(runtime.FIRMWARE):
        for name in names:
            if name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    used |= set(re.findall(r"\bboard\.([A-Za-z_]\w*)", f.read()))
    used -= {"py", "json"}      # board.py, board.json in comments
    used |= {"PASSAGE"}         # getattr(board, "PASSAGE", False)
    declared = set(spec["values"]) | set(spec["functions"]) | set(spec["adapters"])
    assert used <= declared, sorted(used - declared)
    assert len(used) > 20, sorted(used)


def test_every_board_is_checked():
    assert {"esp32-devkitc", "wt32-eth01", "esp32-s3-devkitc-1-n8r8"} <= set(ESP32_BOARDS)
    assert set(boards()) == set(ESP32_BOARDS) | {"unix-sim"}


@pytest.mark.parametrize("board", ESP32_BOARDS)
def test_esp32_board_keeps_the_interface(spec_file, tmp_path, board):
    code, output = esp32_check(spec_file, tmp_path, os.path.join(runtime.BOARDS, board),
                               ESP32_SHARED, board)
    assert code == 0, output
    assert "failed" in output and " 0 failed" in output, output


@pytest.mark.parametrize("board", ESP32_BOARDS)
def test_esp32_board_imports_on_micropython(board, tmp_path):
    # The board module and the shared adapters it imports (which import it
    # back, for its pins) load on MicroPython, with the fake port in front.
    script = ("import board, esp32_board\n"
              "assert esp32_board.board is board and board.Uart is esp32_board.Uart\n"
              "relay = board.Relay()\n"
              "relay.set(True)\n"
              "print(board.NAME, relay._pin.pin, relay._pin.level, board.network_up())\n")
    env = runtime.micropython_env([ESP32_PORT, os.path.join(runtime.BOARDS, board), ESP32_SHARED])
    proc = subprocess.run(runtime.micropython_argv(["-c", script]), env=env,
                          capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    name, pin, level, up = proc.stdout.split()
    assert name == board and level == "0" and up == "False", proc.stdout   # active low
    with open(os.path.join(runtime.BOARDS, board, "board.py")) as f:
        assert "\nRELAY_PIN = %s\n" % pin in f.read()


def test_simulator_board_keeps_the_interface_on_its_image(spec_file, tmp_path):
    code, output = sim_check(spec_file, tmp_path)
    assert code == 0, output
    assert " 0 failed" in output, output


def test_fake_board_keeps_the_interface(tmp_path):
    assert check(FakeBoard(SITE, str(tmp_path)), interface_spec(), SITE) == []


def _copy(source, folder, original=None, mutated=None):
    with open(source) as f:
        text = f.read()
    if original is not None:
        assert text.count(original) == 1, (source, original)
        text = text.replace(original, mutated)
    (folder / os.path.basename(source)).write_text(text)


def test_the_check_bites_on_an_esp32_board(spec_file, tmp_path):
    # A name the gate needs left out of a board, and an adapter's method
    # with other arguments than the interface's.
    folder = tmp_path / "mutated"
    folder.mkdir()
    _copy(os.path.join(runtime.BOARDS, "esp32-devkitc", "board.py"), folder,
          "reset, ticks_ms, udp_socket)", "reset, udp_socket)")
    _copy(os.path.join(ESP32_SHARED, "esp32_board.py"), folder,
          "    def wait(self, ms):\n        time.sleep_ms(ms)", "    def wait(self):\n        pass")
    code, output = esp32_check(spec_file, tmp_path, str(folder), str(folder))
    assert code == 1, output
    assert "FAIL ticks_ms: missing" in output, output
    assert "FAIL Uart().wait: called with (ms): TypeError" in output, output
    assert "2 failed" in output, output


def test_the_check_bites_on_the_simulator_board(spec_file, tmp_path):
    # The simulator's board.py with its network_up() renamed, ahead of the
    # frozen one on the image's path (its simclock, simuart stay frozen).
    folder = tmp_path / "mutated"
    folder.mkdir()
    _copy(os.path.join(runtime.BOARDS, "unix-sim", "board.py"), folder,
          "def network_up():", "def network_is_up():")
    code, output = sim_check(spec_file, tmp_path, [str(folder)])
    assert code == 1, output
    assert "FAIL network_up: missing" in output and "1 failed" in output, output


def _assert_one_car_gated(relay, events, topics):
    (on_at, on), (off_at, off) = relay
    assert on is True and off is False
    assert 800 <= off_at - on_at < 900            # relay_pulse_ms, by the fake ticks
    assert len(events) == 1 and events[0].startswith("EVENT in seq=1 plate=京A12345 ")
    assert "pg/t/g1/up/events" in topics


def test_gate_on_a_fake_board_from_camera_bytes_to_relay(tmp_path):
    board = FakeBoard(SITE, str(tmp_path), seconds=800000000)
    gate = gate_a_car(board, pg_frame(1, "京A12345"))
    _assert_one_car_gated(board.relay.changes, board.logged("EVENT"), board.broker.topics())
    assert board.watchdog.feeds > 0 and gate.journal is not None
    assert board.broker.clients and "pg/t/g1/down/#" in board.broker.subscriptions


def test_gate_on_a_fake_board_takes_a_replaced_piece(tmp_path):
    # One piece swapped for another before the gate is built: a broker
    # that is down, so the car's event waits in the journal.
    board = FakeBoard(SITE, str(tmp_path), seconds=800000000)
    board.broker.up = False
    gate_a_car(board, pg_frame(1, "京A12345"))
    assert [on for _, on in board.relay.changes] == [True, False]
    assert board.broker.published == [] and board.logged("EVENT in seq=1 ")


def test_gate_on_a_fake_board_on_micropython(tmp_path):
    frame = binascii.hexlify(pg_frame(1, "京A12345")).decode()
    proc = subprocess.run(
        runtime.micropython_argv(os.path.join(TESTS, "fakes", "run_gate.py"), str(tmp_path),
                                 frame, heap=CHECK_HEAP),
        env=runtime.micropython_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    _assert_one_car_gated(result["relay"], result["events"], result["topics"])


def test_fake_esp32_port_is_only_on_the_check_path():
    # The fakes stand in for machine, network and esp32 only in the check's
    # subprocess: not in this process.
    assert "machine" not in sys.modules and "mp_host" not in sys.modules


OTA_SCRIPT = """
import sys
import esp32, machine
import board
slots = board.ota_slots()
update = slots.next_update()
print(slots.running().info()[4], update.info()[4], update.ioctl(5, 0))
slots.mark_app_valid_cancel_rollback()
update.set_boot()
board.reset()
print(esp32.valid_marks, esp32.boot, machine.resets)
esp32.RUNNING_SUBTYPE = 0          # a factory app: no OTA slots
print(board.ota_slots())
"""


@pytest.mark.parametrize("board", ESP32_BOARDS)
def test_esp32_board_ota_slots_and_reset(board, tmp_path):
    # ota_slots() over esp32.Partition: the running ota_0, ota_1 to update,
    # the end of probation; None on a factory app; reset() is machine.reset().
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ESP32_PORT, os.path.join(runtime.BOARDS, board),
                                         ESP32_SHARED, runtime.FIRMWARE, runtime.BUILD_LIB])
    env["PARKGATE_FAKE_SITE"] = site_file(tmp_path, board, {})
    proc = subprocess.run([sys.executable, "-c", "import mp_host\n" + OTA_SCRIPT], env=env,
                          capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split("\n")[:3] == ["ota_0 ota_1 4096", "1 ota_1 1", "None"], proc.stdout


def test_the_fake_board_resets_and_gives_its_slots(tmp_path):
    board = FakeBoard(SITE, str(tmp_path))
    assert board.ota_slots() is None
    board.slots = object()
    board.reset()
    assert board.ota_slots() is board.slots and board.resets == 1
