# The fee of a stay in integer fen, and its breakdown. Rules: "How a fee is
# computed" in firmware/docs/tariff.md. The stay is cut into cap periods
# (24 h from entry, or local days), a period into days, a day into band
# pieces; each piece counts its units per tier arithmetically. A full period
# whose charge only depends on (where its first unit starts, plans of its
# days) is computed once and reused; with one plan for every day the
# remaining identical periods are multiplied instead of walked.
from parkgate.compat import const

DAY = const(86400)


def charge(tf, cls, entry, exit, fast=True):
    # (fee, items) for a stay of a vehicle class. fast=False computes every
    # period in full: the reference the tests compare the shortcuts with.
    items = []
    start = entry  # the first charged instant
    free = tf.free_s
    if free:
        if exit - entry <= free:
            return 0, [("free", "stay within free period", free // 60, 0, 0)]
        if tf.free_deducted:
            start = entry + free
            items.append(("free", "free period deducted", free // 60, 0, 0))
        else:
            items.append(("free", "free period exceeded: charged from entry", free // 60, 0, 0))
    if cls.daily_free_s:
        n = cls.daily_free_s // 60
        items.append(("daily_free", "first %d min of each day free" % n, n, 0, 0))
    off = tf.offset_s
    ps = entry if tf.cap_24h else (entry + off) // DAY * DAY - off
    acc = [{}, 0, 0, 0]  # unit counts, multiplier delta, cap reduction, capped periods
    memo = {}  # period key -> settled period
    seen = {}  # period key -> number of periods like it
    uniform = cls.plan_w == cls.plan_nw
    t = origin = start  # t: where the next unit starts; origin: the tier clock
    k = 0  # period number
    while ps < exit:
        pe = ps + DAY
        if start < pe:
            lo = ps if ps > start else start
            if k and tf.restart and ps >= start:
                origin = ps  # tiers start again each period
            if t < lo:
                t = lo
            key = None
            if fast and k and ps >= start and pe <= exit and (tf.restart or ps - origin >= tf.max_until):
                key = (t - ps, _plan(tf, cls, (ps + off) // DAY), _plan(tf, cls, (pe - 1 + off) // DAY))
            if key is None:
                counts = {}
                t = _period(tf, cls, lo, exit if exit < pe else pe, t, origin, entry, counts)
                _add(acc, _settle(cls, tf.prices, counts, 0), 1)
            else:
                res = memo.get(key)
                if res is None:
                    counts = {}
                    t2 = _period(tf, cls, lo, pe, t, origin, entry, counts)
                    res = memo[key] = _settle(cls, tf.prices, counts, t2 - ps)
                n = 1
                if uniform and max(res[4] - DAY, 0) == t - ps:
                    n = (exit - ps) // DAY  # every full period left is the same
                seen[key] = seen.get(key, 0) + n
                k += n - 1
                ps += (n - 1) * DAY
                pe = ps + DAY
                t = ps + res[4]
        ps = pe
        k += 1
    for key in seen:
        _add(acc, memo[key], seen[key])
    fee = 0
    counts = acc[0]
    for key in sorted(counts):
        n = counts[key]
        price = tf.prices[key]
        items.append(("units", tf.labels[key], n, price, n * price))
        fee += n * price
    if cls.percent != 100:
        items.append(("multiplier", "%s %d%%" % (cls.name, cls.percent), cls.percent, 0, acc[1]))
        fee += acc[1]
    if acc[2]:
        items.append(("cap", "cap per 24 h" if tf.cap_24h else "cap per day", acc[3], cls.cap, -acc[2]))
        fee -= acc[2]
    return fee, items


def _plan(tf, cls, day):
    # Plan index for local day number `day` (days since 1970-01-01).
    if day in tf.holidays:
        return cls.plan_nw
    if day in tf.workdays or (day + 3) % 7 + 1 not in tf.weekend:  # ISO weekday
        return cls.plan_w
    return cls.plan_nw


def _period(tf, cls, lo, hi, t, origin, entry, counts):
    # Counts the units that start in [lo, hi), day by day, piece by piece;
    # returns where the next unit starts.
    off = tf.offset_s
    free = cls.daily_free_s
    m = (lo + off) // DAY * DAY - off  # local midnight starting lo's day
    while m < hi:
        a = lo if lo > m else m
        b = hi if hi < m + DAY else m + DAY
        fs = fe = 0
        if free:  # this day's free window: the first minutes of the stay in it
            fs = entry if entry > m else m
            fe = min(fs + free, m + DAY)
        for s, e, tiers in tf.plans[_plan(tf, cls, (m + off) // DAY)]:
            ra = max(m + s, a)
            rb = min(m + e, b)
            if ra >= rb:
                continue
            if fe > ra and fs < rb:  # no unit starts inside the free window
                if ra < fs:
                    t = _units(ra, fs, tiers, t, origin, counts)
                t = max(t, fe)
                ra = fe
            t = _units(ra, rb, tiers, t, origin, counts)
        m += DAY
    return t


def _units(ra, rb, tiers, t, origin, counts):
    # Units starting in [ra, rb), each priced by the tier its start is in.
    if t < ra:
        t = ra
    while t < rb:
        for until, unit, price, key in tiers:
            if until is None or t - origin < until:
                break
        lim = rb if until is None else min(rb, origin + until)
        n = (lim - t + unit - 1) // unit  # a started unit counts in full
        counts[key] = counts.get(key, 0) + n
        t += n * unit
    return t


def _settle(cls, prices, counts, out):
    # (counts, subtotal, after multiplier, after cap, next unit offset)
    sub = 0
    for key in counts:
        sub += counts[key] * prices[key]
    msub = (sub * cls.percent + 50) // 100  # round half up to the fen
    return (counts, sub, msub, msub if cls.cap is None else min(msub, cls.cap), out)


def _add(acc, res, n):
    total = acc[0]
    counts = res[0]
    for key in counts:
        total[key] = total.get(key, 0) + counts[key] * n
    acc[1] += (res[2] - res[1]) * n
    acc[2] += (res[2] - res[3]) * n
    if res[3] < res[2]:
        acc[3] += n
