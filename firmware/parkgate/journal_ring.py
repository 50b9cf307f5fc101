# The journal's ring on flash (parkgate.journal builds the Journal the gate
# uses on it): the block and record layout, mount (recovery from whatever a
# power cut left), writing, reclaiming and reading. See
# firmware/docs/journal.md.
#
# A log-structured ring of erase blocks in a raw flash region, reached only
# through the extended block device protocol it is given (esp32.Partition,
# flashdev.Partition): readblocks(block, buf, offset); writeblocks(block,
# buf, offset) = NOR program, bits 1 -> 0 only; ioctl(6, block) = erase to
# 0xFF; ioctl(4, 0) block count; ioctl(5, 0) block size. Records are
# programmed one after another into erased space: one erase per block of
# records. Blocks are used in physical order, wrapping around.
#
# Block header, 24 bytes at offset 0 of every block in use, u32 little-endian:
#   0  4  magic b"PGJ\x01" (format version 1)
#   4  4  journal id, random at format: the identity of the seq space
#   8  4  generation: +1 per block opened, so the ring order survives
#         wrap-around; block p has generation g(head) - (head - p) mod n
#  12  4  seq base: next_seq when the block was opened; its records have
#         seq >= base, those of older blocks seq < base
#  16  4  ack watermark when the block was opened
#  20  4  CRC-32 of bytes 0..19
# Record, packed after the header; records never span blocks:
#   0  1  kind: 1..0x7F application, 0x81 ack marker, 0x82 checkpoint
#         chunk; 0xFF (erased) ends the block's records; any other value
#         is corrupt
#   1  1  body length n, 0..MAX_BODY
#   2  4  seq, u32 little-endian (ack marker: the ack watermark; checkpoint
#         chunk: the checkpoint's cover seq)
#   6  n  body
# 6+n  4  CRC-32 of bytes 0..5+n, started from the CRC-32 of header bytes
#         4..11 (journal id, generation): a record only checks in its block
# Checkpoint chunks (kind KIND_CHECKPOINT): their body is parkgate.journal's.
import os
import struct
from array import array
from binascii import crc32

from parkgate.compat import const

KIND_MAX_APP = const(0x7F)
KIND_ACK = const(0x81)
KIND_CHECKPOINT = const(0x82)
MAX_BODY = const(120)
RESERVE_BLOCKS = const(1)   # only priority appends and ack markers may take it
MIN_BLOCKS = const(3)

_MIN_BS = const(256)
_EIO = const(5)
_EINVAL = const(22)
_ENOSPC = const(28)
_HDR = const(24)            # block header size
_REC = const(6)             # record: kind, length, seq
_CRC = const(4)
_RMAX = const(130)          # _REC + MAX_BODY + _CRC
_WMAX = const(154)          # _HDR + _RMAX
_MAGIC = b"PGJ\x01"


class JournalError(OSError):
    pass


class JournalFull(JournalError):
    pass


class JournalRing:
    def __init__(self, bdev):
        # State set by mount(): _base[b] seq base of block b if in use, else
        # 0; _head block taking appends, _hgen its generation, _seed its
        # record CRC seed, _off its next free byte, _dirty its free space not
        # trusted (open a new block); _tail oldest block in use; _spare block
        # erased in this session; _aflash ack watermark on flash; _rk, _rn,
        # _rs kind, body length, seq of the last record read.
        self._bdev = bdev
        self._n = self.blocks = n = bdev.ioctl(4, 0)
        self._bs = bs = bdev.ioctl(5, 0)
        if n < MIN_BLOCKS or bs < _MIN_BS or bs > 65536:
            raise JournalError(_EINVAL, "journal region too small")
        self._wbuf = bytearray(_WMAX)
        self._wmv = memoryview(self._wbuf)
        self._rbuf = bytearray(_WMAX)
        self._rmv = memoryview(self._rbuf)
        self._hbuf = bytearray(_HDR)
        self._cbuf = bytearray(MAX_BODY)
        self._cmv = memoryview(self._cbuf)
        self._mounted = self.formatted = False
        self.journal_id = self.acked = 0
        self.next_seq = 1
        self._cp_reset()

    def mount(self):
        # Recover from whatever a power cut left: restores journal_id,
        # next_seq, acked; formats a region holding no journal (formatted).
        self._mounted = self.formatted = False
        self._spare = -1
        self._cp_reset()
        n = self._n
        self._base = base = array("I", [0] * n)
        head = hgen = -1
        jid = 0
        for b in range(n):
            h = self._header(b)
            if h and h[1] > hgen:
                head, jid, hgen = b, h[0], h[1]
        if head < 0:
            self._format(0, 1, 0)
            return
        # Blocks in use: going back from the head, those with this id and
        # the generation their distance gives (corrupt headers are skipped).
        self.journal_id = jid
        acked = 0
        tail = head
        for d in range(n):
            b = (head - d) % n
            h = self._header(b)
            if h and h[0] == jid and h[1] == hgen - d:
                base[b] = h[2]
                tail = b
                if not d:
                    acked = h[3]
        self._head = head
        self._tail = tail
        self._hgen = hgen
        self._seed = seed = self._seed_of(head)
        # The head block: its last good record gives next_seq, its ack
        # markers the watermark; anything after them but erased space is a
        # torn write: appends go on in the next block.
        last = base[head] - 1
        off = _HDR
        while True:
            r = self._read(head, off, seed)
            if r <= 0:
                break
            if self._rk == KIND_ACK:
                acked = max(acked, self._rs)
            elif self._rk <= KIND_MAX_APP:
                last = max(last, self._rs)
            off += r
        self._off = off
        self._dirty = r < 0
        self.next_seq = last + 1
        # A block is reclaimed only once all its records are acknowledged.
        acked = max(acked, base[tail] - 1)
        self.acked = self._aflash = min(acked, last)
        self._mounted = True

    def format(self):
        # A new journal (new id, seq from 1) in the block after the head.
        self._ready()
        self._format((self._head + 1) % self._n, self._hgen + 1, self.journal_id)

    def _cp_reset(self):
        self.checkpoint_cover = 0
        self._cp_gen = 0
        self._cpw_next = -1

    # -- writing --------------------------------------------------------------
    def _write(self, kind, seq, body, priority):
        # kind 0: a block header alone.
        size = _REC + len(body) + _CRC if kind else 0
        for _ in range(2):
            pos = 0
            if not kind or self._dirty or self._off + size > self._bs:
                blk = self._open(priority)
                off = 0
                pos = _HDR
                seed = self._seed_of(blk, self._hgen + 1)
            else:
                blk = self._head
                off = self._off
                seed = self._seed
            wb = self._wbuf
            wm = self._wmv
            if kind:
                # Record layout: see the top of this file.
                n = size - _REC - _CRC
                wb[pos] = kind
                wb[pos + 1] = n
                struct.pack_into("<I", wb, pos + 2, seq)
                wm[pos + _REC:pos + _REC + n] = body
                struct.pack_into("<I", wb, pos + _REC + n, crc32(wm[pos:pos + _REC + n], seed))
            w = wm[0:pos + size]
            r = self._rmv[0:pos + size]
            try:
                self._bdev.writeblocks(blk, w, off)
                self._bdev.readblocks(blk, r, off)      # verify
            except Exception:
                self._dirty = True
                raise
            ok = r == w
            if pos and (ok or r[0:_HDR] == w[0:_HDR]):
                # The header landed: blk is the new head.
                self._base[blk] = self.next_seq
                self._head = blk
                self._hgen += 1
                self._seed = seed
                self._aflash = max(self._aflash, self.acked)
            if ok:
                self._off = off + pos + size
                self._dirty = False
                if kind == KIND_ACK:
                    self._aflash = seq
                return
            self._dirty = True
        raise JournalError(_EIO, "flash program does not verify")

    def _open(self, priority):
        # Ready the block after the head (reclaim, erase) and put its header
        # in _wbuf[0:_HDR].
        need = 1 if priority else 1 + RESERVE_BLOCKS
        if self._available(need) < need:
            raise JournalFull(_ENOSPC, "journal full")
        nxt = (self._head + 1) % self._n
        if nxt == self._tail:
            self._reclaim()
        if self._spare != nxt:
            self._erase(nxt)
        self._spare = -1
        # Block header layout: see the top of this file.
        wb = self._wbuf
        struct.pack_into("<4sIIII", wb, 0, _MAGIC, self.journal_id, self._hgen + 1, self.next_seq, self.acked)
        struct.pack_into("<I", wb, 20, crc32(self._wmv[0:20]))
        return nxt

    def _save_ack(self, may_erase):
        # The watermark goes in a marker in the head block, else in the
        # header of a new block; without may_erase only into a pre-erased one
        # (else maintain() does it later). True if written.
        try:
            if not self._dirty and self._off + _REC + _CRC <= self._bs:
                self._write(KIND_ACK, self.acked, b"", True)
            elif may_erase or self._spare == (self._head + 1) % self._n:
                self._write(0, 0, b"", True)
            else:
                return False
            return True
        except JournalFull:
            return False

    def _erase(self, b):
        self._spare = -1
        self._bdev.ioctl(6, b)
        self._spare = b

    def _format(self, blk, gen, old):
        jid = old
        while jid in (0, 0xFFFFFFFF, old):
            jid = struct.unpack("<I", os.urandom(4))[0]
        self._mounted = False
        self.journal_id = jid
        self.next_seq = 1
        self.acked = self._aflash = 0
        self._cp_reset()
        self._base = array("I", [0] * self._n)
        self._head = self._tail = (blk - 1) % self._n
        self._hgen = gen - 1
        self._spare = -1
        self._write(0, 0, b"", True)
        self._tail = self._head
        self.formatted = self._mounted = True

    # -- the ring -------------------------------------------------------------
    def _available(self, want):
        # Blocks the head can still open, counting the fully acknowledged
        # blocks at the tail, up to want.
        c = self._n - 1 - (self._head - self._tail) % self._n
        b = self._tail
        while c < want and self._acked_block(b):
            c += 1
            b = self._next(b)
        return c

    def _acked_block(self, b):
        return b != self._head and self._base[self._next(b)] - 1 <= self.acked

    def _reclaim(self):
        if self.checkpoint_cover and self._hgen - (self._head - self._tail) % self._n >= self._cp_gen:
            self.checkpoint_cover = 0      # the newest checkpoint's chunk 0 goes
        self._base[self._tail] = 0
        self._tail = self._next(self._tail)

    def _next(self, b):
        # The block in use after b (b not the head).
        while b != self._head:
            b = (b + 1) % self._n
            if self._base[b]:
                return b
        return b

    def _find(self, seq):
        # The block in use holding seq, or the oldest.
        b = self._tail
        while b != self._head:
            c = self._next(b)
            if self._base[c] > seq:
                break
            b = c
        return b

    # -- reading --------------------------------------------------------------
    def _scan(self, b, start, markers):
        while True:
            seed = self._seed_of(b)
            off = _HDR
            while True:
                r = self._read(b, off, seed)
                if r <= 0:
                    break
                off += r
                if self._rs >= start and (self._rk <= KIND_MAX_APP or markers):
                    yield (self._rs, self._rk, bytes(self._rmv[_REC:_REC + self._rn]))
            if b == self._head:
                return
            b = self._next(b)

    def _seed_of(self, b, gen=None):
        if gen is None:
            gen = self._hgen - (self._head - b) % self._n
        return crc32(struct.pack("<II", self.journal_id, gen))

    def _header(self, b):
        # (journal id, generation, seq base, acked) of block b, or None.
        hb = self._hbuf
        self._bdev.readblocks(b, hb, 0)
        if hb[0:4] != _MAGIC or crc32(hb[0:20]) != struct.unpack_from("<I", hb, 20)[0]:
            return None
        return struct.unpack_from("<IIII", hb, 4)

    def _read(self, b, off, seed):
        # Size of the record at off of block b; 0 at the end of the records,
        # -1 if it does not check. Sets _rk, _rn, _rs.
        k = min(self._bs - off, _RMAX)
        if k < _REC + _CRC:
            return 0
        rm = self._rmv
        self._bdev.readblocks(b, rm[0:k], off)
        kind, n, seq = struct.unpack_from("<BBI", rm, 0)
        if kind == 0xFF:
            return 0
        if (n > MAX_BODY or _REC + n + _CRC > k or not kind
                or (kind > KIND_MAX_APP and kind != KIND_ACK and kind != KIND_CHECKPOINT)
                or crc32(rm[0:_REC + n], seed) != struct.unpack_from("<I", rm, _REC + n)[0]):
            return -1
        self._rk = kind
        self._rn = n
        self._rs = seq
        return _REC + n + _CRC

    def _ready(self):
        if not self._mounted:
            raise JournalError(_EIO, "journal not mounted")
