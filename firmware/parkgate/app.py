# The gate application: wires the pure core (frame parser, lane, tariff,
# journal, uplink) to the adapters of a board (boards/<name>/board.py);
# what it says to the lot server is parkgate.gate_link, which Gate is built on.
#
# The board interface: boards/interface.py.
import binascii
import gc
import json

from parkgate import camera, lane, member_update, members, plate, record
from parkgate import tariff_check  # noqa: F401  validation code, loaded while the heap is whole
from parkgate.checkpoint import Checkpointer
from parkgate.clock import Clock, EARLIEST_VALID, Q_CAMERA, Q_UNSET, QUALITY_NAMES, SAVE_EVERY_MS
from parkgate.compat import const, ticks_add, ticks_diff
from parkgate.gate_link import GateLink
from parkgate.journal import Journal, JournalFull

_UART_QUIET_MS = const(50)     # a frame takes < 10 ms at 115200 baud
_STATUS_EVERY_MS = const(30000)
_IDLE_WAIT_MS = const(5)
_FAILURES_BEFORE_RESET = const(20)
_EXPIRE_EVERY_MS = const(1000)
_PASSAGES_MAX = const(4)       # entries opened for and not yet seen through

DEFAULTS = {
    "relay_pulse_ms": 800,
    "fee_timeout_ms": 1500,
    "repeat_window_ms": 30000,
    "keepalive_s": 30,
    "socket_timeout_ms": 500,
    "backoff_max_ms": 30000,
    "inside_max": 1024,   # cars remembered (at most 3/4 of this): 12 bytes each
    "uplink_batch": 16,
    "uplink_window": 2,   # batches sent ahead of their acknowledgement
    "camera": "pg",       # "pg": the project's frame; "vz": Vzenith VZ frames
    # An exit with a fee: "confirm" waits for payment (the lot server's
    # down/paid or the attendant's confirm button); "owed" opens at once and
    # records the fee as owed by the plate.
    "exit_policy": "confirm",
    "command_max_s": 60,  # a remote command must expire within this
    "utc_offset_minutes": 480,   # for member time windows when no tariff is loaded
    # With a passage input (loop detector, barrier-closed contact): how long
    # after the barrier opens a car must be seen going through. An entry not
    # seen is voided (no car inside); an exit not seen is flagged.
    "passage_ms": 10000,
    "clock_resync_s": 3600,   # ask the lot server for the time again while connected
    # An update over the air (parkgate.ota_lane): the pause before the first
    # chunk of each next 4 KiB block (its write erases a sector, ~45 ms deaf
    # to the camera), and how long a new image has to prove itself.
    "ota_block_gap_ms": 3000,
    "probation_s": 300,
}


class Gate(GateLink):
    def __init__(self, board):
        self.board = board
        self.log = board.log
        site = dict(DEFAULTS)
        site.update(board.load_site())
        self.site = site
        self.gate_id = site["gate"]
        # Per-gate key for signed downlink messages (hex in site.json).
        self.key = binascii.unhexlify(site["key"]) if site.get("key") else None
        self.lot = site["lot"]
        # The large fixed allocations come first, while the heap is in one
        # piece: the table of cars inside, then the tariff.
        gc.collect()
        self.lane = lane.Lane(site["direction"], site["repeat_window_ms"], site["inside_max"])
        self.fs = board.mount_flash()
        self.tariff = self._load_tariff()
        self.clock = Clock(board.ClockSource(), board.BOOT_CLOCK_QUALITY)
        # The boot rule (docs/clocks.md): estimated from the last known
        # time when the clock kept counting through this reset.
        self.clock.boot(board.ClockMemory(), board.kept_counting())
        self.journal = Journal(board.journal_device())
        self.journal.mount()
        # The cars inside: the newest checkpoint of the table in the journal,
        # then the records after it (every record if there is none).
        self.checkpoint = Checkpointer(self.journal, self.lane.inside)
        replayed = self.checkpoint.restore(self.lane.note)
        if self.journal.checkpoint_cover:
            self.log("CHECKPOINT loaded cover=%d" % self.journal.checkpoint_cover)
        gc.collect()
        board.start_network(site)
        self.uart = board.Uart()
        self.relay = board.Relay()
        self.confirm = board.ConfirmButton()
        self.display = board.Display()
        self._last_command = 0      # version of the last remote command run
        self.watchdog = board.Watchdog()
        self.parser = camera.make_parser(site["camera"], self._on_plate, self._on_reject)
        self._reject_names = camera.reject_names(site["camera"])
        # The member list and its updates (checked at boot; a leftover of
        # an install cut short is finished or removed).
        self.member_store = member_update.MemberStore(self.fs, board.free_flash, self.log)
        self._uart_buf = bytearray(128)
        self._uart_mv = memoryview(self._uart_buf)
        self._body_buf = bytearray(record.MAX_BODY_BYTES)   # the journal body of the car at the barrier
        self._body_mv = memoryview(self._body_buf)
        self._last_rx = self._last_expire = board.ticks_ms()
        self._relay_off_at = None
        self._last_status = 0
        self.openings = 0
        # The passage input, if the board has one: entries opened for and
        # not yet seen through, oldest first, with their deadlines.
        self.passage = board.PassageSensor() if getattr(board, "PASSAGE", False) else None
        self._passing = []
        self.exit = None
        if self.lane.direction == lane.DIRECTION_OUT:
            # Imported here: an entry lane's heap does not hold its code.
            from parkgate.exit_lane import ExitLane
            self.exit = ExitLane(self.lane, self, site["exit_policy"], site["fee_timeout_ms"],
                                 site["relay_pulse_ms"],
                                 site["passage_ms"] if self.passage else 0)
            self.exit.tariff = self.tariff
        self._start_link(site)
        self._clock_saved = board.ticks_ms()
        # The flash work an idle lane would do next (erase the block the
        # journal opens next, save an ack), done before the lane opens: an
        # ESP32 is deaf to its camera for a sector erase, beyond the 128 B
        # of its UART FIFO.
        while self.journal.maintain():
            pass
        self.log("BOOT gate=%s dir=%s jid=%08x next_seq=%d acked=%d formatted=%d replayed=%d "
                 "inside=%d tariff=%s clock=%s" % (
                     self.gate_id, self.lane.direction, self.journal.journal_id,
                     self.journal.next_seq, self.journal.acked, self.journal.formatted,
                     replayed, len(self.lane.inside),
                     self.tariff.version if self.tariff else "none",
                     QUALITY_NAMES[self.clock.quality]))

    def _ota_lane(self):
        """The update over the air, made when first needed (GateLink.ota)."""
        if self.ota is None:
            from parkgate.gate_link import FW_VERSION
            from parkgate.ota_lane import OtaLane
            board, site = self.board, self.site
            self.ota = OtaLane(self, self.fs, board.ota_slots, board.reset, board.ticks_ms,
                               FW_VERSION, (self._prefix + b"up/image").decode(),
                               site["ota_block_gap_ms"], site["probation_s"])
        return self.ota

    # --- camera to relay -------------------------------------------------
    def _on_reject(self, reason, count):
        self.log("REJECT %s n=%d" % (self._reject_names[reason], count))

    def member_status(self, read, time, quality):
        """The member list's verdict, or UNKNOWN without a list or a clock."""
        member_list = self.member_store.current
        if member_list is None or quality == Q_UNSET:
            return members.UNKNOWN
        offset = self.tariff.utc_offset_minutes if self.tariff else self.site["utc_offset_minutes"]
        return member_list.lookup(read.plate, time, offset)[0]


    def _on_plate(self, read):
        now_ms = self.board.ticks_ms()
        try:
            read.plate = plate.normalise(read.plate)
        except plate.PlateError as exc:
            self.log("REJECT bad_plate %s" % exc)
            return
        if read.offline:   # the camera's own buffer, sent again
            self._replay(read)
            return
        # The camera's time stands in for a clock never set (inline: a
        # helper returning both would put a tuple on the heap for every car).
        if not self.clock.valid() and read.camera_time >= EARLIEST_VALID:
            time, quality = read.camera_time, Q_CAMERA
        else:
            time, quality = self.clock.now(), self.clock.quality
        if self.exit is not None:
            self.exit.read(read, time, quality, now_ms)
            return
        if self.lane.is_repeat(read.plate, now_ms):
            self.log("REPEAT plate=%s" % read.plate)
            return
        status = self.member_status(read, time, quality)
        if status == members.BLACKLISTED:
            self.log("DENIED plate=%s blacklisted" % read.plate)
            return
        event = self.lane.entry(read, time, quality)
        if status == members.MEMBER:
            event.flags |= record.FLAG_MEMBER
        self.release(event)
        if self.passage is not None:
            if len(self._passing) >= _PASSAGES_MAX:
                self._passing.pop(0)   # the oldest stays a car inside
            self._passing.append((event, ticks_add(now_ms, self.site["passage_ms"])))

    def _replay(self, read):
        """A read from the camera's own offline buffer: the car went by
        while the camera could not reach us. Journaled with the camera's
        time and FLAG_REPLAY; the barrier does not move."""
        if read.camera_time >= EARLIEST_VALID:
            time, quality = read.camera_time, Q_CAMERA
        else:
            time, quality = self.clock.now(), self.clock.quality
        if self.exit is not None:
            event = self.lane.finish_exit(self.lane.start_exit(read, time, quality), 0,
                                          record.FEE_NONE, 0, self.lane.inside.get(read.plate))
        else:
            event = self.lane.entry(read, time, quality)
        event.flags |= record.FLAG_REPLAY
        self.mark(event)

    # --- the port the exit lane acts through --------------------------------
    def release(self, event):
        """Journal the event, open the barrier, then the bookkeeping. The
        journal comes first: a power cut after the barrier opened but before
        the record was written would lose a car (and, at an exit, its fee)."""
        self._append(event)
        self._open_barrier()
        self._noted(event)

    def mark(self, event):
        """Journal a record for which the barrier does not move."""
        self._append(event)
        self._noted(event)

    def ask_fee(self, query):
        return self.link.publish(self._topic_fee, json.dumps(query))

    def next_request(self):
        # The seq this exit will be journaled under, with the plate: an
        # answer to an earlier car cannot match (a seq handed out but never
        # written before a power cut comes again only with a new query,
        # whose plate the answer must also match).
        return self.journal.next_seq

    def show(self, text):
        self.display.show(text)

    def _append(self, event):
        try:
            # Exits may use the journal's reserve: they carry a fee.
            n = record.encode_body_into(event, self._body_buf)
            event.seq = self.journal.append(event.kind, self._body_mv[:n],
                                            event.kind == record.KIND_EXIT)
        except JournalFull:
            self.log("ALARM journal full: event not journaled plate=%s" % event.plate)

    def _noted(self, event):
        self.lane.note(event)
        if event.kind == record.KIND_EXIT:
            self.log("EVENT out seq=%d plate=%s t=%d q=%d fee=%d src=%s et=%d fl=%d" % (
                event.seq, event.plate, event.time, event.quality, event.fee,
                "on" if event.fee_source == record.FEE_ONLINE else "off",
                event.entry_time, event.flags))
        else:
            self.log("EVENT in seq=%d plate=%s t=%d q=%d fl=%d" % (
                event.seq, event.plate, event.time, event.quality, event.flags))

    def _open_barrier(self):
        self.relay.set(True)
        self.openings += 1
        self._relay_off_at = ticks_add(self.board.ticks_ms(), self.site["relay_pulse_ms"])

    def _passage_due(self, now):
        """Entries: a passage confirms the oldest opened-for car; one not
        seen in time did not go in, and its entry is voided."""
        if self.passage.passed():
            if self.exit is not None:
                self.exit.passage(now)
            elif self._passing:
                self._passing.pop(0)
        if self._passing and ticks_diff(now, self._passing[0][1]) >= 0:
            event = self._passing.pop(0)[0]
            self.log("PASSAGE none plate=%s: entry voided" % event.plate)
            self.mark(record.Event(record.KIND_ENTRY, event.time, event.quality, event.plate,
                                   event.colour, event.confidence,
                                   record.FLAG_NO_PASSAGE | (event.flags & record.FLAG_MEMBER)))

    def _member_step(self):
        """A slice of a member list install, if one is under way."""
        store = self.member_store
        done = store.step()
        if done == 2:
            self._publish_status()
        if store.failure is not None:
            version, why = store.failure
            store.failure = None
            self._refuse("members", {"v": version}, why)
        return done != 0

    # --- the loop ----------------------------------------------------------
    def _lane_idle(self):
        """No car at the barrier: the flash work may run (a sector erase
        leaves the camera line deaf for ~45 ms)."""
        exit_lane = self.exit
        return self._relay_off_at is None and not self._passing and \
            (exit_lane is None or exit_lane.state == exit_lane.IDLE_STATE)

    def step(self):
        """One pass of the gate loop; returns True if it did any work."""
        board = self.board
        busy = False
        n = self.uart.readinto(self._uart_mv)
        now = board.ticks_ms()
        if n:
            self.parser.feed(self._uart_mv[:n])
            self._last_rx = now
            busy = True
        elif ticks_diff(now, self._last_rx) > _UART_QUIET_MS:
            self.parser.idle()
            self._last_rx = now
            if ticks_diff(now, self._last_expire) >= _EXPIRE_EVERY_MS:
                self.lane.expire(now)     # before a ticks wrap aliases old reads
                self._last_expire = now
        exit_lane = self.exit
        if exit_lane is not None:
            # The attendant's button: a car paying at the booth, or one no
            # fee can be found for (the machine ignores it otherwise).
            if exit_lane.state != exit_lane.IDLE_STATE and self.confirm.pressed():
                exit_lane.confirm(now)
            exit_lane.tick(now)
        if self.passage is not None:
            self._passage_due(now)
        if self._relay_off_at is not None and ticks_diff(now, self._relay_off_at) >= 0:
            self.relay.set(False)
            self._relay_off_at = None
        if not busy:
            busy = self.link.service(now) or self.uplink.service(now)
            if self.link.up and ticks_diff(now, self._last_status) >= _STATUS_EVERY_MS:
                self._publish_status()
            if self.link.up and ticks_diff(now, self._clock_due) >= 0:
                self._ask_clock()   # a clock drifts: ask again while connected
            if self._ntp_address is not None:
                self._service_ntp(now)
        ota = self.ota
        if ota is not None:
            ota.service(now)      # the end of a new image's probation
        if not busy and self._lane_idle():
            busy = self.journal.maintain() or self.checkpoint.service() or \
                self._member_step() or (ota is not None and ota.idle_step(now))
            if not busy and ticks_diff(now, self._clock_saved) >= SAVE_EVERY_MS:
                self._clock_saved = now
                self.clock.save()
        self.watchdog.feed()
        return busy

    def run(self):
        failures = 0
        while True:
            try:
                if not self.step():
                    self.uart.wait(_IDLE_WAIT_MS)
                failures = 0
            except Exception as exc:
                # Keep gating through a fault in one pass (a MemoryError from
                # a fragmented heap, an adapter error); let the board's
                # watchdog reset us if it does not clear.
                failures += 1
                self.log("ERROR %r (%d in a row)" % (exc, failures))
                gc.collect()
                if failures >= _FAILURES_BEFORE_RESET:
                    raise


def run(board):
    Gate(board).run()
