# The gate's journal: every entry and exit is durable on flash before
# append() returns and stays until the server acknowledged it and its
# space is needed; checkpoints of a caller's state let a boot read only the
# records after them. Built on the ring (parkgate.journal_ring: block and
# record layout, recovery, writing, reading). See firmware/docs/journal.md.
#
# Checkpoint chunk body, u16/u32 little-endian (the payload is the caller's:
# parkgate.checkpoint puts cars-inside entries there):
#   0  2  index i of this chunk, 0..count-1
#   2  2  count of chunks in the checkpoint, >= 1
#   4  4  generation of the block holding chunk 0
#   8  2  offset of chunk 0 in that block
#  10  k  payload, 0..CHECKPOINT_PAYLOAD bytes
# A checkpoint covers seq S (the seq field of its chunks): it stands for
# every record with seq < S. It counts only when all its chunks read back,
# in order, between chunk 0 (found where the chunks say) and chunk count-1;
# other records may sit between chunks. Checkpoint chunks are not
# application records: records() and pending() never yield them.
import struct

from parkgate.compat import const
from parkgate.journal_ring import (KIND_ACK, KIND_CHECKPOINT, KIND_MAX_APP, MAX_BODY,  # noqa: F401
                                   MIN_BLOCKS, RESERVE_BLOCKS, JournalError, JournalFull,
                                   JournalRing)

CHECKPOINT_PAYLOAD = const(110)   # MAX_BODY - _CPH
# checkpoint_put() results
CP_WAIT = const(0)          # not written: the next block must be erased first (maintain())
CP_MORE = const(1)          # written, more chunks to come
CP_DONE = const(2)          # written: the checkpoint is complete
CP_DROPPED = const(3)       # written where chunk 0 did not say: the attempt is dropped

_MAX_SEQ = const(0xFFFFFFF0)
_EINVAL = const(22)         # errno values, as in journal_ring
_ENOSPC = const(28)
_HDR = const(24)            # the ring's layout (journal_ring): block header,
_REC = const(6)             # record head (kind, length, seq)
_CRC = const(4)             # and record CRC sizes
_CPH = const(10)            # checkpoint chunk header, in the body
_CPREC = const(130)         # _REC + _CPH + CHECKPOINT_PAYLOAD + _CRC: a full chunk record
_CP_TRIES = const(3)        # complete-looking checkpoints tried at boot before full replay


class Journal(JournalRing):
    # The records: append, ack, pending, records, maintain, stats; the
    # checkpoints. mount() or format() first (JournalRing).

    def append(self, kind, body, priority=False):
        # Journal one record (kind 1..KIND_MAX_APP, body <= MAX_BODY bytes);
        # durable when it returns its seq. priority: may use the reserve
        # block (exits). JournalFull if no block can be opened.
        self._ready()
        if kind < 1 or kind > KIND_MAX_APP or len(body) > MAX_BODY:
            raise JournalError(_EINVAL, "bad record kind or size")
        seq = self.next_seq
        if seq >= _MAX_SEQ:
            raise JournalFull(_ENOSPC, "seq space used up")
        self._write(kind, seq, body, priority)
        self.next_seq = seq + 1
        return seq

    def ack(self, upto):
        # Every record with seq <= upto is acknowledged by the server.
        self._ready()
        if upto >= self.next_seq:
            raise JournalError(_EINVAL, "ack beyond the journal")
        if upto > self.acked:
            self.acked = upto
            self._save_ack(False)

    def pending(self, limit, after=None):
        # At most limit unacknowledged application records, oldest first,
        # seq > max(acked, after): [(seq, kind, body)].
        self._ready()
        start = max(self.acked, after or 0) + 1
        out = []
        if limit > 0 and start < self.next_seq:
            for rec in self._scan(self._find(start), start, False):
                out.append(rec)
                if len(out) >= limit:
                    break
        return out

    def records(self, markers=False, after=0):
        # Every readable application record with seq > after, oldest first:
        # (seq, kind, body); with markers also the ack markers
        # (watermark, KIND_ACK, b"") and checkpoint chunks (cover,
        # KIND_CHECKPOINT, body) from the blocks read. Do not append while
        # iterating.
        self._ready()
        if after > 0:
            return self._scan(self._find(after + 1), after + 1, markers)
        return self._scan(self._tail, 0, markers)

    def maintain(self):
        # Idle-time flash work: erase the block the head opens next
        # (reclaiming the oldest if the ring is full and it is all
        # acknowledged), write an ack that had to wait. True if it did any.
        self._ready()
        did = False
        nxt = (self._head + 1) % self._n
        if self._spare != nxt and (nxt != self._tail or self._acked_block(nxt)):
            if nxt == self._tail:
                self._reclaim()
            self._erase(nxt)
            did = True
        if self.acked > self._aflash and self._save_ack(True):
            did = True
        return did

    def stats(self):
        # full: normal appends can no longer open a block.
        self._ready()
        need = 1 + RESERVE_BLOCKS
        return {"blocks": self._n, "free_blocks": self._available(0),
                "pending": self.next_seq - 1 - self.acked, "acked": self.acked,
                "next_seq": self.next_seq, "journal_id": self.journal_id,
                "full": self._available(need) < need}

    # -- checkpoints ----------------------------------------------------------
    # A caller's snapshot of state that the records rebuild (the gate's
    # cars-inside table), so that a boot reads only the records after it:
    # checkpoint_begin(), checkpoint_put() per chunk, at boot
    # checkpoint_chunks(). checkpoint_cover: seq S of the newest complete
    # checkpoint known (found by checkpoint_chunks() or written since), 0 if
    # none: it stands for every record with seq < S.
    def checkpoint_begin(self, count):
        # Start a checkpoint of count chunks covering every record before
        # next_seq (any attempt under way is dropped). False, nothing
        # started, if the ring cannot take it and still keep its reserve.
        self._ready()
        self._cpw_next = -1
        need = self.checkpoint_blocks(count) + 1 + RESERVE_BLOCKS
        if count < 1 or count > 0xFFFF or self._available(need) < need:
            return False
        self._cpw_next = 0
        self._cpw_count = count
        self._cpw_cover = self.next_seq
        return True

    def checkpoint_put(self, payload):
        # Write the next chunk (payload <= CHECKPOINT_PAYLOAD bytes) of the
        # checkpoint begun. Never erases: CP_WAIT if the chunk needs the next
        # block and maintain() has not erased it yet. CP_MORE, CP_DONE,
        # CP_DROPPED (see the constants). JournalFull (the attempt dropped)
        # if no block can be opened; it does not use the reserve.
        self._ready()
        i = self._cpw_next
        if i < 0 or len(payload) > CHECKPOINT_PAYLOAD:
            raise JournalError(_EINVAL, "no checkpoint begun or chunk too large")
        n = _CPH + len(payload)
        size = _REC + n + _CRC
        if self._dirty or self._off + size > self._bs:
            need = 1 + RESERVE_BLOCKS
            if self._available(need) < need:
                self._cpw_next = -1
                raise JournalFull(_ENOSPC, "journal full")
            if self._spare != (self._head + 1) % self._n:
                return CP_WAIT
            gen = self._hgen + 1
            off = _HDR
        else:
            gen = self._hgen
            off = self._off
        if not i:
            self._cpw_gen = gen
            self._cpw_off = off
        # Chunk body layout: see the top of this file.
        cb = self._cbuf
        struct.pack_into("<HHIH", cb, 0, i, self._cpw_count, self._cpw_gen, self._cpw_off)
        self._cmv[_CPH:n] = payload
        try:
            self._write(KIND_CHECKPOINT, self._cpw_cover, self._cmv[0:n], False)
        except Exception:
            self._cpw_next = -1
            raise
        if not i and (self._hgen != gen or self._off - size != off):
            self._cpw_next = -1       # moved on after a program that did not verify
            return CP_DROPPED
        i += 1
        if i < self._cpw_count:
            self._cpw_next = i
            return CP_MORE
        self._cpw_next = -1
        self.checkpoint_cover = self._cpw_cover
        self._cp_gen = self._cpw_gen
        return CP_DONE

    def checkpoint_abort(self):
        # Give up the attempt under way; its chunks never count.
        self._cpw_next = -1

    def checkpoint_writing(self):
        return self._cpw_next >= 0

    def checkpoint_blocks(self, count):
        # Blocks a checkpoint of count chunks may take, the one it starts in
        # included.
        per = (self._bs - _HDR) // _CPREC
        return (count + per - 1) // per + 1

    def checkpoint_room(self):
        # Blocks the head may still open before the block holding the
        # newest checkpoint's chunk 0 is reclaimed (the block of generation
        # g goes when the head opens generation g + n). self._n - 1 if there
        # is no checkpoint.
        if not self.checkpoint_cover:
            return self._n - 1
        return self._cp_gen + self._n - 1 - self._hgen

    def checkpoint_chunks(self):
        # Boot: find the newest complete checkpoint, newest block first, and
        # yield the payloads of its chunks in order (memoryviews, valid until
        # the next is asked for). None means: forget the payloads yielded so
        # far, the checkpoint they came from is not complete; an older one
        # may follow. At the end checkpoint_cover is its cover seq, or 0 (no
        # usable checkpoint: replay every record).
        self._ready()
        self._cp_reset()
        n = self._n
        head = self._head
        span = (head - self._tail) % n
        d = 0
        limit = self._bs           # only chunks before this offset of block d
        tries = 0
        while d <= span and tries < _CP_TRIES:
            b = (head - d) % n
            end = -1
            if self._base[b]:
                # The last chunk count-1 of a checkpoint in b, before limit.
                seed = self._seed_of(b)
                off = _HDR
                while off < limit:
                    r = self._read(b, off, seed)
                    if r <= 0:
                        break
                    if self._rk == KIND_CHECKPOINT and self._rn >= _CPH:
                        ci, cc, cg, co = struct.unpack_from("<HHIH", self._rbuf, _REC)
                        if ci == cc - 1:
                            end = off
                            cover, count, gen, first = self._rs, cc, cg, co
                    off += r
            if end < 0:
                d += 1
                limit = self._bs
                continue
            tries += 1
            ok = yield from self._cp_load(cover, count, gen, first)
            if ok:
                self.checkpoint_cover = cover
                self._cp_gen = gen
                return
            yield None
            limit = end                # older candidates in the same block

    def _cp_load(self, cover, count, gen, first):
        # Yield the payloads of the checkpoint whose last chunk was found;
        # returns True if every chunk read back in order.
        dist = self._hgen - gen
        if dist < 0 or dist >= self._n:
            return False
        b = (self._head - dist) % self._n
        if not self._base[b]:
            return False
        off = first
        want = 0
        while True:
            seed = self._seed_of(b)
            while True:
                r = self._read(b, off, seed)
                if r <= 0:
                    break
                if self._rk == KIND_CHECKPOINT:
                    if self._rn < _CPH:
                        return False
                    ci, cc, cg, co = struct.unpack_from("<HHIH", self._rbuf, _REC)
                    if ci != want or cc != count or cg != gen or co != first or self._rs != cover:
                        return False
                    yield self._rmv[_REC + _CPH:_REC + self._rn]
                    want += 1
                    if want == count:
                        return True
                elif not want:
                    return False       # chunk 0 is not where the chunks say
                off += r
            if not want or b == self._head:
                return False
            b = self._next(b)
            off = _HDR
