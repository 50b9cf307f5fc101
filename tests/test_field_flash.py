"""`parkgate board flash` (field/flash.py): the esptool commands it runs for
each ESP32 board and layout, through a fake runner (the seam: flash(...,
runner=)); its refusals; and esptool itself where it needs no board. No board
is attached here: writing a real board's flash is not tested."""
import argparse
import hashlib
import importlib.util
import os
import subprocess
import sys

import pytest

from parkgate_tools import cli, runtime
from parkgate_tools.field import board_cli, flash
from parkgate_tools.field.boards import load_board
from parkgate_tools.field.errors import FieldToolError, Refused

ESP32 = {"esp32-devkitc": ("esp32", "4MB", 0x1000), "wt32-eth01": ("esp32", "4MB", 0x1000),
         "esp32-s3-devkitc-1-n8r8": ("esp32s3", "8MB", 0x0)}
PORT = "/dev/ttyUSB7"


def table_bin(rows):
    """partition-table.bin as ESP-IDF's gen_esp32part.py writes it: the
    entries, an MD5 entry (EB EB, FF x 14, MD5 of the entries), 0xFF to 0xC00."""
    body = b"".join(flash.ENTRY.pack(flash.ENTRY_MAGIC, kind, sub, offset, size,
                                     name.encode(), 0)
                    for name, kind, sub, offset, size in flash.numeric(rows))
    body += b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(body).digest()
    return body + b"\xff" * (flash.TABLE_SIZE - len(body))


def build(tmp_path, board, layout="factory", app_size=1000, name="micropython.bin"):
    """A build folder as build_esp32.py leaves one; returns the image's path."""
    folder = tmp_path / ("%s-%s" % (board, layout))
    folder.mkdir()
    (folder / "bootloader.bin").write_bytes(b"\xe9" + b"\0" * 100)
    rows = flash.layouts(load_board(board))[layout]
    (folder / "partition-table.bin").write_bytes(table_bin(rows))
    (folder / name).write_bytes(b"\xe9" + b"\x01" * (app_size - 1))
    return str(folder / name)


class FakeEsptool:
    """The runner: records each argv; read-flash writes the board's table."""

    def __init__(self, board_table=None, fail=None):
        self.calls = []
        self.board_table = board_table
        self.fail = fail

    def __call__(self, argv):
        self.calls.append(argv)
        if "read-flash" in argv:
            with open(argv[-1], "wb") as f:
                f.write(self.board_table if self.board_table is not None else b"\xff" * 0xC00)
        return 2 if self.fail and self.fail in argv else 0


def _head(chip):
    return [sys.executable, "-m", "esptool", "--chip", chip, "--port", PORT, "--baud", "460800"]


@pytest.mark.parametrize("board", sorted(ESP32))
@pytest.mark.parametrize("layout", ["factory", "ota"])
def test_the_esptool_commands(tmp_path, board, layout):
    chip, size, boot = ESP32[board]
    image = build(tmp_path, board, layout)
    folder = os.path.dirname(image)
    table = open(os.path.join(folder, "partition-table.bin"), "rb").read()
    app = 0x10000                     # factory and ota_0 alike, on every board
    write = ["--flash-size", size, "0x%x" % boot, os.path.join(folder, "bootloader.bin"),
             "0x8000", os.path.join(folder, "partition-table.bin"), "0x%x" % app, image]
    # A recovery (the board keeps its layout): check the table, then for OTA
    # blank otadata so the first boot is ota_0, then write.
    runner = FakeEsptool(board_table=table)
    done = flash.flash(board, PORT, image, runner=runner)
    assert done["layout"] == layout
    expected = [_head(chip) + ["read-flash", "0x8000", "0xc00", runner.calls[0][-1]]]
    if layout == "ota":
        expected.append(_head(chip) + ["erase-region", "0xd000", "0x2000"])
    expected.append(_head(chip) + ["write-flash"] + write)
    assert runner.calls == expected
    # A first install: one command, the whole flash erased (otadata included).
    runner = FakeEsptool()
    flash.flash(board, PORT, image, erase=True, baud=921600, runner=runner)
    assert runner.calls == [_head(chip)[:-1] + ["921600", "write-flash", "--erase-all"] + write]


def test_the_layout_asked_for_must_be_the_built_one(tmp_path):
    image = build(tmp_path, "esp32-devkitc", "factory")
    with pytest.raises(Refused, match="holds the factory layout, not ota"):
        flash.flash("esp32-devkitc", PORT, image, layout="ota", runner=FakeEsptool())


def test_another_boards_table_is_refused(tmp_path):
    image = build(tmp_path, "esp32-s3-devkitc-1-n8r8", "ota")
    runner = FakeEsptool()
    with pytest.raises(Refused, match="none of board esp32-devkitc's tables"):
        flash.flash("esp32-devkitc", PORT, image, runner=runner)
    assert runner.calls == []


def test_a_change_of_layout_needs_erase(tmp_path):
    # The board runs the factory layout; the image is an OTA build.
    image = build(tmp_path, "wt32-eth01", "ota")
    old = table_bin(flash.layouts(load_board("wt32-eth01"))["factory"])
    runner = FakeEsptool(board_table=old)
    with pytest.raises(Refused, match="another partition table.*parkgate board journal"):
        flash.flash("wt32-eth01", PORT, image, runner=runner)
    assert [c[9] for c in runner.calls] == ["read-flash"]        # nothing written
    runner = FakeEsptool()                                       # a blank board
    with pytest.raises(Refused, match="no partition table"):
        flash.flash("wt32-eth01", PORT, image, runner=runner)


@pytest.mark.parametrize("board,layout,slot", [
    ("esp32-devkitc", "ota", 0x180000), ("esp32-devkitc", "factory", 0x1F0000),
    ("esp32-s3-devkitc-1-n8r8", "ota", 0x1F0000)])
def test_an_image_larger_than_the_slot_is_refused(tmp_path, board, layout, slot):
    runner = FakeEsptool()
    fits = build(tmp_path, board, layout, app_size=slot)
    flash.flash(board, PORT, fits, erase=True, runner=runner)
    assert len(runner.calls) == 1
    (tmp_path / "big").mkdir()
    big = build(tmp_path / "big", board, layout, app_size=slot + 1)
    with pytest.raises(Refused, match="%d bytes, larger than the app slot" % (slot + 1)):
        flash.flash(board, PORT, big, erase=True, runner=runner)
    assert len(runner.calls) == 1


def test_refusals_before_anything_runs(tmp_path):
    runner = FakeEsptool()
    image = build(tmp_path, "esp32-devkitc")
    with pytest.raises(FieldToolError, match="no port"):
        flash.flash("esp32-devkitc", None, image, runner=runner)
    with pytest.raises(Refused, match="not an ESP32 board"):
        flash.flash("unix-sim", PORT, image, runner=runner)
    with pytest.raises(FieldToolError, match="no board 'nope'"):
        flash.flash("nope", PORT, image, runner=runner)
    with pytest.raises(FieldToolError, match="no image .*missing.bin: build the image"):
        flash.flash("esp32-devkitc", PORT, str(tmp_path / "missing.bin"), runner=runner)
    os.remove(os.path.join(os.path.dirname(image), "bootloader.bin"))
    with pytest.raises(FieldToolError, match="no bootloader .*bootloader.bin"):
        flash.flash("esp32-devkitc", PORT, image, runner=runner)
    other = build(tmp_path, "wt32-eth01")
    with open(other, "r+b") as f:
        f.write(b"\x00")
    with pytest.raises(Refused, match="not an ESP32 application image"):
        flash.flash("wt32-eth01", PORT, other, runner=runner)
    assert runner.calls == []


def test_a_merged_firmware_bin_is_refused(tmp_path):
    image = build(tmp_path, "esp32-devkitc", name="firmware.bin", app_size=0x20000)
    folder = os.path.dirname(image)
    data = bytearray(open(image, "rb").read())
    data[0x7000:0x7000 + 0xC00] = open(os.path.join(folder, "partition-table.bin"), "rb").read()
    open(image, "wb").write(bytes(data))
    with pytest.raises(Refused, match="a merged firmware.bin"):
        flash.flash("esp32-devkitc", PORT, image, runner=FakeEsptool())


def test_esptool_failing_is_reported(tmp_path):
    image = build(tmp_path, "esp32-devkitc", "ota")
    with pytest.raises(flash.FlashFailed, match="write-flash failed \\(exit 2\\)"):
        flash.flash("esp32-devkitc", PORT, image, erase=True, runner=FakeEsptool(
            fail="write-flash"))
    with pytest.raises(flash.FlashFailed, match="could not read the board's partition table"):
        flash.flash("esp32-devkitc", PORT, image, runner=FakeEsptool(fail="read-flash"))


def test_missing_esptool(tmp_path, monkeypatch):
    image = build(tmp_path, "esp32-devkitc")
    real = importlib.util.find_spec
    monkeypatch.setattr(flash.importlib.util, "find_spec",
                        lambda name, *a: None if name == "esptool" else real(name, *a))
    with pytest.raises(flash.EsptoolMissing, match="esptool is not installed.*requirements.txt"):
        flash.flash("esp32-devkitc", PORT, image, runner=FakeEsptool())


def test_the_command_line(tmp_path, capsys):
    image = build(tmp_path, "esp32-s3-devkitc-1-n8r8", "ota", app_size=0x1A0000)
    assert cli.main(["board", "flash", "--port", PORT, "--board", "esp32-s3-devkitc-1-n8r8",
                     image, "--erase", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert "$ esptool --chip esp32s3 --port %s --baud 460800 write-flash --erase-all" % PORT in err
    assert ("would flash esp32-s3-devkitc-1-n8r8: ota layout, %d bytes into ota_0 (0x10000, "
            "%d bytes free in the slot); everything else erased" % (
                0x1A0000, 0x1F0000 - 0x1A0000)) in out
    args = argparse.Namespace(board="esp32-devkitc", port=None, image=image, erase=False,
                              baud=460800, layout=None, dry_run=True)
    assert board_cli.run_flash(args) == 1
    assert capsys.readouterr()[1] == "error: no port: give --port DEVICE or set PARKGATE_PORT\n"
    assert "flash" in [c[0] for c in board_cli.command_table()]


esptool_installed = pytest.mark.skipif(importlib.util.find_spec("esptool") is None,
                                       reason="esptool not installed (requirements.txt)")


@esptool_installed
def test_real_esptool_version():
    proc = subprocess.run(flash.esptool_command() + ["version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip().splitlines()[-1][0].isdigit()


@esptool_installed
@pytest.mark.parametrize("board", sorted(ESP32))
def test_real_esptool_merges_the_parts_at_the_offsets(tmp_path, board):
    # esptool's merge-bin takes write-flash's offset/file pairs: the merged
    # image shows where each part would land, with no board.
    image = build(tmp_path, board, "ota", app_size=4096)
    done = flash.plan(board, PORT, image, erase=True)
    pairs = done["steps"][-1][done["steps"][-1].index("--flash-size") + 2:]
    out = tmp_path / "merged.bin"
    proc = subprocess.run(flash.esptool_command() + ["--chip", ESP32[board][0], "merge-bin",
                                                      "-o", str(out)] + pairs,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    merged = out.read_bytes()           # from flash address 0 (--target-offset 0)
    boot = ESP32[board][2]
    assert merged[boot] == 0xE9 and merged[:boot] == b"\xff" * boot
    boot = 0
    folder = os.path.dirname(image)
    table = open(os.path.join(folder, "partition-table.bin"), "rb").read()
    assert merged[0x8000 - boot:0x8000 - boot + len(table)] == table
    assert merged[0x10000 - boot:0x10000 - boot + 4096] == open(image, "rb").read()
    assert flash.read_table_bin(merged[0x8000 - boot:]) == flash.numeric(
        flash.layouts(load_board(board))["ota"])


def test_offsets_agree_with_the_build():
    # flash.py's bootloader offsets and table offset are the build's.
    sys.path.insert(0, os.path.join(runtime.ROOT, "host_tools"))
    try:
        import build_esp32
    finally:
        sys.path.pop(0)
    chips = build_esp32.CHIPS
    assert flash.BOOTLOADER_OFFSET == {chip: chips[chip]["bootloader"] for chip in chips}
    assert flash.TABLE_OFFSET == build_esp32.PARTITION_TABLE_OFFSET


@esptool_installed
def test_real_esptool_without_a_board_fails_clearly(tmp_path):
    # The real runner on a port with no board behind it: esptool cannot open
    # it, flash() says so and goes no further (no board is attached here).
    image = build(tmp_path, "esp32-devkitc", "ota")
    port = str(tmp_path / "ttyNOBOARD")
    with pytest.raises(flash.FlashFailed, match="could not read the board's partition table"):
        flash.flash("esp32-devkitc", port, image)
    with pytest.raises(flash.FlashFailed, match="esptool write-flash failed \\(exit 2\\)"):
        flash.flash("esp32-devkitc", port, image, erase=True)
