"""What this machine can check of the ESP32 images without ESP-IDF: each ESP32
board's frozen manifest (boards/<board>/manifest.py) is resolved by
MicroPython's own tools/manifestfile.py from the MicroPython source tree the
images are built from (build_firmware.source_tree(), v1.28.0), and every
module it freezes is compiled by that tree's mpy-cross for the board's
architecture (-march=xtensawin on the ESP32 and the ESP32-S3, as the ESP32
port's build passes it), through host_tools/build_esp32.py check_frozen(),
which `make firmware BOARD=<esp32 board>` runs first.

Not checked here: the source archive has no ports/esp32, so $(PORT_DIR) is
a stub folder with an empty modules/: the manifest's
freeze("$(PORT_DIR)/modules") resolves to nothing, and the port's own frozen
modules (_boot.py, flashbdev.py, inisetup.py, machine.py, ...) are neither
found nor compiled here (they are, by the same code, in a tree that has
ports/esp32). Neither is the ESP-IDF build itself (C, sdkconfig, the
partition table in the image): that needs ESP-IDF (build_esp32.py).

The check bites: a manifest path broken on purpose, an include that is not
there, a module MicroPython does not compile each fail with the file named."""
import glob
import os
import subprocess
import sys

import pytest

from parkgate_tools import runtime

sys.path.insert(0, os.path.join(runtime.ROOT, "host_tools"))
import build_esp32  # noqa: E402
import build_firmware  # noqa: E402

sys.path.pop(0)

ESP32_BOARDS = build_esp32.esp32_boards()
XTENSAWIN = 10          # mpy-cross's MP_NATIVE_ARCH_XTENSAWIN, in an .mpy header


@pytest.fixture(scope="module")
def tree():
    path, _ = build_firmware.source_tree()
    return path


@pytest.fixture(scope="module")
def port_stub(tmp_path_factory):
    """A stand-in for ports/esp32, which the source archive lacks: an empty
    modules/ for the manifest's freeze("$(PORT_DIR)/modules")."""
    folder = tmp_path_factory.mktemp("esp32-port")
    (folder / "modules").mkdir()
    return str(folder)


def check(board, tree, port_stub, source=None):
    return build_esp32.check_frozen(board, tree=tree, port_dir=port_stub, source=source)


def manifest_text(board):
    with open(build_esp32.manifest_path(board)) as f:
        return f.read()


def test_every_esp32_board_has_a_manifest():
    assert {"esp32-devkitc", "wt32-eth01", "esp32-s3-devkitc-1-n8r8"} <= set(ESP32_BOARDS)
    for board in ESP32_BOARDS:
        assert os.path.exists(build_esp32.manifest_path(board)), board


@pytest.mark.parametrize("board", ESP32_BOARDS)
def test_manifest_resolves_and_every_module_compiles_for_the_chip(board, tree, port_stub):
    doc = build_esp32.board_doc(board)
    assert build_esp32.CHIPS[doc["chip"]]["march"] == "xtensawin"
    frozen = check(board, tree, port_stub)
    targets = {item["target"]: item for item in frozen}
    assert len(targets) == len(frozen), "a module is frozen twice"
    firmware = {"parkgate/" + os.path.basename(p)
                for p in glob.glob(os.path.join(runtime.FIRMWARE, "parkgate", "*.py"))}
    expected = firmware | {"main.py", "board.py", "esp32_board.py", "umqtt/simple.py",
                           "asyncio/core.py", "asyncio/__init__.py", "uasyncio.py"}
    assert expected <= set(targets), sorted(expected - set(targets))
    # The board's own pins and network, the ESP32 adapters every ESP32 board
    # shares, the pinned umqtt, nothing of the simulator's.
    assert targets["board.py"]["source"] == os.path.join(runtime.BOARDS, board, "board.py")
    assert targets["esp32_board.py"]["source"] == os.path.join(
        runtime.BOARDS, "esp32", "esp32_board.py")
    assert targets["umqtt/simple.py"]["source"] == os.path.join(
        runtime.BUILD_LIB, "umqtt", "simple.py")
    # board.json "modules" (paths relative to the board folder): each is
    # frozen at the image's root under its base name, from that file.
    for module in build_esp32.board_doc(board)["modules"]:
        target = targets[os.path.basename(module)]
        assert target["source"] == os.path.normpath(
            os.path.join(runtime.BOARDS, board, module)), module
    assert not {"flashdev.py", "provision.py", "simboot.py"} & set(targets)
    assert set(targets) <= expected | {"asyncio/event.py", "asyncio/funcs.py",
                                       "asyncio/lock.py", "asyncio/stream.py"}
    for item in frozen:
        assert item["header"][:2] == b"M\x06", item       # .mpy version 6
        assert item["size"] > 0


def test_a_missing_file_fails(tree, port_stub):
    board = "esp32-devkitc"
    text = manifest_text(board)
    broken = text.replace('module("board.py")', 'module("board.py", base_path="../esp32-devkitz")')
    assert broken != text
    with pytest.raises(build_firmware.BuildError) as caught:
        check(board, tree, port_stub, source=broken)
    message = str(caught.value)
    assert "boards/esp32-devkitc/manifest.py" in message
    assert "Cannot stat" in message and os.path.join("esp32-devkitz", "board.py") in message


def test_a_missing_file_of_the_gates_code_fails(tree, port_stub, tmp_path):
    # firmware/manifest.py, which every board includes, names a file that is not there.
    board = "wt32-eth01"
    gate = tmp_path / "gate-manifest.py"
    with open(os.path.join(runtime.FIRMWARE, "manifest.py")) as f:
        gate.write_text(f.read().replace('module("main.py", base_path=".")',
                                         'module("main.py", base_path="%s")' % (
                                             os.path.join(runtime.ROOT, "firmwar"))))
    broken = manifest_text(board).replace('"../../firmware/manifest.py"', repr(str(gate)))
    assert broken != manifest_text(board)
    with pytest.raises(build_firmware.BuildError) as caught:
        check(board, tree, port_stub, source=broken)
    assert "Cannot stat" in str(caught.value)
    assert os.path.join("firmwar", "main.py") in str(caught.value)


def test_a_missing_include_fails(tree, port_stub):
    board = "esp32-s3-devkitc-1-n8r8"
    text = manifest_text(board)
    broken = text.replace('"$(MPY_DIR)/extmod/asyncio"', '"$(MPY_DIR)/extmod/asyncoi"')
    assert broken != text
    with pytest.raises(build_firmware.BuildError) as caught:
        check(board, tree, port_stub, source=broken)
    assert os.path.join("extmod", "asyncoi") in str(caught.value)


def test_a_module_micropython_does_not_compile_fails(tree, port_stub, tmp_path):
    board = "wt32-eth01"
    bad = tmp_path / "bad.py"
    bad.write_text("def lane(x):\n    match x:\n        case 1:\n            return 1\n")
    compile(bad.read_text(), str(bad), "exec")      # CPython takes it
    source = manifest_text(board) + '\nmodule("bad.py", base_path=%r)\n' % str(tmp_path)
    with pytest.raises(build_firmware.BuildError) as caught:
        check(board, tree, port_stub, source=source)
    message = str(caught.value)
    assert "bad.py" in message and "does not compile for xtensawin" in message
    assert "SyntaxError" in message


def test_native_code_is_compiled_for_the_chip(tree, port_stub, tmp_path):
    """The -march reaches mpy-cross: a @micropython.native function compiles
    to Xtensa code, and would not compile without an architecture."""
    board = "esp32-devkitc"
    fast = tmp_path / "fast.py"
    fast.write_text("import micropython\n\n\n@micropython.native\ndef add(a, b):\n"
                    "    return a + b\n")
    source = manifest_text(board) + '\nmodule("fast.py", base_path=%r)\n' % str(tmp_path)
    frozen = {item["target"]: item for item in check(board, tree, port_stub, source=source)}
    header = frozen["fast.py"]["header"]
    assert header[:2] == b"M\x06" and header[2] >> 2 == XTENSAWIN
    plain = subprocess.run([build_firmware.mpy_cross_path(), "-o", str(tmp_path / "x.mpy"),
                            str(fast)], capture_output=True, text=True)
    assert plain.returncode != 0 and "invalid arch" in plain.stderr


def test_make_firmware_without_esp_idf_says_what_is_missing():
    env = dict(os.environ)
    env.pop("IDF_PATH", None)
    env.pop("MICROPYTHON_SRC", None)
    proc = subprocess.run([sys.executable, os.path.join(runtime.ROOT, "host_tools",
                                                         "build_firmware.py"), "esp32-devkitc"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    err = proc.stderr
    assert "modules resolve and compile for xtensawin" in err
    assert "cannot build the esp32-devkitc image" in err
    assert "IDF_PATH is not set" in err and "v5.5.1" in err
    assert "has no ports/esp32" in err and "MICROPYTHON_SRC" in err
    assert "firmware/docs/boards.md" in err
