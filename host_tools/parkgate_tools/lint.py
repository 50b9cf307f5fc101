"""`make lint`: every file that goes on a board compiles with mpy-cross.

MicroPython rejects syntax CPython accepts (nested f-strings, some
comprehension forms, ...); this catches it on the host for every board."""
import os
import subprocess
import sys
import tempfile

from parkgate_tools import runtime


def board_names():
    return sorted(name for name in os.listdir(runtime.BOARDS)
                  if os.path.isfile(os.path.join(runtime.BOARDS, name, "board.py")))


def firmware_files():
    """Every .py that a deploy puts on some board, plus firmware/main.py."""
    files = {os.path.join(runtime.FIRMWARE, "main.py")}
    for board in board_names():
        files.update(source for source, _, _ in runtime.sources(board))
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


def main():
    files = firmware_files()
    errors = check(files)
    for source, message in errors:
        print("%s: %s" % (os.path.relpath(source, runtime.ROOT), message))
    print("mpy-cross: %d files, %d rejected" % (len(files), len(errors)))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
