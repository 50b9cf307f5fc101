# Time on the gate: unix seconds (1970 epoch) everywhere in parkgate, with a
# quality saying where the time came from. The port's epoch is handled here
# and nowhere else.
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


class Clock:
    """Unix time with its quality. source: the board's time adapter with
    seconds() (port epoch) and set_seconds(port_seconds)."""

    def __init__(self, source, quality=Q_UNSET):
        self.source = source
        self.quality = quality if self.now() >= EARLIEST_VALID else Q_UNSET

    def now(self):
        seconds = int(self.source.seconds())
        # Unix times are long ints on a 32-bit port: add nothing needlessly.
        return seconds + EPOCH_OFFSET if EPOCH_OFFSET else seconds

    def set(self, unix_seconds, quality):
        self.source.set_seconds(unix_seconds - EPOCH_OFFSET)
        self.quality = quality

    def valid(self):
        return self.quality != Q_UNSET
