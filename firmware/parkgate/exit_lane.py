# The exit lane as an explicit state machine. Pure: no I/O and no clock of
# its own. The gate feeds it events (a read, a fee answer, a payment, the
# confirm button, the passage input, link and lot-server presence changes,
# the time passing) and carries out the actions it asks of its port:
#
#   port.release(event)   journal the exit, then open the barrier
#   port.mark(event)      journal a record that opens nothing (an exit the
#                         passage input did not see go through)
#   port.ask_fee(query)   publish a fee query; False if it could not go out
#   port.next_request()   the id of the next fee query
#   port.member_status(read, time, quality)  the member list's verdict
#   port.show(text), port.log(line)
#
#           read          answer, timeout, link or server gone
#   IDLE ---------> ASKING -------------------------------> PAYING
#     ^  \ member, free, owed                                 | paid,
#     |   '--------------------> OPENING <--------------------' confirm
#     '----- pulse over, passage seen, passage timeout ----'
#
# Reads that arrive while a car is at the barrier (asking, paying, opening)
# queue behind it, up to QUEUE_MAX; a read of that car or of a queued car
# (the same plate, or a one-character misread of it) is the same car. Only
# the car at the barrier is ever released, and a car with a fee is released
# only once it has paid (or, under the "owed" policy, with its fee owed):
# no read ever opens the barrier past an unpaid car. A reboot starts a new
# machine: nothing was journaled for a car that had not been released, and
# the camera reads it again.
from parkgate import members, plate, record
from parkgate.lane import LEFT_WINDOW_S
from parkgate.compat import const, ticks_add, ticks_diff

IDLE = const(0)
ASKING = const(1)
PAYING = const(2)
OPENING = const(3)
STATE_NAMES = ("idle", "asking", "paying", "opening")
QUEUE_MAX = const(8)
# What became of a read.
READ_STARTED = const(0)
READ_QUEUED = const(1)
READ_SAME = const(2)
READ_REPEAT = const(3)
READ_FULL = const(4)

POLICY_CONFIRM = "confirm"   # a car with a fee waits for payment
POLICY_OWED = "owed"         # it leaves at once, its fee recorded as owed


def _on(source):
    return "on" if source == record.FEE_ONLINE else "off"


class ExitLane:
    IDLE_STATE = IDLE    # for a caller that does not import the module

    def __init__(self, lane, port, policy=POLICY_CONFIRM, fee_timeout_ms=1500,
                 pulse_ms=800, passage_ms=0):
        if policy not in (POLICY_CONFIRM, POLICY_OWED):
            raise ValueError("exit_policy: %r is not confirm/owed" % policy)
        self.lane = lane             # parkgate.lane.Lane: cars inside, repeat reads
        self.port = port
        self.policy = policy
        self.fee_timeout_ms = fee_timeout_ms
        self.pulse_ms = pulse_ms
        self.passage_ms = passage_ms   # 0: no passage input fitted
        self.tariff = None           # the gate sets it: the table offline fees use
        self.state = IDLE
        self.car = None              # PendingExit of the car at the barrier
        self.event = None            # its exit event, once the fee is known
        self.deadline = 0            # ticks_ms: fee timeout, or end of opening
        self.queue = []              # (read, time, quality, member status)
        self.link_up = False
        self.server = None           # lot server presence: None unknown, True, False

    # --- events in ---------------------------------------------------------
    def read(self, read, time, quality, now):
        """A plate read at this lane (normalised), with its time and clock
        quality. Returns READ_STARTED if that car is now at the barrier;
        any other outcome is logged."""
        lane = self.lane
        # Loose at an exit: a misread of the car that just left under the
        # barrier must not be charged as a new car (the cost: of two cars
        # whose plates differ in a confusable glyph, the second waits out
        # the repeat window).
        # A car that paid has the tariff's grace_seconds to leave (at least
        # the repeat window): its reads until then are that car again.
        window_s = lane.repeat_window_ms // 1000
        if self.tariff is not None and self.tariff.grace_seconds > window_s:
            window_s = self.tariff.grace_seconds
        elif self.tariff is None:
            window_s = LEFT_WINDOW_S
        if lane.is_repeat(read.plate, now, True) or \
                (quality and lane.just_left(read.plate, time, window_s)):
            self.port.log("REPEAT plate=%s" % read.plate)
            return READ_REPEAT
        if self.state == IDLE and not self.queue:
            self._start(read, time, quality, now)
            return READ_STARTED
        if self._same_car(read.plate):
            self.port.log("SAME plate=%s: the car at the barrier or queued" % read.plate)
            return READ_SAME
        if len(self.queue) >= QUEUE_MAX:
            lane.forget(read.plate)   # so the camera's next read of it counts
            self.port.log("WAIT full: plate=%s not queued (the camera reads it again)" %
                          read.plate)
            return READ_FULL
        self.queue.append((read, time, quality))
        if self.car is None:
            self.port.log("WAIT plate=%s: %d ahead" % (read.plate, len(self.queue) - 1))
            self._advance(now)
        else:
            self.port.log("WAIT plate=%s: %s is %s" % (
                read.plate, self.car.read.plate, STATE_NAMES[self.state]))
        return READ_QUEUED

    def fee_answer(self, request, plate_text, fee, tariff_version, entry_time, now):
        """The lot server's fee for a query (fields already validated)."""
        car = self.car
        if self.state != ASKING or request != car.request or plate_text != car.read.plate:
            self.port.log("FEE answer r=%d plate=%s is not for the car asked about" % (
                request, plate_text))
            return False
        self._charge(self.lane.finish_exit(car, fee, record.FEE_ONLINE, tariff_version,
                                           entry_time), now)
        return True

    def paid(self, plate_text, fee, how, now):
        """A payment for the car waiting at the barrier; False if it is not
        that car's (plate and fee must both match)."""
        event = self.event
        if self.state != PAYING or plate_text != event.plate or fee != event.fee:
            return False
        self.port.log("PAID plate=%s fee=%d by %s" % (event.plate, event.fee, how))
        self.port.show("%s paid, thank you" % event.plate)
        self._release(event, now)
        return True

    def confirm(self, now):
        """The attendant's button: the waiting car has paid at the booth.
        A car no fee can be found for (no tariff, no lot server) is let
        out with its fee owed, for the lot server to work out."""
        if self.state == PAYING:
            self.paid(self.event.plate, self.event.fee, "attendant", now)
        elif self.state == ASKING and self.tariff is None:
            car = self.car
            event = self.lane.finish_exit(car, 0, record.FEE_NONE, 0, car.entry_time)
            event.flags |= record.FLAG_OWED
            self.port.log("OWED plate=%s: let out by the attendant, fee unknown" % event.plate)
            self._release(event, now)

    def passage(self, now):
        """The passage input saw a car go through the barrier."""
        if self.state == OPENING:
            self._idle()
            self._advance(now)

    def link(self, up, now):
        self.link_up = up
        if not up and self.state == ASKING:
            self._offline("link down", now)

    def presence(self, online, now):
        """The lot server's retained presence: True online, False gone."""
        self.server = online
        if not online and self.state == ASKING:
            self._offline("lot server gone", now)

    def tick(self, now):
        """Time passing: fee timeouts, the end of an opening, the next car."""
        if self.state == ASKING:
            if ticks_diff(now, self.deadline) >= 0:
                self._offline("fee timeout", now)
        elif self.state == OPENING:
            if ticks_diff(now, self.deadline) >= 0:
                if self.passage_ms:
                    event = self.event
                    self.port.log("PASSAGE none plate=%s: exit flagged" % event.plate)
                    self.port.mark(record.Event(
                        record.KIND_EXIT, event.time, event.quality, event.plate,
                        event.colour, event.confidence, record.FLAG_NO_PASSAGE,
                        entry_time=event.entry_time))
                self._idle()
        self._advance(now)

    # --- the lane's work ---------------------------------------------------
    def _advance(self, now):
        """The next car moves up to a free barrier."""
        if self.state == IDLE and self.queue:
            read, time, quality = self.queue.pop(0)
            self._start(read, time, quality, now)

    def _same_car(self, text):
        if self.car is not None and plate.similar(text, self.car.read.plate):
            return True
        for queued in self.queue:
            if plate.similar(text, queued[0].plate):
                return True
        return False

    def _start(self, read, time, quality, now):
        lane = self.lane
        car = lane.start_exit(read, time, quality)
        self.car = car
        if self.port.member_status(read, time, quality) == members.MEMBER:
            # Members leave at once, online or not: no fee to ask for.
            event = lane.finish_exit(car, 0, record.FEE_OFFLINE,
                                     self.tariff.version if self.tariff else 0, car.entry_time)
            event.flags |= record.FLAG_MEMBER
            self._release(event, now)
            return
        if self.link_up and self.server is not False:
            if self._ask(car):
                self.state = ASKING
                self.deadline = ticks_add(now, self.fee_timeout_ms)
                return
            why = "link down"
        else:
            why = "lot server gone" if self.link_up else "link down"
        self._offline(why, now)

    def _ask(self, car):
        """Publish the fee query for the car at the barrier; False if it
        could not go out."""
        car.request = self.port.next_request()
        read = car.read
        return self.port.ask_fee({"r": car.request, "p": read.plate, "c": read.colour,
                                  "t": car.time, "et": car.entry_time})

    def _offline(self, why, now):
        car = self.car
        if self.tariff is None:
            # No fee to charge: the car stays at the shut barrier, asking
            # again while the lot server may answer, until a fee comes or
            # the attendant lets it out (confirm).
            if not car.held:
                car.held = True
                self.port.log("FEE unavailable plate=%s: no tariff and %s" % (
                    car.read.plate, why))
            self.state = ASKING
            self.deadline = ticks_add(now, self.fee_timeout_ms)
            if self.link_up and self.server is not False:
                self._ask(car)
            return
        self.port.log("FEE offline plate=%s: %s" % (car.read.plate, why))
        self._charge(self.lane.offline_exit(car, self.tariff), now)

    def _charge(self, event, now):
        if event.fee == 0:
            self.port.show("%s free" % event.plate)
        elif self.policy == POLICY_OWED:
            event.flags |= record.FLAG_OWED
            self.port.show("%s %d.%02d yuan owed" % ((event.plate,) + divmod(event.fee, 100)))
        else:
            self.state = PAYING
            self.event = event
            self.port.show("%s %d.%02d yuan please pay" % ((event.plate,) + divmod(event.fee, 100)))
            self.port.log("AWAIT payment plate=%s fee=%d src=%s" % (
                event.plate, event.fee, _on(event.fee_source)))
            return
        self._release(event, now)

    def _release(self, event, now):
        self.port.release(event)
        self.lane.touch(self.car.read.plate, now)
        self.event = event
        self.state = OPENING
        self.deadline = ticks_add(now, self.passage_ms or self.pulse_ms)

    def _idle(self):
        self.state = IDLE
        self.car = None
        self.event = None
