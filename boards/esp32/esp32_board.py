# The ESP32 adapters every ESP32 board shares (boards/esp32-devkitc,
# boards/wt32-eth01, boards/esp32-s3-devkitc-1-n8r8): the camera UART, the
# relay, the confirm button, the passage input, the clock (the chip's RTC and
# a DS3231 when fitted), the watchdog, flash and journal partition, sockets,
# the two app slots of an update over the air and reset().
# A board's board.py holds what differs: its pins, its network and, in its
# header, its flash layout; it imports the adapters from here. They read the
# pins from that module (`import board`, at call time: board.py imports this
# module first) and note on it what the site has fitted (board.PASSAGE) and
# the boot clock quality (board.BOOT_CLOCK_QUALITY). Import board, not this.
# The board interface: boards/interface.py.
import esp32
import gc
import json
import machine
import network
import os
import socket
import sys
import time
from micropython import const

import board
from parkgate.clock import EPOCH_OFFSET, Q_RTC

UART_BAUD = 115200
# The camera UART's receive ring (machine.UART rxbuf: the ESP-IDF driver's
# buffer, taken from the ESP-IDF heap, not the Python heap; the port's
# default is 256 B). At 115200 8N1 the line brings 11.5 bytes a millisecond.
# - While the flash is erased or written the UART interrupt cannot run (the
#   driver is installed without an IRAM flag): only the 128-byte hardware
#   FIFO takes bytes, about 11 ms. No rxbuf helps there; the journal erases
#   its next block only while the lane is idle (parkgate.app, maintain()).
# - The ring covers the pauses in which the interrupt runs but Python does
#   not read: the longest is a socket call of the MQTT link blocked for its
#   timeout (site "socket_timeout_ms", 500 ms by default), then a GC pass
#   (about 2 ms without PSRAM, 100 ms and more with it).
# - In such a pause the camera sends a result frame or two (one per car,
#   plus heartbeats): a Vzenith frame is an 8-byte header and a JSON body of
#   several hundred bytes, of which the parser keeps up to 1024
#   (parkgate.vzenith.MAX_BODY): two of the largest are 2 x 1032 = 2064 B.
# 4096 B holds that with room to spare, and 355 ms of bytes back to back.
UART_RXBUF = const(4096)
FS_PATH = "/"
WATCHDOG_MS = 8000
RTC_I2C_ID = 0             # the DS3231 (pins in the board's board.py and board.json "i2c")
RTC_RESYNC_MS = 3600000    # the chip's RTC is read back from the DS3231 hourly
PASSAGE_ACTIVE_LEVEL = 0
PASSAGE_MIN_MS = 50        # shorter activations are contact bounce or noise

# What load_site() found fitted: the RTC chip (site.json "rtc"); the
# passage input (site.json "passage") is noted as board.PASSAGE.
_rtc_chip = None
_site_read = False


def mount_flash():
    return FS_PATH          # MicroPython's _boot.py mounts the vfs partition at /


def journal_device():
    found = esp32.Partition.find(esp32.Partition.TYPE_DATA, label="journal")
    if not found:
        raise OSError("no journal partition: flash boards/%s/partitions.csv" % board.NAME)
    return found[0]


def load_site():
    """site.json; notes what it says is fitted (board.PASSAGE, the RTC chip)."""
    global _rtc_chip, _site_read
    with open("/site.json") as f:
        site = json.load(f)
    board.PASSAGE = bool(site.get("passage"))
    _rtc_chip = site.get("rtc")
    _site_read = True
    return site


def _set_esp32_rtc(seconds):
    tm = time.gmtime(seconds)
    machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], 0))


class ClockSource:
    """The chip's RTC, in the port's epoch (2000-01-01). With a DS3231
    fitted (site.json "rtc": "ds3231") the RTC is set from the chip when its
    oscillator-stop flag is clear (then board.BOOT_CLOCK_QUALITY is Q_RTC),
    read back from it every RTC_RESYNC_MS, and every set_seconds() goes to
    both (which makes the chip trustworthy again)."""

    def __init__(self):
        self.chip = None
        self.trusted = False
        self._synced = time.ticks_ms()
        if not _site_read:
            try:
                load_site()
            except (OSError, ValueError):
                pass
        board.BOOT_CLOCK_QUALITY = 0
        if _rtc_chip == "ds3231":
            from parkgate.ds3231 import DS3231
            self.chip = DS3231(machine.I2C(RTC_I2C_ID, scl=machine.Pin(board.RTC_SCL),
                                           sda=machine.Pin(board.RTC_SDA), freq=100000))
            if self._from_chip():
                board.BOOT_CLOCK_QUALITY = Q_RTC
            else:
                log("CLOCK DS3231 not trusted: no answer or its oscillator stopped")

    def _from_chip(self):
        # The chip's RTC from the DS3231, if the DS3231's time can be trusted.
        chip = self.chip
        self.trusted = False
        if chip is not None and chip.valid():
            try:
                _set_esp32_rtc(chip.seconds() - EPOCH_OFFSET)
                self.trusted = True
            except (OSError, ValueError):
                pass
        return self.trusted

    def seconds(self):
        if self.trusted and time.ticks_diff(time.ticks_ms(), self._synced) >= RTC_RESYNC_MS:
            self._synced = time.ticks_ms()
            self._from_chip()           # failing, the chip's RTC goes on alone
        return time.time()

    def set_seconds(self, seconds):
        _set_esp32_rtc(seconds)
        if self.chip is not None:
            try:
                self.chip.set_seconds(seconds + EPOCH_OFFSET)
                self.trusted = True
                self._synced = time.ticks_ms()
            except (OSError, ValueError) as exc:
                log("CLOCK DS3231 not set: %r" % (exc,))


# Resets through which the ESP32's RTC keeps counting: all but a power-on
# or brownout (ESP-IDF system time: only a power-up reset resets the RTC
# timer; MicroPython's machine.reset_cause() names both PWRON_RESET).
_KEPT_COUNTING = (machine.SOFT_RESET, machine.HARD_RESET, machine.WDT_RESET,
                  machine.DEEPSLEEP_RESET)


def kept_counting():
    """True if the time source counted through the last reset: a trusted
    DS3231 always does (call after ClockSource())."""
    return board.BOOT_CLOCK_QUALITY == Q_RTC or machine.reset_cause() in _KEPT_COUNTING


class ClockMemory:
    """The gate's last known time (parkgate.clock.Clock.boot/save) in RTC
    slow memory (machine.RTC().memory(), up to 2048 bytes): it survives every
    reset but a power-on, the same resets through which the RTC keeps
    counting, and writing it costs no flash."""

    def read(self):
        return machine.RTC().memory()

    def write(self, data):
        machine.RTC().memory(data)


class Uart:
    """The camera line: board.UART_ID on board.UART_RX/UART_TX, 8N1."""

    def __init__(self):
        self._uart = machine.UART(board.UART_ID, baudrate=UART_BAUD, rx=board.UART_RX,
                                  tx=board.UART_TX, timeout=0, rxbuf=UART_RXBUF)

    def readinto(self, buf):
        return self._uart.readinto(buf) or 0

    def wait(self, ms):
        time.sleep_ms(ms)


class Relay:
    """The barrier relay module's input on board.RELAY_PIN, on at
    board.RELAY_ACTIVE_LEVEL."""

    def __init__(self):
        self._on_level = board.RELAY_ACTIVE_LEVEL
        self._pin = machine.Pin(board.RELAY_PIN, machine.Pin.OUT, value=1 - self._on_level)
        self.on = False

    def set(self, on):
        self.on = on
        self._pin.value(self._on_level if on else 1 - self._on_level)


class ConfirmButton:
    """The attendant's confirm button between board.CONFIRM_PIN and GND."""

    def __init__(self):
        self._pin = machine.Pin(board.CONFIRM_PIN, machine.Pin.IN, machine.Pin.PULL_UP)
        self._was_down = False
        self._since = time.ticks_ms()

    def pressed(self):
        """True once per press (debounced: 50 ms down)."""
        down = self._pin.value() == 0
        now = time.ticks_ms()
        if down != self._was_down:
            if time.ticks_diff(now, self._since) < 50:
                return False
            self._was_down = down
            self._since = now
            return down
        return False


class PassageSensor:
    """The passage input on board.PASSAGE_PIN (site.json "passage": true;
    board.PASSAGE), with the internal pull-up if board.PASSAGE_PULL_UP.
    passed() is True once per car. A pin interrupt on both edges times each
    activation, so none is missed while the gate loop is busy (a socket
    call, a garbage collection); an activation shorter than PASSAGE_MIN_MS
    is a bounce and does not count; one counts when it ends."""

    def __init__(self):
        if board.PASSAGE_PULL_UP:
            self._pin = machine.Pin(board.PASSAGE_PIN, machine.Pin.IN, machine.Pin.PULL_UP)
        else:
            self._pin = machine.Pin(board.PASSAGE_PIN, machine.Pin.IN)   # external pull-up
        self._active = self._pin.value() == PASSAGE_ACTIVE_LEVEL
        self._since = time.ticks_ms()
        self._count = 0
        self._taken = 0
        self._pin.irq(handler=self._edge, trigger=machine.Pin.IRQ_FALLING | machine.Pin.IRQ_RISING,
                      hard=True)

    def _edge(self, pin):
        # A hard interrupt: small ints and attribute stores only (no heap).
        now = time.ticks_ms()
        if pin.value() == PASSAGE_ACTIVE_LEVEL:
            if not self._active:
                self._active = True
                self._since = now
        elif self._active:
            self._active = False
            if time.ticks_diff(now, self._since) >= PASSAGE_MIN_MS:
                self._count += 1

    def passed(self):
        """True once for each car that went through since the last call."""
        if self._taken != self._count:
            self._taken += 1
            return True
        return False


class Display:
    """No display on these boards: what the lane would show goes to the log."""

    def show(self, text):
        log("DISPLAY " + text)


class Watchdog:
    def __init__(self):
        self._wdt = machine.WDT(timeout=WATCHDOG_MS)

    def feed(self):
        self._wdt.feed()


# WiFi, the network of the boards without Ethernet: their board.py imports
# these as its start_network() and network_up().
_wlan = None


def start_wifi(site):
    """Start joining the site's WiFi; returns at once (the link waits for it)."""
    global _wlan
    _wlan = network.WLAN(network.STA_IF)
    _wlan.active(True)
    if not _wlan.isconnected():
        _wlan.connect(site["wifi_ssid"], site["wifi_password"])


def wifi_up():
    return _wlan is not None and _wlan.isconnected()


def udp_socket():
    """A non-blocking UDP socket for SNTP, or None while the network is down."""
    if not board.network_up():
        return None
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    return sock


def ntp_server(site):
    """(ip, port) of site.json "ntp" ("a.b.c.d" or "a.b.c.d:port"), or None:
    an address only, since resolving a name would block the lane."""
    from parkgate.sntp import server_address
    return server_address(site.get("ntp"))


def mqtt(socket_timeout_ms):
    from parkgate.link import bind_umqtt
    return bind_umqtt(socket, socket_timeout_ms / 1000, time.ticks_ms)


ticks_ms = time.ticks_ms


def free_heap():
    return gc.mem_free()


def free_flash(path=FS_PATH):
    st = os.statvfs(path)
    return st[0] * st[3]


_SUBTYPE_OTA_0 = const(0x10)   # ESP-IDF app subtypes ota_0, ota_1 (0x11)


class _Slots:
    """The OTA app slots as parkgate.ota_lane uses them: each slot an
    esp32.Partition (readblocks/writeblocks with an offset, ioctl 4/5/6,
    set_boot), the running one, the one to update, and the end of probation."""

    def __init__(self, running):
        self._running = running

    def running(self):
        return self._running

    def next_update(self):
        return self._running.get_next_update()

    def mark_app_valid_cancel_rollback(self):
        esp32.Partition.mark_app_valid_cancel_rollback()


def ota_slots():
    """The slots, or None when the running app is not in ota_0/ota_1 (a
    board flashed with its factory table: partitions.csv)."""
    running = esp32.Partition(esp32.Partition.RUNNING)  # type: ignore[arg-type]
    info = running.info()          # (type, subtype, addr, size, label, encrypted)
    if info[0] != esp32.Partition.TYPE_APP or info[1] not in (_SUBTYPE_OTA_0, _SUBTYPE_OTA_0 + 1):
        return None
    return _Slots(running)


def reset():
    """Restart the chip (the bootloader then picks the app slot)."""
    machine.reset()


def log(line):
    # The stubs type ticks as an opaque _TicksMs; on the board they are ints.
    sys.stdout.write("%d %s\n" % (time.ticks_ms(), line))  # type: ignore[str-format]
