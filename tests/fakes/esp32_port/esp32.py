"""A fake of MicroPython's esp32 module (see machine.py here): the journal
partition, a RAM flash of 8 blocks in the block device protocol."""


class Partition:
    TYPE_DATA = 1
    BLOCK = 4096

    def __init__(self, label, blocks=8):
        self.label = label
        self.data = bytearray(b"\xff" * (self.BLOCK * blocks))

    @classmethod
    def find(cls, kind, label=None):
        return [cls(label)] if label == "journal" else []

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
        return 0
