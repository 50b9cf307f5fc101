"""host_tools/build_esp32.py --ota: an ESP32 image for the board's OTA table
(board.json "ota", partitions-ota.csv) with ESP-IDF's app rollback on, into
build/firmware/<board>-ota/. What runs without ESP-IDF: the table it names,
the board definition and sdkconfig fragment it writes (over a stand-in
MicroPython tree), the flash commands, the refusals. The ESP-IDF build itself
is not run here (no ESP-IDF on this machine)."""
import os
import subprocess
import sys

import pytest

from parkgate_tools import runtime

sys.path.insert(0, os.path.join(runtime.ROOT, "host_tools"))
import build_esp32  # noqa: E402
from build_firmware import BuildError  # noqa: E402

sys.path.pop(0)

BOARDS = ("esp32-devkitc", "wt32-eth01", "esp32-s3-devkitc-1-n8r8")
ROLLBACK = "CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE=y"


def fake_tree(tmp_path):
    """A MicroPython tree with just the port's board folders the boards use."""
    tree = tmp_path / "micropython"
    for mp_board, variant in (("ESP32_GENERIC", None), ("ESP32_GENERIC_S3", "SPIRAM_OCT")):
        folder = tree / "ports" / "esp32" / "boards" / mp_board
        folder.mkdir(parents=True)
        (folder / "mpconfigboard.cmake").write_text("set(IDF_TARGET esp32)\n")
        if variant:
            (folder / ("mpconfigvariant_%s.cmake" % variant)).write_text("# variant\n")
    return str(tree)


@pytest.mark.parametrize("board", BOARDS)
def test_the_ota_table_and_app_offset(board):
    assert build_esp32.table_name(board) == "partitions.csv"
    assert build_esp32.table_name(board, ota=True) == "partitions-ota.csv"
    rows = build_esp32.partitions(board, ota=True)
    assert [r[0] for r in rows if r[1] == "app"] == ["ota_0", "ota_1"]
    assert build_esp32.app_offset(board, ota=True) == 0x10000
    assert build_esp32.out_dir(board, ota=True) == build_esp32.out_dir(board) + "-ota"


@pytest.mark.parametrize("board", BOARDS)
@pytest.mark.parametrize("ota", [False, True])
def test_the_board_definition_names_the_table(tmp_path, monkeypatch, board, ota):
    monkeypatch.setattr(build_esp32, "BUILD", str(tmp_path / "build"))
    doc = build_esp32.board_doc(board)
    target = build_esp32.write_board_definition(board, doc, fake_tree(tmp_path), ota=ota)
    folder = os.path.join(str(tmp_path / "build"), "firmware", board + ("-ota" if ota else ""))
    assert target == os.path.join(folder, "idf-board", doc["micropython_board"])
    with open(os.path.join(folder, "idf-board", "sdkconfig.parkgate")) as f:
        fragment = f.read().splitlines()
    table = os.path.join(build_esp32.BOARDS, board,
                         "partitions-ota.csv" if ota else "partitions.csv")
    assert 'CONFIG_PARTITION_TABLE_CUSTOM_FILENAME="%s"' % table in fragment
    assert "CONFIG_ESPTOOLPY_FLASHSIZE_%s=y" % doc["flash_size"] in fragment
    assert (ROLLBACK in fragment) == ota
    with open(os.path.join(target, "mpconfigboard.cmake")) as f:
        assert "list(APPEND SDKCONFIG_DEFAULTS %s)" % os.path.join(
            folder, "idf-board", "sdkconfig.parkgate") in f.read()


def test_the_flash_commands_of_an_ota_build():
    commands = build_esp32.flash_commands("esp32-devkitc", ota=True)
    folder = "build/firmware/esp32-devkitc-ota"
    assert commands[0] == "esptool.py --chip esp32 --port /dev/ttyUSB0 erase_flash"
    assert commands[1].endswith("write_flash 0x1000 %s/firmware.bin" % folder)
    assert commands[3].endswith("0x1000 %s/bootloader.bin 0x8000 %s/partition-table.bin 0x10000 "
                                "%s/micropython.bin" % (folder, folder, folder))
    assert commands[4] == ("# or: parkgate board flash --port /dev/ttyUSB0 --board esp32-devkitc "
                           "%s/micropython.bin --erase" % folder)


def test_a_board_without_ota_is_refused(monkeypatch, capsys):
    doc = dict(build_esp32.board_doc("esp32-devkitc"), ota=None)
    with pytest.raises(BuildError, match='cannot update itself over the air.*"ota": null'):
        build_esp32.table_name("esp32-devkitc", doc, ota=True)
    assert build_esp32.table_name("esp32-devkitc", doc) == "partitions.csv"
    monkeypatch.setattr(build_esp32, "board_doc", lambda board: doc)
    assert build_esp32.main("esp32-devkitc", ota=True) == 1
    assert "cannot update itself over the air" in capsys.readouterr().err


def test_the_command_line_usage():
    script = os.path.join(runtime.ROOT, "host_tools", "build_esp32.py")
    for argv in ([], ["--ota"], ["a", "b"]):
        proc = subprocess.run([sys.executable, script] + argv, capture_output=True, text=True)
        assert proc.returncode == 2 and "usage:" in proc.stderr


@pytest.mark.parametrize("ota", [False, True])
def test_the_image_freezes_its_version(tmp_path, monkeypatch, ota):
    # gen/fw_version.py with VERSION, and a manifest of the board's plus it:
    # the build's FROZEN_MANIFEST (the gate reports it as "fw").
    monkeypatch.setattr(build_esp32, "BUILD", str(tmp_path / "build"))
    manifest = build_esp32.version_manifest("wt32-eth01", 7, ota=ota)
    gen = os.path.join(build_esp32.out_dir("wt32-eth01", ota), "gen")
    assert manifest == os.path.join(gen, "manifest.py")
    namespace = {}
    with open(os.path.join(gen, "fw_version.py")) as f:
        exec(f.read(), namespace)
    assert namespace["VERSION"] == 7
    with open(manifest) as f:
        text = f.read()
    assert "include(%r)" % build_esp32.manifest_path("wt32-eth01") in text
    assert "module('fw_version.py', base_path=%r)" % gen in text
    for bad in (-1, 2 ** 30, "7"):
        with pytest.raises(BuildError, match="--version"):
            build_esp32.version_manifest("wt32-eth01", bad, ota=ota)


def test_the_build_freezes_the_version_manifest(tmp_path, monkeypatch):
    # build() up to the ESP-IDF make, with the commands recorded, not run.
    monkeypatch.setattr(build_esp32, "BUILD", str(tmp_path / "build"))
    monkeypatch.setattr(build_esp32, "check_frozen", lambda board, tree=None: ["m"])
    ran = []

    class Stop(Exception):
        pass

    def fake_run(argv, what, cwd=None):
        ran.append(argv)
        if what.startswith("ESP32 build"):
            raise Stop()

    monkeypatch.setattr(build_esp32, "_run", fake_run)
    with pytest.raises(Stop):
        build_esp32.build("esp32-devkitc", fake_tree(tmp_path), ota=True, version=12)
    frozen = [a for a in ran[-1] if a.startswith("FROZEN_MANIFEST=")]
    gen = os.path.join(build_esp32.out_dir("esp32-devkitc", True), "gen")
    assert frozen == ["FROZEN_MANIFEST=" + os.path.join(gen, "manifest.py")]
    with open(os.path.join(gen, "fw_version.py")) as f:
        assert "VERSION = 12\n" in f.read()


def test_the_version_option():
    parse = build_esp32.parse_args
    assert parse(["esp32-devkitc"]) == ("esp32-devkitc", False, build_esp32.DEFAULT_VERSION)
    assert parse(["esp32-devkitc", "--ota", "--version", "9"]) == ("esp32-devkitc", True, 9)
    assert parse(["--version", "3", "wt32-eth01"]) == ("wt32-eth01", False, 3)
    for argv in (["esp32-devkitc", "--version"], ["esp32-devkitc", "--version", "x"],
                 ["--version", "3"], ["a", "b"]):
        assert parse(argv) is None, argv
    script = os.path.join(runtime.ROOT, "host_tools", "build_esp32.py")
    proc = subprocess.run([sys.executable, script, "esp32-devkitc", "--version", "x"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--version N" in proc.stderr
