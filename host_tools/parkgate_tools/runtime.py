"""Where things are, and how to start the MicroPython unix port on them."""
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIRMWARE = os.path.join(ROOT, "firmware")
BOARDS = os.path.join(ROOT, "boards")
BUILD_LIB = os.path.join(ROOT, "build", "lib")
# The heap an ESP32 without PSRAM leaves once WiFi and MQTT are up.
GATE_HEAP = "64k"


def micropython_binary():
    """The `micropython` of this virtualenv, else the one on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.path.exists(here):
        return here
    found = shutil.which("micropython")
    if not found:
        raise RuntimeError("micropython not found: run `make setup`")
    return found


def micropython_argv(script, *args, heap=GATE_HEAP):
    """argv running script under micropython with the gate's heap."""
    return [micropython_binary(), "-X", "heapsize=" + heap, script] + list(args)


def micropython_env(board=None, extra_paths=()):
    """Environment whose MICROPYPATH holds the firmware, umqtt and a board."""
    paths = list(extra_paths) + [FIRMWARE, BUILD_LIB]
    if board:
        paths.insert(0, os.path.join(BOARDS, board))
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join(paths + [".frozen"])
    return env
