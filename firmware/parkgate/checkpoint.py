# Checkpoints of the cars-inside table in the journal, so that a boot reads
# only the records written after the newest one instead of the whole ring.
# See firmware/docs/journal.md ("Checkpoints").
#
# A checkpoint is a run of journal records of kind KIND_CHECKPOINT (chunks;
# the chunk header is the journal's, see parkgate/journal.py). Chunk
# payload, little-endian: up to _PER_CHUNK entries of 12 bytes, the slot
# layout of parkgate/sessions.py:
#   0 u32 key A = crc32(plate)
#   4 u32 key B = crc32(plate, seed)
#   8 u32 entry time, unix s (never 0)
# Every chunk but the last holds _PER_CHUNK entries; an empty table is one
# chunk with none.
#
# Written only from service(), which the gate calls when idle (beside
# journal.maintain()), never on the plate-to-relay path: at most _PER_CALL
# chunks per call, and never an erase (the journal waits for maintain() to
# erase the next block). The table must not change while a checkpoint is
# being written (the chunks are read from the live table, slot by slot): if
# it does, the attempt is dropped and started again later.
from parkgate import record
from parkgate.compat import const
from parkgate.journal import (CP_DONE, CP_DROPPED, CP_MORE, CP_WAIT, JournalError,
                              JournalFull)
from parkgate.sessions import ENTRY_SIZE

EVERY = const(1000)       # records (or table changes) between checkpoints
_PER_CHUNK = const(9)     # entries per chunk: 108 of the journal's 110 payload bytes
_PER_CALL = const(8)      # chunks written per service() call at most
_MARGIN = const(2)        # blocks of slack before the newest checkpoint is reclaimed
_HOLD = const(40)         # service() calls to sit out after a dropped attempt
_MASK = const(0x3FFFFFFF)


class Checkpointer:
    def __init__(self, journal, sessions, every=EVERY, hold=_HOLD):
        self.journal = journal
        self.sessions = sessions
        self.every = every
        self.hold = hold
        self._buf = bytearray(_PER_CHUNK * ENTRY_SIZE)
        self._mv = memoryview(self._buf)
        self._slot = -1           # next slot to dump; -1: not writing
        self._mark = 1            # the first seq a boot would replay now
        self._changes = 0         # sessions.changes when the newest checkpoint was taken
        self._start = 0           # sessions.changes when the attempt under way began
        self._had = False         # a checkpoint was loaded or written this session
        self._hold = 0
        self.written = 0          # checkpoints completed
        self.dropped = 0          # attempts dropped (table changed, ring full, fault)

    def restore(self, note):
        """Boot: load the table from the newest complete checkpoint, then
        note() every entry and exit after it (every record in the ring if
        there is none). Returns the number of records replayed."""
        j = self.journal
        s = self.sessions
        bad = False
        for payload in j.checkpoint_chunks():
            if payload is None:
                s.clear()             # that one was incomplete; an older one may follow
                bad = False
            elif not bad and not s.load(payload):
                bad = True
        if bad:
            # Chunks that check but do not hold entries: not a checkpoint
            # this firmware wrote. Full replay.
            s.clear()
            j.checkpoint_cover = 0
        cover = j.checkpoint_cover
        replayed = 0
        for seq, kind, body in j.records(False, cover - 1 if cover else 0):
            if kind in record.KIND_NAMES:
                note(record.decode_body(kind, seq, body))
                replayed += 1
        self._had = cover > 0
        self._mark = cover if cover else j.next_seq - replayed
        self._changes = s.changes
        return replayed

    def service(self):
        """Idle-time work: start, continue or finish a checkpoint when one
        is due. True if it wrote to flash."""
        j = self.journal
        s = self.sessions
        if self._hold:
            self._hold -= 1
            return False
        if self._slot < 0:
            if not self._due():
                return False
            if not j.checkpoint_begin(max(1, (len(s) + _PER_CHUNK - 1) // _PER_CHUNK)):
                return False
            self._slot = 0
            self._start = s.changes
        elif s.changes != self._start or not j.checkpoint_writing():
            return self._drop()
        wrote = False
        for _ in range(_PER_CALL):
            slot, n = s.dump(self._slot, self._mv)
            try:
                done = j.checkpoint_put(self._mv[0:n])
            except JournalFull:
                return self._drop() or wrote
            except JournalError:
                self._drop()
                raise
            if done == CP_WAIT:
                break
            wrote = True
            if done == CP_DROPPED:
                return self._drop() or wrote
            self._slot = slot
            if done == CP_DONE:
                self._slot = -1
                self._had = True
                self._mark = j.checkpoint_cover
                self._changes = self._start
                self.written += 1
                break
        return wrote

    def _due(self):
        j = self.journal
        since = j.next_seq - self._mark
        if since >= self.every or (self.sessions.changes - self._changes) & _MASK >= self.every:
            return True
        if not j.checkpoint_cover:
            return self._had and since > 0    # the newest checkpoint was reclaimed
        need = j.checkpoint_blocks((len(self.sessions) + _PER_CHUNK - 1) // _PER_CHUNK)
        # Replace the newest checkpoint before the ring reclaims it, unless
        # the ring is too small for that to ever settle.
        return 2 * need + _MARGIN < j.blocks and j.checkpoint_room() <= need + _MARGIN

    def _drop(self):
        self.journal.checkpoint_abort()
        self._slot = -1
        self._hold = self.hold
        self.dropped += 1
        return False
