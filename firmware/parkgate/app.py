# The gate application: wires the pure core (frame parser, lane, tariff,
# journal, uplink) to the adapters of a board (boards/<name>/board.py).
#
# A board module provides:
#   NAME, load_site() -> dict, mount_flash() -> fs path, journal_device(),
#   Uart() with readinto(mv) -> n (0 when nothing) and wait(ms),
#   Relay() with set(on), ConfirmButton() with pressed(), Display() with
#   show(text), Clock source with seconds()/set_seconds(),
#   BOOT_CLOCK_QUALITY, start_network(site) (must not block), network_up(),
#   mqtt(socket_timeout_ms) -> (make_client, sockets),
#   ticks_ms(), free_heap(), free_flash(path), Watchdog() with feed(), log(line).
import binascii
import gc
import json
import os

from parkgate import camera, lane, members, plate, record, sign
from parkgate import tariff as tariff_engine
from parkgate import tariff_check  # noqa: F401  validation code, loaded while the heap is whole
from parkgate.checkpoint import Checkpointer
from parkgate.clock import Clock, EARLIEST_VALID, Q_CAMERA, Q_SERVER, Q_UNSET, QUALITY_NAMES
from parkgate.compat import const, ticks_add, ticks_diff
from parkgate.journal import Journal, JournalFull
from parkgate.link import Link
from parkgate.uplink import Uplink

_UART_QUIET_MS = const(50)     # a frame takes < 10 ms at 115200 baud
_STATUS_EVERY_MS = const(30000)
_IDLE_WAIT_MS = const(5)
_CLOCK_MAX_ROUND_TRIP_MS = const(2000)
_FAILURES_BEFORE_RESET = const(20)
_QUEUE_MAX = const(8)          # reads of cars waiting behind one that pays
_EXPIRE_EVERY_MS = const(1000)

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
}


class Gate:
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
        self._awaiting = None       # an exit event waiting for its payment
        self._queue = []            # reads of the cars behind it
        self._last_command = 0      # version of the last remote command run
        self.watchdog = board.Watchdog()
        self.parser = camera.make_parser(site["camera"], self._on_plate, self._on_reject)
        self._reject_names = camera.reject_names(site["camera"])
        self.members = self._open_members()
        self._uart_buf = bytearray(128)
        self._uart_mv = memoryview(self._uart_buf)
        self._body_buf = bytearray(record.MAX_BODY_BYTES)   # the journal body of the car at the barrier
        self._body_mv = memoryview(self._body_buf)
        self._last_rx = self._last_expire = board.ticks_ms()
        self._relay_off_at = None
        self._pending_exit = None
        self._last_status = 0
        self.openings = 0
        prefix = "pg/%s/%s/" % (self.lot, self.gate_id)
        self._topic_events = prefix + "up/events"
        self._topic_fee = prefix + "up/fee"
        self._topic_status = prefix + "status"
        self._topic_ack = (prefix + "down/ack").encode()
        self._topic_fee_answer = (prefix + "down/fee").encode()
        self._topic_tariff = (prefix + "down/tariff").encode()
        self._topic_clock = (prefix + "down/clock").encode()
        self._topic_members = (prefix + "down/members").encode()
        self._topic_paid = (prefix + "down/paid").encode()
        self._topic_open = (prefix + "down/open").encode()
        self._topic_clock_ask = prefix + "up/clock"
        self._clock_request = 0
        self._clock_asked_at = None
        self._topic_refused = prefix + "up/refused"
        make_client, sockets = board.mqtt(site["socket_timeout_ms"])
        self.link = Link(make_client, sockets, "pg-%s-%s" % (self.lot, self.gate_id),
                         site["broker"], site.get("port", 1883), board.ticks_ms,
                         keepalive_s=site["keepalive_s"],
                         backoff_max_ms=site["backoff_max_ms"], log=self.log,
                         network_up=board.network_up,
                         user=site.get("mqtt_user"), password=site.get("mqtt_password"))
        self.link.subscribe(prefix + "down/#")
        if self.lane.direction == lane.DIRECTION_OUT:
            # Entries of the other lanes, so exits can be charged offline.
            self.link.subscribe("pg/%s/+/up/events" % self.lot)
        self.link.set_will(self._topic_status, '{"on":0}')
        self.link.on_message = self._on_message
        self.link.on_up = self._on_link_up
        self.uplink = Uplink(self.journal, self.link, self.gate_id, self._topic_events,
                             batch=site["uplink_batch"], window=site["uplink_window"],
                             log=self.log)
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

    def _load_tariff(self):
        path = self.fs + "/tariff.json"
        try:
            os.remove(path + ".new")   # a push cut short by a power cut
        except OSError:
            pass
        try:
            with open(path) as f:
                return tariff_engine.loads(f.read())
        except OSError:
            self.log("TARIFF missing: exits are charged only online")
        except tariff_engine.TariffError as exc:
            self.log("TARIFF refused %s" % exc)
        return None

    def _install_tariff(self, envelope):
        """A signed tariff table from the lot server: check, write the new
        file, then switch to it (a power cut leaves the old or the new)."""
        applied = self.tariff.version if self.tariff else 0
        try:
            if not self.key:
                raise sign.SignatureError("no downlink key configured")
            body = sign.verify(self.key, envelope, "tariff", self.gate_id, applied)
            table = tariff_engine.loads(body)
            if table.version != envelope["v"]:
                raise sign.SignatureError("table version %d, envelope %d" % (
                    table.version, envelope["v"]))
        except (sign.SignatureError, tariff_engine.TariffError, MemoryError) as exc:
            self._refuse("tariff", envelope, exc)
            return
        path = self.fs + "/tariff.json"
        with open(path + ".new", "w") as f:
            f.write(body)
        os.rename(path + ".new", path)
        self.tariff = table
        self.log("TARIFF installed version=%d" % table.version)
        self._publish_status()

    def _install_members(self, envelope):
        """A signed member list (a whole file, or a delta to the current
        one), base64 in the envelope's body. Either is written beside the
        list and renamed over it: a power cut leaves the old list or the new."""
        applied = self.members.version if self.members else 0
        path = self.fs + "/members.bin"
        try:
            if not self.key:
                raise sign.SignatureError("no downlink key configured")
            data = binascii.a2b_base64(
                sign.verify(self.key, envelope, "members", self.gate_id, applied))
            if data[:4] == members.DELTA_MAGIC:
                if self.members is None:
                    raise members.MemberError("a delta needs a list to apply to")
                self.members.close()
                self.members = None
                try:
                    members.apply_delta_file(path, data)
                finally:
                    self.members = self._open_members()
            else:
                with open(path + ".new", "wb") as f:
                    f.write(data)
                fresh = members.MemberList(path + ".new")
                try:
                    fresh.verify()
                    if fresh.version != envelope["v"]:
                        raise members.MemberError("list version %d, envelope %d" % (
                            fresh.version, envelope["v"]))
                finally:
                    fresh.close()
                if self.members is not None:
                    self.members.close()
                os.rename(path + ".new", path)
                self.members = self._open_members()
        except (sign.SignatureError, members.MemberError, ValueError, MemoryError) as exc:
            try:
                os.remove(path + ".new")
            except OSError:
                pass
            self._refuse("members", envelope, exc)
            return
        self.log("MEMBERS installed version=%d count=%d" % (
            self.members.version, self.members.count))
        self._publish_status()

    def _refuse(self, kind, envelope, why):
        version = envelope.get("v") if isinstance(envelope, dict) else None
        self.log("REFUSED %s v=%s: %s" % (kind, version, why))
        self.link.publish(self._topic_refused, json.dumps(
            {"k": kind, "v": version, "why": str(why)}))

    # --- camera to relay -------------------------------------------------
    def _on_reject(self, reason, count):
        self.log("REJECT %s n=%d" % (self._reject_names[reason], count))

    def _open_members(self):
        path = self.fs + "/members.bin"
        try:
            os.stat(path)
        except OSError:
            return None
        try:
            member_list = members.MemberList(path)
            member_list.verify()
            return member_list
        except (OSError, members.MemberError) as exc:
            self.log("ALARM member list unusable: %s" % exc)
            return None

    def _member_status(self, read, time, quality):
        """The member list's verdict, or UNKNOWN without a list or a clock."""
        if self.members is None or quality == Q_UNSET:
            return members.UNKNOWN
        offset = self.tariff.utc_offset_minutes if self.tariff else self.site["utc_offset_minutes"]
        return self.members.lookup(read.plate, time, offset)[0]

    def _on_plate(self, read):
        now_ms = self.board.ticks_ms()
        try:
            read.plate = plate.normalise(read.plate)
        except plate.PlateError as exc:
            self.log("REJECT bad_plate %s" % exc)
            return
        if self._awaiting is not None:
            # A car is at the barrier paying: the cars behind it queue (a
            # few; the camera reads them again anyway as they move up).
            if read.plate == self._awaiting.plate or \
                    read.plate in [r.plate for r in self._queue]:
                return
            if len(self._queue) >= _QUEUE_MAX:
                self.log("WAIT full: plate=%s not queued (the camera reads it again)" %
                         read.plate)
                return
            self._queue.append(read)
            self.log("WAIT plate=%s: %s is paying" % (read.plate, self._awaiting.plate))
            return
        if self.lane.is_repeat(read.plate, now_ms):
            self.log("REPEAT plate=%s" % read.plate)
            return
        # The camera's time stands in for a clock never set (inline: a
        # helper returning both would put a tuple on the heap for every car).
        if not self.clock.valid() and read.camera_time >= EARLIEST_VALID:
            time, quality = read.camera_time, Q_CAMERA
        else:
            time, quality = self.clock.now(), self.clock.quality
        status = self._member_status(read, time, quality)
        if self.lane.direction == lane.DIRECTION_IN:
            if status == members.BLACKLISTED:
                self.log("DENIED plate=%s blacklisted" % read.plate)
                return
            event = self.lane.entry(read, time, quality)
            if status == members.MEMBER:
                event.flags |= record.FLAG_MEMBER
            self._pass(event)
            return
        if self._pending_exit is not None:
            self._charge_offline("superseded")
        pending = self.lane.start_exit(read, time, quality)
        if status == members.MEMBER:
            # Members leave at once, online or not: no fee to ask for.
            event = self.lane.finish_exit(pending, 0, record.FEE_OFFLINE,
                                          self.tariff.version if self.tariff else 0,
                                          pending.entry_time)
            event.flags |= record.FLAG_MEMBER
            self._pass(event)
            return
        if self.link.up:
            # The seq this exit will be journaled under, with the plate: an
            # answer to an earlier car cannot match (a seq handed out but
            # never written before a power cut comes again only with a new
            # query, whose plate the answer must also match).
            pending.request = self.journal.next_seq
            pending.deadline = ticks_add(now_ms, self.site["fee_timeout_ms"])
            query = {"r": pending.request, "p": read.plate, "c": read.colour,
                     "t": time, "et": pending.entry_time}
            self._pending_exit = pending
            if self.link.publish(self._topic_fee, json.dumps(query)):
                return
        self._pending_exit = pending
        self._charge_offline("link down")

    def _open_barrier(self):
        self.relay.set(True)
        self.openings += 1
        self._relay_off_at = ticks_add(self.board.ticks_ms(), self.site["relay_pulse_ms"])

    def _pass(self, event):
        """Journal the event, open the barrier, then the bookkeeping. The
        journal comes first: a power cut after the barrier opened but before
        the record was written would lose a car (and, at an exit, its fee)."""
        try:
            # Exits may use the journal's reserve: they carry a fee.
            n = record.encode_body_into(event, self._body_buf)
            event.seq = self.journal.append(event.kind, self._body_mv[:n],
                                            event.kind == record.KIND_EXIT)
        except JournalFull:
            self.log("ALARM journal full: event not journaled plate=%s" % event.plate)
        self._open_barrier()
        self.lane.note(event)
        if event.kind == record.KIND_EXIT:
            self.log("EVENT out seq=%d plate=%s t=%d q=%d fee=%d src=%s et=%d fl=%d" % (
                event.seq, event.plate, event.time, event.quality, event.fee,
                "on" if event.fee_source == record.FEE_ONLINE else "off",
                event.entry_time, event.flags))
        else:
            self.log("EVENT in seq=%d plate=%s t=%d q=%d fl=%d" % (
                event.seq, event.plate, event.time, event.quality, event.flags))

    def _finish_exit(self, event):
        self._pending_exit = None
        if event.fee == 0:
            self.display.show("%s free" % event.plate)
        elif self.site["exit_policy"] == "owed":
            event.flags |= record.FLAG_OWED
            self.display.show("%s %d.%02d yuan owed" % ((event.plate,) + divmod(event.fee, 100)))
        else:
            self._awaiting = event
            self.display.show("%s %d.%02d yuan please pay" % (
                (event.plate,) + divmod(event.fee, 100)))
            self.log("AWAIT payment plate=%s fee=%d src=%s" % (
                event.plate, event.fee,
                "on" if event.fee_source == record.FEE_ONLINE else "off"))
            return
        self._pass(event)

    def _paid(self, how):
        """The waiting car has paid: record the exit as collected, open."""
        event = self._awaiting
        self._awaiting = None
        self.log("PAID plate=%s fee=%d by %s" % (event.plate, event.fee, how))
        self.display.show("%s paid, thank you" % event.plate)
        self._pass(event)

    def _on_paid(self, message):
        event = self._awaiting
        if event is not None and message.get("p") == event.plate and \
                message.get("fee") == event.fee:
            self._paid("lot server")

    def _on_command(self, envelope):
        """A signed remote open: run at most once, and never after its
        expiry (which must be near: an operator does not want a barrier
        opening minutes after asking)."""
        try:
            if not self.key:
                raise sign.SignatureError("no downlink key configured")
            if not self.clock.valid():
                raise sign.SignatureError("no trustworthy time to check the expiry")
            now = self.clock.now()
            sign.verify(self.key, envelope, "open", self.gate_id, self._last_command, now)
            if not envelope["x"]:
                raise sign.SignatureError("a command must carry an expiry")
            if envelope["x"] - now > self.site["command_max_s"]:
                raise sign.SignatureError("expiry %d s away, at most %d allowed" % (
                    envelope["x"] - now, self.site["command_max_s"]))
        except sign.SignatureError as exc:
            self._refuse("open", envelope, exc)
            return
        self._last_command = envelope["v"]
        self.log("OPEN remote command v=%d" % envelope["v"])
        self.display.show("opened by the lot office")
        self._open_barrier()

    def _charge_offline(self, why):
        pending = self._pending_exit
        if self.tariff is None:
            self.log("FEE unavailable plate=%s: no tariff and %s" % (pending.read.plate, why))
            self._pending_exit = None
            return
        self._finish_exit(self.lane.offline_exit(pending, self.tariff))

    # --- network -----------------------------------------------------------
    def _on_link_up(self):
        self.uplink.reset()
        self._publish_status()
        # Ask the lot server for the time on every (re)connect.
        self._clock_request = (self._clock_request + 1) & 0xFFFF
        self._clock_asked_at = self.board.ticks_ms()
        self.link.publish(self._topic_clock_ask, '{"r":%d}' % self._clock_request)

    def _on_clock(self, message):
        """Set the clock from the lot server's answer if it came back fast
        enough to be trusted to within a second."""
        if message.get("r") != self._clock_request or self._clock_asked_at is None:
            return
        round_trip = ticks_diff(self.board.ticks_ms(), self._clock_asked_at)
        self._clock_asked_at = None
        server_time = message.get("t")
        if type(server_time) is not int or server_time < EARLIEST_VALID or \
                round_trip > _CLOCK_MAX_ROUND_TRIP_MS:
            self.log("CLOCK answer refused t=%r rtt=%d" % (server_time, round_trip))
            return
        was = self.clock.now()
        self.clock.set(server_time + (round_trip + 500) // 2000, Q_SERVER)
        self.log("CLOCK set from lot server: step %d s, rtt %d ms" % (
            self.clock.now() - was, round_trip))

    def _publish_status(self):
        stats = self.journal.stats()
        gc.collect()   # so that "heap" is what is really free
        status = {"on": 1, "jid": self.journal.journal_id, "seq": self.journal.next_seq,
                  "acked": self.journal.acked, "backlog": stats["pending"],
                  "heap": self.board.free_heap(), "flash": self.board.free_flash(self.fs),
                  "clock": self.clock.quality,
                  "tv": self.tariff.version if self.tariff else None,
                  "mv": self.members.version if self.members else None}
        self.link.publish(self._topic_status, json.dumps(status), retain=True)
        self._last_status = self.board.ticks_ms()
        self.log("STATUS backlog=%d heap=%d" % (stats["pending"], status["heap"]))

    def _on_message(self, topic, payload):
        try:
            message = json.loads(payload)
        except ValueError:
            self.log("DOWNLINK refused: not JSON on %s" % topic)
            return
        except MemoryError:
            self.log("DOWNLINK dropped: %d bytes do not fit the heap" % len(payload))
            return
        if topic == self._topic_ack:
            if self.uplink.on_ack(message):
                self.log("ACK upto=%d" % self.journal.acked)
        elif topic == self._topic_fee_answer:
            self._on_fee_answer(message)
        elif topic.endswith(b"/up/events"):
            self._on_peer_events(message)
        elif topic == self._topic_tariff:
            self._install_tariff(message)
        elif topic == self._topic_clock:
            self._on_clock(message)
        elif topic == self._topic_members:
            self._install_members(message)
        elif topic == self._topic_paid:
            self._on_paid(message)
        elif topic == self._topic_open:
            self._on_command(message)

    def _on_fee_answer(self, message):
        pending = self._pending_exit
        if pending is None or message.get("r") != pending.request or \
                message.get("p") != pending.read.plate:
            return
        fee = message.get("fee")
        if type(fee) is not int or fee < 0:
            self.log("FEE refused answer %r" % (message,))
            return
        self._finish_exit(self.lane.finish_exit(
            pending, fee, record.FEE_ONLINE, message.get("tv") or 0, message.get("et")))

    def _on_peer_events(self, message):
        if message.get("g") == self.gate_id:
            return
        for wire in message.get("e", ()):
            try:
                self.lane.note(record.from_wire(wire))
            except record.RecordError:
                pass

    # --- the loop ----------------------------------------------------------
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
        if self._awaiting is not None and self.confirm.pressed():
            self._paid("attendant")
        if self._queue and self._awaiting is None and self._pending_exit is None:
            self._on_plate(self._queue.pop(0))    # the next car moves up
        if self._relay_off_at is not None and ticks_diff(now, self._relay_off_at) >= 0:
            self.relay.set(False)
            self._relay_off_at = None
        pending = self._pending_exit
        if pending is not None and ticks_diff(now, pending.deadline) >= 0:
            self._charge_offline("fee timeout")
        if not busy:
            busy = self.link.service(now) or self.uplink.service(now)
            if self.link.up and ticks_diff(now, self._last_status) >= _STATUS_EVERY_MS:
                self._publish_status()
        if not busy and self._relay_off_at is None and self._pending_exit is None \
                and self._awaiting is None:
            busy = self.journal.maintain() or self.checkpoint.service()
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
