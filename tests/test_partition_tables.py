"""The ESP32 boards' partition tables, factory and OTA (boards/<board>/partitions.csv,
partitions-ota.csv, board.json "ota"; firmware/docs/ota.md "Partition tables and flash
budget"): every table is checked by check_table(), and check_table() is shown to catch
each mistake it looks for."""
import os
import re

import pytest

from parkgate_tools import runtime
from parkgate_tools.field import boards, flash

BOARDS = runtime.BOARDS
FLASH = {"2MB": 2 << 20, "4MB": 4 << 20, "8MB": 8 << 20, "16MB": 16 << 20}
TABLE_END = 0x9000          # the bootloader, then the partition table at 0x8000 (4 KiB)
BLOCK = 4096                # the journal's block (esp32.Partition ioctl 5)
MIN_JOURNAL_BLOCKS = 3      # parkgate.journal_ring MIN_BLOCKS


def esp32_boards():
    return [name for name in boards.board_names() if board_doc(name).get("port") == "esp32"]


def board_doc(board):
    return boards.load_board(board).doc


read_csv = flash.read_csv     # the one parser of these tables (build_esp32.py uses it too)


def journal_label():
    """The label boards/esp32/esp32_board.py looks the journal up by."""
    with open(os.path.join(BOARDS, "esp32", "esp32_board.py")) as f:
        source = f.read()
    found = re.findall(r'Partition\.find\(esp32\.Partition\.TYPE_DATA, label="([^"]+)"\)', source)
    assert len(found) == 1, "esp32_board.journal_device() no longer found by its label"
    return found[0]


def check_table(rows, flash_size, ota_slot=None, journal="journal"):
    """What is wrong with a partition table (a list of strings, empty if
    nothing): partitions contiguous from 0x9000 with no gap or overlap, data
    on 4 KiB and apps on 64 KiB boundaries, the end within the flash, a vfs,
    the journal a raw data partition of subtype 0x81 with at least 3 blocks;
    with ota_slot (an OTA table): otadata (data, ota, 0x2000), ota_0 and
    ota_1 both ota_slot bytes and no factory app; else one factory app."""
    problems = []
    end = TABLE_END
    for name, kind, subtype, offset, size in sorted(rows, key=lambda r: r[3]):
        if offset != end:
            problems.append("%s at 0x%x: %s 0x%x" % (
                name, offset, "overlaps the partition before it, which ends at" if offset < end
                else "leaves a gap after", end))
        align = 0x10000 if kind == "app" else 0x1000
        if offset % align or size % 0x1000:
            problems.append("%s: offset 0x%x or size 0x%x not aligned to 0x%x" % (
                name, offset, size, align))
        end = max(end, offset + size)
    if end > flash_size:
        problems.append("the table ends at 0x%x, past the flash (0x%x)" % (end, flash_size))
    by_name = {r[0]: r for r in rows}
    if len(by_name) != len(rows):
        problems.append("two partitions of one name")
    vfs = by_name.get("vfs")
    if vfs is None or vfs[1:3] != ("data", "fat"):
        problems.append("no vfs (data, fat) partition: MicroPython's _boot.py mounts it")
    found = by_name.get(journal)
    if found is None:
        problems.append("no partition named %r (esp32_board.journal_device)" % journal)
    elif found[1:3] != ("data", "0x81") or found[4] // BLOCK < MIN_JOURNAL_BLOCKS:
        problems.append("journal: %s, %s, %d blocks: must be data, 0x81, at least %d blocks" % (
            found[1], found[2], found[4] // BLOCK, MIN_JOURNAL_BLOCKS))
    apps = [r for r in rows if r[1] == "app"]
    if ota_slot is None:
        if [r[2] for r in apps] != ["factory"]:
            problems.append("a factory table has one app partition, factory: %s" % apps)
    else:
        if by_name.get("otadata", ())[1:] != ("data", "ota", 0xd000, 0x2000):
            problems.append("no otadata (data, ota, 0xd000, 0x2000)")
        slots = {r[2]: r for r in apps}
        if sorted(slots) != ["ota_0", "ota_1"] or len(apps) != 2:
            problems.append("an OTA table has exactly the apps ota_0 and ota_1: %s" % apps)
        elif {slots["ota_0"][4], slots["ota_1"][4]} != {ota_slot}:
            problems.append("ota_0 0x%x and ota_1 0x%x are not both the slot size 0x%x" % (
                slots["ota_0"][4], slots["ota_1"][4], ota_slot))
    return problems


def tables():
    """(board, layout, rows, flash size, slot) for every table of every ESP32 board."""
    found = []
    for board in esp32_boards():
        doc = board_doc(board)
        size = FLASH[doc["flash_size"]]
        found.append((board, "factory", read_csv(os.path.join(BOARDS, board, doc["partitions"])),
                      size, None))
        if doc.get("ota"):
            found.append((board, "ota", read_csv(os.path.join(BOARDS, board,
                                                              doc["ota"]["partitions"])),
                          size, doc["ota"]["slot_size"]))
    return found


@pytest.mark.parametrize("board,layout,rows,size,slot", tables(),
                         ids=["%s-%s" % t[:2] for t in tables()])
def test_table_is_sound(board, layout, rows, size, slot):
    assert check_table(rows, size, slot, journal_label()) == []


def test_every_esp32_board_says_whether_it_can_update_itself():
    for board in esp32_boards():
        doc = board_doc(board)
        assert "ota" in doc, "%s: board.json needs an \"ota\" entry (or \"ota\": null)" % board
        if doc["ota"] is not None:
            assert os.path.isfile(os.path.join(BOARDS, board, doc["ota"]["partitions"]))
            assert doc["ota"]["slot_size"] % 0x10000 == 0


def test_the_ota_tables_as_documented():
    # The figures firmware/docs/ota.md gives: 4 MiB boards 1.5 MiB slots, the
    # journal halved to 96 blocks, the vfs 144 blocks; 8 MiB: 1984 KiB slots,
    # the journal where and as large as before.
    for board in ("esp32-devkitc", "wt32-eth01"):
        rows = {r[0]: r for r in read_csv(os.path.join(BOARDS, board, "partitions-ota.csv"))}
        assert rows["ota_0"][4] == 0x180000 and rows["journal"][4] // BLOCK == 96
        assert rows["vfs"][4] // BLOCK == 144
    s3 = "esp32-s3-devkitc-1-n8r8"
    ota = {r[0]: r for r in read_csv(os.path.join(BOARDS, s3, "partitions-ota.csv"))}
    factory = {r[0]: r for r in read_csv(os.path.join(BOARDS, s3, "partitions.csv"))}
    assert ota["ota_0"][4] == factory["factory"][4] == 0x1F0000
    assert ota["journal"][3:] == factory["journal"][3:]


GOOD = read_csv(os.path.join(BOARDS, "esp32-devkitc", "partitions-ota.csv"))


def _changed(name, **cells):
    index = {"kind": 1, "subtype": 2, "offset": 3, "size": 4}
    rows = []
    for row in GOOD:
        row = list(row)
        if row[0] == name:
            for key, value in cells.items():
                row[index[key]] = value
        rows.append(tuple(row))
    return rows


@pytest.mark.parametrize("rows,slot,expected", [
    (_changed("vfs", size=0x91000), 0x180000, "overlaps"),
    (_changed("journal", offset=0x3A1000, size=0x5F000), 0x180000, "gap"),
    (_changed("ota_1", offset=0x188000), 0x180000, "not aligned to 0x10000"),
    (_changed("journal", size=0x61000), 0x180000, "past the flash"),
    (_changed("journal", subtype="fat"), 0x180000, "journal: data, fat"),
    (_changed("journal", size=0x2000), 0x180000, "at least 3 blocks"),
    (_changed("ota_1", size=0x170000), 0x180000, "not both the slot size"),
    (_changed("otadata", size=0x1000), 0x180000, "no otadata"),
    (GOOD, None, "one app partition, factory"),
    ([r for r in GOOD if r[0] != "vfs"], 0x180000, "no vfs"),
])
def test_check_table_catches(rows, slot, expected):
    problems = check_table(rows, 4 << 20, slot, journal_label())
    assert any(expected in p for p in problems), problems


def test_check_table_catches_a_renamed_journal():
    rows = [("log",) + r[1:] if r[0] == "journal" else r for r in GOOD]
    assert any("no partition named 'journal'" in p for p in check_table(rows, 4 << 20, 0x180000))


# Events of 40-byte bodies a full journal holds (firmware/docs/ota.md):
# (blocks - RESERVE_BLOCKS) x 81, 81 = (4096 - 24) // (10 + 40).
JOURNAL_EVENTS = {"esp32-devkitc": {"factory": 15471, "ota": 7695},
                  "wt32-eth01": {"factory": 15471, "ota": 7695},
                  "esp32-s3-devkitc-1-n8r8": {"factory": 41391, "ota": 41391}}


@pytest.mark.parametrize("board,layout,rows,size,slot", tables(),
                         ids=["%s-%s" % t[:2] for t in tables()])
def test_the_journal_holds_the_documented_events(board, layout, rows, size, slot):
    # The gate's own journal on an emulated flash of the partition's size,
    # filled with 40-byte bodies until it refuses a normal append.
    from flashdev import FlashDevice
    from parkgate.journal import Journal, JournalFull
    blocks = {r[0]: r for r in rows}["journal"][4] // BLOCK
    journal = Journal(FlashDevice(None, BLOCK, blocks, count_wear=False))
    journal.mount()
    body = bytes(range(40))
    count = 0
    while True:
        try:
            journal.append(1, body)
        except JournalFull:
            break
        count += 1
    assert count == JOURNAL_EVENTS[board][layout] == (blocks - 1) * 81
