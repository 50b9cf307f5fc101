# The cars a lane believes are inside: plate -> entry time, in a table
# preallocated at boot (in segments of about 500 bytes, which a fragmented heap
# can still give) so that it costs the same heap with 5 cars as with 500 and
# never asks the heap for anything while the gate runs.
#
# Slot layout, 12 bytes, little-endian:
#   0 u32 key A = crc32(plate)           } together a 64-bit key: two plates
#   4 u32 key B = crc32(plate, seed)     } sharing it are not a practical risk
#   8 u32 entry time, unix s; 0 = empty slot
# Open addressing with linear probing; a removal shifts the following
# entries back, so there are no deleted markers. When the table holds its
# limit (three quarters of its slots) an
# old entry is forgotten to make room (counted in `forgotten`): the oldest of
# a sample of slots taken round the table, so that making room costs the
# same whatever the table's size.
#
# Checkpoints (parkgate.checkpoint) stream the table out with dump() and
# back in with load(): entries of 12 bytes in the slot layout, key A, key B,
# entry time; load() puts them by key, so the table they go back into may
# have another capacity. `changes` counts the puts and removals that changed
# the table (modulo 2**30, so it stays a small int on a 32-bit port): a
# checkpoint being written is dropped if the table changed under it.
import struct
from binascii import crc32

from parkgate.compat import const

_SLOT = const(12)
_SEED = const(0x5A5A5A5A)
_SEGMENT_SLOTS = const(42)    # 504 bytes per segment
_EVICTION_SAMPLE = const(32)
_CHANGES_MASK = const(0x3FFFFFFF)
ENTRY_SIZE = const(12)        # one dump()/load() entry: the slot layout


class OpenSessions:
    def __init__(self, capacity=512):
        self.capacity = capacity
        # At most three quarters full: linear probing slows down sharply
        # beyond that.
        self.limit = capacity * 3 // 4
        self._segments = []
        for first in range(0, capacity, _SEGMENT_SLOTS):
            self._segments.append(bytearray(min(_SEGMENT_SLOTS, capacity - first) * _SLOT))
        self._count = 0
        self._cursor = 0
        self.forgotten = 0
        self.changes = 0

    def __len__(self):
        return self._count

    @staticmethod
    def _keys(plate):
        data = plate.encode()
        return crc32(data) & 0xFFFFFFFF, crc32(data, _SEED) & 0xFFFFFFFF

    def _slot(self, slot):
        return struct.unpack_from("<III", self._segments[slot // _SEGMENT_SLOTS],
                                  slot % _SEGMENT_SLOTS * _SLOT)

    def _store(self, slot, key_a, key_b, time):
        struct.pack_into("<III", self._segments[slot // _SEGMENT_SLOTS],
                         slot % _SEGMENT_SLOTS * _SLOT, key_a, key_b, time)

    def _find(self, key_a, key_b):
        """The slot holding the key, else the empty slot where it would go."""
        slot = key_a % self.capacity
        while True:
            a, b, time = self._slot(slot)
            if time == 0 or (a == key_a and b == key_b):
                return slot
            slot = (slot + 1) % self.capacity

    def get(self, plate):
        """Entry time of plate, or None."""
        time = self._slot(self._find(*self._keys(plate)))[2]
        return time or None

    def __contains__(self, plate):
        return self.get(plate) is not None

    def put(self, plate, time):
        """Remember plate's entry time (replacing an earlier one)."""
        key_a, key_b = self._keys(plate)
        self._put(key_a, key_b, time)

    def _put(self, key_a, key_b, time):
        slot = self._find(key_a, key_b)
        known = self._slot(slot)[2]
        if known == 0:
            if self._count >= self.limit:
                self._clear(self._eviction_victim())
                self.forgotten += 1
                slot = self._find(key_a, key_b)
            self._count += 1
        elif known == (time or 1):
            return
        self._store(slot, key_a, key_b, time or 1)
        self.changes = (self.changes + 1) & _CHANGES_MASK

    def dump(self, slot, buf):
        """Copy the entries held in slots slot.. into buf (ENTRY_SIZE bytes
        each, the slot layout) while it has room; returns (the slot to go on
        from, bytes written). Allocates nothing but the result tuple."""
        n = 0
        room = len(buf) - _SLOT
        cap = self.capacity
        while slot < cap and n <= room:
            seg = self._segments[slot // _SEGMENT_SLOTS]
            o = slot % _SEGMENT_SLOTS * _SLOT
            if seg[o + 8] or seg[o + 9] or seg[o + 10] or seg[o + 11]:
                for k in range(_SLOT):
                    buf[n + k] = seg[o + k]
                n += _SLOT
            slot += 1
        return slot, n

    def load(self, data):
        """Put the entries of data (as dump() wrote them) into the table;
        returns False, with the entries before it put, at one that is not
        an entry (a zero time, a short tail)."""
        if len(data) % _SLOT:
            return False
        for o in range(0, len(data), _SLOT):
            key_a, key_b, time = struct.unpack_from("<III", data, o)
            if not time:
                return False
            self._put(key_a, key_b, time)
        return True

    def clear(self):
        """Forget every entry."""
        for seg in self._segments:
            for i in range(len(seg)):
                seg[i] = 0
        self._count = 0
        self._cursor = 0
        self.changes = (self.changes + 1) & _CHANGES_MASK

    def remove(self, plate):
        slot = self._find(*self._keys(plate))
        if self._slot(slot)[2]:
            self._clear(slot)
            self.changes = (self.changes + 1) & _CHANGES_MASK

    def _eviction_victim(self):
        """The oldest entry among the next few slots from a cursor that moves
        round the table."""
        best, best_time = -1, None
        slot = self._cursor
        for _ in range(min(_EVICTION_SAMPLE, self.capacity)):
            time = self._slot(slot)[2]
            if time and (best_time is None or time < best_time):
                best, best_time = slot, time
            slot = (slot + 1) % self.capacity
        self._cursor = slot
        if best < 0:   # a run of empty slots: look further
            return self._eviction_victim()
        return best

    def _clear(self, hole):
        """Empty a slot, then move back later entries of the same probe run
        whose home is not between the hole and themselves."""
        cap = self.capacity
        self._store(hole, 0, 0, 0)
        self._count -= 1
        slot = (hole + 1) % cap
        while True:
            a, b, time = self._slot(slot)
            if time == 0:
                return
            home = a % cap
            # distance from home to slot vs. from home to hole, cyclically
            if (slot - home) % cap >= (slot - hole) % cap:
                self._store(hole, a, b, time)
                self._store(slot, 0, 0, 0)
                hole = slot
            slot = (slot + 1) % cap
