# Emulated NOR flash for the unix-sim board and for tests (CPython 3.11 and
# the MicroPython unix port alike).
#
# FlashDevice speaks the MicroPython extended block device protocol, the one
# esp32.Partition offers:
#   readblocks(block, buf, offset)    read len(buf) bytes at block*size+offset
#   writeblocks(block, buf, offset)   NOR program, no erase: stored = old & new
#   writeblocks(block, buf)           basic protocol: erase the blocks, program
#   ioctl(6, block)                   erase one block to 0xFF
#   ioctl(4, 0) / ioctl(5, 0)         block count / block size
# Backing store: a host file, every write going straight to it and flushed
# (killing the process is a power cut, restarting it a reboot with the same
# flash), or with path None one bytearray per block in RAM (no large
# allocation for a small heap; snapshot()/restore() copy the image).
# Counters: reads, programs, erases, bytes_programmed, erase_counts[block]
# (unless count_wear is False: the gate's own device keeps no list of them).
# stall: None, or a callable(kind, nbytes) called before every program
# (kind STALL_PROGRAM) and erase (STALL_ERASE): a board hangs the gate there
# for as long as its chip would (boards/unix-sim/board.py).
#
# Power cuts: cut_after(n, mode, seed) makes the n-th program/erase from now
# the last one; every later operation, reads too, raises PowerCut (an
# OSError, errno EIO) until power_on().
#   TORN_NONE     the n-th operation lands completely and returns.
#   TORN_PARTIAL  the n-th operation lands partly and raises PowerCut: a
#                 program stores a prefix of its bytes and the next byte half
#                 programmed (some of its 0 bits); an erase either erases a
#                 prefix of the block, the rest left as it was, or raises
#                 random bits all over the block. Drawn from xorshift32(seed).
import os
import sys

TORN_NONE = 0
TORN_PARTIAL = 1
STALL_PROGRAM = 0
STALL_ERASE = 1
_CHUNK = 256                # file-backed work goes through one buffer of this size
_MP = sys.implementation.name == "micropython"


def _readinto(f, buf, n):
    # The first n bytes of buf from f, allocating nothing on MicroPython.
    if _MP:
        return f.readinto(buf, n)
    return f.readinto(memoryview(buf)[:n])


def _write(f, buf, n):
    if _MP:
        return f.write(buf, n)
    return f.write(memoryview(buf)[:n])
_EIO = 5
_EINVAL = 22


class PowerCut(OSError):
    pass


class XorShift:
    # xorshift32: the same pseudo-random stream on CPython and MicroPython.
    def __init__(self, seed):
        self.state = (seed * 2654435761 + 0x9E3779B9) & 0xFFFFFFFF or 1

    def next(self):
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.state = x
        return x

    def below(self, n):
        return self.next() % n if n > 0 else 0


class FlashDevice:
    def __init__(self, path, block_size=4096, block_count=512, create=True, count_wear=True):
        self.block_size = bs = block_size
        self.block_count = block_count
        self.size = bs * block_count
        # A file-backed device, the gate's flash, costs the gate's heap no
        # more than an ESP32's esp32.Partition does: one small buffer, and
        # reads, programs and erases that allocate nothing.
        self._ff = b"\xff" * min(bs, _CHUNK)
        self._scratch = bytearray(min(bs, _CHUNK))
        # Per-block erase counts, for wear figures (None: not counted).
        self.erase_counts = [0] * block_count if count_wear else None
        self.stall = None
        self.power_on()
        self.reset_counters()
        self._mem = self._file = None
        if path is None:
            self._mem = [bytearray(b"\xff" * bs) for _ in range(block_count)]
            return
        try:
            self._file = open(path, "r+b")
        except OSError:
            if not create:
                raise
            self._file = open(path, "w+b")
        end = self._file.seek(0, 2)
        if end % bs:
            raise ValueError("flash image not whole blocks")
        while end < self.size:      # grow a new or short file with erased blocks
            self._file.write(self._ff)
            end += len(self._ff)
        self._file.flush()

    def readblocks(self, block, buf, offset=0):
        addr = self._addr(block, offset, len(buf))
        if self.is_cut:
            raise PowerCut(_EIO, "PowerCut")
        self.reads += 1
        if self._file:
            self._file.seek(addr)
            self._file.readinto(buf)
            return
        buf[0:len(buf)] = self._load(addr, len(buf))

    def writeblocks(self, block, buf, offset=None):
        if offset is None:
            for b in range(len(buf) // self.block_size):
                self._erase(block + b)
            offset = 0
        n = len(buf)
        addr = self._addr(block, offset, n)
        torn = self._tick()
        if self.stall:
            self.stall(STALL_PROGRAM, n)
        self.programs += 1
        self.bytes_programmed += n
        if self._file and not torn:
            self._program_file(addr, buf, n)
            return
        old = self._load(addr, n)
        # NOR: a program only turns 1 bits into 0 bits.
        new = (int.from_bytes(old, "little") & int.from_bytes(bytes(buf), "little")).to_bytes(n, "little")
        if not torn:
            self._store(addr, new)
            return
        k = self._rng.below(n + 1)
        self._store(addr, new[:k])
        if k < n:
            self._store(addr + k, bytes((old[k] & (new[k] | self._rng.below(256)),)))
        raise PowerCut(_EIO, "PowerCut")

    def _program_file(self, addr, buf, n):
        # NOR program through the scratch buffer: stored = old & new.
        f = self._file
        s = self._scratch
        i = 0
        while i < n:
            k = min(n - i, len(s))
            f.seek(addr + i)
            _readinto(f, s, k)
            for j in range(k):
                s[j] &= buf[i + j]
            f.seek(addr + i)
            _write(f, s, k)
            i += k
        f.flush()

    def ioctl(self, op, arg):
        if op == 4:
            return self.block_count
        if op == 5:
            return self.block_size
        if op == 6:
            self._erase(arg)
        return 0

    def cut_after(self, n, mode=TORN_NONE, seed=0):
        # The n-th program/erase from now (n >= 1) is the last one.
        self._cut_left = n
        self._cut_mode = mode
        self._rng = XorShift(seed)

    def power_on(self):
        self.is_cut = False
        self._cut_left = 0

    def reset_counters(self):
        self.reads = self.programs = self.erases = self.bytes_programmed = 0
        if self.erase_counts is not None:
            for b in range(self.block_count):
                self.erase_counts[b] = 0

    def snapshot(self):
        return [bytes(m) for m in self._mem]

    def restore(self, image):
        # Load a snapshot(): power on, counters zeroed.
        for b in range(self.block_count):
            self._mem[b][:] = image[b]
        self.power_on()
        self.reset_counters()

    def close(self):
        if self._file:
            self._file.close()
            self._file = None

    def _addr(self, block, offset, n):
        addr = block * self.block_size + offset
        if block < 0 or offset < 0 or addr + n > self.size:
            raise OSError(_EINVAL, "outside the flash")
        return addr

    def _load(self, addr, n):
        if self._file:
            self._file.seek(addr)
            return self._file.read(n)
        out = b""
        while n > 0:
            b, o = divmod(addr, self.block_size)
            k = min(n, self.block_size - o)
            out += self._mem[b][o:o + k]
            addr += k
            n -= k
        return out

    def _store(self, addr, data):
        if self._file:
            self._file.seek(addr)
            self._file.write(data)
            self._file.flush()
            return
        i = 0
        while i < len(data):
            b, o = divmod(addr + i, self.block_size)
            k = min(len(data) - i, self.block_size - o)
            self._mem[b][o:o + k] = data[i:i + k]
            i += k

    def _tick(self):
        # Count a program/erase against an armed cut; True: tear this one.
        if self.is_cut:
            raise PowerCut(_EIO, "PowerCut")
        if self._cut_left:
            self._cut_left -= 1
            if not self._cut_left:
                self.is_cut = True
                return self._cut_mode == TORN_PARTIAL
        return False

    def _erase(self, block):
        bs = self.block_size
        addr = self._addr(block, 0, bs)
        torn = self._tick()
        if self.stall:
            self.stall(STALL_ERASE, bs)
        self.erases += 1
        if self.erase_counts is not None:
            self.erase_counts[block] += 1
        if not torn:
            if self._file:
                self._file.seek(addr)
                for _ in range(bs // len(self._ff)):
                    self._file.write(self._ff)
                self._file.flush()
            else:
                mem = self._mem[block]     # in place: no 4 KiB temporary on the heap
                for i in range(bs):
                    mem[i] = 0xFF
            return
        rng = self._rng
        if rng.below(2):
            self._store(addr, b"\xff" * rng.below(bs))     # a prefix erased
        else:
            # Cells part way to erased: random bits raised everywhere.
            noise = bytearray(bs)
            for i in range(bs):
                noise[i] = rng.next() & 0xFF
            old = int.from_bytes(self._load(addr, bs), "little")
            self._store(addr, (old | int.from_bytes(noise, "little")).to_bytes(bs, "little"))
        raise PowerCut(_EIO, "PowerCut")


class Partition:
    # Blocks [first, first+count) of a device, numbered from 0, same
    # protocol: littlefs can own one window, the journal another. Accesses
    # outside the window raise.
    def __init__(self, device, first, count):
        self.device = device
        self.first = first
        self.count = count
        self.block_size = device.ioctl(5, 0)
        if first < 0 or count < 1 or first + count > device.ioctl(4, 0):
            raise ValueError("partition outside the device")

    def _check(self, block, offset, n):
        if block < 0 or block >= self.count or (block * self.block_size + offset + n
                                                  > self.count * self.block_size):
            raise OSError(_EINVAL, "outside the partition")
        return self.first + block

    def readblocks(self, block, buf, offset=0):
        self.device.readblocks(self._check(block, offset, len(buf)), buf, offset)

    def writeblocks(self, block, buf, offset=None):
        self.device.writeblocks(self._check(block, offset or 0, len(buf)), buf, offset)

    def ioctl(self, op, arg):
        if op == 4:
            return self.count
        if op == 6:
            arg = self._check(arg, 0, 0)
        return self.device.ioctl(op, arg)
