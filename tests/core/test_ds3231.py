import errno

from check import raises

from parkgate import ds3231
from parkgate.ds3231 import DS3231

T = 1717171717                        # 2024-05-31 16:08:37 UTC, a Friday


class FakeI2C:
    """machine.I2C's memory API over the DS3231's 19 registers (0x00-0x12);
    a multi-byte access wraps from 0x12 to 0x00, as the chip's pointer."""

    def __init__(self, regs=None, address=0x68):
        self.regs = bytearray(regs if regs is not None else bytes(19))
        assert len(self.regs) == 19
        self.address = address
        self.fail = False
        self.writes = []

    def _check(self, addr):
        if self.fail:
            raise OSError(errno.ETIMEDOUT)
        if addr != self.address:
            raise OSError(errno.ENODEV)

    def readfrom_mem(self, addr, reg, n):
        self._check(addr)
        return bytes(self.regs[(reg + i) % 19] for i in range(n))

    def writeto_mem(self, addr, reg, buf):
        self._check(addr)
        self.writes.append((reg, bytes(buf)))
        for i in range(len(buf)):
            self.regs[(reg + i) % 19] = buf[i]


def powered_up():
    """A chip just given power: OSF set, 32 kHz output on, time at zero."""
    regs = bytearray(19)
    regs[0x04] = 0x01
    regs[0x05] = 0x01
    regs[0x0E] = 0x1C                  # INTCN, RS2, RS1: the power-up control value
    regs[0x0F] = 0x88                  # OSF, EN32kHz
    return FakeI2C(regs)


def test_bcd_codec():
    for value in range(100):
        assert ds3231.bcd_decode(ds3231.bcd_encode(value)) == value
    assert ds3231.bcd_encode(59) == 0x59 and ds3231.bcd_decode(0x23) == 23
    raises(ValueError, ds3231.bcd_decode, 0x1A)
    raises(ValueError, ds3231.bcd_decode, 0xA0)
    raises(ValueError, ds3231.bcd_encode, 100)
    raises(ValueError, ds3231.bcd_encode, -1)


def test_time_registers_of_a_known_time():
    regs = ds3231.encode_time(T)
    # seconds, minutes, hours (24 h), day of week (Friday = 5), date, month, year
    assert bytes(regs) == b"\x37\x08\x16\x05\x31\x05\x24"
    assert ds3231.decode_time(regs) == T


def test_twelve_hour_mode_is_read():
    regs = bytearray(ds3231.encode_time(T))
    regs[2] = 0x40 | 0x20 | 0x04       # 12-hour mode, PM, 4
    assert ds3231.decode_time(regs) == T
    midnight = T - (16 * 3600 + 8 * 60 + 37)
    regs[0:3] = b"\x00\x00\x52"        # 12 AM
    assert ds3231.decode_time(regs) == midnight
    regs[2] = 0x72                     # 12 PM
    assert ds3231.decode_time(regs) == midnight + 12 * 3600
    regs[2] = 0x40 | 0x13              # 13 in 12-hour mode
    raises(ValueError, ds3231.decode_time, regs)


def test_century_bit_and_leap_years():
    assert ds3231.days_from_civil(2000, 1, 1) == 10957
    assert ds3231.days_from_civil(2024, 2, 29) == 19782
    assert ds3231.days_from_civil(2100, 3, 1) == 47541
    assert ds3231.days_from_civil(2199, 12, 31) == 84005
    new_century = 4102444800            # 2100-01-01 00:00:00
    regs = ds3231.encode_time(new_century)
    assert regs[5] == 0x81 and regs[6] == 0x00       # century bit, January; year 00
    assert regs[3] == 5                              # a Friday
    assert ds3231.decode_time(regs) == new_century
    before = ds3231.encode_time(new_century - 1)     # 2099-12-31 23:59:59
    assert bytes(before) == b"\x59\x59\x23\x04\x31\x12\x99"
    # 2100 is not a leap year: 28 February is followed by 1 March.
    feb28 = ds3231.days_from_civil(2100, 2, 28) * 86400
    assert ds3231.civil_from_days(feb28 // 86400 + 1) == (2100, 3, 1)
    regs = bytearray(ds3231.encode_time(feb28))
    regs[4] = 0x29                                   # 2100-02-29 does not exist
    raises(ValueError, ds3231.decode_time, regs)
    assert ds3231.decode_time(ds3231.encode_time(7258118399)) == 7258118399   # 2199-12-31 23:59:59


def test_day_counts_round_trip():
    for days in range(10957, 84006, 97):
        year, month, day = ds3231.civil_from_days(days)
        assert ds3231.days_from_civil(year, month, day) == days, (days, year, month, day)
    assert ds3231.civil_from_days(0) == (1970, 1, 1)
    assert ds3231.civil_from_days(19782) == (2024, 2, 29)
    assert ds3231.civil_from_days(19783) == (2024, 3, 1)


def test_out_of_range_times_are_refused():
    raises(ValueError, ds3231.encode_time, 946684799)        # 1999-12-31 23:59:59
    raises(ValueError, ds3231.encode_time, 7258118400)       # 2200-01-01
    raises(ValueError, ds3231.decode_time, b"\x60\x00\x00\x01\x01\x01\x24")   # second 60
    raises(ValueError, ds3231.decode_time, b"\x00\x00\x24\x01\x01\x01\x24")   # hour 24
    raises(ValueError, ds3231.decode_time, b"\x00\x00\x00\x01\x00\x01\x24")   # date 0
    raises(ValueError, ds3231.decode_time, b"\x00\x00\x00\x01\x01\x13\x24")   # month 13


def test_a_chip_just_powered_is_not_valid_until_set():
    i2c = powered_up()
    chip = DS3231(i2c)
    assert chip.stopped() and not chip.valid()
    chip.set_seconds(T)
    assert i2c.regs[0:7] == b"\x37\x08\x16\x05\x31\x05\x24"
    assert i2c.regs[0x0F] == 0x08                   # OSF cleared, EN32kHz kept
    assert i2c.regs[0x0E] == 0x1C                   # control untouched (EOSC already clear)
    assert chip.valid() and chip.seconds() == T


def test_set_seconds_lets_the_oscillator_run_on_battery():
    i2c = powered_up()
    i2c.regs[0x0E] = 0x80 | 0x1C                    # EOSC: the oscillator stops on battery
    DS3231(i2c).set_seconds(T)
    assert i2c.regs[0x0E] == 0x1C


def test_the_oscillator_stop_flag_makes_the_time_untrustworthy():
    i2c = FakeI2C()
    chip = DS3231(i2c)
    chip.set_seconds(T)
    assert chip.valid()
    i2c.regs[0x0F] |= 0x80                          # the battery ran flat: OSF set
    assert not chip.valid()
    assert chip.seconds() == T                      # readable, but not to be trusted


def test_bus_failures():
    i2c = FakeI2C()
    chip = DS3231(i2c)
    chip.set_seconds(T)
    i2c.fail = True
    assert not chip.valid()
    raises(OSError, chip.seconds)
    raises(OSError, chip.set_seconds, T)
    assert not DS3231(FakeI2C(), address=0x57).valid()      # nothing at that address


def test_registers_that_hold_no_time_are_not_valid():
    i2c = FakeI2C(b"\xff" * 19)
    i2c.regs[0x0F] = 0x00
    chip = DS3231(i2c)
    assert not chip.valid()
    raises(ValueError, chip.seconds)


def test_seconds_reads_the_seven_time_registers_in_one_access():
    i2c = FakeI2C()
    chip = DS3231(i2c)
    chip.set_seconds(T + 86400 * 365)
    reads = []
    original = i2c.readfrom_mem

    def spy(addr, reg, n):
        reads.append((reg, n))
        return original(addr, reg, n)
    i2c.readfrom_mem = spy
    assert chip.seconds() == T + 86400 * 365
    assert reads == [(0x00, 7)]
