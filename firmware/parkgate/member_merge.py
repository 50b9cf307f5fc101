# The merge of a sorted member list with sorted change streams, a slice at
# a time: the one merge behind a delta's install into the overlay, the
# overlay's compaction into members.bin, and the host's deltas
# (parkgate_host.member_lists). Layouts: parkgate.members.
from binascii import crc32

from parkgate.compat import const
from parkgate.members import CHANGE, KEY_BYTES, OP_PUT, RECORD, MemberError, _cmp

_CHUNK = const(32)          # records per read/write in a merge (512 bytes)


class _Run:
    # Entries of one size read from a file a chunk of 32 at a time; the CRC
    # of every byte read so far.
    def __init__(self, f, count, size):
        self.f = f
        self.left = count
        self.size = size
        self.buf = bytearray(_CHUNK * size)
        self.mv = memoryview(self.buf)
        self.n = self.i = 0
        self.crc = 0
        self.reads = 0

    def fill(self):
        # True if an entry is at self.i (reading the next chunk if needed)
        if self.i < self.n:
            return True
        if not self.left:
            return False
        k = min(self.left, _CHUNK)
        nb = k * self.size
        if self.f.readinto(self.mv[0:nb]) != nb:
            raise MemberError("member file cut short" if self.size == RECORD
                              else "changes cut short")
        self.crc = crc32(self.mv[0:nb], self.crc)
        self.left -= k
        self.n = k
        self.i = 0
        self.reads += 1
        return True


class Merger:
    """The sorted records of a member file (base, positioned at its first
    record, count of them) merged with up to two sorted change streams
    (older, newer: files positioned at their first change; on a key both
    change, newer wins), a slice at a time: step() reads at most one chunk
    of 32 base records and handles at most 32 changes, and returns False
    once all is merged. Outputs, each a file or None: out_records gets the
    resulting records, out_changes the combined changes (less any removal
    of a key the base does not have). It counts and CRCs the result
    (count, crc), the combined changes (changes, changes_crc) and every
    input (base_crc, older_crc, newer_crc), and checks that newer is
    sorted and its ops known (MemberError)."""

    def __init__(self, base, count, older=None, older_count=0, newer=None, newer_count=0,
                 out_records=None, out_changes=None):
        self._base = _Run(base, count, RECORD)
        self._older = _Run(older, older_count, CHANGE) if older is not None else None
        self._newer = _Run(newer, newer_count, CHANGE) if newer is not None else None
        self._out_records = out_records
        self._out_changes = out_changes
        self._prev = bytearray(KEY_BYTES)
        self._has_prev = False
        self.count = 0
        self._crc = 0
        self.changes = 0
        self._changes_crc = 0
        self.done = False

    @property
    def crc(self):
        return self._crc & 0xFFFFFFFF

    @property
    def changes_crc(self):
        return self._changes_crc & 0xFFFFFFFF

    @property
    def base_crc(self):
        return self._base.crc & 0xFFFFFFFF

    @property
    def older_crc(self):
        return self._older.crc & 0xFFFFFFFF if self._older is not None else 0

    @property
    def newer_crc(self):
        return self._newer.crc & 0xFFFFFFFF if self._newer is not None else 0

    def _pass(self, j):
        # base records i .. j-1 go to the result unchanged
        base = self._base
        mv = base.mv[base.i * RECORD:j * RECORD]
        self._crc = crc32(mv, self._crc)
        self.count += j - base.i
        if self._out_records is not None:
            self._out_records.write(mv)
        base.i = j

    def _first_not_below(self, key, at):
        # the first record of the base chunk from i whose key >= key[at:at+7]
        base = self._base
        buf = base.buf
        lo = base.i
        hi = base.n
        while lo < hi:
            mid = (lo + hi) >> 1
            if _cmp(buf, mid * RECORD, key, at) < 0:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def step(self):
        if self.done:
            return False
        base = self._base
        older = self._older
        newer = self._newer
        reads = base.reads
        budget = _CHUNK
        while budget:
            run = None
            has_old = older is not None and older.fill()
            has_new = newer is not None and newer.fill()
            if has_old and has_new:
                c = _cmp(older.buf, older.i * CHANGE + 1, newer.buf, newer.i * CHANGE + 1)
                if c == 0:
                    older.i += 1            # the newer change replaces it
                run = older if c < 0 else newer
            elif has_old:
                run = older
            elif has_new:
                run = newer
            # the base records before the change's key (all, if none is left)
            while True:
                if base.i == base.n:
                    if not base.left:
                        break
                    if base.reads != reads:
                        return True         # one chunk read per slice
                    base.fill()
                if run is None:
                    self._pass(base.n)
                    continue
                j = self._first_not_below(run.buf, run.i * CHANGE + 1)
                if j > base.i:
                    self._pass(j)
                if j < base.n:
                    break
            if run is None:
                self.done = True
                return False
            buf = run.buf
            at = run.i * CHANGE
            op = buf[at]
            if op > OP_PUT:
                raise MemberError("delta op %d unknown" % op)
            if run is newer:
                prev = self._prev
                if self._has_prev and _cmp(prev, 0, buf, at + 1) >= 0:
                    raise MemberError("delta changes not sorted")
                for t in range(KEY_BYTES):
                    prev[t] = buf[at + 1 + t]
                self._has_prev = True
            present = base.i < base.n and _cmp(base.buf, base.i * RECORD, buf, at + 1) == 0
            if present:
                base.i += 1
            if op == OP_PUT:
                rec = run.mv[at + 1:at + CHANGE]
                self._crc = crc32(rec, self._crc)
                self.count += 1
                if self._out_records is not None:
                    self._out_records.write(rec)
            if self._out_changes is not None and (op == OP_PUT or present):
                change = run.mv[at:at + CHANGE]
                self._out_changes.write(change)
                self._changes_crc = crc32(change, self._changes_crc)
                self.changes += 1
            run.i += 1
            budget -= 1
        return True
