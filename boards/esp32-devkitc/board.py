# Board: esp32-devkitc. ESP32-DevKitC (4 MiB flash, no PSRAM) with a 1-channel
# relay module, the ANPR camera on UART2 through a TTL/RS232 converter.
#
# Pin map (wiring: README.md, "A real board"):
#   UART2 RX GPIO16 <- camera TX, TX GPIO17 -> camera RX, 115200 8N1
#   GPIO26 -> relay module IN (this module is active low)
# Flash: the partition table boards/esp32-devkitc/partitions.csv keeps the
# stock MicroPython layout but gives the last 768 KiB to a raw data partition
# labelled "journal"; littlefs lives in "vfs".
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

NAME = "esp32-devkitc"
UART_ID = 2
UART_RX = 16
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
RELAY_PIN = 26
RELAY_ACTIVE_LEVEL = 0     # common opto-isolated relay modules switch on a low input
FS_PATH = "/"
WATCHDOG_MS = 8000
CONFIRM_PIN = 27           # attendant's confirm button to GND (internal pull-up)

BOOT_CLOCK_QUALITY = 0     # no battery-backed clock: time starts at 2000-01-01

_wlan = None


def mount_flash():
    return FS_PATH          # MicroPython's _boot.py mounts the vfs partition at /


def journal_device():
    found = esp32.Partition.find(esp32.Partition.TYPE_DATA, label="journal")
    if not found:
        raise OSError("no journal partition: flash boards/esp32-devkitc/partitions.csv")
    return found[0]


def load_site():
    with open("/site.json") as f:
        return json.load(f)


class ClockSource:
    """The ESP32's RTC, in the port's epoch (2000-01-01)."""

    def seconds(self):
        return time.time()

    def set_seconds(self, seconds):
        tm = time.gmtime(seconds)
        machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], 0))


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
