"""Every firmware and board file compiles with mpy-cross (MicroPython's own
compiler), and the check itself notices syntax MicroPython rejects."""
import os

from parkgate_tools import lint, runtime
from parkgate_tools.field import transport


def test_every_board_file_compiles_with_mpy_cross():
    files = lint.firmware_files()
    assert os.path.join(runtime.BOARDS, "esp32-devkitc", "board.py") in files
    assert os.path.join(runtime.FIRMWARE, "parkgate", "app.py") in files
    assert lint.check(files) == []


def test_the_check_rejects_what_micropython_rejects(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\ndef f(:\n    pass\n")
    errors = lint.check([str(bad)])
    assert len(errors) == 1 and errors[0][0] == str(bad) and "SyntaxError" in errors[0][1]


def test_lint_compiles_shared_board_modules_and_the_onboard_programs():
    """The module the ESP32 boards share (listed in their board.json from
    outside their folders) and the field tools' on-board programs are
    compiled too."""
    files = lint.firmware_files()
    assert os.path.join(runtime.BOARDS, "esp32", "esp32_board.py") in files
    onboard = transport.onboard_files()
    assert len(onboard) == len(transport.PROGRAMS) + 1 and set(onboard) <= set(files)
