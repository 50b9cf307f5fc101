# Time on the gate: unix seconds (1970 epoch) everywhere in parkgate, with a
# quality saying where the time came from. The port's epoch is handled here
# and nowhere else. After a reset the boot rule (boot_quality) says whether
# the time the board's source still holds can be carried forward.
# Rules: firmware/docs/clocks.md.
import time

from parkgate.compat import const

# Clock quality, carried by every event (wire key "q").
Q_UNSET = const(0)      # never set since boot: the gate must not bill from it
Q_ESTIMATED = const(1)  # carried forward from an earlier known time
Q_CAMERA = const(2)     # taken from the camera's timestamp
Q_RTC = const(3)        # battery-backed RTC chip
Q_NTP = const(4)
Q_SERVER = const(5)     # set by the lot server
Q_MANUAL = const(6)     # set by a field tool or the simulator
QUALITY_NAMES = ("unset", "estimated", "camera", "rtc", "ntp", "server", "manual")

# Seconds from 1970-01-01 to the port's own epoch: 0 on unix, 946684800 on
# the ESP32 whose epoch is 2000-01-01.
EPOCH_OFFSET = 0 if time.gmtime(0)[0] == 1970 else 946684800
# Any time before this (2024-01-01) is a clock that was never set.
EARLIEST_VALID = const(1704067200)
# Sources whose time may be carried forward across a reset.
GOOD = (Q_RTC, Q_NTP, Q_SERVER, Q_MANUAL)
# How long after the last save by a good source a reset may still boot
# "estimated" (firmware/docs/clocks.md says why a day).
MAX_ESTIMATE_AGE_S = const(86400)
# How often the gate should save the last known time while idle.
SAVE_EVERY_MS = const(60000)
_RECORD_TAG = "PGT1"


def boot_quality(now, last_known, last_quality, kept_counting, source_quality=Q_UNSET,
                 max_age_s=MAX_ESTIMATE_AGE_S):
    """The clock quality to boot with. now: the source's time (unix);
    last_known, last_quality: the last time saved by the gate and its
    quality (None, None if nothing was saved); kept_counting: the board's
    word that its time source counted through this reset; source_quality:
    what the source vouches for by itself (Q_RTC for a DS3231 with its
    oscillator-stop flag clear, else Q_UNSET)."""
    if now < EARLIEST_VALID:
        return Q_UNSET
    if last_known is not None and now < last_known:
        return Q_UNSET              # the time ran backwards: the source is wrong
    if source_quality != Q_UNSET:
        return source_quality
    if kept_counting and last_known is not None and last_quality in GOOD and \
            now - last_known <= max_age_s:
        return Q_ESTIMATED
    return Q_UNSET


def _check(text):
    h = 0
    for c in text.encode():
        h = (h * 31 + c) % 65521
    return h


def encode_record(unix_seconds, quality):
    """The saved last-known time: ASCII "PGT1 <quality> <unix> <check>"."""
    body = "%d %d" % (quality, unix_seconds)
    return ("%s %s %d" % (_RECORD_TAG, body, _check(body))).encode()


def decode_record(data):
    """(unix_seconds, quality) of a saved record; None if data is not one."""
    try:
        fields = bytes(data).decode().split()
        if len(fields) != 4 or fields[0] != _RECORD_TAG:
            return None
        if int(fields[3]) != _check(fields[1] + " " + fields[2]):
            return None
        quality = int(fields[1])
        unix_seconds = int(fields[2])
    except ValueError:          # UnicodeError included
        return None
    if quality < 0 or quality >= len(QUALITY_NAMES):
        return None
    return unix_seconds, quality


class Clock:
    """Unix time with its quality. source: the board's time adapter with
    seconds() (port epoch) and set_seconds(port_seconds)."""

    def __init__(self, source, quality=Q_UNSET):
        self.source = source
        self.memory = None
        self.last_known = None
        self.quality = quality if self.now() >= EARLIEST_VALID else Q_UNSET

    def now(self):
        seconds = int(self.source.seconds())
        # Unix times are long ints on a 32-bit port: add nothing needlessly.
        return seconds + EPOCH_OFFSET if EPOCH_OFFSET else seconds

    def set(self, unix_seconds, quality):
        self.source.set_seconds(unix_seconds - EPOCH_OFFSET)
        self.quality = quality
        if self.memory is not None:
            self.save()

    def valid(self):
        return self.quality != Q_UNSET

    def boot(self, memory, kept_counting):
        """Apply the boot rule once, at boot: memory is the board's store of
        the last known time (read() -> bytes, write(bytes)), kept for save();
        kept_counting the board's kept_counting(). Sets and returns the
        quality; last_known holds what was read ((unix, quality) or None)."""
        self.memory = memory
        try:
            self.last_known = decode_record(memory.read())
        except OSError:
            self.last_known = None
        last, last_quality = self.last_known or (None, None)
        self.quality = boot_quality(self.now(), last, last_quality, kept_counting, self.quality)
        return self.quality

    def save(self):
        """Save the time as last known if its source is good (an estimated
        clock saves nothing: the estimate stays anchored to the last good
        time). True if saved. Cheap (a few dozen bytes); call it when idle
        every SAVE_EVERY_MS; set() calls it too."""
        if self.memory is None or self.quality not in GOOD:
            return False
        try:
            self.memory.write(encode_record(self.now(), self.quality))
        except OSError:
            return False
        return True
