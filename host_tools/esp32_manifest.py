"""An ESP32 board's definition and its frozen manifest, checked without ESP-IDF.

boards/<board>/board.json (board_doc(): port, chip, flash size) and
boards/<board>/manifest.py, resolved by MicroPython's own
tools/manifestfile.py, every module it freezes compiled with that tree's
mpy-cross for the chip (check_frozen()): the part of an ESP32 image build
that `make test` and `make lint` run. The build itself: build_esp32.py.
"""
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_firmware  # noqa: E402  (stdlib only)
from build_firmware import ROOT, BuildError  # noqa: E402

sys.path.pop(0)

BOARDS = os.path.join(ROOT, "boards")
# Per chip: mpy-cross's -march for frozen code (ports/esp32/esp32_common.cmake
# MICROPY_CROSS_FLAGS) and where the second-stage bootloader goes in flash
# (MicroPython's board.json deploy_options.flash_offset: 0x1000 on the ESP32
# and ESP32-S2, 0 on the later chips).
CHIPS = {
    "esp32": {"march": "xtensawin", "bootloader": 0x1000},
    "esp32s2": {"march": "xtensawin", "bootloader": 0x1000},
    "esp32s3": {"march": "xtensawin", "bootloader": 0x0},
    "esp32c3": {"march": "rv32imc", "bootloader": 0x0},
    "esp32c6": {"march": "rv32imc", "bootloader": 0x0},
}
FLASH_SIZES = {"2MB": 2 << 20, "4MB": 4 << 20, "8MB": 8 << 20, "16MB": 16 << 20}


# --- the board ------------------------------------------------------------------

def board_doc(board):
    """boards/<board>/board.json of an ESP32 board; BuildError otherwise."""
    path = os.path.join(BOARDS, board, "board.json")
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise BuildError("no board %r (no %s)" % (board, os.path.relpath(path, ROOT))) from None
    if doc.get("port") != "esp32":
        raise BuildError("board %s is not an ESP32 board (port %r)" % (board, doc.get("port")))
    if doc.get("chip") not in CHIPS:
        raise BuildError("board %s: board.json chip %r is not one of %s"
                         % (board, doc.get("chip"), ", ".join(sorted(CHIPS))))
    if doc.get("flash_size") not in FLASH_SIZES:
        raise BuildError("board %s: board.json flash_size %r is not one of %s"
                         % (board, doc.get("flash_size"), ", ".join(FLASH_SIZES)))
    return doc


def esp32_boards():
    """Names of the boards whose board.json says "port": "esp32"."""
    names = []
    for name in sorted(os.listdir(BOARDS)):
        path = os.path.join(BOARDS, name, "board.json")
        if os.path.isfile(path):
            with open(path) as f:
                if json.load(f).get("port") == "esp32":
                    names.append(name)
    return names


def manifest_path(board):
    return os.path.join(BOARDS, board, "manifest.py")


# --- the frozen manifest, with MicroPython's own tools -----------------------------

def _manifestfile(tree):
    """tools/manifestfile.py of the MicroPython tree, as a module."""
    path = os.path.join(tree, "tools", "manifestfile.py")
    if not os.path.exists(path):
        raise BuildError("%s has no tools/manifestfile.py" % tree)
    spec = importlib.util.spec_from_file_location("mp_manifestfile_%x" % abs(hash(tree)), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def stub_port_dir():
    """A stand-in for ports/esp32 where the tree has none: an empty modules/,
    so the manifest's freeze("$(PORT_DIR)/modules") resolves to nothing."""
    with tempfile.TemporaryDirectory(prefix="esp32-port-stub-") as folder:
        os.mkdir(os.path.join(folder, "modules"))
        yield folder


def resolve_manifest(board, tree, port_dir, source=None):
    """The files boards/<board>/manifest.py freezes, resolved by the tree's
    tools/manifestfile.py in freeze mode (its ManifestOutput records), with
    $(MPY_DIR) the tree and $(PORT_DIR) port_dir. source: manifest text to
    run instead of the file, as if it were the board's manifest.py (paths
    relative to the board folder). BuildError names what does not resolve."""
    mf = _manifestfile(tree)
    manifest = mf.ManifestFile(mf.MODE_FREEZE, {
        "MPY_DIR": tree, "PORT_DIR": port_dir, "BOARD_DIR": os.path.join(BOARDS, board),
        "MPY_LIB_DIR": None})
    where = os.path.relpath(manifest_path(board), ROOT)
    try:
        if source is None:
            manifest.execute(manifest_path(board))
        else:
            here = os.getcwd()
            os.chdir(os.path.join(BOARDS, board))
            try:
                manifest.execute(source)
            finally:
                os.chdir(here)
    except mf.ManifestFileError as exc:
        raise BuildError("%s: %s" % (where, exc)) from None
    files = manifest.files()
    for item in files:
        if item.file_type != mf.FILE_TYPE_LOCAL:
            raise BuildError("%s: %s is not a local file" % (where, item.full_path))
    return files, mf


def check_frozen(board, tree=None, port_dir=None, mpy_cross=None, out_dir=None, source=None):
    """Resolve the board's manifest and compile every module it freezes as
    the ESP32 build does (mpy-cross -march=<chip's> -s <name> [-O<opt>]).
    Returns [{"target", "source", "size", "header"}] (size and first 4
    bytes of the .mpy), in the manifest's order; with out_dir the .mpy files
    are kept there. BuildError names a file that is missing or a module that
    does not compile. port_dir None: the tree's ports/esp32, or a stub with
    an empty modules/ if the tree has none."""
    doc = board_doc(board)
    march = CHIPS[doc["chip"]]["march"]
    if tree is None:
        tree, _ = build_firmware.source_tree()
    mpy_cross = mpy_cross or build_firmware.mpy_cross_path()
    with contextlib.ExitStack() as stack:
        if port_dir is None:
            port_dir = os.path.join(tree, "ports", "esp32")
            if not os.path.isdir(os.path.join(port_dir, "modules")):
                port_dir = stack.enter_context(stub_port_dir())
        if out_dir is None:
            out_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="frozen-"))
        files, mf = resolve_manifest(board, tree, port_dir, source)
        compiled = []
        for item in files:
            if item.kind == mf.KIND_FREEZE_MPY:     # an .mpy frozen as it is
                out = item.full_path
            else:
                out = os.path.join(out_dir, item.target_path[:-3] + ".mpy")
                os.makedirs(os.path.dirname(out), exist_ok=True)
                argv = [mpy_cross, "-o", out, "-s", item.target_path, "-march=" + march]
                if item.opt is not None:
                    argv.append("-O%d" % item.opt)
                with mf.tagged_py_file(item.full_path, item.metadata) as tagged:
                    proc = subprocess.run(argv + [tagged], capture_output=True, text=True)
                if proc.returncode != 0:
                    raise BuildError("%s (%s) does not compile for %s: %s" % (
                        item.target_path, item.full_path, march,
                        (proc.stderr or proc.stdout).strip().replace(tagged, item.full_path)))
            with open(out, "rb") as f:
                header = f.read(4)
            compiled.append({"target": item.target_path, "source": item.full_path,
                             "size": os.path.getsize(out), "header": header})
        return compiled
