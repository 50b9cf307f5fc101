"""Where things are, and how to start the MicroPython unix port on them.

The firmware runs from .mpy files compiled by mpy-cross, as on a board: the
unix port then needs no heap to compile it, and gets the heap an ESP32 has."""
import functools
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIRMWARE = os.path.join(ROOT, "firmware")
BOARDS = os.path.join(ROOT, "boards")
BUILD_LIB = os.path.join(ROOT, "build", "lib")
BUILD_MPY = os.path.join(ROOT, "build", "mpy")
# The heap an ESP32 without PSRAM leaves for data once WiFi and MQTT are up.
GATE_HEAP = "64k"
GATE_DATA_HEAP = 64 * 1024


def _tool(name):
    here = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.exists(here):
        return here
    found = shutil.which(name)
    if not found:
        raise RuntimeError("%s not found: run `make setup`" % name)
    return found


def micropython_binary():
    """The `micropython` of this virtualenv, else the one on PATH."""
    return _tool("micropython")


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
    part = "%s.%d.part" % (target, os.getpid())
    subprocess.run([_tool("mpy-cross"), "-o", part, source], check=True,
                   capture_output=True, text=True)
    os.replace(part, target)


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
    """argv running script under micropython with the gate's heap."""
    return [micropython_binary(), "-X", "heapsize=" + heap, script] + list(args)


def micropython_env(board=None, extra_paths=()):
    """Environment whose MICROPYPATH holds the compiled firmware, umqtt and a board."""
    paths = list(extra_paths) + build_mpy(board)
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join(paths + [".frozen"])
    return env


_PROBE = """
import gc
gc.collect()
before = gc.mem_alloc()
for name in %r:
    __import__(name)
gc.collect()
print(gc.mem_alloc() - before)
"""


def code_heap(board):
    """Bytes of heap that loading every module of the board's firmware takes
    on this port (what freezing the firmware into flash saves on an ESP32)."""
    modules = []
    for _, relative, _ in sources(board):
        name = relative[:-3].replace(os.sep, ".")
        if name.endswith(".__init__"):
            name = name[:-9]
        if name not in ("provision",):
            modules.append(name)
    env = micropython_env(board)
    proc = subprocess.run([micropython_binary(), "-X", "heapsize=4m", "-c", _PROBE % (modules,)],
                          env=env, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError("measuring the firmware's code heap failed:\n" + proc.stderr)
    return int(proc.stdout.split()[-1])


@functools.lru_cache(maxsize=None)
def gate_heap(board="unix-sim"):
    """The -X heapsize for a simulated gate: GATE_DATA_HEAP for data, as an
    ESP32 leaves with the firmware frozen into flash, plus the heap the code
    itself takes on this port, where it has to be loaded from .mpy files."""
    total = GATE_DATA_HEAP + code_heap(board)
    return "%dk" % ((total + 1023) // 1024)
