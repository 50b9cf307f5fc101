"""Build an ESP32 board's MicroPython image with the gate firmware frozen in.

usage: python host_tools/build_esp32.py BOARD [--ota] [--version N]
       (make firmware BOARD=esp32-devkitc)

--ota builds for the board's OTA table (board.json "ota": its "partitions",
partitions-ota.csv: two app slots, firmware/docs/ota.md) with ESP-IDF's app
rollback on, into build/firmware/BOARD-ota/; without it, for board.json
"partitions" into build/firmware/BOARD/. --version N: the image's version
(default build_firmware.DEFAULT_VERSION), frozen as a generated
fw_version.py (VERSION), which the gate reports as "fw" in its status and
checks an offered image against (firmware/docs/ota.md).

What it needs (it says which are missing, and how to get them, then exits 1):

- ESP-IDF, set up in this shell (IDF_PATH set, idf.py on PATH: `. $IDF_PATH/export.sh`).
  MicroPython 1.28 is built and tested with ESP-IDF v5.3 to v5.5.1 and
  recommends v5.5.1 (ports/esp32/README.md and its CI, at v1.28.0).
- A MicroPython v1.28.0 tree that has ports/esp32: MICROPYTHON_SRC set to a
  clone (`git clone -b v1.28.0 https://github.com/micropython/micropython.git`);
  this script runs `make -C ports/esp32 submodules` in a git checkout. The
  source archive in ../shared/micropython/ holds only the ports the
  simulator needs (unix), not ports/esp32.

What it does, with boards/BOARD/board.json (micropython_board, its variant,
chip, flash_size, partitions):

1. Resolves boards/BOARD/manifest.py with MicroPython's tools/manifestfile.py
   and compiles every frozen module with that tree's mpy-cross for the chip's
   architecture (check_frozen() in esp32_manifest.py: the part `make test`
   runs without ESP-IDF).
2. Writes a MicroPython board definition in build/firmware/BOARD/idf-board/:
   a copy of ports/esp32/boards/<micropython_board> whose
   mpconfigboard.cmake also takes the variant's settings and an sdkconfig
   fragment naming the board's partition table and flash size.
3. Writes build/firmware/BOARD/gen/fw_version.py (VERSION = N) and
   gen/manifest.py: include(boards/BOARD/manifest.py) plus fw_version.
4. `make -C ports/esp32 BOARD_DIR=<that copy> BUILD=build/firmware/BOARD/idf
   FROZEN_MANIFEST=<that gen/manifest.py>` (the port's thin wrapper
   around `idf.py build`, which then joins bootloader, partition table and
   application into firmware.bin with the port's makeimg.py).
5. Copies firmware.bin, bootloader.bin, partition-table.bin and
   micropython.bin to build/firmware/BOARD/, checks that the built partition
   table is the board's, and writes build/firmware/BOARD/FLASHING.txt with the
   esptool commands and offsets (flash_commands()).

Flashing: firmware/docs/boards.md.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_firmware  # noqa: E402  (stdlib only)
from build_firmware import (BUILD, DEFAULT_VERSION, JOBS, MICROPYTHON_GIT,  # noqa: E402
                            MICROPYTHON_TAG, ROOT, BuildError, log)
# The board's definition and its frozen manifest (what runs without ESP-IDF).
from esp32_manifest import (BOARDS, CHIPS, FLASH_SIZES, board_doc, check_frozen,  # noqa: E402,F401
                            esp32_boards, manifest_path)

sys.path.pop(0)

# ESP-IDF versions MicroPython v1.28.0 supports (ports/esp32/README.md,
# .github/workflows/ports_esp32.yml IDF_OLDEST_VER .. IDF_NEWEST_VER).
IDF_RECOMMENDED = "v5.5.1"
IDF_SUPPORTED = ("v5.3", "v5.4", "v5.4.1", "v5.4.2", "v5.5.1")
PARTITION_TABLE_OFFSET = 0x8000     # ESP-IDF's default, which MicroPython keeps
IDF_INSTALL = (
    "install ESP-IDF %s (MicroPython 1.28 supports %s):\n"
    "      git clone -b %s --recursive https://github.com/espressif/esp-idf.git ~/esp-idf\n"
    "      cd ~/esp-idf && ./install.sh esp32,esp32s3\n"
    "      . ~/esp-idf/export.sh        (in every new shell: sets IDF_PATH, puts idf.py on PATH)"
    % (IDF_RECOMMENDED, ", ".join(IDF_SUPPORTED), IDF_RECOMMENDED))
MPY_CLONE = (
    "set MICROPYTHON_SRC to a MicroPython %s clone (the ESP32 port and its submodules):\n"
    "      git clone -b %s %s ~/micropython-%s\n"
    "      export MICROPYTHON_SRC=~/micropython-%s    (this script runs `make -C ports/esp32 "
    "submodules` in it)"
    % (MICROPYTHON_TAG, MICROPYTHON_TAG, MICROPYTHON_GIT, MICROPYTHON_TAG[1:],
       MICROPYTHON_TAG[1:]))


# sdkconfig an OTA build adds (as boards/ESP32_GENERIC/sdkconfig.ota in MicroPython):
# the bootloader boots a new image on trial and goes back to the other slot if
# it resets before esp32.Partition.mark_app_valid_cancel_rollback().
OTA_SDKCONFIG = ("CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE=y",)


# --- the board's flash ------------------------------------------------------------

def table_name(board, doc=None, ota=False):
    """The board's partition CSV (a file name in its folder): board.json
    "partitions", or with ota its "ota" entry's; BuildError if the board
    says "ota": null or has no "ota" entry."""
    doc = doc or board_doc(board)
    if not ota:
        return doc.get("partitions", "partitions.csv")
    if not doc.get("ota"):
        raise BuildError("board %s cannot update itself over the air (board.json \"ota\": %s): "
                         "no OTA build" % (board, json.dumps(doc.get("ota"))))
    return doc["ota"]["partitions"]


def partitions(board, doc=None, ota=False):
    """The board's partition table: [(name, type, subtype, offset, size)]
    (parkgate_tools.field.flash.read_csv: the one parser of these tables)."""
    from parkgate_tools.field.flash import read_csv
    doc = doc or board_doc(board)
    return read_csv(os.path.join(BOARDS, board, table_name(board, doc, ota)))


def app_offset(board, doc=None, ota=False):
    """Where the application goes: the first app partition (factory, or ota_0)."""
    for name, kind, _, offset, _ in partitions(board, doc, ota):
        if kind == "app":
            return offset
    raise BuildError("board %s: the partition table has no app partition" % board)


# --- what the build needs ------------------------------------------------------------

def idf_version(idf_path):
    """ESP-IDF's version ("v5.5.1") from its tools/cmake/version.cmake, or None."""
    parts = {}
    try:
        with open(os.path.join(idf_path, "tools", "cmake", "version.cmake")) as f:
            for line in f:
                m = re.match(r"\s*set\(IDF_VERSION_(MAJOR|MINOR|PATCH)\s+(\d+)\)", line)
                if m:
                    parts[m.group(1)] = m.group(2)
    except OSError:
        return None
    if len(parts) < 2:
        return None
    version = "v%s.%s" % (parts["MAJOR"], parts["MINOR"])
    if parts.get("PATCH", "0") != "0":
        version += "." + parts["PATCH"]
    return version


def esp32_tree():
    """(MicroPython tree, [problems]) for an ESP32 build."""
    problems = []
    try:
        tree, _ = build_firmware.source_tree()
    except (BuildError, OSError, subprocess.CalledProcessError) as exc:
        return None, ["no MicroPython source (%s): %s" % (exc, MPY_CLONE)]
    port = os.path.join(tree, "ports", "esp32")
    if not os.path.isdir(port):
        given = os.environ.get("MICROPYTHON_SRC")
        problems.append(
            "the MicroPython source %s has no ports/esp32 (%s): %s" % (
                tree, "MICROPYTHON_SRC=%s" % given if given else
                "unpacked from %s, which holds only unix, mpy-cross, py, extmod, lib, tools, "
                "..." % os.path.relpath(build_firmware.SHARED_ARCHIVE, ROOT)
                if os.path.isfile(build_firmware.SHARED_ARCHIVE) else "no MICROPYTHON_SRC",
                MPY_CLONE))
    elif not os.path.exists(os.path.join(tree, ".git")) and not os.path.exists(
            os.path.join(tree, "lib", "micropython-lib", "README.md")):
        problems.append(
            "%s is not a git checkout and lacks the submodules the ESP32 build needs "
            "(lib/micropython-lib, lib/berkeley-db-1.xx): %s" % (tree, MPY_CLONE))
    return tree, problems


def prerequisites():
    """(MicroPython tree or None, [what is missing, each with how to get it])."""
    problems = []
    idf_path = os.environ.get("IDF_PATH")
    if not idf_path:
        problems.append("ESP-IDF: IDF_PATH is not set: " + IDF_INSTALL)
    elif not os.path.isdir(idf_path):
        problems.append("ESP-IDF: IDF_PATH=%s is not a folder: %s" % (idf_path, IDF_INSTALL))
    else:
        if shutil.which("idf.py") is None:
            problems.append("ESP-IDF: idf.py is not on PATH: run `. %s/export.sh` in this shell"
                            % idf_path)
        version = idf_version(idf_path)
        if version is not None and version not in IDF_SUPPORTED:
            log("warning: ESP-IDF %s at %s; MicroPython %s supports %s (recommended %s)"
                % (version, idf_path, MICROPYTHON_TAG, ", ".join(IDF_SUPPORTED),
                   IDF_RECOMMENDED))
    tree, tree_problems = esp32_tree()
    return tree, problems + tree_problems


# --- the build -----------------------------------------------------------------------

def out_dir(board, ota=False):
    return os.path.join(BUILD, "firmware", board + ("-ota" if ota else ""))


def write_board_definition(board, doc, tree, ota=False):
    """build/firmware/<board>/idf-board/<micropython_board>: the port's board
    folder, plus the variant's cmake and parkgate's sdkconfig fragment (the
    board's partition table and flash size, last so they win)."""
    mp_board = doc["micropython_board"]
    source = os.path.join(tree, "ports", "esp32", "boards", mp_board)
    if not os.path.exists(os.path.join(source, "mpconfigboard.cmake")):
        raise BuildError("MicroPython has no ESP32 board %s (%s)" % (mp_board, source))
    variant = doc.get("micropython_variant")
    if variant and not os.path.exists(os.path.join(source, "mpconfigvariant_%s.cmake" % variant)):
        raise BuildError("MicroPython's %s has no variant %s" % (mp_board, variant))
    target = os.path.join(out_dir(board, ota), "idf-board", mp_board)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    fragment = os.path.join(out_dir(board, ota), "idf-board", "sdkconfig.parkgate")
    table = os.path.join(BOARDS, board, table_name(board, doc, ota))
    size = doc["flash_size"]
    lines = ["# parkgate board %s (host_tools/build_esp32.py)" % board,
             "CONFIG_PARTITION_TABLE_CUSTOM=y",
             'CONFIG_PARTITION_TABLE_CUSTOM_FILENAME="%s"' % table]
    lines += ["CONFIG_ESPTOOLPY_FLASHSIZE_%s=%s" % (s, "y" if s == size else "n")
              for s in FLASH_SIZES]
    lines.append('CONFIG_ESPTOOLPY_FLASHSIZE="%s"' % size)
    if ota:
        lines += OTA_SDKCONFIG
    with open(fragment, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(target, "mpconfigboard.cmake"), "a") as f:
        f.write("\n# parkgate board %s: the variant, then the partition table and flash size\n"
                % board)
        if variant:
            f.write("include(${CMAKE_CURRENT_LIST_DIR}/mpconfigvariant_%s.cmake)\n" % variant)
        f.write("list(APPEND SDKCONFIG_DEFAULTS %s)\n" % fragment)
    return target


VERSION_MAX = 2 ** 30 - 1       # a small int on the gate (parkgate.ota.VERSION_MAX)


def version_manifest(board, version=DEFAULT_VERSION, ota=False):
    """<out>/gen/fw_version.py (VERSION = version) and <out>/gen/manifest.py
    (the board's manifest plus fw_version); returns the latter, the build's
    FROZEN_MANIFEST. The same generated module as the unix-sim images'
    (build_firmware._generated_manifest)."""
    if type(version) is not int or not 0 <= version <= VERSION_MAX:
        raise BuildError("--version %r: an integer 0..%d" % (version, VERSION_MAX))
    return build_firmware._generated_manifest(board, out_dir(board, ota), version, None)


def parse_args(argv):
    """(board, ota, version) from the command line; None for a bad one."""
    args = list(argv)
    ota = "--ota" in args
    args = [a for a in args if a != "--ota"]
    version = DEFAULT_VERSION
    if "--version" in args:
        at = args.index("--version")
        try:
            version = int(args[at + 1])
        except (IndexError, ValueError):
            return None
        del args[at:at + 2]
    if len(args) != 1 or args[0].startswith("-"):
        return None
    return args[0], ota, version


def flash_commands(board, doc=None, port="/dev/ttyUSB0", folder=None, ota=False):
    """The esptool commands that put the built image on the board."""
    doc = doc or board_doc(board)
    chip = doc["chip"]
    folder = os.path.relpath(folder or out_dir(board, ota), ROOT)
    boot = CHIPS[chip]["bootloader"]
    head = "esptool.py --chip %s --port %s" % (chip, port)
    return [
        "%s erase_flash" % head,
        "%s --baud 460800 write_flash 0x%x %s/firmware.bin" % (head, boot, folder),
        "# or the same three parts one by one:",
        "%s --baud 460800 write_flash --flash_size %s 0x%x %s/bootloader.bin 0x%x "
        "%s/partition-table.bin 0x%x %s/micropython.bin" % (
            head, doc["flash_size"], boot, folder, PARTITION_TABLE_OFFSET, folder,
            app_offset(board, doc, ota), folder),
        "# or: parkgate board flash --port %s --board %s %s/micropython.bin --erase" % (
            port, board, folder),
    ]


def _run(argv, what, cwd=None):
    log("$ " + " ".join(argv))
    proc = subprocess.run(argv, cwd=cwd)
    if proc.returncode != 0:
        raise BuildError("%s failed (exit %d)" % (what, proc.returncode))


def _check_partition_table(board, doc, built, ota=False):
    """The built partition-table.bin is the board's partition CSV."""
    gen = os.path.join(os.environ["IDF_PATH"], "components", "partition_table",
                       "gen_esp32part.py")
    with tempfile.TemporaryDirectory() as tmp:
        ours = os.path.join(tmp, "partitions.bin")
        _run([sys.executable, gen, "-q", os.path.join(BOARDS, board, table_name(
            board, doc, ota)), ours], "gen_esp32part.py")
        with open(ours, "rb") as a, open(built, "rb") as b:
            if a.read() != b.read():
                raise BuildError("the built partition table %s is not boards/%s/%s"
                                 % (built, board, table_name(board, doc, ota)))


def build(board, tree, ota=False, version=DEFAULT_VERSION):
    doc = board_doc(board)
    port = os.path.join(tree, "ports", "esp32")
    frozen = check_frozen(board, tree=tree)
    log("manifest: %d modules compile for %s" % (len(frozen), CHIPS[doc["chip"]]["march"]))
    _run(["make", "-C", os.path.join(tree, "mpy-cross"), JOBS], "mpy-cross build")
    board_dir = write_board_definition(board, doc, tree, ota)
    idf_build = os.path.join(out_dir(board, ota), "idf")
    args = ["BOARD_DIR=" + board_dir, "BUILD=" + idf_build,
            "FROZEN_MANIFEST=" + version_manifest(board, version, ota)]
    if os.path.exists(os.path.join(tree, ".git")):
        _run(["make", "-C", port] + args + ["submodules"], "make submodules")
    _run(["make", "-C", port, JOBS] + args, "ESP32 build (make -C ports/esp32)")
    outputs = {"firmware.bin": "firmware.bin", "micropython.bin": "micropython.bin",
               "bootloader.bin": os.path.join("bootloader", "bootloader.bin"),
               "partition-table.bin": os.path.join("partition_table", "partition-table.bin")}
    for name, relative in outputs.items():
        shutil.copyfile(os.path.join(idf_build, relative),
                        os.path.join(out_dir(board, ota), name))
    _check_partition_table(board, doc, os.path.join(out_dir(board, ota), "partition-table.bin"),
                           ota)
    commands = flash_commands(board, doc, ota=ota)
    with open(os.path.join(out_dir(board, ota), "FLASHING.txt"), "w") as f:
        f.write("# %s: MicroPython %s (%s%s) with parkgate version %d frozen in, %s\n" % (
            board, MICROPYTHON_TAG, doc["micropython_board"],
            ", " + doc["micropython_variant"] if doc.get("micropython_variant") else "",
            version, table_name(board, doc, ota)))
        f.write("\n".join(commands) + "\n")
    log("built %s" % os.path.relpath(os.path.join(out_dir(board, ota), "firmware.bin"), ROOT))
    print("\n".join(commands))
    return 0


def main(board, ota=False, version=DEFAULT_VERSION):
    """make firmware BOARD=<an ESP32 board> (ota: for its OTA table; version:
    the image's fw_version.VERSION): 0 when built, 1 otherwise."""
    try:
        doc = board_doc(board)
        table_name(board, doc, ota)
        if type(version) is not int or not 0 <= version <= VERSION_MAX:
            raise BuildError("--version %r: an integer 0..%d" % (version, VERSION_MAX))
        tree, problems = prerequisites()
        if problems:
            # What this machine can check without them: the frozen manifest.
            try:
                frozen = check_frozen(board)
                log("manifest boards/%s/manifest.py: %d modules resolve and compile for %s%s" % (
                    board, len(frozen), CHIPS[doc["chip"]]["march"],
                    "" if tree and os.path.isdir(os.path.join(tree, "ports", "esp32"))
                    else " (the ESP32 port's own modules not checked: no ports/esp32)"))
            except BuildError as exc:
                problems.insert(0, "the frozen manifest: %s" % exc)
            sys.stderr.write("firmware: cannot build the %s image (%s, %s); missing:\n" % (
                board, doc["micropython_board"], doc["chip"]))
            for problem in problems:
                sys.stderr.write("  - %s\n" % problem)
            sys.stderr.write("How to flash a built image: firmware/docs/boards.md\n")
            return 1
        return build(board, tree, ota, version)
    except BuildError as exc:
        sys.stderr.write("firmware: %s\n" % exc)
        return 1


if __name__ == "__main__":
    ARGS = parse_args(sys.argv[1:])
    if ARGS is None:
        sys.stderr.write(__doc__)
        sys.exit(2)
    sys.exit(main(ARGS[0], ota=ARGS[1], version=ARGS[2]))
