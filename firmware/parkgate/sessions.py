# The cars a lane believes are inside: plate -> entry time, in a table
# preallocated at boot (in segments of about 500 bytes, which a fragmented heap
# can still give) so that it costs the same heap with 5 cars as with 500 and
# never asks the heap for anything while the gate runs.
#
# Slot layout, 12 bytes, little-endian:
#   0 u32 key A = crc32(plate)           } together a 64-bit key: two plates
#   4 u32 key B = crc32(plate, seed)     } sharing it are not a practical risk
#   8 u32 entry time, unix s; 0 = empty slot
# A key's home slot: the low 24 bits of key A, modulo the capacity.
# Lookups compare the slot's bytes in place with the key packed once into a
# preallocated buffer: the 32-bit keys and times are long ints on a 32-bit
# port, and unpacking them at every probe put about 400 bytes on the heap
# for each car.
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
import sys
from binascii import crc32

from parkgate.compat import const

_SLOT = const(12)
_SEED = const(0x5A5A5A5A)
_SEGMENT_SLOTS = const(42)    # 504 bytes per segment
_EVICTION_SAMPLE = const(32)
_CHANGES_MASK = const(0x3FFFFFFF)
ENTRY_SIZE = const(12)        # one dump()/load() entry: the slot layout
# MicroPython's str is a buffer of its UTF-8 bytes: crc32 takes it as it is.
_STR_IS_BUFFER = sys.implementation.name == "micropython"


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
        self._key = bytearray(8)    # the key being looked up: key A, key B

    def __len__(self):
        return self._count

    def _key_of(self, plate):
        # Pack plate's key into self._key.
        data = plate if _STR_IS_BUFFER else plate.encode()
        struct.pack_into("<II", self._key, 0, crc32(data), crc32(data, _SEED))

    def _at(self, slot):
        # (segment, offset) of a slot
        return self._segments[slot // _SEGMENT_SLOTS], slot % _SEGMENT_SLOTS * _SLOT

    def _home(self, buf, o):
        return (buf[o] | buf[o + 1] << 8 | buf[o + 2] << 16) % self.capacity

    def _find(self):
        """The slot holding self._key, else the empty slot where it would go.
        (Segment and offset are worked out inline here and below: a helper
        returning them would put a tuple on the heap at every probe.)"""
        key = self._key
        cap = self.capacity
        slot = self._home(key, 0)
        while True:
            seg = self._segments[slot // _SEGMENT_SLOTS]
            o = slot % _SEGMENT_SLOTS * _SLOT
            if not (seg[o + 8] or seg[o + 9] or seg[o + 10] or seg[o + 11]):
                return slot
            k = 0
            while k < 8 and seg[o + k] == key[k]:
                k += 1
            if k == 8:
                return slot
            slot = (slot + 1) % cap

    def _time(self, slot):
        return struct.unpack_from("<I", self._segments[slot // _SEGMENT_SLOTS],
                                  slot % _SEGMENT_SLOTS * _SLOT + 8)[0]

    def _empty(self, slot):
        seg = self._segments[slot // _SEGMENT_SLOTS]
        o = slot % _SEGMENT_SLOTS * _SLOT
        return not (seg[o + 8] or seg[o + 9] or seg[o + 10] or seg[o + 11])

    def get(self, plate):
        """Entry time of plate, or None."""
        self._key_of(plate)
        slot = self._find()
        return None if self._empty(slot) else self._time(slot)

    def __contains__(self, plate):
        self._key_of(plate)
        return not self._empty(self._find())

    def put(self, plate, time):
        """Remember plate's entry time (replacing an earlier one)."""
        self._key_of(plate)
        self._put(time)

    def _put(self, time):
        # Put self._key with time.
        time = time or 1
        slot = self._find()
        if self._empty(slot):
            if self._count >= self.limit:
                self._clear(self._eviction_victim())
                self.forgotten += 1
                slot = self._find()
            self._count += 1
        elif self._time(slot) == time:
            return
        seg = self._segments[slot // _SEGMENT_SLOTS]
        o = slot % _SEGMENT_SLOTS * _SLOT
        key = self._key
        for k in range(8):
            seg[o + k] = key[k]
        struct.pack_into("<I", seg, o + 8, time)
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
        key = self._key
        for o in range(0, len(data), _SLOT):
            time = struct.unpack_from("<I", data, o + 8)[0]
            if not time:
                return False
            for k in range(8):
                key[k] = data[o + k]
            self._put(time)
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
        self._key_of(plate)
        slot = self._find()
        if not self._empty(slot):
            self._clear(slot)
            self.changes = (self.changes + 1) & _CHANGES_MASK

    def _eviction_victim(self):
        """The oldest entry among the next few slots from a cursor that moves
        round the table (times compared as bytes, most significant first)."""
        best = -1
        slot = self._cursor
        for _ in range(min(_EVICTION_SAMPLE, self.capacity)):
            if not self._empty(slot) and (best < 0 or self._older(slot, best)):
                best = slot
            slot = (slot + 1) % self.capacity
        self._cursor = slot
        if best < 0:   # a run of empty slots: look further
            return self._eviction_victim()
        return best

    def _older(self, slot, than):
        seg = self._segments[slot // _SEGMENT_SLOTS]
        o = slot % _SEGMENT_SLOTS * _SLOT
        seg2 = self._segments[than // _SEGMENT_SLOTS]
        o2 = than % _SEGMENT_SLOTS * _SLOT
        k = 11
        while k >= 8:
            if seg[o + k] != seg2[o2 + k]:
                return seg[o + k] < seg2[o2 + k]
            k -= 1
        return False

    def _clear(self, hole):
        """Empty a slot, then move back later entries of the same probe run
        whose home is not between the hole and themselves."""
        cap = self.capacity
        seg, o = self._at(hole)
        for k in range(_SLOT):
            seg[o + k] = 0
        self._count -= 1
        slot = (hole + 1) % cap
        while not self._empty(slot):
            seg, o = self._at(slot)
            home = self._home(seg, o)
            # distance from home to slot vs. from home to hole, cyclically
            if (slot - home) % cap >= (slot - hole) % cap:
                hseg, ho = self._at(hole)
                for k in range(_SLOT):
                    hseg[ho + k] = seg[o + k]
                    seg[o + k] = 0
                hole = slot
            slot = (slot + 1) % cap
