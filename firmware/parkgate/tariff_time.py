# Calendar arithmetic without the time module: unix seconds (1970 epoch,
# UTC) <-> local dates and times at a fixed UTC offset. Proleptic
# Gregorian (days-from-civil), the same on CPython and MicroPython.
from parkgate.compat import const
from parkgate.tariff_types import TariffError

DAY = const(86400)


def days_from_civil(y, m, d):
    # Days since 1970-01-01 of the date y-m-d.
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    doy = (153 * ((m + 9) % 12) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def civil_from_days(z):
    # (y, m, d) of day number z.
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (m <= 2), m, doy - (153 * mp + 2) // 5 + 1


def _ints(text, shape, field):
    # The numbers of text laid out as shape (b"9999-99-99", b"99:99"...).
    # Works on bytes: MicroPython may intern 1-character strings for good.
    if type(text) is not str or len(text) != len(shape):
        raise TariffError(field, "expected %s, got %r" % (shape.decode().replace("9", "N"), text))
    out = []
    num = -1
    raw = text.encode() + b"."  # "." ends the last number
    for i in range(len(shape) + 1):
        want = shape[i] if i < len(shape) else 46
        c = raw[i]
        if want == 57 and 48 <= c <= 57:  # a digit where shape has "9"
            num = max(num, 0) * 10 + c - 48
        elif want == 57 or c != want:
            raise TariffError(field, "expected %s, got %r" % (shape.decode().replace("9", "N"), text))
        elif num >= 0:
            out.append(num)
            num = -1
    return out


def parse_date(text, field="date"):
    # Day number of "YYYY-MM-DD"; TariffError unless a real date.
    y, m, d = _ints(text, b"9999-99-99", field)
    if not 1 <= m <= 12 or civil_from_days(days_from_civil(y, m, d)) != (y, m, d):
        raise TariffError(field, "no such date %s" % text)
    return days_from_civil(y, m, d)


def parse_clock(text, field="time", allow_24=False):
    # Seconds after midnight of "HH:MM" or "HH:MM:SS" ("24:00" if allowed).
    hms = _ints(text, b"99:99:99" if len(str(text)) == 8 else b"99:99", field) + [0]
    s = hms[0] * 3600 + hms[1] * 60 + hms[2]
    if hms[1] > 59 or hms[2] > 59 or s > (DAY if allow_24 else DAY - 1):
        raise TariffError(field, "no such time of day %s" % text)
    return s


def parse_time(text, utc_offset_minutes, field="time"):
    # Unix seconds of local "YYYY-MM-DDTHH:MM[:SS]", or of an int / digits.
    if type(text) is int:
        return text
    if type(text) is str and text.isdigit():
        return int(text)
    if type(text) is not str or len(text) < 16 or text[10] not in "T ":
        raise TariffError(field, "expected YYYY-MM-DDTHH:MM[:SS] or unix seconds, got %r" % (text,))
    return (parse_date(text[:10], field) * DAY + parse_clock(text[11:], field)
            - utc_offset_minutes * 60)
