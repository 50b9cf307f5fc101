# DS3231 real-time clock over I2C (a battery-backed, temperature-compensated
# clock chip; Maxim DS3231 datasheet, "Timekeeping Registers"). Pure: the
# board passes in an object with machine.I2C's readfrom_mem(addr, reg, n)
# and writeto_mem(addr, reg, buf). Times are unix seconds (UTC); the chip
# holds UTC in 24-hour mode, years 2000-2199 (the century bit of the month
# register set for 2100-2199).
# Rules: firmware/docs/clocks.md.
from parkgate.compat import const

ADDRESS = const(0x68)
REG_TIME = const(0x00)      # 0x00..0x06: seconds, minutes, hours, day, date, month, year
REG_CONTROL = const(0x0E)
REG_STATUS = const(0x0F)
REGISTERS = const(19)       # 0x00..0x12
TIME_BYTES = const(7)
OSF = const(0x80)           # status bit 7: the oscillator stopped (time not trustworthy)
EOSC = const(0x80)          # control bit 7: 1 stops the oscillator while on battery
_HOUR_12 = const(0x40)      # hours bit 6: 12-hour mode
_HOUR_PM = const(0x20)      # hours bit 5 in 12-hour mode
_CENTURY = const(0x80)      # month bit 7
_FIRST_YEAR = const(2000)
_LAST_YEAR = const(2199)
_DAYS_BEFORE_MONTH = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)


def bcd_decode(byte):
    """The value of a packed BCD byte; ValueError for a digit above 9."""
    high = byte >> 4
    low = byte & 0x0F
    if high > 9 or low > 9:
        raise ValueError("not BCD: 0x%02x" % byte)
    return high * 10 + low


def bcd_encode(value):
    """Packed BCD of 0..99."""
    if value < 0 or value > 99:
        raise ValueError("BCD holds 0..99, not %d" % value)
    return ((value // 10) << 4) | (value % 10)


def _leap(year):
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def days_from_civil(year, month, day):
    """Days from 1970-01-01 to the date (proleptic Gregorian)."""
    y = year - 1
    days = 365 * (year - 1970) + (y // 4 - y // 100 + y // 400) - 477  # 477 leap days before 1970
    days += _DAYS_BEFORE_MONTH[month - 1] + day - 1
    if month > 2 and _leap(year):
        days += 1
    return days


def civil_from_days(days):
    """(year, month, day) of a day count from 1970-01-01 (days >= 0)."""
    # 146097 days make 400 Gregorian years: a guess within a year, corrected.
    year = 1970 + days * 400 // 146097
    while days_from_civil(year, 1, 1) > days:
        year -= 1
    while days_from_civil(year + 1, 1, 1) <= days:
        year += 1
    day_of_year = days - days_from_civil(year, 1, 1)
    month = 12
    while True:
        start = _DAYS_BEFORE_MONTH[month - 1] + (1 if month > 2 and _leap(year) else 0)
        if day_of_year >= start:
            return year, month, day_of_year - start + 1
        month -= 1


def _month_days(year, month):
    if month == 12:
        return 31
    days = _DAYS_BEFORE_MONTH[month] - _DAYS_BEFORE_MONTH[month - 1]
    return days + 1 if month == 2 and _leap(year) else days


def decode_time(regs):
    """Unix seconds of the 7 time registers (12- or 24-hour mode);
    ValueError for a value out of its range."""
    second = bcd_decode(regs[0] & 0x7F)
    minute = bcd_decode(regs[1] & 0x7F)
    hours = regs[2]
    if hours & _HOUR_12:
        hour = bcd_decode(hours & 0x1F)
        if hour < 1 or hour > 12:
            raise ValueError("hour %d in 12-hour mode" % hour)
        hour = hour % 12 + (12 if hours & _HOUR_PM else 0)
    else:
        hour = bcd_decode(hours & 0x3F)
    day = bcd_decode(regs[4] & 0x3F)
    month = bcd_decode(regs[5] & 0x1F)
    year = _FIRST_YEAR + bcd_decode(regs[6]) + (100 if regs[5] & _CENTURY else 0)
    if second > 59 or minute > 59 or hour > 23 or month < 1 or month > 12 or \
            day < 1 or day > _month_days(year, month):
        raise ValueError("time registers out of range: %d-%02d-%02d %02d:%02d:%02d" % (
            year, month, day, hour, minute, second))
    # The day count is a small int; the seconds are a long int on a 32-bit port.
    return days_from_civil(year, month, day) * 86400 + (hour * 3600 + minute * 60 + second)


def encode_time(unix_seconds, out=None):
    """The 7 time registers (24-hour mode, day of week 1 = Monday) of a
    unix time in 2000..2199; ValueError outside that range."""
    days = unix_seconds // 86400
    rest = unix_seconds - days * 86400
    year, month, day = civil_from_days(days)
    if year < _FIRST_YEAR or year > _LAST_YEAR:
        raise ValueError("the DS3231 holds 2000-2199, not %d" % year)
    regs = out if out is not None else bytearray(TIME_BYTES)
    regs[0] = bcd_encode(rest % 60)
    regs[1] = bcd_encode(rest // 60 % 60)
    regs[2] = bcd_encode(rest // 3600)
    regs[3] = (days + 3) % 7 + 1          # 1970-01-01 was a Thursday (4)
    regs[4] = bcd_encode(day)
    regs[5] = bcd_encode(month) | (_CENTURY if year >= 2100 else 0)
    regs[6] = bcd_encode(year % 100)
    return regs


class DS3231:
    """The chip at address on i2c. seconds() and set_seconds() raise OSError
    when the bus fails (and seconds() ValueError for registers that do not
    hold a time); valid() never raises."""

    def __init__(self, i2c, address=ADDRESS):
        self.i2c = i2c
        self.address = address

    def seconds(self):
        """Unix seconds of the chip's time registers."""
        return decode_time(self.i2c.readfrom_mem(self.address, REG_TIME, TIME_BYTES))

    def set_seconds(self, unix_seconds):
        """Write the time, make sure the oscillator runs on battery (EOSC
        clear), then clear the oscillator-stop flag: from now on the time is
        trustworthy."""
        regs = encode_time(unix_seconds)
        self.i2c.writeto_mem(self.address, REG_TIME, regs)
        control = self.i2c.readfrom_mem(self.address, REG_CONTROL, 1)[0]
        if control & EOSC:
            self.i2c.writeto_mem(self.address, REG_CONTROL, bytes((control & ~EOSC,)))
        status = self.i2c.readfrom_mem(self.address, REG_STATUS, 1)[0]
        if status & OSF:
            self.i2c.writeto_mem(self.address, REG_STATUS, bytes((status & ~OSF,)))

    def stopped(self):
        """True if the oscillator-stop flag is set (OSError if the bus fails)."""
        return bool(self.i2c.readfrom_mem(self.address, REG_STATUS, 1)[0] & OSF)

    def valid(self):
        """True if the chip answers, its oscillator never stopped since the
        time was last set, and its registers hold a time."""
        try:
            if self.stopped():
                return False
            self.seconds()
        except (OSError, ValueError):
            return False
        return True
