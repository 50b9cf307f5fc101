# Validates a parsed tariff table and compiles it into a Tariff. Every
# error is a TariffError naming the field ("plans.wk.bands[1].start").
# Pure: the input is never modified. Schema: firmware/docs/tariff.md.
from parkgate.tariff_types import Tariff, TariffError, VehicleClass, colour_code
from parkgate.tariff_bands import compile_plans
from parkgate.tariff_fields import digest_of, obj, value
from parkgate.tariff_time import parse_date, parse_time

SCHEMA = "parkgate-tariff/1"
# specs: see tariff_fields
TOP = ("schema=s version=i1,2147483647 name?=s description?=S "
       "utc_offset_minutes=i-720,840 grace_seconds=i0,86400 no_entry_fee=m "
       "free?=o cap?=o calendar?=o plans=o day_plans?=o classes?=l0,8 examples?=l0,200")
FREE = "minutes=i0,1440 deducted=b"
CAP = "amount=m period=s restart_tiers?=b"
CALENDAR = "weekend?=l0,7 holidays?=l0,1000 workdays?=l0,1000"
DAY_PLANS = "working=s non_working=s"
CLASS = ("name=s colours=l1,8 multiplier_percent?=i1,1000 cap_amount?=m "
         "no_entry_fee?=m daily_free_minutes?=i0,1440 day_plans?=o")
EXAMPLE = "entry?=* exit=* colour?=* member?=b fee=m why?=S"


def compile_table(doc):
    # A Tariff from a parsed table; TariffError for the first bad field.
    obj(doc, "", TOP)
    if doc["schema"] != SCHEMA:
        raise TariffError("schema", "expected %r" % SCHEMA)
    tf = Tariff()
    tf.version = doc["version"]
    tf.name = doc.get("name", "")
    tf.utc_offset_minutes = off = doc["utc_offset_minutes"]
    tf.offset_s = off * 60
    tf.grace_seconds = doc["grace_seconds"]
    free = obj(doc.get("free", {"minutes": 0, "deducted": False}), "free", FREE)
    tf.free_s = free["minutes"] * 60
    tf.free_deducted = free["deducted"]
    cap = doc.get("cap")
    tf.cap = None
    tf.cap_24h = tf.restart = False
    if cap is not None:
        obj(cap, "cap", CAP)
        if cap["period"] not in ("24h", "day"):
            raise TariffError("cap.period", 'expected "24h" or "day"')
        tf.cap = cap["amount"]
        tf.cap_24h = cap["period"] == "24h"
        tf.restart = cap.get("restart_tiers", False)
    cal = obj(doc.get("calendar", {}), "calendar", CALENDAR)
    tf.weekend = _weekend(cal.get("weekend", [6, 7]))
    tf.holidays = _dates(cal.get("holidays", []), "calendar.holidays", ())
    tf.workdays = _dates(cal.get("workdays", []), "calendar.workdays", tf.holidays)
    names = compile_plans(tf, doc["plans"])
    used = {}
    if "day_plans" in doc:
        plans = _day_plans(doc["day_plans"], "day_plans", names, used)
    elif len(names) == 1:
        plans = (0, 0)
        used[names[0]] = 1
    else:
        raise TariffError("day_plans", "missing: there are several plans")
    fee = doc["no_entry_fee"]
    tf.base = _class(tf, {"name": "standard"}, "", plans, fee, names, used)
    tf.classes = {}
    classes = doc.get("classes", [])
    for i in range(len(classes)):
        f = "classes[%d]" % i
        raw = obj(classes[i], f, CLASS)
        for other in classes[:i]:
            if other["name"] == raw["name"]:
                raise TariffError(f + ".name", "class %s defined twice" % raw["name"])
        c = _class(tf, raw, f, plans, fee, names, used)
        colours = raw["colours"]
        for j in range(len(colours)):
            cf = "%s.colours[%d]" % (f, j)
            code = colour_code(colours[j], cf)
            if code in tf.classes:
                raise TariffError(cf, "colour %d is already in class %s" % (code, tf.classes[code].name))
            tf.classes[code] = c
    for name in names:
        if name not in used:
            raise TariffError("plans." + name, "not used by day_plans or any class")
    tf.examples = _examples(doc.get("examples", []), off)
    tf.digest = digest_of(doc)
    return tf


def _class(tf, raw, f, plans, no_entry_fee, names, used):
    c = VehicleClass()
    c.name = raw["name"]
    c.percent = raw.get("multiplier_percent", 100)
    c.cap = tf.cap
    if tf.cap is not None:
        c.cap = (tf.cap * c.percent + 50) // 100  # the cap scales with the class
    if "cap_amount" in raw:
        if tf.cap is None:
            raise TariffError(f + ".cap_amount", "the table has no cap")
        c.cap = raw["cap_amount"]
    c.no_entry_fee = raw.get("no_entry_fee", no_entry_fee)
    c.daily_free_s = raw.get("daily_free_minutes", 0) * 60
    if "day_plans" in raw:
        plans = _day_plans(raw["day_plans"], f + ".day_plans", names, used)
    c.plan_w, c.plan_nw = plans
    return c


def _day_plans(v, f, names, used):
    obj(v, f, DAY_PLANS)
    out = []
    for k in ("working", "non_working"):
        if v[k] not in names:
            raise TariffError(f + "." + k, "no plan named %s" % v[k])
        used[v[k]] = 1
        out.append(names.index(v[k]))
    return out


def _weekend(v):
    for i in range(len(v)):
        f = "calendar.weekend[%d]" % i
        value(v[i], f, "i1,7")
        if v[i] in v[:i]:
            raise TariffError(f, "listed twice")
    return tuple(v)


def _dates(v, field, holidays):
    days = set()
    for i in range(len(v)):
        f = "%s[%d]" % (field, i)
        d = parse_date(v[i], f)
        if d in days or d in holidays:
            raise TariffError(f, "listed twice" if d in days else "also a holiday")
        days.add(d)
    return days


def _examples(v, off):
    for i in range(len(v)):
        f = "examples[%d]" % i
        ex = obj(v[i], f, EXAMPLE)
        exit = parse_time(ex["exit"], off, f + ".exit")
        if "entry" in ex and parse_time(ex["entry"], off, f + ".entry") > exit:
            raise TariffError(f + ".exit", "before entry")
        if "colour" in ex:
            colour_code(ex["colour"], f + ".colour")
    return v
