# The lane: which cars are inside, repeat reads, and the events an entry or an
# exit produces. Pure: no I/O, no clock of its own (callers pass times).
from parkgate import record
from parkgate import tariff as tariff_engine
from parkgate.compat import const, ticks_diff
from parkgate.sessions import OpenSessions

DIRECTION_IN = "in"
DIRECTION_OUT = "out"
_RECENT_MAX = const(32)   # plates remembered for the repeat filter


class PendingExit:
    """An exit whose fee is being asked of the lot bridge."""

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

    def note(self, event):
        """Apply an entry or exit (journaled here, replayed at boot, or heard
        from another lane) to the set of cars inside."""
        known = self.inside.get(event.plate)
        if event.kind == record.KIND_ENTRY:
            if known is None or known <= event.time:
                self.inside.put(event.plate, event.time)
        elif event.kind == record.KIND_EXIT:
            if known is not None and known <= event.time:
                self.inside.remove(event.plate)

    def is_repeat(self, plate, now_ms):
        """True if plate was accepted at this lane within the repeat window;
        otherwise remembers this read and returns False. Ticks wrap (every
        2**30 ms, 12.4 days, on a 32-bit port): a read is recent only if it
        is less than the window behind now, and expire() drops older ones
        before a wrap could make them look recent again."""
        last = self._recent.get(plate)
        if last is not None and 0 <= ticks_diff(now_ms, last) < self.repeat_window_ms:
            return True
        if len(self._recent) >= _RECENT_MAX:
            self.expire(now_ms)
            if len(self._recent) >= _RECENT_MAX:
                self._recent.clear()
        self._recent[plate] = now_ms
        return False

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
