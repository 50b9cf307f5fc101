# Tariff engine core tests: run by pytest on CPython and by tests/mprun.py
# under MicroPython (-X heapsize=64k). Plain functions, no pytest features.
# Both runners start in the repository root: tables are read from there.
# Memory: the bad-table cases are comment lines at the end of this file,
# read at run time, so they cost nothing to compile or keep.
import gc
import json
import os

from check import raises

from parkgate import tariff_check  # noqa: F401  (compile the validator while the heap is empty)
from parkgate import tariff
from parkgate.tariff import TariffError
from parkgate.tariff_engine import charge
from parkgate.tariff_time import parse_time
from parkgate_host.tariffs import format_time, quote_dict

TARIFFS = "firmware/tariffs/"
MIXED = "mixed_city.json"
H = 3600
T0 = 1772413200  # 2026-03-02T09:00 UTC+8, a Monday
DEL = "DEL"
if hasattr(gc, "threshold"):  # MicroPython: collect often, as a gate does,
    gc.threshold(4096)  # so garbage does not fragment the small heap


def _open(name):
    gc.collect()  # MicroPython's heap is small: start a table from a clean one
    with open(TARIFFS + name) as f:
        return json.load(f)  # streamed: no copy of the text on the heap


def _check_example(tf, ex):
    off = tf.utc_offset_minutes
    exit = parse_time(ex["exit"], off)
    colour = ex.get("colour", 0)
    if "entry" in ex:
        entry = parse_time(ex["entry"], off)
        q = tariff.quote(tf, entry, exit, colour, ex.get("member", False))
        if not q.member:  # the shortcut for long stays changes nothing
            assert charge(tf, tf.class_of(colour), entry, exit, False) == (q.fee, q.items)
    else:
        q = tariff.quote_no_entry(tf, exit, colour)
    assert q.fee == ex["fee"], "%s: got %d, %s" % (ex, q.fee, q.items)
    total = 0
    for item in q.items:
        total += item[4]
    assert total == q.fee


def test_every_shipped_table_quotes_its_examples():
    names = [n for n in sorted(os.listdir(TARIFFS[:-1])) if n.endswith(".json")]
    assert len(names) >= 10
    for name in names:
        tf = None
        tf = tariff.load(_open(name))
        gc.collect()  # the table text is garbage now: free it before quoting
        assert tf.examples, name
        for ex in tf.examples:
            _check_example(tf, ex)


def test_default_table():
    tf = tariff.load(_open("default.json"))
    assert tf.version == 1 and tf.grace_seconds == 900 and tf.utc_offset_minutes == 480
    assert len(tf.digest) == 64 and tariff.quote_no_entry(tf, T0).fee == 2000


def test_quote_to_dict_and_errors():
    tf = tariff.load(_open(MIXED))
    d = quote_dict(tariff.quote(tf, T0, T0 + 40 * 60, "yellow"))
    assert d["fee"] == 863 and d["version"] == 7 and d["digest"] == tf.digest
    assert d["class"] == "large" and d["colour"] == 1 and d["member"] is False
    assert d["items"][-1] == {"kind": "multiplier", "label": "large 115%", "quantity": 115,
                              "unit_price": 0, "amount": 113}
    assert quote_dict(tariff.quote_no_entry(tf, T0))["entry"] is None
    err = raises(ValueError, tariff.quote, tf, T0, T0 - 1)
    assert isinstance(err, TariffError) and err.field == "exit"
    assert raises(TariffError, tariff.quote, tf, "09:00", T0).field == "entry"
    assert raises(TariffError, tariff.quote, tf, T0, T0, 8).field == "colour"
    assert raises(TariffError, tariff.loads, "{nope").field == "json"
    assert tariff.colour_code("yellow-green") == 5 and tariff.colour_code("4") == 4


def test_smallest_table_from_bytes():
    tf = tariff.loads(b'{"schema": "parkgate-tariff/1", "version": 3, "utc_offset_minutes": 0, '
                      b'"grace_seconds": 0, "no_entry_fee": 0, "plans": {"p": {"bands": [{"name": '
                      b'"a", "start": "00:00", "end": "00:00", "tiers": [{"unit_minutes": 60, '
                      b'"unit_price": 100}]}]}}}')
    assert tf.version == 3 and tf.grace_seconds == 0
    assert tariff.quote(tf, 0, 3 * H + 1).fee == 400 and tariff.quote(tf, 5, 5).fee == 0


def test_long_stays_match_the_full_computation():
    tf = tariff.load(_open(MIXED))
    for colour in (0, 1, 4):
        cls = tf.class_of(colour)
        for days in (1, 45, 90):
            exit = T0 + days * 24 * H + 7 * 60
            fast = charge(tf, cls, T0, exit, True)
            assert fast == charge(tf, cls, T0, exit, False)
            assert 0 < fast[0] <= (days + 1) * cls.cap


def test_calendar_arithmetic_is_epoch_independent():
    assert parse_time("1970-01-01T08:00", 480) == 0 and parse_time("2026-03-02T09:00", 480) == T0
    assert parse_time("2000-01-01T00:00", 0) == 946684800
    assert parse_time("2024-02-29T23:59:59", -300) == 1709269199
    assert format_time(T0, 480) == "2026-03-02T09:00:00"
    assert format_time(-1, 0) == "1969-12-31T23:59:59"
    raises(TariffError, parse_time, "2026-02-29T10:00", 0)
    raises(TariffError, parse_time, "2026-03-02T24:00", 0)


def test_load_is_pure():
    doc = _open("default.json")
    good = tariff.load(doc)
    assert doc == _open("default.json")  # input untouched
    doc["plans"]["all"]["bands"][0]["tiers"][0]["unit_price"] = -1
    raises(TariffError, tariff.load, doc)
    # nothing was replaced: the table in use (kept by the caller) still quotes
    assert tariff.quote(good, T0, T0 + H).fee == 200 and good.version == 1


def test_digest_covers_content_not_examples():
    doc = _open("default.json")
    a = tariff.load(doc).digest
    doc["examples"] = []
    assert tariff.load(doc).digest == a
    doc["no_entry_fee"] = 2001
    assert tariff.load(doc).digest != a


# ---- a named error for every kind of malformed table ----

def _set(doc, path, value):
    # path: "/"-separated keys and list indexes; value DEL removes the key.
    parts = path.split("/")
    node = doc
    for part in parts[:-1]:
        node = node[int(part)] if type(node) is list else node[part]
    last = parts[-1]
    if value == DEL:
        node.pop(last)
    elif type(node) is list:
        node[int(last)] = value
    else:
        node[last] = value


def _bad(kind):
    # Each "#| kind field <- path = json [; path = json]" line at the end of
    # this file: the mutated mixed_city table fails naming that field.
    base = _open(MIXED)
    base.pop("examples")
    base = json.dumps(base)  # a copy per case is parsed from this text
    n = 0
    with open("tests/core/test_tariff.py") as f:
        for line in f:
            if not line.startswith("#| " + kind + " "):
                continue
            field, changes = line[len(kind) + 4:].rstrip().split(" <- ")
            doc = None
            doc = json.loads(base)
            for change in changes.split(" ; "):
                path, value = change.split(" = ")
                path = path.replace("B0/", "plans/wk/bands/0/").replace("B1/", "plans/wk/bands/1/")
                _set(doc, path, DEL if value == DEL else json.loads(value))
            err = raises(TariffError, tariff.load, doc)
            assert err.field == field, "%s: %s != %s (%s)" % (line, err.field, field, err)
            assert str(err) == field + ": " + err.message
            n += 1
    assert n, kind


def test_error_missing_field():
    _bad("missing")


def test_error_wrong_type():
    _bad("type")


def test_error_unknown_key():
    _bad("unknown")


def test_error_overlapping_bands():
    _bad("overlap")


def test_error_gap_between_bands():
    _bad("gap")


def test_error_negative_price():
    _bad("negative")


def test_error_zero_unit_length():
    _bad("zero_unit")


def test_error_tiers_out_of_order():
    _bad("tiers")


def test_error_bad_times_of_day():
    _bad("clock")


def test_error_bad_holiday_dates():
    _bad("date")


def test_error_bad_colours():
    _bad("colour")


def test_error_bad_plan_references():
    _bad("plan")


def test_error_out_of_range():
    _bad("range")


def test_error_bad_classes():
    _bad("class")


def test_error_bad_examples():
    _bad("example")


# Bad-table cases: kind, expected field, then changes to mixed_city.json
# (B0/ and B1/ stand for plans/wk/bands/0/ and /1/; DEL removes a key).
#| missing no_entry_fee <- no_entry_fee = DEL
#| missing free.deducted <- free/deducted = DEL
#| missing plans.wk.bands[1].tiers <- B1/tiers = DEL
#| tiers plans.wk.bands[0].tiers[0].until_minutes <- B0/tiers/0/until_minutes = DEL
#| type version <- version = "7"
#| type grace_seconds <- grace_seconds = true
#| type cap.amount <- cap/amount = 40.0
#| type plans <- plans = []
#| type free.deducted <- free/deducted = 0
#| type plans.wk.bands[0].name <- B0/name = ""
#| type calendar.holidays[0] <- calendar/holidays/0 = 20260501
#| unknown colour <- colour = 1
#| unknown plans.wk.bands[0].tiers[1].price <- B0/tiers/1/price = 1
#| tiers plans.wk.bands[0].tiers[1].until_minutes <- B0/tiers/1/until_minutes = 90
#| overlap plans.wk.bands[1].start <- B1/start = "18:00"
#| overlap plans.wk.bands[0].start <- B1/end = "08:00"
#| overlap plans.wk.bands <- B0/end = "07:00" ; B1/start = "07:00" ; B1/end = "07:00"
#| gap plans.wk.bands[1].start <- B1/start = "19:30"
#| gap plans.we.bands[0].start <- plans/we/bands/0/end = "23:00"
#| negative plans.wk.bands[0].tiers[0].unit_price <- B0/tiers/0/unit_price = -250
#| negative no_entry_fee <- no_entry_fee = -1
#| negative cap.amount <- cap/amount = -1
#| zero_unit plans.wk.bands[1].tiers[0].unit_minutes <- B1/tiers/0/unit_minutes = 0
#| tiers plans.wk.bands[0].tiers[1].until_minutes <- B0/tiers = [{"until_minutes": 30, "unit_minutes": 15, "unit_price": 1}, {"until_minutes": 30, "unit_minutes": 15, "unit_price": 1}, {"unit_minutes": 15, "unit_price": 1}]
#| clock plans.wk.bands[0].start <- B0/start = "7:00"
#| clock plans.wk.bands[0].end <- B0/end = "19:60"
#| clock plans.wk.bands[0].start <- B0/start = "24:00"
#| date calendar.holidays[0] <- calendar/holidays/0 = "2026-02-30"
#| date calendar.holidays[0] <- calendar/holidays/0 = "2026-5-1"
#| date calendar.holidays[1] <- calendar/holidays = ["2026-05-01", "2026-05-01"]
#| date calendar.workdays[0] <- calendar/workdays/0 = "2026-05-01"
#| date calendar.weekend[1] <- calendar/weekend = [6, 8]
#| colour classes[0].colours[0] <- classes/0/colours/0 = 9
#| colour classes[0].colours[0] <- classes/0/colours/0 = "pink"
#| colour classes[0].colours[1] <- classes/0/colours/1 = null
#| colour classes[1].colours[0] <- classes/1/colours/0 = 5
#| colour classes[1].colours <- classes/1/colours = []
#| plan day_plans.working <- day_plans/working = "weekday"
#| plan day_plans <- day_plans = DEL
#| plan plans.spare <- plans/spare = {"bands": [{"name": "x", "start": "00:00", "end": "00:00", "tiers": [{"unit_minutes": 1, "unit_price": 1}]}]}
#| plan plans.spare.bands <- plans/spare = {"bands": []} ; classes/0/day_plans = {"working": "spare", "non_working": "we"}
#| range cap.period <- cap/period = "week"
#| range utc_offset_minutes <- utc_offset_minutes = 900
#| range free.minutes <- free/minutes = 1441
#| range classes[0].multiplier_percent <- classes/0/multiplier_percent = 0
#| range schema <- schema = "parkgate-tariff/2"
#| range version <- version = 0
#| class classes[1].name <- classes/1/name = "large"
#| class classes[0].cap_amount <- cap = DEL ; classes/0/cap_amount = 100
#| example examples[0].fee <- examples = [{"exit": "2026-03-02T10:00"}]
#| example examples[0].exit <- examples = [{"exit": "2026-03-02", "fee": 1}]
#| example examples[0].exit <- examples = [{"entry": "2026-03-02T11:00", "exit": "2026-03-02T10:00", "fee": 1}]
#| example examples[0].colour <- examples = [{"exit": "2026-03-02T10:00", "fee": 1, "colour": 8}]
