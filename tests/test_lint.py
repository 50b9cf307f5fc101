"""Every firmware and board file compiles with mpy-cross (MicroPython's own
compiler), and the check itself notices syntax MicroPython rejects."""
import os

from parkgate_tools import lint, runtime


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
