# The lane: which cars are inside, repeat reads, and the events an entry or an
# exit produces. Pure: no I/O, no clock of its own (callers pass times).
from parkgate import plate as plates
from parkgate import record
from parkgate import tariff as tariff_engine
from parkgate.compat import const, ticks_diff
from parkgate.sessions import OpenSessions

DIRECTION_IN = "in"
DIRECTION_OUT = "out"
_RECENT_MAX = const(32)   # plates remembered for the repeat filter
_LEFT_MAX = const(4)      # exits remembered across a reboot
# A read of a plate whose exit (journaled with the time of its read) is
# younger than this, with no entry of it heard since, is the car under the
# barrier read again, even after a long wait to pay: the tariff's
# grace_seconds (the time a paid car has to leave), this without a tariff.
LEFT_WINDOW_S = const(600)


class PendingExit:
    """An exit whose fee is being asked of the lot bridge."""
    held = False   # no fee can be found for it yet: it waits at the barrier

    def __init__(self, read, time, quality, entry_time):
        self.read = read
        self.time = time
        self.quality = quality
        self.entry_time = entry_time   # None when no entry record is known
        self.request = 0               # fee query id, while asking the bridge
        self.deadline = 0              # ticks_ms after which the gate charges offline


class Lane:
    def __init__(self, direction, repeat_window_ms=30000, inside_max=256):
        if direction not in (DIRECTION_IN, DIRECTION_OUT):
            raise ValueError("direction: %r is not in/out" % direction)
        self.direction = direction
        self.repeat_window_ms = repeat_window_ms
        # plate -> entry time (own and peer lanes' entries), at most
        # inside_max: beyond that the oldest entry is forgotten (its exit is
        # then charged online, or offline as an exit without entry).
        self.inside = OpenSessions(inside_max)
        self._recent = {}    # plate -> ticks_ms of its last accepted read
        # The last exits noted (unix times): they survive a reboot through
        # the journal replay, where the ticks of _recent do not.
        self._left_plates = [""] * _LEFT_MAX
        self._left_times = [0] * _LEFT_MAX
        self._left_next = 0

    def note(self, event):
        """Apply an entry or exit (journaled here, replayed at boot, or heard
        from another lane) to the set of cars inside. An entry flagged
        FLAG_NO_PASSAGE voids the entry of that plate at that time; an exit
        so flagged only marks one already applied."""
        known = self.inside.get(event.plate)
        if event.flags & record.FLAG_NO_PASSAGE:
            if event.kind == record.KIND_ENTRY and known == event.time:
                self.inside.remove(event.plate)
        elif event.kind == record.KIND_ENTRY:
            if known is None or known <= event.time:
                self.inside.put(event.plate, event.time)
            for i in range(_LEFT_MAX):    # it came back in: a new visit
                if self._left_plates[i] == event.plate:
                    self._left_times[i] = 0
        elif event.kind == record.KIND_EXIT:
            if known is not None and known <= event.time:
                self.inside.remove(event.plate)
            at = self._left_next
            self._left_plates[at] = event.plate
            self._left_times[at] = event.time
            self._left_next = (at + 1) % _LEFT_MAX

    def just_left(self, plate, time, window_s=LEFT_WINDOW_S):
        """True if plate left within window_s before time (unix seconds),
        or a misread of it (plate.similar) within the repeat window, and it
        has not come in since: the camera reading a car under the barrier
        again, after a long wait to pay or after a reboot emptied the
        repeat filter."""
        loose_s = self.repeat_window_ms // 1000
        for i in range(_LEFT_MAX):
            left = self._left_times[i]
            if not left:
                continue
            age = time - left
            if 0 <= age < window_s and (plate == self._left_plates[i] or (
                    age < loose_s and plates.similar(plate, self._left_plates[i]))):
                return True
        return False

    def is_repeat(self, plate, now_ms, loose=False):
        """True if plate (loose: or a misread of it, plate.similar) was
        accepted at this lane within the repeat window; otherwise
        remembers this read and returns False. Ticks wrap (every
        2**30 ms, 12.4 days, on a 32-bit port): a read is recent only if it
        is less than the window behind now, and expire() drops older ones
        before a wrap could make them look recent again."""
        recent = self._recent
        window = self.repeat_window_ms
        for seen in recent:   # keys only: items() would make a tuple per plate
            if 0 <= ticks_diff(now_ms, recent[seen]) < window and \
                    (plate == seen or (loose and plates.similar(plate, seen))):
                return True
        if len(self._recent) >= _RECENT_MAX:
            self.expire(now_ms)
            if len(self._recent) >= _RECENT_MAX:
                self._recent.clear()
        self._recent[plate] = now_ms
        return False

    def touch(self, plate, now_ms):
        """Restart plate's repeat window: the barrier just opened for it."""
        if plate in self._recent:
            self._recent[plate] = now_ms

    def forget(self, plate):
        """Undo is_repeat's acceptance of plate: its read was not acted on
        (a full queue), so the camera's next read of it must count."""
        self._recent.pop(plate, None)

    def expire(self, now_ms):
        """Forget the reads the repeat window no longer covers. The gate
        calls it while idle, far more often than once per 2**29 ms."""
        if self._recent:
            for old in [p for p, t in self._recent.items()
                        if not 0 <= ticks_diff(now_ms, t) < self.repeat_window_ms]:
                del self._recent[old]

    def entry(self, read, time, quality):
        """The entry event for a plate read at this lane."""
        flags = record.FLAG_REENTRY if read.plate in self.inside else 0
        return record.Event(record.KIND_ENTRY, time, quality, read.plate, read.colour,
                            read.confidence, flags)

    def start_exit(self, read, time, quality):
        return PendingExit(read, time, quality, self.inside.get(read.plate))

    def finish_exit(self, pending, fee, fee_source, tariff_version, entry_time):
        """The exit event once the fee is known (entry_time None: no entry)."""
        read = pending.read
        flags = record.FLAG_NO_ENTRY if entry_time is None else 0
        return record.Event(record.KIND_EXIT, pending.time, pending.quality, read.plate,
                            read.colour, read.confidence, flags, fee, fee_source,
                            tariff_version, entry_time or 0)

    def offline_exit(self, pending, tariff):
        """The exit event with the fee computed here from the tariff and the
        entry record this lane knows."""
        colour = pending.read.colour
        if pending.quality == 0:
            # No trustworthy time (clock never set, no camera time): a stay
            # cannot be measured, and the 2000 epoch must never be billed.
            quote = tariff_engine.quote_no_entry(tariff, pending.time, colour)
            event = self.finish_exit(pending, quote.fee, record.FEE_OFFLINE, tariff.version,
                                     pending.entry_time)
            event.flags |= record.FLAG_NO_CLOCK
            return event
        if pending.entry_time is None:
            quote = tariff_engine.quote_no_entry(tariff, pending.time, colour)
        else:
            # A clock stepped back between entry and exit (a resync, another
            # lane's clock) must not stop the car: charge the shortest stay.
            exit_time = max(pending.time, pending.entry_time)
            quote = tariff_engine.quote(tariff, pending.entry_time, exit_time, colour)
        return self.finish_exit(pending, quote.fee, record.FEE_OFFLINE, tariff.version,
                                pending.entry_time)
