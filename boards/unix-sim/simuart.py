# The unix-sim board's camera line (boards/unix-sim/board.py imports it): a
# pseudo-terminal with the ESP32's receive path, and the flash stall that
# stops the whole chip while its flash is programmed or erased
# (PARKGATE_SIM_FLASH_STALL), during which only the UART's hardware FIFO
# takes bytes (PARKGATE_SIM_UART_RXBUF: the driver's ring).
import gc
import os
import select
import termios
import time

from flashdev import STALL_ERASE
from simclock import SIM_DIR, env_int, log, ticks_ms

_TERMIOS_VTIME = 5         # indices into termios cc on Linux
_TERMIOS_VMIN = 6
_UART_FIFO = 128           # the ESP32 UART's hardware receive FIFO
_PAGE = 256                # NOR program page

_STALL = (os.getenv("PARKGATE_SIM_FLASH_STALL") or "700,45000").split(",")
_STALL_PAGE_US = int(_STALL[0])
_STALL_ERASE_US = int(_STALL[1])
UART_RXBUF = env_int("PARKGATE_SIM_UART_RXBUF", 512)
PROBE = os.getenv("PARKGATE_SIM_PROBE") == "heap"
# PARKGATE_SIM_PROBE=heap: gc.mem_alloc() after the collection before a
# car's first camera bytes (the board's Relay reports what the car took).
probe_mark = 0
_uart = None               # the camera line, which loses bytes while the flash stalls


def flash_stall(kind, nbytes):
    """The flash device's stall hook: the whole chip stops while its
    flash is programmed or erased."""
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
        global probe_mark
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
        if PROBE and n:
            gc.collect()
            probe_mark = gc.mem_alloc()
        return n

    def wait(self, ms):
        if self._file is None or self._len:
            time.sleep_ms(0 if self._len else ms)
            return
        for _, flags in self._poll.ipoll(ms):
            if flags & (select.POLLHUP | select.POLLERR):
                time.sleep_ms(ms)
            break
