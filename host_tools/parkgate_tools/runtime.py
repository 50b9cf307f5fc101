"""Where things are, and how to start the gate's own MicroPython.

Every simulated gate, and every test or bench that runs firmware code under
MicroPython, runs the 32-bit unix-port image that `make firmware
BOARD=unix-sim` builds (host_tools/build_firmware.py): the firmware, the
board's adapters and umqtt.simple frozen in, as an ESP32 image holds them,
in a literal 64 KiB heap. The image is built on first use and cached."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIRMWARE = os.path.join(ROOT, "firmware")
BOARDS = os.path.join(ROOT, "boards")
BUILD_LIB = os.path.join(ROOT, "build", "lib")
BUILD_MPY = os.path.join(ROOT, "build", "mpy")
# The heap an ESP32 without PSRAM leaves for Python once WiFi and MQTT are
# up, given to every simulated gate as it is: its code is frozen.
GATE_HEAP = "64k"
SIM_BOARD = "unix-sim"

sys.path.insert(0, os.path.join(ROOT, "host_tools"))
import build_firmware  # noqa: E402  (host_tools/build_firmware.py, stdlib only)

sys.path.pop(0)

from parkgate_tools.files import replacing  # noqa: E402


def gate_image(board=SIM_BOARD):
    """Path of the board's frozen 32-bit interpreter, built if stale."""
    return build_firmware.build_unix(board)


def micropython_binary():
    """The gate's interpreter: the frozen 32-bit unix-sim image."""
    return gate_image()


def mpy_cross():
    """mpy-cross from the same MicroPython source as the image."""
    return build_firmware.mpy_cross_path()


def sources(board=None):
    """(source, module path relative to its root, output root) of every
    module that goes on a board: firmware, umqtt and the board's adapters."""
    found = []
    trees = [(os.path.join(FIRMWARE, "parkgate"), "parkgate", "firmware"),
             (os.path.join(BUILD_LIB, "umqtt"), "umqtt", "lib")]
    if board:
        trees.append((os.path.join(BOARDS, board), "", os.path.join("boards", board)))
    for folder, package, out_root in trees:
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py"):
                found.append((os.path.join(folder, name), os.path.join(package, name), out_root))
    return found


def compile_mpy(source, target):
    """Compile one file with mpy-cross; raises CalledProcessError with its message."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with replacing(target) as part:
        subprocess.run([mpy_cross(), "-o", part, source], check=True,
                       capture_output=True, text=True)


def build_mpy(board=None):
    """Compile what changed into build/mpy; returns the MICROPYPATH entries."""
    roots = []
    targets = set()
    for source, relative, out_root in sources(board):
        target = os.path.join(BUILD_MPY, out_root, relative[:-3] + ".mpy")
        targets.add(target)
        if not os.path.exists(target) or os.path.getmtime(target) < os.path.getmtime(source):
            compile_mpy(source, target)
        root = os.path.join(BUILD_MPY, out_root)
        if root not in roots:
            roots.append(root)
    for root in roots:   # a module whose source is gone must not linger
        for folder, _, names in os.walk(root):
            for name in names:
                path = os.path.join(folder, name)
                if name.endswith(".mpy") and path not in targets:
                    os.unlink(path)
    return roots


def micropython_argv(script, *args, heap=GATE_HEAP):
    """argv running a script (or ["-m", module]) on the gate's image."""
    head = list(script) if isinstance(script, (list, tuple)) else [script]
    return [micropython_binary(), "-X", "heapsize=" + heap] + head + list(args)


def host_side_mpy():
    """Compile what changed of firmware/parkgate_host (the host side of the
    shared rules: the image does not freeze it) into build/mpy/host; returns
    that MICROPYPATH entry."""
    root = os.path.join(BUILD_MPY, "host")
    folder = os.path.join(FIRMWARE, "parkgate_host")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            source = os.path.join(folder, name)
            target = os.path.join(root, "parkgate_host", name[:-3] + ".mpy")
            if not os.path.exists(target) or os.path.getmtime(target) < os.path.getmtime(source):
                compile_mpy(source, target)
    return root


def micropython_env(extra_paths=(), host_side=True):
    """Environment for the gate's image: MICROPYPATH is extra_paths, then the
    frozen modules (".frozen"), so the image's own code is what runs, then
    (host_side) the host side of the shared rules (parkgate_host, compiled),
    which the image does not hold. A simulated gate runs with host_side=False:
    it has only what a board has."""
    env = dict(os.environ)
    paths = list(extra_paths) + [".frozen"] + ([host_side_mpy()] if host_side else [])
    env["MICROPYPATH"] = os.pathsep.join(paths)
    return env
