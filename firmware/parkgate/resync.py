# Resynchronising a byte stream on a two-byte start marker: the part the
# camera frame parsers (frame.FrameParser, vzenith.VzParser) share.
#
# A candidate frame begins at a start marker; every byte from that marker on
# stays in one buffer while the candidate lives. When it fails (a field out
# of range, a bad CRC, a body that does not close, a quiet line), the
# candidate's bytes up to the next first-marker byte after its marker are
# rejected and the rest of the buffer is scanned again from there: a good
# frame that began inside a failed one is still found, whatever length the
# failed one declared. See firmware/docs/camera-frame.md.
from parkgate.compat import const

# reject reason codes shared with frame.py (which names them all)
TRUNCATED = const(4)
GARBAGE = const(5)

# a remainder this long or longer is shifted by one slice copy (a 16-byte
# memoryview on the heap), a shorter one byte by byte (a frame.py buffer
# never holds one this long)
_MEMMOVE_FROM = const(96)


class Resync:
    """Base of a frame parser: the candidate buffer, the hunt for a start
    marker, rescans after a failure and the byte accounting. A subclass
    checks each byte of a candidate in _check(have) and ends the candidate
    with _fail(reason) or _accept(n)."""

    def __init__(self, size, mark0, mark1, on_reject):
        self._on_reject = on_reject
        self._mark0 = mark0
        self._mark1 = mark1
        # _buf[0:_end] holds bytes not yet accepted or dropped; the candidate
        # starts at _buf[0] (always mark0 when _end > 0). _buf[0:_have] has
        # been checked; _buf[_have:_end] waits to be scanned again after a
        # false start was dropped.
        self._buf = bytearray(size)
        self._mv = memoryview(self._buf)
        self._end = 0
        self._have = 0
        self._skipped = 0       # hunted-over bytes not reported yet
        self.rejects = 0

    def feed(self, data):
        buf = self._buf
        mark = self._mark0
        for i in range(len(data)):
            b = data[i]
            end = self._end
            if end == 0 and b != mark:
                self._skipped += 1      # hunting for a start marker
                continue
            buf[end] = b
            self._end = end + 1
            self._scan()

    def idle(self):
        """The line went quiet: drop a partial candidate as TRUNCATED,
        rescanning its bytes after the marker; report pending garbage (a
        trailing lone first-marker byte included)."""
        while self._end >= 2:
            self._fail(TRUNCATED)
            self._scan()
        if self._end == 1:
            self._skipped += 1
            self._drop(1)
        self._report_garbage()

    def _scan(self):
        buf = self._buf
        while self._have < self._end:
            have = self._have + 1
            self._have = have
            if have > 2:
                self._check(have)
            elif have == 2:
                if buf[1] != self._mark1:
                    # a lone mark0: garbage up to the next possible marker
                    cut = self._next_start(1)
                    self._skipped += cut
                    self._drop(cut)
                else:
                    self._report_garbage()

    def _check(self, have):
        # _buf[have - 1] was added to the candidate (have >= 3)
        raise NotImplementedError

    def _fail(self, reason):
        # the marker at _buf[0] began no good frame: reject it with the bytes
        # up to the next mark0 after it, where the scan starts again
        cut = self._next_start(2)
        self._drop(cut)
        self._discard(reason, cut)

    def _accept(self, n):
        # _buf[0:n] was a frame: drop it; bytes after it up to the next
        # mark0 are hunted over
        cut = self._next_start(n)
        self._skipped += cut - n
        self._drop(cut)

    def _next_start(self, i):
        # index of the first mark0 at or after i, else _end
        buf = self._buf
        end = self._end
        mark = self._mark0
        while i < end and buf[i] != mark:
            i += 1
        return i

    def _drop(self, cut):
        # discard _buf[0:cut], move the rest to the front, and start a new
        # candidate there (memoryview copies are memmoves on both runtimes)
        end = self._end
        kept = end - cut
        if kept >= _MEMMOVE_FROM:
            self._mv[0:kept] = self._mv[cut:end]
        else:
            buf = self._buf
            for k in range(kept):
                buf[k] = buf[cut + k]
        self._end = kept
        self._have = 0

    def _report_garbage(self):
        if self._skipped:
            count = self._skipped
            self._skipped = 0
            self._discard(GARBAGE, count)

    def _discard(self, reason, count):
        # count bytes in no frame (a subclass may claim some for a frame)
        self._reject(reason, count)

    def _reject(self, reason, count):
        self.rejects += 1
        self._on_reject(reason, count)
