# Member list updates from the lot server: a whole list or a delta in
# signed parts of at most PART_MAX bytes (parkgate.sign part envelopes),
# staged on flash as they come, checked whole, then installed a slice at a
# time from the gate loop. A delta is not merged into a second copy of the
# list (50,000 members are 800 KB of a 1.25 MiB filesystem): it is merged
# into the overlay beside members.bin (parkgate.members, MemberList with
# overlay), which is renamed into place. See firmware/docs/members.md.
#
# Files in fs_path, all renamed into place whole (littlefs renames are
# atomic), so a power cut leaves the old list or the new one:
#   members.bin      the list (a field tool deploy writes it too)
#   members.ovl      the changes on top of it (an overlay bound to its CRC)
#   members.upd      the update being staged: "v n z p h", one line
#   members.stg      its payload, appended part by part
#   members.ovn      the next overlay, while a delta is merged
#   members.bin.new  the list with the overlay folded in, while compacting
import binascii
import hashlib
import os
import struct
from binascii import crc32

from parkgate import members, sign
from parkgate.compat import const

PART_MAX = const(600)           # payload bytes in one part (the host sends 480)
PARTS_MAX = const(20000)
PAYLOAD_MAX = const(1114144)    # 32 + 17 * 65536: a delta of 65,536 changes
RESERVE_BLOCKS = const(6)       # left free after an update: littlefs, a tariff
_SLICE = const(512)             # bytes hashed or read back per slice
# Slices per step(): a slice reads at most 512 bytes of the list (32
# records) and handles at most 32 changes (members.Merger), or hashes or
# reads back 512 bytes. On the unix port a merge slice takes about 20 us
# (at most 0.2 ms), so 4 of them stay within a few ms on an ESP32; a step
# that fills a 4 KiB block of a file costs that block's erase (about 45 ms
# on SPI NOR, as every flash write of the gate does).
STEP_SLICES = const(4)
_B64_MAX = const(800)           # base64 characters of PART_MAX bytes
_B64_ONE_MAX = const(1024)      # a whole update in one envelope (the old form)

_IDLE = const(0)
_RECEIVING = const(1)
_CHECKING = const(2)            # hashing the staged payload
_MERGING = const(3)             # merging a delta into the next overlay
_READBACK = const(4)            # reading the new overlay back from flash

_C_MERGING = const(1)
_C_READBACK = const(2)


class Refused(ValueError):
    pass


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def _remove(path):
    try:
        os.remove(path)
        return True
    except OSError:
        return False


def _close(f):
    if f is not None:
        try:
            f.close()
        except OSError:
            pass


class MemberStore:
    """The gate's member list and the updates it is sent. free_flash(path)
    gives the free bytes of the filesystem at path (the board's
    free_flash); log(line) logs."""

    def __init__(self, fs_path, free_flash, log):
        self.fs = fs_path
        self._free = free_flash
        self.log = log
        self.current = None
        self.failure = None          # (version, reason) of the last install given up
        self._base = fs_path + "/members.bin"
        self._ovl = fs_path + "/members.ovl"
        self._ovn = fs_path + "/members.ovn"
        self._stg = fs_path + "/members.stg"
        self._upd = fs_path + "/members.upd"
        self._cmp = fs_path + "/members.bin.new"
        self._buf = self._mv = None   # the slice buffer, only while an install runs
        self._files = []
        self._merger = None
        self._compact = 0
        self._clear()
        try:
            self._bs = os.statvfs(fs_path)[0] or 4096
        except (OSError, AttributeError):
            self._bs = 4096
        self._boot()

    # --- boot ---------------------------------------------------------------
    def _boot(self):
        for path in (self._ovn, self._cmp):
            if _remove(path):
                self.log("MEMBERS removed %s left by an install cut short" % path)
        self._open_current(True)
        self._resume()
        if self._phase == _IDLE:
            self._maybe_compact()

    def _open_current(self, verify):
        self.current = None
        if not _exists(self._base):
            if _remove(self._ovl):
                self.log("MEMBERS removed an overlay without its list")
            return
        try:
            ml = members.MemberList(self._base)
        except (OSError, members.MemberError) as exc:
            self.log("ALARM member list unusable: %s" % exc)
            return
        try:
            if verify:
                ml.verify_records()
        except (OSError, members.MemberError) as exc:
            _close(ml)
            self.log("ALARM member list unusable: %s" % exc)
            return
        if _exists(self._ovl):
            try:
                with_ov = members.MemberList(self._base, self._ovl)
            except (OSError, members.MemberError) as exc:
                self.log("MEMBERS removed overlay: %s" % exc)
                _remove(self._ovl)
                with_ov = None
            if with_ov is not None:
                try:
                    if verify:
                        with_ov.verify_changes()
                    ml.close()
                    ml = with_ov
                except (OSError, members.MemberError) as exc:
                    _close(with_ov)
                    self.log("ALARM member overlay unusable, removed: %s" % exc)
                    _remove(self._ovl)
        self.current = ml
        if verify:
            self.log("MEMBERS list version=%d count=%d changes=%d" % (
                ml.version, ml.count, ml.changes))

    def _drop_current(self):
        # closed before its files are renamed over (littlefs: no open file
        # may be replaced under a reader)
        ml = self.current
        self.current = None
        _close(ml)

    def _applied(self):
        return self.current.version if self.current is not None else -1

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
            self._phase = _CHECKING
            self.log("MEMBERS resuming install version=%d" % v)
        else:
            self._next = size // p
            self._phase = _RECEIVING
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
        if self._phase != _IDLE:
            if v == self._v:
                if h != self._h or n != self._n or z != self._z:
                    raise Refused("part %d of version %d: another payload than part 0's" % (i, v))
                if self._phase != _RECEIVING or i < self._next:
                    return False
                if i > self._next:
                    raise Refused("part %d of version %d out of order: part %d is next" % (
                        i, v, self._next))
                self._append(data)
                return True
            if v < self._v:
                raise Refused("stale: version %d, version %d is being received" % (v, self._v))
            if self._phase != _RECEIVING:
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

    def _blocks(self, nbytes):
        # flash a file of nbytes takes in littlefs: whole blocks, each
        # holding a few skip-list pointers (8 bytes on average), one more
        bs = self._bs
        return ((nbytes + bs - 9) // (bs - 8) + 1) * bs

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
        if self._phase != _IDLE:
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
        self._phase = _RECEIVING if n > 1 else _CHECKING
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
            self._phase = _CHECKING
            self.log("MEMBERS received version=%d parts=%d" % (self._v, self._n))

    # --- the install, a slice at a time ----------------------------------------
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
        phase = self._phase
        if phase == _IDLE or phase == _RECEIVING:
            if self._compact:
                return self._compact_step()
            return 0
        try:
            if phase == _CHECKING:
                return self._check_step()
            if phase == _MERGING:
                return self._merge_step()
            return self._readback_step()
        except (OSError, MemoryError, members.MemberError) as exc:
            self._fail(str(exc) or repr(exc))
            return 1

    def _open(self, path, mode):
        f = open(path, mode)
        self._files.append(f)
        return f

    def _close_files(self):
        for f in self._files:
            _close(f)
        self._files = []
        self._merger = None

    def _slice_buffer(self):
        if self._buf is None:
            self._buf = bytearray(_SLICE)
            self._mv = memoryview(self._buf)

    def _check_step(self):
        # the staged payload's SHA-256, and for a whole list its order and CRC
        self._slice_buffer()
        if not self._files:
            self._src = self._open(self._stg, "rb")
            self._sha = hashlib.sha256()
            self._pos = 0
            self._crc = 0
            self._prev = bytearray(7)
        mv = self._mv
        k = members.HEADER if self._pos == 0 else min(_SLICE, self._z - self._pos)
        if self._src.readinto(mv[0:k]) != k:
            raise members.MemberError("staged payload cut short")
        self._sha.update(mv[0:k])
        if self._pos == 0:
            self._head = bytes(self._buf[0:members.HEADER])
        elif not self._delta:
            self._check_records(k)
        self._pos += k
        if self._pos < self._z:
            return 1
        self._close_files()
        if binascii.hexlify(self._sha.digest()).decode() != self._h:
            raise members.MemberError("payload SHA-256 mismatch")
        if self._delta:
            self._phase = _MERGING
            return 1
        if self._crc & 0xFFFFFFFF != members._parse_header(self._head, members.LIST_MAGIC)[2]:
            raise members.MemberError("list CRC mismatch")
        return self._commit_list()

    def _check_records(self, k):
        buf = self._buf
        prev = self._prev
        self._crc = crc32(self._mv[0:k], self._crc)
        at = 0
        first = self._pos == members.HEADER
        while at < k:
            if not first and members._cmp(prev, 0, buf, at) >= 0:
                raise members.MemberError("list not sorted")
            first = False
            for t in range(7):
                prev[t] = buf[at + t]
            at += members.RECORD

    def _commit_list(self):
        self._drop_current()
        os.rename(self._stg, self._base)
        _remove(self._ovl)
        self._open_current(False)
        if self.current is None or self.current.version != self._v:
            raise members.MemberError("the new list does not open")
        return self._installed()

    def _installed(self):
        _remove(self._stg)
        _remove(self._upd)
        self._clear()
        ml = self.current
        self.log("MEMBERS installed version=%d count=%d" % (ml.version, ml.count))
        self._maybe_compact()
        return 2

    def _merge_step(self):
        if self._merger is None:
            cur = self.current
            src = self._open(self._stg, "rb")
            src.seek(members.HEADER)
            base = self._open(self._base, "rb")
            base.seek(members.HEADER)
            older = None
            if cur.changes:
                older = self._open(self._ovl, "rb")
            out = self._open(self._ovn, "wb")
            self._out = out
            self._dhead = members._parse_header(self._head, members.DELTA_MAGIC)
            self._merger = members.Merger(base, cur.base_count, older, cur.changes, src,
                                          self._dhead[2], out_changes=out)
            return 1
        m = self._merger
        if m.step():
            return 1
        cur = self.current
        count, crc, body_crc = struct.unpack_from(">III", self._head, 20)
        if m.base_crc != cur.base_crc:
            raise members.MemberError("member file CRC mismatch")
        if m.newer_crc != body_crc:
            raise members.MemberError("delta CRC mismatch")
        if cur.changes and m.older_crc != cur.changes_crc:
            raise members.MemberError("overlay CRC mismatch")
        if m.count != count or m.crc != crc:
            raise members.MemberError("merged list differs from the delta's result")
        self._out.write(members.overlay_trailer(
            cur.base_version, cur.base_count, cur.base_crc, self._v, count, crc,
            m.changes, m.changes_crc))
        self._close_files()
        self._rb_left = m.changes * members.CHANGE
        self._rb_want = m.changes_crc
        self._phase = _READBACK
        return 1

    def _readback(self, path, at):
        # one slice of reading a file written in this install back from the
        # flash; True when all of it was read and its CRC is the one written
        self._slice_buffer()
        if not self._files:
            self._src = self._open(path, "rb")
            self._src.seek(at)
            self._crc = 0
        k = min(_SLICE, self._rb_left)
        if k:
            if self._src.readinto(self._mv[0:k]) != k:
                raise members.MemberError("%s cut short" % path)
            self._crc = crc32(self._mv[0:k], self._crc)
            self._rb_left -= k
        if self._rb_left:
            return False
        self._close_files()
        if self._crc & 0xFFFFFFFF != self._rb_want:
            raise members.MemberError("%s reads back wrong from the flash" % path)
        return True

    def _readback_step(self):
        if not self._readback(self._ovn, 0):
            return 1
        self._drop_current()
        os.rename(self._ovn, self._ovl)
        self._open_current(False)
        if self.current is None or self.current.version != self._v:
            raise members.MemberError("the new overlay does not open")
        return self._installed()

    def _fail(self, reason):
        v = self._v
        self._close_files()
        self._drop_files()
        self._clear()
        self.failure = (v, reason)
        self.log("MEMBERS install failed version=%d: %s" % (v, reason))
        if self.current is None:
            self._open_current(True)

    def _clear(self):
        self._buf = self._mv = None
        self._phase = _IDLE
        self._v = self._n = self._z = self._p = self._next = -1
        self._h = None
        self._delta = False
        self._head = None

    def _drop_files(self):
        _remove(self._stg)
        _remove(self._upd)
        _remove(self._ovn)

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
                self._merger = members.Merger(base, ml.base_count, newer=ovl,
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
