# The gate's member list in use and the install of a staged update, a slice
# at a time: a whole list is checked and renamed into place; a delta is
# merged (parkgate.member_merge, imported for the first merge) into the next
# overlay beside members.bin, read back from the flash and renamed into
# place. The updates are received and staged by parkgate.member_update
# (MemberStore, built on this). A delta is not merged into a second copy of
# the list (50,000 members are 800 KB of a 1.25 MiB filesystem). See firmware/docs/members.md.
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

from parkgate import members
from parkgate.compat import const

_SLICE = const(512)             # bytes hashed or read back per slice

# the phases of a staged update
IDLE = const(0)
RECEIVING = const(1)
CHECKING = const(2)             # hashing the staged payload
_MERGING = const(3)             # merging a delta into the next overlay
_READBACK = const(4)            # reading the new overlay back from flash


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


class MemberInstall:
    """The member list in use (current) and the install of the update
    staged in members.stg (_install_slice); MemberStore receives it."""

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
        self._clear()
        try:
            self._bs = os.statvfs(fs_path)[0] or 4096
        except (OSError, AttributeError):
            self._bs = 4096

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

    def _blocks(self, nbytes):
        # flash a file of nbytes takes in littlefs: whole blocks, each
        # holding a few skip-list pointers (8 bytes on average), one more
        bs = self._bs
        return ((nbytes + bs - 9) // (bs - 8) + 1) * bs

    def _install_slice(self):
        # one slice of the staged update's install; 0: none is under way
        phase = self._phase
        if phase == IDLE or phase == RECEIVING:
            return 0
        try:
            if phase == CHECKING:
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
            # Imported at the first merge, as sntp and exit_lane are when
            # needed: a gate that takes no delta does not hold its code.
            from parkgate.member_merge import Merger
            self._merger = Merger(base, cur.base_count, older, cur.changes, src,
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
        self._phase = IDLE
        self._v = self._n = self._z = self._p = self._next = -1
        self._h = None
        self._delta = False
        self._head = None

    def _drop_files(self):
        _remove(self._stg)
        _remove(self._upd)
        _remove(self._ovn)
