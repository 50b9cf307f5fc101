# The unix-sim board's two image slots: what esp32.Partition gives an ESP32's
# OTA app partitions (the slot interface of firmware/docs/ota.md), over files
# in the gate's folder (PARKGATE_SIM_DIR), for the MicroPython image and for
# CPython alike (host_tools/parkgate_tools/sim/boot_selector.py imports it):
#   slot_a.bin, slot_b.bin  the app slots "ota_0" and "ota_1": SLOT_BLOCKS
#               blocks of 4096 bytes of NOR flash (flashdev.FlashDevice: a
#               program without an erase ANDs bits). A slot's bytes ARE a
#               unix-sim MicroPython binary (an ELF file), 0xFF after it.
#   otadata     the boot record, one JSON object replaced atomically
#               (otadata.part written, then renamed over it):
#                 {"boot": 0|1, "run": 0|1, "s": [[state, size, sha256], x2]}
#               boot: the slot the boot selector starts next; run: the slot it
#               started last (the running image); per slot its state (NEW,
#               PENDING_VERIFY, VALID, ABORTED, or EMPTY: never set_boot),
#               its image size and the SHA-256 (hex) set_boot() recorded.
# Rollback rules (ESP-IDF, CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE): set_boot()
# marks the slot NEW and makes it the boot slot; the selector boots a NEW slot
# as PENDING_VERIFY, and one still PENDING_VERIFY at the next boot becomes
# ABORTED and the other slot boots; mark_app_valid_cancel_rollback() turns the
# running slot from PENDING_VERIFY into VALID. Gate side: no allocation over
# 512 bytes (the hash and header buffers).
import binascii
import hashlib
import json
import os
import struct

from flashdev import FlashDevice

BLOCK_SIZE = 4096
SLOT_BLOCKS = 512                        # 2 MiB a slot: an image is ~600 KiB
SLOT_SIZE = BLOCK_SIZE * SLOT_BLOCKS
SLOT_FILES = ("slot_a.bin", "slot_b.bin")
LABELS = ("ota_0", "ota_1")
OTADATA = "otadata"
EMPTY = "EMPTY"
NEW = "NEW"
PENDING_VERIFY = "PENDING_VERIFY"
VALID = "VALID"
ABORTED = "ABORTED"
_TYPE_APP = 0
_SUBTYPE_OTA_0 = 0x10                   # ESP-IDF app subtype ota_0; ota_1 is 0x11
_ADDR_OTA_0 = 0x10000                   # where an ESP32 table puts ota_0
_CHUNK = 512
_EINVAL = 22


def image_size(header):
    """The length of the ELF image whose first 64 bytes are header, or 0 if
    they are not an ELF header (the section table ends a linked image)."""
    if len(header) < 64 or header[0:4] != b"\x7fELF":
        return 0
    if header[4] == 1:                   # ELFCLASS32
        shoff = struct.unpack_from("<I", header, 0x20)[0]
        shentsize, shnum = struct.unpack_from("<HH", header, 0x2E)
    elif header[4] == 2:                 # ELFCLASS64
        shoff = struct.unpack_from("<Q", header, 0x28)[0]
        shentsize, shnum = struct.unpack_from("<HH", header, 0x3A)
    else:
        return 0
    return shoff + shentsize * shnum


def blank_record():
    return {"boot": 0, "run": 0, "s": [[EMPTY, 0, ""], [EMPTY, 0, ""]]}


def load_record(folder):
    """The otadata record of the gate's folder (OSError if there is none)."""
    with open(folder + "/" + OTADATA) as f:
        record = json.load(f)
    if not isinstance(record, dict) or len(record.get("s", ())) != 2:
        raise ValueError("otadata: not a boot record")
    return record


def save_record(folder, record):
    """Replace otadata atomically: a power cut leaves the old or the new one."""
    part = folder + "/" + OTADATA + ".part"
    with open(part, "w") as f:
        f.write(json.dumps(record))
    os.rename(part, folder + "/" + OTADATA)


class Slot:
    """One app slot, as esp32.Partition: info(), the extended block device
    protocol (readblocks, writeblocks without an erase when given an
    offset, ioctl 4/5/6) and set_boot()."""

    def __init__(self, slots, index):
        self._slots = slots
        self.index = index
        self._device = None

    def _dev(self):
        if self._device is None:
            self._device = FlashDevice(self._slots.folder + "/" + SLOT_FILES[self.index],
                                       BLOCK_SIZE, SLOT_BLOCKS, count_wear=False)
            self._device.stall = self._slots.stall
        return self._device

    def info(self):
        """(type, subtype, addr, size, label, encrypted), as esp32.Partition."""
        return (_TYPE_APP, _SUBTYPE_OTA_0 + self.index, _ADDR_OTA_0 + self.index * SLOT_SIZE,
                SLOT_SIZE, LABELS[self.index], False)

    def readblocks(self, block, buf, offset=0):
        self._dev().readblocks(block, buf, offset)

    def writeblocks(self, block, buf, offset=None):
        self._dev().writeblocks(block, buf, offset)

    def ioctl(self, op, arg):
        return self._dev().ioctl(op, arg)

    def image(self):
        """(size, SHA-256 hex) of the image in the slot; (0, "") if its
        first bytes are not an ELF header or it overruns the slot."""
        buf = bytearray(_CHUNK)
        self.readblocks(0, buf, 0)
        size = image_size(buf)
        if size <= 0 or size > SLOT_SIZE:
            return 0, ""
        digest = hashlib.sha256()
        addr = 0
        while addr < size:
            # 512 divides the block size: a read never crosses a block
            self.readblocks(addr // BLOCK_SIZE, buf, addr % BLOCK_SIZE)
            n = min(_CHUNK, size - addr)
            digest.update(buf if n == _CHUNK else memoryview(buf)[:n])
            addr += n
        return size, binascii.hexlify(digest.digest()).decode()

    def set_boot(self):
        """Mark this slot NEW and make it the boot slot, recording its image's
        size and SHA-256. OSError if it holds no plausible image."""
        size, sha = self.image()
        if not size:
            raise OSError(_EINVAL, "no image in " + LABELS[self.index])
        record = self._slots.record()
        record["s"][self.index] = [NEW, size, sha]
        record["boot"] = self.index
        save_record(self._slots.folder, record)

    def close(self):
        if self._device is not None:
            self._device.close()
            self._device = None


class Slots:
    """board.ota_slots(): the running slot, the next one to update, and the
    end of probation (esp32.Partition.mark_app_valid_cancel_rollback)."""

    def __init__(self, folder, stall=None):
        self.folder = folder
        self.stall = stall
        self._slot = [Slot(self, 0), Slot(self, 1)]

    def record(self):
        return load_record(self.folder)

    def running(self):
        return self._slot[self.record()["run"]]

    def next_update(self):
        return self._slot[1 - self.record()["run"]]

    def state(self, index):
        """The state of slot index (0: ota_0) in otadata."""
        return self.record()["s"][index][0]

    def mark_app_valid_cancel_rollback(self):
        """The running image has proven itself: PENDING_VERIFY -> VALID."""
        record = self.record()
        entry = record["s"][record["run"]]
        if entry[0] == PENDING_VERIFY:
            entry[0] = VALID
            save_record(self.folder, record)

    def close(self):
        for slot in self._slot:
            slot.close()


def open_slots(folder, stall=None):
    """The gate folder's Slots, or None if the simulator gave it none (no
    otadata: SimGate(..., slots=True) writes it)."""
    try:
        os.stat(folder + "/" + OTADATA)
    except OSError:
        return None
    return Slots(folder, stall)
