# Validates and compiles a table's plans: each plan is bands that follow
# each other round the clock, each band a list of tiers (until, unit, price).
from parkgate.tariff_types import TariffError
from parkgate.tariff_fields import obj, value
from parkgate.tariff_time import DAY, parse_clock

BAND = "name=s start=s end=s tiers=l1,16"
TIER = "until_minutes?=i1,527040 unit_minutes=i1,1440 unit_price=m"


def compile_plans(tf, plans):
    # Plans in name order (dict order differs between runtimes), so band
    # ids, hence the order of a breakdown, are the same everywhere.
    names = sorted(value(plans, "plans", "o"))
    if not names:
        raise TariffError("plans", "expected at least one plan")
    tf.plans = []
    tf.prices = {}
    tf.labels = {}
    tf.max_until = 0
    for name in names:
        f = "plans." + name
        if len(name) > 32:
            raise TariffError(f, "name longer than 32")
        bands = obj(plans[name], f, "bands=l1,24")["bands"]
        spans = []
        label = name + ": " if len(names) > 1 else ""  # breakdown labels
        for i in range(len(bands)):
            spans.append(_band(tf, bands[i], "%s.bands[%d]" % (f, i), len(tf.prices), label))
        _tiling(spans, f + ".bands")
        pieces = []
        for s, n, tiers in spans:  # a band past midnight is two pieces
            pieces.append((s, s + n if s + n < DAY else DAY, tiers))
            if s + n > DAY:
                pieces.append((0, s + n - DAY, tiers))
        pieces.sort(key=lambda p: p[0])
        tf.plans.append(pieces)
    return names


def _band(tf, band, f, key, label):
    obj(band, f, BAND)
    s = parse_clock(band["start"], f + ".start")
    n = (parse_clock(band["end"], f + ".end", True) - s) % DAY or DAY
    label += band["name"]
    raw = band["tiers"]
    tiers = []
    prev = 0
    for j in range(len(raw)):
        tfield = "%s.tiers[%d]" % (f, j)
        tier = obj(raw[j], tfield, TIER)
        last = j == len(raw) - 1
        until = tier.get("until_minutes")
        if last != (until is None):
            raise TariffError(tfield + ".until_minutes", "only the last tier is open-ended")
        if until is not None and until <= prev:
            raise TariffError(tfield + ".until_minutes", "must be above %d" % prev)
        unit = tier["unit_minutes"]
        text = label
        if len(raw) > 1:
            text += " [%d+ min]" % prev if last else " [%d-%d min]" % (prev, until)
        tf.labels[key + j] = text + " per %d min" % unit
        tf.prices[key + j] = tier["unit_price"]
        tiers.append((None if last else until * 60, unit * 60, tier["unit_price"], key + j))
        if not last:
            prev = until
    tf.max_until = max(tf.max_until, prev * 60)
    return (s, n, tiers)


def _tiling(spans, field):
    # Bands, in list order, must follow each other once round the clock.
    total = 0
    for i in range(len(spans)):
        s, n, _ = spans[i]
        ps, pn, _ = spans[i - 1]
        total += n
        if s != (ps + pn) % DAY:
            what = "overlaps" if 0 < (s - ps) % DAY < pn else "leaves a gap after"
            raise TariffError("%s[%d].start" % (field, i), "%s band %d (%s)"
                              % (what, (i - 1) % len(spans), _hhmm(ps, ps + pn)))
    if total != DAY:
        raise TariffError(field, "bands overlap: they cover %d min" % (total // 60))


def _hhmm(a, b):
    return "%02d:%02d-%02d:%02d" % (a // 3600, a // 60 % 60, b // 3600 % 24, b // 60 % 60)
