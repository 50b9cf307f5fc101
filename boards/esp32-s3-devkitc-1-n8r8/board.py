# Board: esp32-s3-devkitc-1-n8r8. Espressif ESP32-S3-DevKitC-1 with the
# ESP32-S3-WROOM-1-N8R8 module (8 MiB quad flash, 8 MiB octal PSRAM), WiFi,
# a 1-channel relay module, the ANPR camera on UART1 through a TTL/RS232
# converter. The board for deploying the code as .mpy files
# (`parkgate board deploy --code`): the PSRAM gives the Python heap room for
# code loaded from the filesystem. Same interface as
# boards/esp32-devkitc/board.py; the pins and the chip differ.
#
# Pin map (wiring as on esp32-devkitc, README.md "A real board"):
#   UART1 RX GPIO18 <- camera TX, TX GPIO17 -> camera RX, 115200 8N1
#     (ESP-IDF's default UART1 pins, side by side on header J1)
#   GPIO4 -> relay module IN (this module is active low)
#   GPIO5 <- attendant's confirm button to GND (internal pull-up)
#   GPIO8 SDA, GPIO9 SCL (I2C0, 100 kHz) <- a DS3231 clock module, when
#     fitted (site.json "rtc": "ds3231"); the usual modules carry the bus
#     pull-ups; power the module from 3V3
#   GPIO7 <- the passage input to GND (internal pull-up), when fitted
#     (site.json "passage": true): a loop detector's output, active while a
#     car is on the loop behind the barrier, or a barrier contact active
#     while the barrier is up; each activation counts as one car when it ends
#   free for a display or more I/O: GPIO6, GPIO15, GPIO16
# Not to use: GPIO35-37 (the module's octal PSRAM), GPIO26-32 (its flash,
# not on the header), GPIO0, GPIO3, GPIO45, GPIO46 (boot strapping),
# GPIO19/20 (the USB port), GPIO43/44 (UART0: the REPL on the "UART" USB
# port), GPIO38 or GPIO48 (the RGB LED, by board revision).
# Flash: boards/esp32-s3-devkitc-1-n8r8/partitions.csv, MicroPython's app
# partition, 4 MiB of littlefs in "vfs" and the last 2 MiB a raw data
# partition "journal".
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

from parkgate.clock import EPOCH_OFFSET, Q_RTC

NAME = "esp32-s3-devkitc-1-n8r8"
UART_ID = 1
UART_RX = 18
UART_TX = 17
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
RELAY_PIN = 4
RELAY_ACTIVE_LEVEL = 0     # common opto-isolated relay modules switch on a low input
FS_PATH = "/"
WATCHDOG_MS = 8000
CONFIRM_PIN = 5            # attendant's confirm button to GND (internal pull-up)

RTC_I2C_ID = 0             # the DS3231 (pins also in board.json "i2c")
RTC_SDA = 8
RTC_SCL = 9
RTC_RESYNC_MS = 3600000    # the ESP32's RTC is read back from the DS3231 hourly
PASSAGE_PIN = 7            # passage input (pin also in board.json "passage")
PASSAGE_ACTIVE_LEVEL = 0
PASSAGE_MIN_MS = 50        # shorter activations are contact bounce or noise

# The clock rule's view of the time source (parkgate.clock.boot_quality):
# unset, as the ESP32's RTC starts at 2000-01-01 after a power cut;
# ClockSource() makes it Q_RTC (3) when a DS3231 with a trustworthy time is
# fitted.
BOOT_CLOCK_QUALITY = 0
# What load_site() found fitted: a passage input (site.json "passage"),
# the RTC chip (site.json "rtc").
PASSAGE = False
_rtc_chip = None
_site_read = False

_wlan = None


def mount_flash():
    return FS_PATH          # MicroPython's _boot.py mounts the vfs partition at /


def journal_device():
    found = esp32.Partition.find(esp32.Partition.TYPE_DATA, label="journal")
    if not found:
        raise OSError("no journal partition: flash boards/esp32-s3-devkitc-1-n8r8/partitions.csv")
    return found[0]


def load_site():
    """site.json; notes what it says is fitted (PASSAGE, the RTC chip)."""
    global PASSAGE, _rtc_chip, _site_read
    with open("/site.json") as f:
        site = json.load(f)
    PASSAGE = bool(site.get("passage"))
    _rtc_chip = site.get("rtc")
    _site_read = True
    return site


def _set_esp32_rtc(seconds):
    tm = time.gmtime(seconds)
    machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], 0))


class ClockSource:
    """The ESP32-S3's RTC, in the port's epoch (2000-01-01). With a DS3231
    fitted (site.json "rtc": "ds3231") the RTC is set from the chip when its
    oscillator-stop flag is clear (then BOOT_CLOCK_QUALITY is Q_RTC), read
    back from it every RTC_RESYNC_MS, and every set_seconds() goes to both
    (which makes the chip trustworthy again)."""

    def __init__(self):
        global BOOT_CLOCK_QUALITY
        self.chip = None
        self.trusted = False
        self._synced = time.ticks_ms()
        if not _site_read:
            try:
                load_site()
            except (OSError, ValueError):
                pass
        BOOT_CLOCK_QUALITY = 0
        if _rtc_chip == "ds3231":
            from parkgate.ds3231 import DS3231
            self.chip = DS3231(machine.I2C(RTC_I2C_ID, scl=machine.Pin(RTC_SCL),
                                           sda=machine.Pin(RTC_SDA), freq=100000))
            if self._from_chip():
                BOOT_CLOCK_QUALITY = Q_RTC
            else:
                log("CLOCK DS3231 not trusted: no answer or its oscillator stopped")

    def _from_chip(self):
        # The ESP32's RTC from the chip, if the chip's time can be trusted.
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
            self._from_chip()           # failing, the ESP32's RTC goes on alone
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
    return BOOT_CLOCK_QUALITY == Q_RTC or machine.reset_cause() in _KEPT_COUNTING


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
    def __init__(self):
        self._uart = machine.UART(UART_ID, baudrate=UART_BAUD, rx=UART_RX, tx=UART_TX,
                                  timeout=0, rxbuf=UART_RXBUF)

    def readinto(self, buf):
        return self._uart.readinto(buf) or 0

    def wait(self, ms):
        time.sleep_ms(ms)


class Relay:
    def __init__(self):
        self._pin = machine.Pin(RELAY_PIN, machine.Pin.OUT, value=1 - RELAY_ACTIVE_LEVEL)
        self.on = False

    def set(self, on):
        self.on = on
        self._pin.value(RELAY_ACTIVE_LEVEL if on else 1 - RELAY_ACTIVE_LEVEL)


class ConfirmButton:
    """The attendant's confirm button between CONFIRM_PIN and GND."""

    def __init__(self):
        self._pin = machine.Pin(CONFIRM_PIN, machine.Pin.IN, machine.Pin.PULL_UP)
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
    """The passage input on PASSAGE_PIN (site.json "passage": true; PASSAGE).
    passed() is True once per car. A pin interrupt on both edges times each
    activation, so none is missed while the gate loop is busy (a socket
    call, a garbage collection); an activation shorter than PASSAGE_MIN_MS
    is a bounce and does not count; one counts when it ends."""

    def __init__(self):
        self._pin = machine.Pin(PASSAGE_PIN, machine.Pin.IN, machine.Pin.PULL_UP)
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
    """No display on this board: what the lane would show goes to the log."""

    def show(self, text):
        log("DISPLAY " + text)


class Watchdog:
    def __init__(self):
        self._wdt = machine.WDT(timeout=WATCHDOG_MS)

    def feed(self):
        self._wdt.feed()


def start_network(site):
    """Start joining the site's WiFi; returns at once (the link waits for it)."""
    global _wlan
    _wlan = network.WLAN(network.STA_IF)
    _wlan.active(True)
    if not _wlan.isconnected():
        _wlan.connect(site["wifi_ssid"], site["wifi_password"])


def network_up():
    return _wlan is not None and _wlan.isconnected()


def udp_socket():
    """A non-blocking UDP socket for SNTP, or None while the network is down."""
    if not network_up():
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


def log(line):
    # The stubs type ticks as an opaque _TicksMs; on the board they are ints.
    sys.stdout.write("%d %s\n" % (time.ticks_ms(), line))  # type: ignore[str-format]
