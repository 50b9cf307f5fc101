# Member list updates from the lot server: a whole list or a delta in
# signed parts of at most PART_MAX bytes (parkgate.sign part envelopes),
# staged on flash as they come, checked whole, then installed a slice at a
# time from the gate loop (parkgate.member_install), and the overlay folded
# into members.bin when the flash has room (compaction). The files:
# parkgate.member_install. See firmware/docs/members.md.
import binascii
import hashlib
import os

from parkgate import members, sign
from parkgate.compat import const
from parkgate.member_install import (CHECKING, IDLE, RECEIVING, MemberInstall, _exists, _remove,
                                     _size)

PART_MAX = const(600)           # payload bytes in one part (the host sends 480)
PARTS_MAX = const(20000)
PAYLOAD_MAX = const(1114144)    # 32 + 17 * 65536: a delta of 65,536 changes
RESERVE_BLOCKS = const(6)       # left free after an update: littlefs, a tariff
# Slices per step(): a slice reads at most 512 bytes of the list (32
# records) and handles at most 32 changes (member_merge.Merger), or hashes or
# reads back 512 bytes. On the unix port a merge slice takes about 20 us
# (at most 0.2 ms), so 4 of them stay within a few ms on an ESP32; a step
# that fills a 4 KiB block of a file costs that block's erase (about 45 ms
# on SPI NOR, as every flash write of the gate does).
STEP_SLICES = const(4)
_B64_MAX = const(800)           # base64 characters of PART_MAX bytes
_B64_ONE_MAX = const(1024)      # a whole update in one envelope (the old form)

_C_MERGING = const(1)
_C_READBACK = const(2)


class Refused(ValueError):
    pass


class MemberStore(MemberInstall):
    """The gate's member list and the updates it is sent. free_flash(path)
    gives the free bytes of the filesystem at path (the board's
    free_flash); log(line) logs."""

    def __init__(self, fs_path, free_flash, log):
        MemberInstall.__init__(self, fs_path, free_flash, log)
        self._compact = 0            # the compaction's phase; 0: none
        self._boot()

    # --- boot ---------------------------------------------------------------
    def _boot(self):
        for path in (self._ovn, self._cmp):
            if _remove(path):
                self.log("MEMBERS removed %s left by an install cut short" % path)
        self._open_current(True)
        self._resume()
        if self._phase == IDLE:
            self._maybe_compact()

    def _resume(self):
        # an update staged before the reboot: finish receiving or installing it
        have_upd = _exists(self._upd)
        size = _size(self._stg)
        if not have_upd:
            if size >= 0:
                _remove(self._stg)
                self.log("MEMBERS removed a staged payload without its description")
            return
        why = None
        try:
            with open(self._upd) as f:
                words = f.read().split()
            v, n, z, p = int(words[0]), int(words[1]), int(words[2]), int(words[3])
            h = words[4]
            if n < 1 or z < members.HEADER or p < 1 or (z + p - 1) // p != n or len(h) != 64:
                raise ValueError(h)
        except (OSError, ValueError, IndexError):
            v = -1
            why = "unreadable description"
        if why is None:
            if v <= self._applied():
                why = "version %d installed" % self._applied()
            elif size < 0 or size > z or (size < z and size % p):
                why = "%d of %d bytes staged" % (size, z)
            else:
                with open(self._stg, "rb") as f:
                    head = f.read(members.HEADER)
                try:
                    self._check_head(head, v, z)
                except Refused as exc:
                    why = str(exc)
        if why is not None:
            self._drop_files()
            self.log("MEMBERS removed staged update version=%d: %s" % (v, why))
            return
        self._v, self._n, self._z, self._p, self._h = v, n, z, p, h
        self._delta = head[0:4] == members.DELTA_MAGIC
        if size == z:
            self._next = n
            self._phase = CHECKING
            self.log("MEMBERS resuming install version=%d" % v)
        else:
            self._next = size // p
            self._phase = RECEIVING
            self.log("MEMBERS resuming version=%d at part %d of %d" % (v, self._next, n))

    # --- parts ----------------------------------------------------------------
    def offer(self, envelope, key, gate_id):
        """One signed part from the downlink (or a whole update of up to
        768 bytes in one envelope without part fields, the older form).
        Writes at most one part to flash; returns True if it was new, False
        for a repeat. Refused (with the reason) for anything wrong; nothing
        is written then."""
        if not key:
            raise Refused("no downlink key configured")
        if not isinstance(envelope, dict):
            raise Refused("not an envelope")
        part = "i" in envelope
        try:
            body = sign.verify(key, envelope, "members", gate_id, self._applied(), part=part)
        except sign.SignatureError as exc:
            raise Refused(str(exc))
        v = envelope["v"]
        if part:
            i, n, z, h = sign.part_of(envelope)
            if n > PARTS_MAX or i >= n:
                raise Refused("part %d of %d: at most %d parts" % (i, n, PARTS_MAX))
            if not members.HEADER <= z <= PAYLOAD_MAX:
                raise Refused("payload of %d bytes, at most %d" % (z, PAYLOAD_MAX))
            if len(body) > _B64_MAX:
                raise Refused("part %d: %d base64 characters, at most %d" % (
                    i, len(body), _B64_MAX))
        elif "\n" in body:
            # the signed bytes of a part with its part line moved into the
            # body: base64 never holds a newline
            raise Refused("a newline in the body")
        elif len(body) > _B64_ONE_MAX:
            # the single-message form: a list or delta of up to 768 bytes
            raise Refused("one message of %d base64 characters, at most %d: send parts" % (
                len(body), _B64_ONE_MAX))
        try:
            data = binascii.a2b_base64(body)
        except ValueError:
            raise Refused("bad base64")
        if not part:
            i, n, z = 0, 1, len(data)
            h = binascii.hexlify(hashlib.sha256(data).digest()).decode()
        if self._phase != IDLE:
            if v == self._v:
                if h != self._h or n != self._n or z != self._z:
                    raise Refused("part %d of version %d: another payload than part 0's" % (i, v))
                if self._phase != RECEIVING or i < self._next:
                    return False
                if i > self._next:
                    raise Refused("part %d of version %d out of order: part %d is next" % (
                        i, v, self._next))
                self._append(data)
                return True
            if v < self._v:
                raise Refused("stale: version %d, version %d is being received" % (v, self._v))
            if self._phase != RECEIVING:
                raise Refused("busy: installing version %d" % self._v)
        if i != 0:
            raise Refused("part %d of version %d before its part 0" % (i, v))
        self._start(v, n, z, h, data)
        return True

    def _check_head(self, head, v, z):
        # what a payload's first bytes say, checked against the envelope and
        # the list in use; returns the bytes the install needs on flash
        if len(head) < members.HEADER:
            raise Refused("payload too short")
        try:
            if head[0:4] == members.DELTA_MAGIC:
                base, new, changes = members._parse_header(head, members.DELTA_MAGIC)
                if self.current is None:
                    raise Refused("a delta needs a list to apply to")
                if base != self.current.version:
                    raise Refused("delta for list version %d, the gate has %d" % (
                        base, self.current.version))
                if new != v:
                    raise Refused("delta makes version %d, the envelope says %d" % (new, v))
                if z != members.HEADER + changes * members.CHANGE:
                    raise Refused("delta of %d changes in %d bytes" % (changes, z))
                return self._blocks(z) + self._blocks(
                    (changes + self.current.changes) * members.CHANGE + members.TRAILER)
            version, count = members._parse_header(head, members.LIST_MAGIC)[0:2]
        except members.MemberError as exc:
            raise Refused(str(exc))
        if version != v:
            raise Refused("list version %d, the envelope says %d" % (version, v))
        if z != members.HEADER + count * members.RECORD:
            raise Refused("list of %d members in %d bytes" % (count, z))
        return self._blocks(z)

    def _start(self, v, n, z, h, data):
        if n == 1:
            p = z
            if len(data) != z:
                raise Refused("part 0 of 1: %d bytes, the payload is %d" % (len(data), z))
        else:
            p = len(data)
            if p < 64 or p > PART_MAX or (z + p - 1) // p != n:
                raise Refused("part 0: %d bytes do not make %d parts of %d bytes" % (p, n, z))
        need = self._check_head(data, v, z)
        if self._phase != IDLE:
            self._drop_files()
            self.log("MEMBERS dropped version %d: version %d comes" % (self._v, v))
            self._clear()
        self._stop_compaction("version %d comes" % v)
        if self.current is None and _remove(self._base):
            self.log("MEMBERS removed the unusable list")
        need += RESERVE_BLOCKS * self._bs
        free = self._free(self.fs)
        if need > free:
            raise Refused("not enough flash: version %d needs %d bytes, %d free" % (v, need, free))
        try:
            with open(self._upd, "w") as f:
                f.write("%d %d %d %d %s\n" % (v, n, z, p, h))
            with open(self._stg, "wb") as f:
                f.write(data)
        except OSError as exc:
            self._drop_files()
            raise Refused("flash write failed: %s" % exc)
        self._v, self._n, self._z, self._p, self._h = v, n, z, p, h
        self._delta = data[0:4] == members.DELTA_MAGIC
        self._next = 1
        self._phase = RECEIVING if n > 1 else CHECKING
        self.log("MEMBERS receiving version=%d %s bytes=%d parts=%d" % (
            v, "delta" if self._delta else "list", z, n))

    def _append(self, data):
        i = self._next
        want = self._p if i < self._n - 1 else self._z - (self._n - 1) * self._p
        if len(data) != want:
            raise Refused("part %d: %d bytes, expected %d" % (i, len(data), want))
        try:
            with open(self._stg, "ab") as f:
                f.write(data)
        except OSError as exc:
            v = self._v
            self._drop_files()
            self._clear()
            raise Refused("flash write failed at part %d, version %d dropped: %s" % (i, v, exc))
        self._next = i + 1
        if self._next == self._n:
            self._phase = CHECKING
            self.log("MEMBERS received version=%d parts=%d" % (self._v, self._n))

    # --- the install and the compaction, a slice at a time -------------------
    def step(self):
        """A bounded amount of install work (STEP_SLICES slices): 0 nothing
        to do, 1 did some and there may be more, 2 an install just
        completed (and was logged)."""
        did = 0
        for _ in range(STEP_SLICES):
            r = self._slice()
            if r == 2:
                return 2
            if r == 0:
                return did
            did = 1
        return 1

    def _slice(self):
        r = self._install_slice()
        if r == 2:
            self._maybe_compact()
        elif r == 0 and self._compact:
            r = self._compact_step()
        return r

    # --- compaction: the overlay folded into members.bin, when it fits ---------
    def _maybe_compact(self):
        ml = self.current
        if ml is None or not ml.overlaid:
            return
        need = self._blocks(members.HEADER + ml.count * members.RECORD) + \
            RESERVE_BLOCKS * self._bs
        free = self._free(self.fs)
        if free < need:
            self.log("MEMBERS %d changes kept beside the list: folding them in needs %d "
                     "bytes, %d free" % (ml.changes, need, free))
            return
        self._compact = _C_MERGING
        self.log("MEMBERS compacting version=%d count=%d changes=%d" % (
            ml.version, ml.count, ml.changes))

    def _stop_compaction(self, why):
        if self._compact:
            self._close_files()
            self._compact = 0
            _remove(self._cmp)
            self.log("MEMBERS compaction stopped: %s" % why)

    def _compact_step(self):
        try:
            return self._compact_slice()
        except (OSError, MemoryError, members.MemberError) as exc:
            self._stop_compaction(str(exc) or repr(exc))
            if self.current is None:
                self._open_current(True)
            return 1

    def _compact_slice(self):
        ml = self.current
        if self._compact == _C_MERGING:
            if self._merger is None:
                base = self._open(self._base, "rb")
                base.seek(members.HEADER)
                ovl = self._open(self._ovl, "rb")
                out = self._open(self._cmp, "wb")
                out.write(members._header(members.LIST_MAGIC, ml.version, ml.count, ml.crc))
                from parkgate.member_merge import Merger   # at the first merge (member_install)
                self._merger = Merger(base, ml.base_count, newer=ovl,
                                      newer_count=ml.changes, out_records=out)
                return 1
            m = self._merger
            if m.step():
                return 1
            if m.base_crc != ml.base_crc or m.newer_crc != ml.changes_crc:
                raise members.MemberError("member file or overlay CRC mismatch")
            if m.count != ml.count or m.crc != ml.crc:
                raise members.MemberError("compacted list differs from the overlay's")
            self._close_files()
            self._rb_left = ml.count * members.RECORD
            self._rb_want = ml.crc
            self._compact = _C_READBACK
            return 1
        if not self._readback(self._cmp, members.HEADER):
            return 1
        self._drop_current()
        os.rename(self._cmp, self._base)
        _remove(self._ovl)
        self._compact = 0
        self._open_current(False)
        if self.current is None:
            raise members.MemberError("the compacted list does not open")
        self.log("MEMBERS compacted version=%d count=%d" % (
            self.current.version, self.current.count))
        return 1
