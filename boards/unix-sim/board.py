# Board: unix-sim. The gate firmware on the MicroPython unix port, driven by
# the host simulator (host_tools/parkgate_tools/sim/gate.py) through a folder:
#   flash.img  the emulated 2 MiB NOR flash (littlefs + raw journal region);
#              killing the process is a power cut, restarting it a reboot
#   uart       a pseudo-terminal (socat pair): the camera's serial line
#   gpio.log   one line per output change: "<host unix time> <pin> <level>"
#   confirm.in the attendant's confirm button: one byte per press
#   display.log what the lane display showed: "<host unix time> <text>"
#   watchdog   created when the gate arms its watchdog (the timeout in ms),
#              then one byte per feed mark; the host resets the gate (kills
#              and restarts the process) when it stops growing
#   hang.relay present: the next relay change hangs the adapter (a stuck
#              driver) until the watchdog resets the gate; removed when taken
#   passage.in the passage input (PARKGATE_SIM_PASSAGE=1): one byte per car
#              that went through
#   reset.cause written by the host before it starts the gate: "watchdog" or
#              "reset" (the RTC domain kept power: rtc and rtc.mem are kept)
#              or anything else / absent (a power-on: both are dropped);
#              removed when read
#   rtc        the RTC's state, "board_seconds host_time rate_milli", kept
#              across resets that are not a power-on, as an ESP32's RTC
#   rtc.mem    the RTC memory (machine.RTC().memory() on an ESP32): the
#              gate's last known time, lost with the RTC at a power-on
# Environment:
#   PARKGATE_SIM_DIR    the folder
#   PARKGATE_SIM_CLOCK  "base,host_t0,rate": board time = base + (host time -
#                       host_t0) * rate; unset: the clock starts at the 2000
#                       epoch, like an ESP32 after a power cut
#   PARKGATE_SIM_TICKS  ms from boot to the wrap of ticks_ms() (default
#                       30000: every run crosses the 2**30 ms wrap of a
#                       32-bit port in its first minute)
#   PARKGATE_SIM_FLASH_STALL "page_us,erase_us": how long the whole gate
#                       stops per started 256-byte page programmed and per
#                       4 KiB sector erased (default "700,45000"; "0,0" off).
#                       Typical SPI NOR figures (Winbond W25Q32JV datasheet:
#                       page program 0.4 ms typ / 3 ms max, sector erase
#                       45 ms typ / 400 ms max); an ESP32 stalls its whole
#                       chip, interrupts included, while its flash is written
#   PARKGATE_SIM_UART_RXBUF  the UART driver's receive ring (default 512 B).
#                       While the flash stalls only the 128-byte hardware FIFO
#                       takes bytes; the rest of what arrives is lost, as on
#                       an ESP32 (its UART interrupt is not in IRAM)
#   PARKGATE_SIM_WDT_MS the watchdog timeout (default 8000, as the ESP32 boards)
#   PARKGATE_SIM_PROBE  "heap": sample the heap after every pass and measure
#                       what each car allocates from frame to relay (bench only)
#   PARKGATE_SIM_CLOCK_DRIFT_PPM  how fast (or, negative, slow) the board's
#                       clock runs against the host's, in ppm (200000: 20 %
#                       fast); resolution 1000 ppm
#   PARKGATE_SIM_PASSAGE "1": a passage input is fitted (PASSAGE, PassageSensor)
# The board's time (ticks, RTC, reset cause, log) is simclock.py, its camera
# line and the flash stall simuart.py; the interface: boards/interface.py.
import gc
import json
import os
import socket
import sys
import time
import vfs

import flashdev
import simuart
from flashdev import FlashDevice, Partition
from simclock import (BOOT_CLOCK_QUALITY, SIM_DIR, ClockMemory, ClockSource,  # noqa: F401
                      env_int, kept_counting, log, ticks_ms)
from simuart import PROBE, Uart  # noqa: F401

NAME = "unix-sim"
BLOCK_SIZE = 4096
BLOCK_COUNT = 512          # 2 MiB: the filesystem share of a 4 MiB ESP32
FS_BLOCKS = 320            # littlefs: site config, tariff, member list
FS_PATH = "/flash"
RELAY_ACTIVE_LEVEL = 1     # relay module input is active high
_FEED_MARK_MS = 250        # how often a feed is written out for the host

WATCHDOG_MS = env_int("PARKGATE_SIM_WDT_MS", 8000)
PASSAGE = os.getenv("PARKGATE_SIM_PASSAGE") == "1"

_flash = None
_mounted = False


def flash_device():
    global _flash
    if _flash is None:
        # The flash the port's boot module opened to mount it (simboot.py,
        # like esp32.Partition on a board), else our own: one per process.
        _flash = getattr(flashdev, "BOOT_DEVICE", None) or \
            FlashDevice(SIM_DIR + "/flash.img", BLOCK_SIZE, BLOCK_COUNT, count_wear=False)
        _flash.stall = simuart.flash_stall
    return _flash


def _mounted_at(path):
    # True if a filesystem is mounted at path already: the image's boot
    # module (boards/unix-sim/port/simboot.py) mounts it first.
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


class Relay:
    """The barrier relay; every change is appended to gpio.log."""

    def __init__(self):
        self._log = open(SIM_DIR + "/gpio.log", "a")
        self.on = False

    def set(self, on):
        if PROBE and on:
            # Heap allocated from the camera bytes to this call (no
            # collection ran in between: one ran just before them).
            log("PROBE car_alloc=%d" % (gc.mem_alloc() - simuart.probe_mark))
        if _exists(_HANG_PATH):
            os.remove(_HANG_PATH)
            log("HANG relay adapter stuck")
            while True:
                time.sleep_ms(100)
        self.on = on
        level = RELAY_ACTIVE_LEVEL if on else 1 - RELAY_ACTIVE_LEVEL
        self._log.write("%.6f relay %d\n" % (time.time(), level))
        self._log.flush()


class _HostInput:
    """An input the simulator drives by appending one byte per event to a
    file in the gate's folder (SimGate.press_confirm, SimGate.pass_car)."""

    def __init__(self, name):
        path = SIM_DIR + "/" + name
        try:
            self._file = open(path, "rb")
        except OSError:
            open(path, "wb").close()
            self._file = open(path, "rb")
        self._file.seek(0, 2)   # events from before this boot are not for us
        self._byte = bytearray(1)

    def _event(self):
        # True once for each event since the last call (allocates nothing)
        return bool(self._file.readinto(self._byte))


class ConfirmButton(_HostInput):
    """The attendant's confirm button: one byte in confirm.in per press."""

    def __init__(self):
        super().__init__("confirm.in")

    def pressed(self):
        """True once for each press since the last call."""
        return self._event()


class PassageSensor(_HostInput):
    """The passage input (PASSAGE, PARKGATE_SIM_PASSAGE=1): one byte in
    passage.in per car that went through."""

    def __init__(self):
        super().__init__("passage.in")

    def passed(self):
        """True once for each car since the last call."""
        return self._event()


class Display:
    """The lane display: every message is appended to display.log."""

    def __init__(self):
        self._log = open(SIM_DIR + "/display.log", "a")

    def show(self, text):
        self._log.write("%.6f %s\n" % (time.time(), text))
        self._log.flush()


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


_HANG_PATH = SIM_DIR + "/hang.relay"
_probe_min = 1 << 29
_probe_feeds = 0


def _probe_heap():
    # After a collection: what the gate holds live at the end of a pass.
    global _probe_min, _probe_feeds
    gc.collect()
    free = gc.mem_free()
    _probe_feeds += 1
    if free < _probe_min or _probe_feeds >= 200:
        if free < _probe_min:
            _probe_min = free
        _probe_feeds = 0
        log("PROBE heap free=%d" % free)
        import micropython
        micropython.mem_info()     # its "max free sz" is the largest free block


class Watchdog:
    """The hardware watchdog: the host simulator kills and restarts the gate
    (a reset) when it is not fed for WATCHDOG_MS."""

    def __init__(self):
        self._file = open(SIM_DIR + "/watchdog", "w")
        self._file.write("%d\n" % WATCHDOG_MS)
        self._file.flush()
        self._marked = ticks_ms()

    def feed(self):
        now = ticks_ms()
        if time.ticks_diff(now, self._marked) >= _FEED_MARK_MS:
            self._file.write(".")
            self._file.flush()
            self._marked = now
        if PROBE:
            _probe_heap()


def mqtt(socket_timeout_ms):
    """(make_client, sockets) for the gate's Link: umqtt.simple on the port's sockets."""
    from parkgate.link import bind_umqtt
    return bind_umqtt(socket, socket_timeout_ms / 1000, ticks_ms)


def start_network(site):
    pass   # the host's loopback is always there


def network_up():
    return True


def udp_socket():
    """A non-blocking UDP socket for SNTP (the host's loopback is always up)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    return sock


def ntp_server(site):
    """The sockaddr of site.json "ntp" ("a.b.c.d" or "a.b.c.d:port"), as the
    unix port's sendto takes it, or None (no server, or a name)."""
    from parkgate.sntp import server_address
    address = server_address(site.get("ntp"))
    if address is None:
        return None
    return socket.getaddrinfo(address[0], address[1])[0][-1]


def ota_slots():
    """The two image slots (ota_slots.py: esp32.Partition's interface over
    files in the gate's folder), or None when the simulator started this gate
    without them (SimGate(..., slots=True) writes the folder's otadata)."""
    import ota_slots as slots
    # Off sys.modules at once: the slots keep what they use, and once the gate
    # drops them its heap is what an ESP32's would be (esp32.Partition is C).
    sys.modules.pop("ota_slots", None)
    return slots.open_slots(SIM_DIR, simuart.flash_stall)


def reset():
    """machine.reset(): the log flushed, the process ends; the simulator
    starts the gate again (through its boot selector, SimGate(slots=...);
    without slots its watchdog does, once it is not fed)."""
    try:
        sys.stdout.flush()
    except AttributeError:
        pass
    sys.exit(0)


def free_heap():
    return gc.mem_free()


def free_flash(path=FS_PATH):
    st = os.statvfs(path)
    return st[0] * st[3]
