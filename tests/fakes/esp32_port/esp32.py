"""A fake of MicroPython's esp32 module (see machine.py here): the journal
partition, a RAM flash of 8 blocks in the block device protocol, and the
running app partition with its next update slot (RUNNING_SUBTYPE: 0x10,
ota_0, as on a board flashed with its OTA table; 0 would be a factory app)."""

RUNNING_SUBTYPE = 0x10
valid_marks = 0       # mark_app_valid_cancel_rollback() calls
boot = None           # the label of the partition set_boot() chose


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1
    BLOCK = 4096

    def __init__(self, label, blocks=8):
        if label == Partition.RUNNING:
            label = "ota_0" if RUNNING_SUBTYPE == 0x10 else "factory"
        self.label = label
        self.data = bytearray(b"\xff" * (self.BLOCK * blocks))

    @classmethod
    def find(cls, kind, label=None):
        return [cls(label)] if label == "journal" else []

    def info(self):
        subtype = {"ota_0": 0x10, "ota_1": 0x11, "factory": 0}.get(self.label, RUNNING_SUBTYPE)
        kind = self.TYPE_APP if self.label in ("ota_0", "ota_1", "factory") else self.TYPE_DATA
        return (kind, subtype, 0x10000, len(self.data), self.label, False)

    def get_next_update(self):
        return Partition("ota_1" if self.label == "ota_0" else "ota_0")

    def set_boot(self):
        global boot
        boot = self.label

    @classmethod
    def mark_app_valid_cancel_rollback(cls):
        global valid_marks
        valid_marks += 1

    def readblocks(self, block, buf, offset=0):
        start = block * self.BLOCK + offset
        buf[:] = self.data[start:start + len(buf)]

    def writeblocks(self, block, buf, offset=None):
        start = block * self.BLOCK + (offset or 0)
        self.data[start:start + len(buf)] = bytes(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return len(self.data) // self.BLOCK
        if op == 5:
            return self.BLOCK
        if op == 6:
            start = arg * self.BLOCK
            self.data[start:start + self.BLOCK] = b"\xff" * self.BLOCK
        return 0
