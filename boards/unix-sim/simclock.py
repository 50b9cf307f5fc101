# The unix-sim board's time (boards/unix-sim/board.py imports it): ticks_ms()
# as on a 32-bit port, started PARKGATE_SIM_TICKS before its wrap; the RTC,
# which keeps counting through the resets that are not a power-on (the host
# says which in reset.cause), with its state in rtc and its memory in
# rtc.mem; and log(), a line stamped with the ticks.
import os
import sys
import time

import flashdev

SIM_DIR = os.getenv("PARKGATE_SIM_DIR") or "."
_ESP32_EPOCH = 946684800   # 2000-01-01 in unix seconds


def env_int(name, default):
    """The integer in the environment variable name, or default."""
    value = os.getenv(name)
    return int(value) if value else default


_DRIFT_PPM = env_int("PARKGATE_SIM_CLOCK_DRIFT_PPM", 0)

# ticks_ms() as on a 32-bit port, started PARKGATE_SIM_TICKS before its wrap.
_TICKS_MAX = time.ticks_add(0, -1)      # 2**30 - 1 on a 32-bit build
_ticks_offset = time.ticks_diff(
    time.ticks_add(_TICKS_MAX, 1 - env_int("PARKGATE_SIM_TICKS", 30000)), time.ticks_ms())


def ticks_ms():
    return time.ticks_add(time.ticks_ms(), _ticks_offset)


def log(line):
    sys.stdout.write("%d %s\n" % (ticks_ms(), line))


def _parse_clock():
    spec = os.getenv("PARKGATE_SIM_CLOCK")
    if not spec:
        return None
    base, host_t0, rate = spec.split(",")
    return float(base), float(host_t0), float(rate)


# Whether the RTC domain kept power through the reset that started this
# process (the host says so in reset.cause), as machine.reset_cause() tells
# an ESP32: then the RTC and its memory are as the last process left them.
_RTC_PATH = SIM_DIR + "/rtc"
_RTC_MEM_PATH = SIM_DIR + "/rtc.mem"


def _read_reset_cause():
    # Once per process: this module is imported twice (the boot module's
    # copy is dropped, simboot.py), so the verdict stays with the port's
    # flash module, as BOOT_DEVICE does.
    warm = getattr(flashdev, "RESET_WARM", None)
    if warm is not None:
        return warm
    try:
        with open(SIM_DIR + "/reset.cause") as f:
            cause = f.read().strip()
        os.remove(SIM_DIR + "/reset.cause")
    except OSError:
        cause = ""
    warm = cause in ("watchdog", "reset")
    if not warm:
        for path in (_RTC_PATH, _RTC_MEM_PATH):
            try:
                os.remove(path)
            except OSError:
                pass
    flashdev.RESET_WARM = warm
    return warm


_WARM = _read_reset_cause()


def kept_counting():
    """True if the board's clock counted through the reset that started
    this process (a watchdog or other reset, not a power-on)."""
    return _WARM


# The simulated RTC, one per process like the ESP32's, so a time set through
# one ClockSource (a field tool's set-clock) is what every other one reads.
# Board time = base + (host time - host_t0) * rate, kept as whole seconds
# plus milliseconds from an anchor on ticks, re-anchored every 10 s: a reading
# costs one long int (the time itself), as time.time() + epoch does on an
# ESP32, and no floats. The rate includes the drift (PARKGATE_SIM_CLOCK_DRIFT_PPM).
_REANCHOR_MS = 10000
_rtc = None     # [anchor seconds, anchor ms, anchor raw ticks, rate * 1000, remainder]


def _rtc_set(board_seconds, rate_milli):
    global _rtc
    whole = int(board_seconds)
    _rtc = [whole, int((board_seconds - whole) * 1000), time.ticks_ms(), rate_milli, 0]
    # The RTC domain's state, for a reset that keeps it (not on the hot path:
    # only when the clock is set).
    try:
        with open(_RTC_PATH, "w") as f:
            f.write("%r %r %d\n" % (board_seconds, time.time(), rate_milli))
    except OSError:
        pass


def _rtc_restore():
    # The RTC as the last process left it, counted on through the reset.
    try:
        with open(_RTC_PATH) as f:
            board_seconds, host_time, rate_milli = f.read().split()
        rate_milli = int(rate_milli)
        return float(board_seconds) + (time.time() - float(host_time)) * rate_milli / 1000, rate_milli
    except (OSError, ValueError):
        return None


def _rate_milli(rate):
    return int(rate * (1000000 + _DRIFT_PPM) / 1000 + 0.5)


class ClockSource:
    """Board time in the port's epoch (1970 on unix), whole seconds."""

    def __init__(self):
        if _rtc is None:
            restored = _rtc_restore() if _WARM else None
            spec = _parse_clock()
            if restored:
                _rtc_set(restored[0], restored[1])
            elif spec:
                base, host_t0, rate = spec
                _rtc_set(base + (time.time() - host_t0) * rate, _rate_milli(rate))
            else:
                # Unset: the clock starts at the 2000 epoch at the first reading.
                _rtc_set(_ESP32_EPOCH, _rate_milli(1.0))

    def seconds(self):
        rtc = _rtc
        now = time.ticks_ms()
        d = time.ticks_diff(now, rtc[2])
        if d > _REANCHOR_MS:
            scaled = d * rtc[3] + rtc[4]        # board ms * 1000, < 2**30
            ms = rtc[1] + scaled // 1000
            rtc[0] += ms // 1000
            rtc[1] = ms % 1000
            rtc[2] = now
            rtc[4] = scaled % 1000
            d = 0
        return rtc[0] + (rtc[1] + (d * rtc[3] + rtc[4]) // 1000) // 1000

    def set_seconds(self, seconds):
        _rtc_set(seconds, _rtc[3])


BOOT_CLOCK_QUALITY = 6 if os.getenv("PARKGATE_SIM_CLOCK") else 0


class ClockMemory:
    """The RTC memory (an ESP32's machine.RTC().memory()) in rtc.mem: kept
    across resets that are not a power-on."""

    def read(self):
        try:
            with open(_RTC_MEM_PATH, "rb") as f:
                return f.read()
        except OSError:
            return b""

    def write(self, data):
        with open(_RTC_MEM_PATH, "wb") as f:
            f.write(data)
