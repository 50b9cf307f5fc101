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
from flashdev import STALL_ERASE, FlashDevice, Partition

NAME = "unix-sim"
BLOCK_SIZE = 4096
BLOCK_COUNT = 512          # 2 MiB: the filesystem share of a 4 MiB ESP32
FS_BLOCKS = 320            # littlefs: site config, tariff, member list
FS_PATH = "/flash"
RELAY_ACTIVE_LEVEL = 1     # relay module input is active high
_TERMIOS_VTIME = 5         # indices into termios cc on Linux
_TERMIOS_VMIN = 6
_ESP32_EPOCH = 946684800   # 2000-01-01 in unix seconds

_UART_FIFO = 128           # the ESP32 UART's hardware receive FIFO
_PAGE = 256                # NOR program page
_FEED_MARK_MS = 250        # how often a feed is written out for the host

SIM_DIR = os.getenv("PARKGATE_SIM_DIR") or "."


def _env_int(name, default):
    value = os.getenv(name)
    return int(value) if value else default


_STALL = (os.getenv("PARKGATE_SIM_FLASH_STALL") or "700,45000").split(",")
_STALL_PAGE_US = int(_STALL[0])
_STALL_ERASE_US = int(_STALL[1])
UART_RXBUF = _env_int("PARKGATE_SIM_UART_RXBUF", 512)
WATCHDOG_MS = _env_int("PARKGATE_SIM_WDT_MS", 8000)
_PROBE = os.getenv("PARKGATE_SIM_PROBE") == "heap"
_DRIFT_PPM = _env_int("PARKGATE_SIM_CLOCK_DRIFT_PPM", 0)
PASSAGE = os.getenv("PARKGATE_SIM_PASSAGE") == "1"

# ticks_ms() as on a 32-bit port, started PARKGATE_SIM_TICKS before its wrap.
_TICKS_MAX = time.ticks_add(0, -1)      # 2**30 - 1 on a 32-bit build
_ticks_offset = time.ticks_diff(
    time.ticks_add(_TICKS_MAX, 1 - _env_int("PARKGATE_SIM_TICKS", 30000)), time.ticks_ms())


def ticks_ms():
    return time.ticks_add(time.ticks_ms(), _ticks_offset)


_flash = None
_mounted = False
_uart = None               # the camera line, which loses bytes while the flash stalls


def _stall(kind, nbytes):
    # The whole chip stops while its flash is programmed or erased.
    if kind == STALL_ERASE:
        us = _STALL_ERASE_US
        if us:
            log("STALL erase %d us" % us)
    else:
        us = _STALL_PAGE_US * ((nbytes + _PAGE - 1) // _PAGE)
    if not us:
        return
    if _uart is not None:
        _uart.stall(us)
    else:
        time.sleep_us(us)


def flash_device():
    global _flash
    if _flash is None:
        # The flash the port's boot module opened to mount it (simboot.py,
        # like esp32.Partition on a board), else our own: one per process.
        _flash = getattr(flashdev, "BOOT_DEVICE", None) or \
            FlashDevice(SIM_DIR + "/flash.img", BLOCK_SIZE, BLOCK_COUNT, count_wear=False)
        _flash.stall = _stall
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
    # copy is dropped), so the verdict stays with the port's flash module,
    # as BOOT_DEVICE does.
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


class Uart:
    """The camera line on a pseudo-terminal, read without blocking, with the
    ESP32's receive path: a ring of UART_RXBUF bytes that the UART interrupt
    fills, and a 128-byte FIFO that alone takes bytes while the flash stalls
    the chip. Bytes beyond either are lost, and logged (UART overrun)."""

    def __init__(self):
        global _uart
        self._file = None
        self._poll = select.poll()
        self._retry_at = 0
        self._ring = bytearray(UART_RXBUF)
        self._ring_mv = memoryview(self._ring)
        self._head = 0
        self._len = 0
        self._scratch = bytearray(64)
        self._open()
        _uart = self

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
        self._retry_at = time.ticks_add(ticks_ms(), 1000)

    def _take(self, limit):
        # Move up to limit waiting bytes into the ring; drop the rest.
        if self._file is None:
            return 0
        if self._head:
            self._ring[0:self._len] = self._ring_mv[self._head:self._head + self._len]
            self._head = 0
        dropped = 0
        try:
            while limit > 0 and self._len < UART_RXBUF:
                end = self._len + min(limit, UART_RXBUF - self._len)
                n = self._file.readinto(self._ring_mv[self._len:end]) or 0
                if not n:
                    return 0
                self._len += n
                limit -= n
            while True:
                n = self._file.readinto(self._scratch) or 0
                if not n:
                    break
                dropped += n
        except OSError as exc:
            self._lost(exc)
        return dropped

    def _waiting(self):
        # True if the line holds unread bytes (ipoll allocates nothing).
        if self._file is None:
            return False
        for _, _ in self._poll.ipoll(0):
            return True
        return False

    def stall(self, us):
        """The chip stops for us: what arrived before was in the ring; of
        what arrives during the stall, the FIFO keeps 128 bytes."""
        before = self._take(UART_RXBUF) if self._waiting() else 0
        time.sleep_us(us)
        during = self._take(_UART_FIFO) if self._waiting() else 0
        if before or during:
            log("UART overrun: %d bytes lost (ring full %d, FIFO full during a %d us stall %d)"
                % (before + during, before, us, during))

    def readinto(self, buf):
        global _probe_mark
        if self._len:
            n = min(len(buf), self._len)
            buf[0:n] = self._ring_mv[self._head:self._head + n]
            self._head += n
            self._len -= n
            if not self._len:
                self._head = 0
        elif self._file is None:
            if time.ticks_diff(ticks_ms(), self._retry_at) >= 0:
                self._retry_at = time.ticks_add(ticks_ms(), 1000)
                self._open()
            return 0
        else:
            try:
                n = self._file.readinto(buf) or 0
            except OSError as exc:
                self._lost(exc)
                return 0
        if _PROBE and n:
            gc.collect()
            _probe_mark = gc.mem_alloc()
        return n

    def wait(self, ms):
        if self._file is None or self._len:
            time.sleep_ms(0 if self._len else ms)
            return
        for _, flags in self._poll.ipoll(ms):
            if flags & (select.POLLHUP | select.POLLERR):
                time.sleep_ms(ms)
            break


class Relay:
    """The barrier relay; every change is appended to gpio.log."""

    def __init__(self):
        self._log = open(SIM_DIR + "/gpio.log", "a")
        self.on = False

    def set(self, on):
        if _PROBE and on:
            # Heap allocated from the camera bytes to this call (no
            # collection ran in between: one ran just before them).
            log("PROBE car_alloc=%d" % (gc.mem_alloc() - _probe_mark))
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
_probe_mark = 0
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
        if _PROBE:
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


def free_heap():
    return gc.mem_free()


def free_flash(path=FS_PATH):
    st = os.statvfs(path)
    return st[0] * st[3]


def log(line):
    sys.stdout.write("%d %s\n" % (ticks_ms(), line))
