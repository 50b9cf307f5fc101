# The host's side of the tariff: a Quote as the dict the lot server, the
# field tools and the CPython/MicroPython comparison exchange as JSON, and
# local times as text (parkgate.tariff and parkgate.tariff_time compute).
from parkgate.tariff_time import DAY, civil_from_days


def quote_dict(q):
    """A parkgate.tariff.Quote as a JSON-ready dict."""
    items = []
    for kind, label, qty, price, amount in q.items:
        items.append({"kind": kind, "label": label, "quantity": qty,
                      "unit_price": price, "amount": amount})
    return {"fee": q.fee, "items": items, "version": q.version,
            "digest": q.digest, "entry": q.entry, "exit": q.exit,
            "colour": q.colour, "class": q.vehicle_class,
            "member": q.member}


def format_time(unix, utc_offset_minutes):
    """Local "YYYY-MM-DDTHH:MM:SS" of unix seconds."""
    local = unix + utc_offset_minutes * 60
    s = local % DAY
    return "%04d-%02d-%02dT%02d:%02d:%02d" % (civil_from_days(local // DAY) + (
        s // 3600, s // 60 % 60, s % 60))
