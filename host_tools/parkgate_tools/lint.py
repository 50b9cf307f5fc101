"""`make lint`: every file that goes on a board compiles with mpy-cross.

MicroPython rejects syntax CPython accepts (nested f-strings, some
comprehension forms, ...); this catches it on the host for every board:
the firmware, each board's folder and the modules its board.json lists
from elsewhere (boards/esp32/esp32_board.py), and the field tools' on-board
programs (field/onboard/). Then every ESP32 board's frozen manifest is
resolved and compiled for the board's chip as its image build would
(host_tools/build_esp32.py check_frozen(), with a stub for the absent
ports/esp32)."""
import os
import subprocess
import sys
import tempfile

from parkgate_tools import runtime
from parkgate_tools.field import boards, transport

sys.path.insert(0, os.path.join(runtime.ROOT, "host_tools"))
import build_esp32  # noqa: E402  (stdlib only)
from build_firmware import BuildError  # noqa: E402

sys.path.pop(0)


def firmware_files():
    """Every .py that runs on some board: the firmware and firmware/main.py,
    each board's folder and the modules its board.json lists (wherever in
    boards/ they are), and the field tools' on-board programs."""
    files = {os.path.join(runtime.FIRMWARE, "main.py")}
    for name in boards.board_names():
        # A board's manifest.py is read by the image build, not put on a board.
        files.update(source for source, _, _ in runtime.sources(name)
                     if os.path.basename(source) != "manifest.py")
        files.update(source for source, _ in boards.load_board(name).module_sources())
    files.update(transport.onboard_files())
    return sorted(files)


def check(files=None):
    """[(file, error)] for every file mpy-cross rejects."""
    errors = []
    with tempfile.TemporaryDirectory() as out:
        for source in files or firmware_files():
            try:
                runtime.compile_mpy(source, os.path.join(out, "x.mpy"))
            except subprocess.CalledProcessError as exc:
                errors.append((source, (exc.stderr or exc.stdout or "").strip()))
    return errors


def check_manifests():
    """[(board, module count or None, error or None)] for every ESP32 board."""
    results = []
    for board in build_esp32.esp32_boards():
        try:
            results.append((board, len(build_esp32.check_frozen(board)), None))
        except BuildError as exc:
            results.append((board, None, str(exc)))
    return results


def main():
    files = firmware_files()
    errors = check(files)
    for source, message in errors:
        print("%s: %s" % (os.path.relpath(source, runtime.ROOT), message))
    print("mpy-cross: %d files, %d rejected" % (len(files), len(errors)))
    manifests = check_manifests()
    for board, count, error in manifests:
        print(error or "boards/%s/manifest.py: %d frozen modules compile for the board's chip"
              % (board, count))
    bad = [board for board, _, error in manifests if error]
    return 1 if errors or bad else 0


if __name__ == "__main__":
    sys.exit(main())
