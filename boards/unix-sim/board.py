# Board: unix-sim. The gate firmware on the MicroPython unix port, driven by
# the host simulator (host_tools/parkgate_tools/sim.py) through a folder:
#   flash.img  the emulated 2 MiB NOR flash (littlefs + raw journal region);
#              killing the process is a power cut, restarting it a reboot
#   uart       a pseudo-terminal (socat pair): the camera's serial line
#   gpio.log   one line per output change: "<host unix time> <pin> <level>"
#   confirm.in the attendant's confirm button: one byte per press
#   display.log what the lane display showed: "<host unix time> <text>"
# Environment: PARKGATE_SIM_DIR (the folder), PARKGATE_SIM_CLOCK
# ("base,host_t0,rate": board time = base + (host time - host_t0) * rate;
# unset: the clock starts at the 2000 epoch like an ESP32 after a power cut).
import gc
import json
import os
import select
import socket
import sys
import termios
import time
import vfs

import flashdev
from flashdev import FlashDevice, Partition

NAME = "unix-sim"
BLOCK_SIZE = 4096
BLOCK_COUNT = 512          # 2 MiB: the filesystem share of a 4 MiB ESP32
FS_BLOCKS = 320            # littlefs: site config, tariff, member list
FS_PATH = "/flash"
RELAY_ACTIVE_LEVEL = 1     # relay module input is active high
_TERMIOS_VTIME = 5         # indices into termios cc on Linux
_TERMIOS_VMIN = 6
_ESP32_EPOCH = 946684800   # 2000-01-01 in unix seconds

SIM_DIR = os.getenv("PARKGATE_SIM_DIR") or "."
_flash = None
_mounted = False


def flash_device():
    global _flash
    if _flash is None:
        # The flash the port's boot script opened to mount it (repl_boot.py,
        # like esp32.Partition on a board), else our own: one per process.
        _flash = getattr(flashdev, "BOOT_DEVICE", None) or \
            FlashDevice(SIM_DIR + "/flash.img", BLOCK_SIZE, BLOCK_COUNT)
    return _flash


def _mounted_at(path):
    # True if a filesystem is mounted at path already: the REPL's boot script
    # (boards/unix-sim/port/repl_boot.py) mounts the flash before any board
    # module that a field tool deployed is imported.
    for _, where in vfs.mount():
        if where == path:
            return True
    return False


def mount_flash():
    """Mount littlefs on the filesystem region, formatting a blank one."""
    global _mounted
    if not _mounted and not _mounted_at(FS_PATH):
        region = Partition(flash_device(), 0, FS_BLOCKS)
        try:
            vfs.mount(vfs.VfsLfs2(region), FS_PATH)
        except OSError:
            vfs.VfsLfs2.mkfs(region)
            vfs.mount(vfs.VfsLfs2(region), FS_PATH)
        _mounted = True
    return FS_PATH


def journal_device():
    return Partition(flash_device(), FS_BLOCKS, BLOCK_COUNT - FS_BLOCKS)


def load_site():
    with open(mount_flash() + "/site.json") as f:
        return json.load(f)


def _parse_clock():
    spec = os.getenv("PARKGATE_SIM_CLOCK")
    if not spec:
        return None
    base, host_t0, rate = spec.split(",")
    return float(base), float(host_t0), float(rate)


# The simulated RTC: one per process, like the ESP32's, so a time set through
# one ClockSource (a field tool's set-clock) is what every other one reads.
_rtc = None


class ClockSource:
    """Board time in the port's epoch (1970 on unix)."""

    def __init__(self):
        global _rtc
        if _rtc is None:
            # Unset: the clock starts at the 2000 epoch at the first reading.
            _rtc = _parse_clock() or (_ESP32_EPOCH, time.time(), 1.0)

    def seconds(self):
        base, host_t0, rate = _rtc
        return base + (time.time() - host_t0) * rate

    def set_seconds(self, seconds):
        global _rtc
        _rtc = (seconds, time.time(), _rtc[2])


BOOT_CLOCK_QUALITY = 6 if os.getenv("PARKGATE_SIM_CLOCK") else 0


class Uart:
    """The camera line on a pseudo-terminal, read without blocking."""

    def __init__(self):
        self._file = None
        self._poll = select.poll()
        self._retry_at = 0
        self._open()

    def _open(self):
        try:
            f = open(SIM_DIR + "/uart", "r+b")
        except OSError as exc:
            log("CAMERA cannot open uart: %r" % (exc,))
            return
        attrs = termios.tcgetattr(f.fileno())
        attrs[6][_TERMIOS_VMIN] = 0     # read() returns what is there, even nothing
        attrs[6][_TERMIOS_VTIME] = 0
        termios.tcsetattr(f.fileno(), termios.TCSANOW, attrs)
        self._file = f
        self._poll = select.poll()
        self._poll.register(f, select.POLLIN)

    def _lost(self, exc):
        log("CAMERA line lost: %r" % (exc,))
        try:
            self._file.close()
        except OSError:
            pass
        self._file = None
        self._retry_at = time.ticks_add(time.ticks_ms(), 1000)

    def readinto(self, buf):
        if self._file is None:
            if time.ticks_diff(time.ticks_ms(), self._retry_at) >= 0:
                self._retry_at = time.ticks_add(time.ticks_ms(), 1000)
                self._open()
            return 0
        try:
            return self._file.readinto(buf) or 0
        except OSError as exc:
            self._lost(exc)
            return 0

    def wait(self, ms):
        if self._file is None:
            time.sleep_ms(ms)
            return
        events = self._poll.poll(ms)
        if events and events[0][1] & (select.POLLHUP | select.POLLERR):
            time.sleep_ms(ms)


class Relay:
    """The barrier relay; every change is appended to gpio.log."""

    def __init__(self):
        self._log = open(SIM_DIR + "/gpio.log", "a")
        self.on = False

    def set(self, on):
        self.on = on
        level = RELAY_ACTIVE_LEVEL if on else 1 - RELAY_ACTIVE_LEVEL
        self._log.write("%.6f relay %d\n" % (time.time(), level))
        self._log.flush()


class ConfirmButton:
    """The attendant's confirm button: the simulator appends one byte to
    confirm.in per press."""

    def __init__(self):
        path = SIM_DIR + "/confirm.in"
        try:
            self._file = open(path, "rb")
        except OSError:
            open(path, "wb").close()
            self._file = open(path, "rb")
        self._file.seek(0, 2)   # presses from before this boot are not for us

    def pressed(self):
        """True once for each press since the last call."""
        return bool(self._file.read(1))


class Display:
    """The lane display: every message is appended to display.log."""

    def __init__(self):
        self._log = open(SIM_DIR + "/display.log", "a")

    def show(self, text):
        self._log.write("%.6f %s\n" % (time.time(), text))
        self._log.flush()


class Watchdog:
    def __init__(self):
        self.feeds = 0

    def feed(self):
        self.feeds += 1


def mqtt(socket_timeout_ms):
    """(make_client, sockets) for the gate's Link: umqtt.simple on the port's sockets."""
    from parkgate.link import bind_umqtt
    return bind_umqtt(socket, socket_timeout_ms / 1000, time.ticks_ms)


def start_network(site):
    pass   # the host's loopback is always there


def network_up():
    return True


ticks_ms = time.ticks_ms


def free_heap():
    return gc.mem_free()


def free_flash(path=FS_PATH):
    st = os.statvfs(path)
    return st[0] * st[3]


def log(line):
    sys.stdout.write("%d %s\n" % (time.ticks_ms(), line))
