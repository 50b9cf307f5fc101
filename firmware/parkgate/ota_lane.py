# The gate's update over the air, as its app runs it (parkgate.ota and
# parkgate.ota_record do the checks, the writes and the record): the offer
# taken, the chunks asked for one at a time while the lane is idle, the
# read-back check one piece per idle pass, the reboot command (stage(): the
# pending record and set_boot, then the reset) and the probation of a new
# image at boot. Pure: it talks through the gate's link (publish), the
# board's slot objects and the record file. Made by parkgate.gate_link only when an offer comes or the record fs + "/ota"
# exists, so a gate with nothing under way holds none of it.
# Wire (firmware/docs/mqtt.md): the ask on up/image is {"v": <version>,
# "i": <chunk index>}; status "ota" is [version, blocks done, blocks in all,
# state], state DOWNLOADING, CHECKING, STAGED or TRIAL; "rb" a rolled back
# version. Log lines: "OTA offer ...", "OTA resume ...", "OTA staged ...",
# "OTA reboot ...", "OTA valid ...", "OTA rolled back ...", "OTA probation
# over ...".
from parkgate.compat import const, ticks_add, ticks_diff
# OtaError is a ValueError: caught as one, so a lane made before unload() and
# modules imported after it still agree.
from parkgate.ota_record import PENDING, ROLLED_BACK, TRIAL, Probation, Progress

ASK_AGAIN_MS = const(3000)     # an ask not answered within this is asked again
DOWNLOADING = "dl"
CHECKING = "ck"
STAGED = "staged"


def record_path(fs):
    return fs + "/ota"


def _index(frame):
    # the chunk index of a frame (bytes 12..15, little-endian), None if short
    if len(frame) < 16:
        return None
    return frame[12] | frame[13] << 8 | frame[14] << 16 | frame[15] << 24


class OtaLane:
    """port: the Gate (parkgate.app), for link, log, key, gate_id,
    _refuse(kind, envelope, why), _publish_status(); slots: the board's
    ota_slots (called when first needed: None on a board without two app
    slots); reset: the board's reset(); running: the running image's
    version; gap_ms: the pause before the first chunk of each next 4 KiB
    block; probation_s: how long a new image has to prove itself."""

    def __init__(self, port, fs, slots, reset, ticks_ms, running, topic_ask, gap_ms,
                 probation_s):
        self.port = port
        self._slots_fn = slots
        self._slots = None
        self._reset = reset
        self._ticks_ms = ticks_ms
        self.running = running
        self._topic_ask = topic_ask
        self._gap_ms = gap_ms
        self.progress = Progress(record_path(fs))
        self.dl = None             # the Download under way (parkgate.ota)
        self.state = None          # DOWNLOADING, CHECKING, STAGED or None
        self.asked = None          # the chunk index asked for, not yet answered
        self._asked_at = 0
        self._gap_until = None     # ticks before which the next block is not asked
        self._refused = None       # the last chunk index refused (one refusal each)
        self.dropped = 0           # chunks dropped while the lane was busy
        self.reboot_pending = False
        self.rb = None             # a version rolled back, until an offer is taken
        self._deadline = None      # the end of probation, ticks
        self.probation = Probation(self.progress, running)
        now = ticks_ms()
        if self.probation.state == TRIAL:
            self._deadline = ticks_add(now, probation_s * 1000)
            self._probation_s = probation_s
        elif self.probation.state == ROLLED_BACK:
            self.rb = self.probation.version
            port.log("OTA rolled back version=%d running=%d" % (self.rb, running))
        else:
            self._resume()

    def slots(self):
        if self._slots is None:
            self._slots = self._slots_fn()
        return self._slots

    # --- the download -------------------------------------------------------
    def _resume(self):
        # A download the record says was under way when the gate went down:
        # the same offer (version, size, SHA-256, chunk were checked when its
        # signed offer was taken) from the block after the last recorded.
        rec = self.progress.read()
        if rec is None or rec[0] == PENDING:
            return
        from parkgate import ota
        slots = self.slots()
        if slots is None or rec[1] <= self.running:
            self.progress.clear()
            return
        try:
            offer = ota.Offer(self.port.key, self.port.gate_id, rec[1], rec[2], rec[3], rec[4])
            self.dl = ota.Download(slots.next_update(), offer, self.progress)
        except (ValueError, OSError) as exc:
            self.port.log("OTA record dropped: %s" % (exc,))
            self.progress.clear()
            return
        self.state = DOWNLOADING if self.dl.next_index() is not None else CHECKING
        self.port.log("OTA resume version=%d block=%d" % (offer.version, self.dl.blocks_done()))

    def offer(self, envelope):
        """A signed offer (the decoded envelope). Returns None once taken,
        else the reason it is refused."""
        from parkgate import ota
        slots = self.slots()
        if slots is None:
            return "this board has no OTA slots"
        try:
            slot = slots.next_update()
            size = slot.ioctl(4, 0) * slot.ioctl(5, 0)
            offer = ota.parse_offer(self.port.key, envelope, self.port.gate_id, self.running,
                                    size)
        except ValueError as exc:
            return str(exc)
        dl = self.dl
        if dl is not None and self.state != STAGED and _same(dl.offer, offer):
            self.asked = None      # the same image: go on, ask again at once
            return None
        if self.state == STAGED and dl.offer.version == offer.version:
            return None            # staged already: the status says so
        if self.rb is not None:
            self.probation.reported()   # the rollback was shown; a new offer is taken
            self.rb = None
        try:
            dl = ota.Download(slot, offer, self.progress)
        except (ValueError, OSError) as exc:
            return str(exc)
        self.dl = dl
        self.reboot_pending = False
        self.state = DOWNLOADING if dl.next_index() is not None else CHECKING
        self.asked = self._gap_until = self._refused = None
        self.port.log("OTA offer version=%d size=%d blocks=%d" % (
            offer.version, offer.size, offer.blocks))
        if dl.blocks_done():
            self.port.log("OTA resume version=%d block=%d" % (offer.version, dl.blocks_done()))
        self.port._publish_status()
        return None

    def chunk(self, frame, idle, now):
        """A chunk frame from the link (bytes, not decoded). Written only
        while the lane is idle: otherwise dropped, and asked again."""
        dl = self.dl
        index = _index(frame)
        if dl is None:
            self._refuse_chunk(index, None, "no download under way")
            return
        if self.state != DOWNLOADING:
            self._refuse_chunk(index, dl.offer.version, "all %d chunks written" % dl.offer.count)
            return
        if not idle:
            self.dropped += 1
            if index == self.asked:
                self.asked = None        # asked again at the next idle pass
            return
        done = dl.blocks_done()
        try:
            left = dl.accept(frame)
        except ValueError as exc:
            # the ask stays outstanding: asked again after its timeout
            self._refuse_chunk(index, dl.offer.version, str(exc))
            return
        except OSError as exc:
            self.port.log("OTA flash error %r: block %d again" % (exc, dl.blocks_done()))
            self.asked = None
            return
        self.asked = None
        if not left:
            self.state = CHECKING
        elif dl.blocks_done() != done and self._gap_ms:
            # the next chunk's write erases a sector: not before the gap
            self._gap_until = ticks_add(now, self._gap_ms)

    def _refuse_chunk(self, index, version, why):
        if index is not None and index == self._refused:
            return
        self._refused = index
        self.port._refuse("chunk", {"v": version}, why)

    def _ask(self, now):
        if self._gap_until is not None:
            if ticks_diff(now, self._gap_until) < 0:
                return False
            self._gap_until = None
        if self.asked is not None and ticks_diff(now, self._asked_at) < ASK_AGAIN_MS:
            return False
        link = self.port.link
        if not link.up:
            return False
        index = self.dl.next_index()
        if link.publish(self._topic_ask, '{"v":%d,"i":%d}' % (self.dl.offer.version, index)):
            self.asked = index
            self._asked_at = now
        return False

    def _check(self):
        # one piece of the read-back; staged once it matches, else dropped.
        # Staged is not set_boot: that waits for the reboot command, so that
        # a reset before it (a power cut) still boots the running image.
        dl = self.dl
        ok = dl.verify_step()
        if ok is None:
            return True
        version = dl.offer.version
        if ok:
            self.state = STAGED
            self.port.log("OTA staged version=%d" % version)
        else:
            self.dl = self.state = None
            self.port._refuse("image", {"v": version}, "the slot's SHA-256 is not the offer's")
        self.port._publish_status()
        return True

    # --- the switch -----------------------------------------------------------
    def reboot(self, body):
        """An authentic reboot command's body (a version): None when that
        version is staged (the gate resets at its next idle pass), else why not."""
        staged = self.dl.offer.version if self.state == STAGED else None
        if staged is None:
            return "version %s is not staged: nothing is" % body
        if body != str(staged):
            return "version %s is not staged: version %d is" % (body, staged)
        self.reboot_pending = True
        return None

    # --- the loop ---------------------------------------------------------------
    def service(self, now):
        """Every pass: the end of probation."""
        if self._deadline is not None and ticks_diff(now, self._deadline) >= 0:
            self._deadline = None
            self.port.log("OTA probation over: not proven in %d s, resetting" % self._probation_s)
            self._reset()

    def idle_step(self, now):
        """A pass with the lane idle: the reboot, one piece of the check, or
        the next ask. True if it did work."""
        if self.reboot_pending:
            self.reboot_pending = False
            dl = self.dl
            try:
                dl.stage()         # the pending record, then set_boot
            except (ValueError, OSError) as exc:
                self.dl = self.state = None
                self.port._refuse("image", {"v": dl.offer.version}, "stage: %s" % (exc,))
                self.port._publish_status()
                return True
            self.port.log("OTA reboot version=%d" % dl.offer.version)
            self._reset()
            return True
        if self.state == CHECKING:
            return self._check()
        if self.state == DOWNLOADING:
            return self._ask(now)
        return False

    def status_published(self):
        """A status went out with the link up: an image on trial is proven
        (then True: the caller publishes a second status)."""
        if self.probation.state != TRIAL:
            return False
        slots = self.slots()
        if slots is None:
            return False
        version = self.probation.version
        self.probation.proven(slots)
        self._deadline = None
        self.port.log("OTA valid version=%d" % version)
        return True

    def unload(self):
        """Once nothing is under way (an image proven, no download): the
        OTA modules off the heap, None returned (the Gate drops its lane);
        else self. parkgate.ota_lane is imported again for the next offer."""
        if self.dl is not None or self.rb is not None or self.probation.state == TRIAL:
            return self
        import sys
        import parkgate
        for name in ("ota", "ota_record", "ota_lane"):
            sys.modules.pop("parkgate." + name, None)
            if name in parkgate.__dict__:
                delattr(parkgate, name)
        return None

    def status(self):
        """The status's "ota": None, or [version, blocks done, blocks, state]."""
        if self.probation.state == TRIAL:
            return [self.probation.version, 0, 0, "trial"]
        dl = self.dl
        if dl is None or self.state is None:
            return None
        return [dl.offer.version, dl.blocks_done(), dl.offer.blocks, self.state]


def _same(a, b):
    return a.version == b.version and a.size == b.size and a.sha_hex == b.sha_hex and \
        a.chunk == b.chunk
