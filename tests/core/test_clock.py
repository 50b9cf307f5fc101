from parkgate import clock
from parkgate.clock import (Clock, EARLIEST_VALID, EPOCH_OFFSET, MAX_ESTIMATE_AGE_S, Q_CAMERA,
                            Q_ESTIMATED, Q_MANUAL, Q_NTP, Q_RTC, Q_SERVER, Q_UNSET,
                            QUALITY_NAMES, boot_quality)

T = 1717171717                        # 2024-05-31 16:08:37 UTC


class Source:
    """A board clock source in the port's epoch."""

    def __init__(self, unix):
        self.port_seconds = unix - EPOCH_OFFSET

    def seconds(self):
        return self.port_seconds

    def set_seconds(self, seconds):
        self.port_seconds = seconds

    def advance(self, s):
        self.port_seconds += s


class Memory:
    """The board's store of the last known time (RTC memory on an ESP32)."""

    def __init__(self, data=b""):
        self.data = data
        self.broken = False
        self.writes = 0

    def read(self):
        if self.broken:
            raise OSError(5)
        return self.data

    def write(self, data):
        if self.broken:
            raise OSError(5)
        self.data = bytes(data)
        self.writes += 1


def test_the_existing_api():
    assert QUALITY_NAMES[Q_ESTIMATED] == "estimated" and len(QUALITY_NAMES) == 7
    assert Clock(Source(T), Q_NTP).quality == Q_NTP
    assert Clock(Source(0), Q_NTP).quality == Q_UNSET      # before 2024: never set
    c = Clock(Source(0))
    assert not c.valid()
    c.set(T, Q_SERVER)
    assert c.valid() and c.now() == T and c.quality == Q_SERVER


def test_boot_quality_rule():
    age = 600
    # Estimated: the source kept counting, the saved time was good, time moved on.
    for good in (Q_RTC, Q_NTP, Q_SERVER, Q_MANUAL):
        assert boot_quality(T + age, T, good, True) == Q_ESTIMATED
    # The source stopped (power-on reset): nothing to carry forward.
    assert boot_quality(T + age, T, Q_SERVER, False) == Q_UNSET
    # The saved time was itself an estimate, a camera's, or unset.
    for poor in (Q_UNSET, Q_ESTIMATED, Q_CAMERA):
        assert boot_quality(T + age, T, poor, True) == Q_UNSET
    # Time ran backwards.
    assert boot_quality(T - 1, T, Q_SERVER, True) == Q_UNSET
    assert boot_quality(T, T, Q_SERVER, True) == Q_ESTIMATED
    # Too long since the last good time.
    assert boot_quality(T + MAX_ESTIMATE_AGE_S, T, Q_NTP, True) == Q_ESTIMATED
    assert boot_quality(T + MAX_ESTIMATE_AGE_S + 1, T, Q_NTP, True) == Q_UNSET
    assert boot_quality(T + 120, T, Q_NTP, True, max_age_s=60) == Q_UNSET
    # Nothing saved.
    assert boot_quality(T, None, None, True) == Q_UNSET
    # A clock before 2024 is never trusted.
    assert boot_quality(EARLIEST_VALID - 1, None, None, True, Q_RTC) == Q_UNSET


def test_a_source_that_vouches_for_itself():
    # A DS3231 with its oscillator-stop flag clear: Q_RTC, with or without a saved time.
    assert boot_quality(T, None, None, True, Q_RTC) == Q_RTC
    assert boot_quality(T + 10 * MAX_ESTIMATE_AGE_S, T, Q_SERVER, False, Q_RTC) == Q_RTC
    # ... unless it reads earlier than a time the gate saw.
    assert boot_quality(T - 3600, T, Q_SERVER, True, Q_RTC) == Q_UNSET


def test_records():
    data = clock.encode_record(T, Q_SERVER)
    assert data.startswith(b"PGT1 5 1717171717 ") and len(data) < 32
    assert clock.decode_record(data) == (T, Q_SERVER)
    assert clock.decode_record(bytearray(data)) == (T, Q_SERVER)
    assert clock.decode_record(b"") is None
    assert clock.decode_record(b"\xff\xfe\x00garbage") is None
    assert clock.decode_record(data.replace(b"1717171717", b"1717171718")) is None
    assert clock.decode_record(data.replace(b"PGT1", b"PGT2")) is None
    bad_quality = clock.encode_record(T, 9)
    assert clock.decode_record(bad_quality) is None


def boot(source_unix, memory, kept_counting, quality=Q_UNSET):
    c = Clock(Source(source_unix), quality)
    return c, c.boot(memory, kept_counting)


def test_boot_after_a_reset_that_kept_counting_is_estimated():
    memory = Memory()
    before = Clock(Source(T))
    before.boot(memory, False)
    before.set(T, Q_SERVER)                        # set() saves at once
    assert clock.decode_record(memory.data) == (T, Q_SERVER)
    c, quality = boot(T + 300, memory, True)
    assert quality == Q_ESTIMATED == c.quality and c.valid()
    assert c.last_known == (T, Q_SERVER)


def test_boot_after_a_power_cut_is_unset():
    memory = Memory(clock.encode_record(T, Q_NTP))
    c, quality = boot(T + 300, memory, False)
    assert quality == Q_UNSET and not c.valid()


def test_boot_with_nothing_or_garbage_saved():
    for data in (b"", b"\x00" * 32, b"PGT1 5 1717171717 1"):
        assert boot(T, Memory(data), True)[1] == Q_UNSET
    broken = Memory()
    broken.broken = True
    c, quality = boot(T, broken, True)
    assert quality == Q_UNSET and c.last_known is None
    assert not c.save()


def test_an_estimated_clock_does_not_move_its_anchor():
    memory = Memory(clock.encode_record(T, Q_NTP))
    c, quality = boot(T + 600, memory, True)
    assert quality == Q_ESTIMATED
    assert not c.save() and memory.writes == 0    # still anchored at T
    # A day after the last good time, a further reset gives up on it.
    assert boot(T + MAX_ESTIMATE_AGE_S + 1, memory, True)[1] == Q_UNSET
    # Once set from a good source, the clock saves again.
    c.set(T + 700, Q_NTP)
    assert memory.writes == 1 and clock.decode_record(memory.data) == (T + 700, Q_NTP)
    assert c.save() and memory.writes == 2


def test_a_ds3231_boots_rtc_and_saves():
    memory = Memory(clock.encode_record(T, Q_SERVER))
    c, quality = boot(T + 7 * 86400, memory, True, Q_RTC)
    assert quality == Q_RTC
    assert c.save() and clock.decode_record(memory.data) == (T + 7 * 86400, Q_RTC)
    # An RTC behind the last time the gate saw is not believed.
    assert boot(T - 60, Memory(clock.encode_record(T, Q_SERVER)), True, Q_RTC)[1] == Q_UNSET


def test_without_boot_nothing_is_saved():
    c = Clock(Source(T), Q_MANUAL)
    assert not c.save()
    c.set(T + 1, Q_SERVER)                        # no memory: as before
    assert c.now() == T + 1
