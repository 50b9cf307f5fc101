"""A fake of MicroPython's machine module on an ESP32, for running the ESP32
board modules on CPython (tests/test_board_interface.py): the calls
boards/esp32/esp32_board.py and the boards' board.py make, in memory."""
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5


class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 1
    IRQ_FALLING = 2
    IRQ_RISING = 1

    def __init__(self, pin, mode=-1, pull=-1, value=None):
        self.pin = pin
        self.mode = mode
        self.pull = pull
        self.level = 1 if value is None else value
        self.handler = None

    def value(self, level=None):
        if level is None:
            return self.level
        self.level = level
        return None

    def irq(self, handler=None, trigger=0, hard=False):
        self.handler = handler


class UART:
    def __init__(self, uart_id, baudrate=115200, rx=None, tx=None, timeout=0, rxbuf=256):
        self.waiting = b""

    def readinto(self, buf):
        n = min(len(buf), len(self.waiting))
        if not n:
            return None
        buf[:n] = self.waiting[:n]
        self.waiting = self.waiting[n:]
        return n


class I2C:
    """A DS3231's registers, all zero: its time is not valid until set."""

    def __init__(self, bus_id, scl=None, sda=None, freq=400000):
        self.regs = bytearray(19)

    def readfrom_mem(self, addr, reg, n):
        return bytes(self.regs[reg:reg + n])

    def writeto_mem(self, addr, reg, data):
        self.regs[reg:reg + len(data)] = data


_rtc_memory = bytearray()


class RTC:
    def datetime(self, tm=None):
        return (2000, 1, 1, 5, 0, 0, 0, 0) if tm is None else None

    def memory(self, data=None):
        global _rtc_memory
        if data is None:
            return bytes(_rtc_memory)
        _rtc_memory = bytearray(data)
        return None


class WDT:
    def __init__(self, timeout=5000):
        self.fed = 0

    def feed(self):
        self.fed += 1


def reset_cause():
    return PWRON_RESET


resets = 0      # reset() calls (a board does not come back from one)


def reset():
    global resets
    resets += 1
