"""`parkgate board flash`: write a gate image over USB with esptool, for the
first install and for recovery (firmware/docs/ota.md, "Partition tables and
flash budget"; firmware/docs/boards.md, "Flash it with esptool").

IMAGE is the application a build gives (build/firmware/<board>/micropython.bin,
host_tools/build_esp32.py); bootloader.bin and partition-table.bin are taken
from the same folder. The layout (the board's partitions.csv, "factory", or
its board.json "ota" table) is the one that partition-table.bin holds: a table
that is neither is refused, so is an image larger than the layout's app slot.

What it runs, each a `python -m esptool --chip C --port P --baud N ...`:

- without --erase: `read-flash 0x8000 0xc00` first, and a refusal if the board
  holds another partition table (moving to another layout moves the vfs and
  the journal: it is done with --erase, after `parkgate board journal`);
  for an OTA layout `erase-region` of otadata, so the first boot is ota_0;
- `write-flash [--erase-all] --flash-size S <boot> bootloader.bin 0x8000
  partition-table.bin <app> IMAGE` (the app at factory or ota_0). --erase
  (`--erase-all`) blanks the whole flash: filesystem, journal and otadata.

The seam for tests: flash(..., runner=f), f(argv) -> exit status."""
import importlib.util
import os
import struct
import subprocess
import sys
import tempfile
from collections import namedtuple

from parkgate_tools.field.boards import load_board
from parkgate_tools.field.errors import FieldToolError, Refused

# Where the second-stage bootloader goes (esp32_manifest.CHIPS "bootloader").
BOOTLOADER_OFFSET = {"esp32": 0x1000, "esp32s2": 0x1000, "esp32s3": 0x0, "esp32c3": 0x0,
                     "esp32c6": 0x0}
TABLE_OFFSET = 0x8000       # ESP-IDF's default, which MicroPython keeps
TABLE_SIZE = 0xC00          # ESP-IDF's table: at most 95 entries and an MD5 entry
DEFAULT_BAUD = 460800
APP_MAGIC = 0xE9            # first byte of an ESP-IDF image (bootloader and app alike)

Partition = namedtuple("Partition", "name kind subtype offset size")
# ESP-IDF's type and subtype numbers (gen_esp32part.py), to compare a CSV
# with a partition-table.bin.
TYPES = {"app": 0x00, "data": 0x01}
SUBTYPES = {"app": {"factory": 0x00, "test": 0x20},
            "data": {"ota": 0x00, "phy": 0x01, "nvs": 0x02, "coredump": 0x03,
                     "nvs_keys": 0x04, "efuse": 0x05, "undefined": 0x06, "esphttpd": 0x80,
                     "fat": 0x81, "spiffs": 0x82, "littlefs": 0x83}}
SUBTYPES["app"].update(("ota_%d" % n, 0x10 + n) for n in range(16))
# Entry of partition-table.bin (32 bytes): magic AA 50, type u8, subtype
# u8, offset u32, size u32, label 16 bytes NUL padded, flags u32.
ENTRY = struct.Struct("<2sBBII16sI")
ENTRY_MAGIC = b"\xaa\x50"


class EsptoolMissing(FieldToolError):
    """esptool is not installed in this Python."""


class FlashFailed(FieldToolError):
    """esptool ran and failed (no board in download mode, a cable, a port)."""


def read_csv(path):
    """[Partition] of an ESP-IDF partition CSV (offsets and sizes as numbers)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                cells = [c.strip() for c in line.split(",")]
                rows.append(Partition(cells[0], cells[1], cells[2], int(cells[3], 0),
                                      int(cells[4], 0)))
    return rows


def numeric(rows):
    """[(label, type, subtype, offset, size)] with ESP-IDF's numbers."""
    out = []
    for r in rows:
        kind = TYPES.get(r.kind, None)
        kind = int(r.kind, 0) if kind is None else kind
        sub = SUBTYPES.get(r.kind, {}).get(r.subtype)
        out.append((r.name, kind, int(r.subtype, 0) if sub is None else sub, r.offset, r.size))
    return out


def read_table_bin(data):
    """[(label, type, subtype, offset, size)] of a binary partition table;
    it ends at the MD5 entry or at erased flash."""
    rows = []
    for at in range(0, len(data) - ENTRY.size + 1, ENTRY.size):
        magic, kind, sub, offset, size, label, _ = ENTRY.unpack_from(data, at)
        if magic != ENTRY_MAGIC:
            break
        rows.append((label.rstrip(b"\0").decode("ascii", "replace"), kind, sub, offset, size))
    return rows


def layouts(board):
    """{"factory": [Partition], "ota": [Partition]} of a BoardDef (no "ota"
    if board.json says "ota": null)."""
    found = {"factory": read_csv(os.path.join(board.folder, board.doc.get(
        "partitions", "partitions.csv")))}
    ota = board.doc.get("ota")
    if ota:
        found["ota"] = read_csv(os.path.join(board.folder, ota["partitions"]))
    return found


def app_slot(rows):
    """The partition the image goes to: factory, else ota_0."""
    apps = {r.subtype: r for r in rows if r.kind == "app"}
    return apps.get("factory") or apps["ota_0"]


def esptool_command():
    """[python, -m, esptool]; EsptoolMissing if this Python has no esptool."""
    if importlib.util.find_spec("esptool") is None:
        raise EsptoolMissing("esptool is not installed in %s: `pip install -r requirements.txt` "
                             "(or `pip install esptool`)" % sys.executable)
    return [sys.executable, "-m", "esptool"]


def run_esptool(argv):
    """The default runner: esptool in this terminal; returns its exit status."""
    return subprocess.run(argv).returncode


def _read(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise FieldToolError("no %s %s: build the image with `make firmware BOARD=NAME` "
                             "(build/firmware/NAME/micropython.bin and beside it "
                             "bootloader.bin, partition-table.bin; for the OTA table "
                             "`python host_tools/build_esp32.py NAME --ota`, "
                             "build/firmware/NAME-ota/)" % (what, path)) from None
    except IsADirectoryError:
        raise FieldToolError("%s %s is a folder: give its micropython.bin" % (what, path)) from None


def plan(board_name, port, image, erase=False, baud=DEFAULT_BAUD, layout=None):
    """Check everything on the host; returns a dict: board, layout, slot
    (Partition), image_size, table (the new table's rows), head (esptool's
    argv up to the command), steps ([argv]; a "read-flash" step is the
    partition-table check). FieldToolError (Refused for a file that does not
    fit) before anything runs."""
    board = load_board(board_name)
    chip = board.doc.get("chip")
    if board.doc.get("port") != "esp32" or chip not in BOOTLOADER_OFFSET:
        raise Refused("board", board_name, "not an ESP32 board (board.json port %r): esptool "
                      "flashes the ESP32 boards only" % board.doc.get("port"))
    if not port:
        raise FieldToolError("no port: give --port DEVICE or set PARKGATE_PORT")
    app = _read(image, "image")
    folder = os.path.dirname(os.path.abspath(image))
    bootloader = os.path.join(folder, "bootloader.bin")
    table_path = os.path.join(folder, "partition-table.bin")
    boot_data = _read(bootloader, "bootloader")
    table = read_table_bin(_read(table_path, "partition table"))
    boot = BOOTLOADER_OFFSET[chip]
    inner = TABLE_OFFSET - boot
    if not app or app[0] != APP_MAGIC:
        raise Refused("image", image, "not an ESP32 application image (it starts 0x%02x, an "
                      "image 0x%02x)" % (app[0] if app else 0, APP_MAGIC))
    if app[inner:inner + 2] == ENTRY_MAGIC:
        raise Refused("image", image, "a merged firmware.bin (a partition table at 0x%x): "
                      "give the application, micropython.bin" % TABLE_OFFSET)
    if not boot_data or boot_data[0] != APP_MAGIC:
        raise Refused("bootloader", bootloader, "not an ESP32 bootloader image")
    known = layouts(board)
    matches = [name for name, rows in known.items() if numeric(rows) == table]
    if not matches:
        raise Refused("partition table", table_path, "is none of board %s's tables (%s): an "
                      "image built for another board or layout?" % (board_name, ", ".join(
                          sorted(known))))
    if layout is not None and layout not in matches:
        raise Refused("partition table", table_path, "holds the %s layout, not %s"
                      % (matches[0], layout))
    layout = layout or matches[0]
    slot = app_slot(known[layout])
    if len(app) > slot.size:
        raise Refused("image", image, "%d bytes, larger than the app slot %s of board %s "
                      "(%d bytes, 0x%x)" % (len(app), slot.name, board_name, slot.size, slot.size))
    head = esptool_command() + ["--chip", chip, "--port", port, "--baud", str(baud)]
    steps = []
    if not erase:
        steps.append(head + ["read-flash", "0x%x" % TABLE_OFFSET, "0x%x" % TABLE_SIZE])
        otadata = [r for r in known[layout] if r.name == "otadata"]
        if otadata:
            steps.append(head + ["erase-region", "0x%x" % otadata[0].offset,
                                 "0x%x" % otadata[0].size])
    steps.append(head + ["write-flash"] + (["--erase-all"] if erase else []) + [
        "--flash-size", board.doc["flash_size"], "0x%x" % boot, bootloader,
        "0x%x" % TABLE_OFFSET, table_path, "0x%x" % slot.offset, os.path.abspath(image)])
    return {"board": board_name, "layout": layout, "slot": slot, "image_size": len(app),
            "table": table, "head": head, "steps": steps}


def _check_board_table(step, runner, expected, board_name):
    # read-flash into a temporary file; refuse if the board's table is another.
    with tempfile.TemporaryDirectory(prefix="parkgate-flash-") as tmp:
        out = os.path.join(tmp, "table.bin")
        status = runner(step + [out])
        if status != 0:
            raise FlashFailed("esptool could not read the board's partition table (exit %d): "
                              "is the board on this port and in download mode "
                              "(firmware/docs/boards.md)?" % status)
        with open(out, "rb") as f:
            found = read_table_bin(f.read())
    if found != expected:
        raise Refused("flash", "--erase", "the board holds %s, not this image's table: moving "
                      "a gate to another layout erases its filesystem and journal. Read the "
                      "journal first (`parkgate board journal --out FILE`), then flash with "
                      "--erase and deploy again (firmware/docs/ota.md)" % (
                          "no partition table" if not found else "another partition table"))


def flash(board_name, port, image, erase=False, baud=DEFAULT_BAUD, layout=None,
          runner=run_esptool, echo=None, dry_run=False):
    """Write IMAGE (and the bootloader and table beside it) to the board on
    port with esptool; returns plan()'s dict. echo(line) is told each
    command; dry_run: only that. FlashFailed if esptool fails."""
    done = plan(board_name, port, image, erase=erase, baud=baud, layout=layout)
    for step in done["steps"]:
        if echo:
            echo(" ".join(step[2:] if step[1] == "-m" else step))
        if dry_run:
            continue
        if "read-flash" in step:
            _check_board_table(step, runner, done["table"], board_name)
            continue
        status = runner(step)
        if status != 0:
            raise FlashFailed("esptool %s failed (exit %d): is the board in download mode "
                              "(firmware/docs/boards.md)? Run it again: the image is "
                              "written whole or the board does not boot it" % (
                                  step[len(done["head"])], status))
    return done
