# Tariff engine API: the fee a gate computes offline is the fee the lot
# server computes online, from the same table with this same code.
# Pure: callers pass the parsed table and unix seconds (1970 epoch, UTC).
# Table format and charging rules: firmware/docs/tariff.md.
# Modules: tariff_engine (the fee); tariff_check, tariff_bands, tariff_fields
# and tariff_time (validation, calendar), imported by load(). Kept small:
# the code shares a 64 KiB heap with the data on the unix port.
from parkgate.tariff_engine import charge

COLOURS = ("blue", "yellow", "white", "black", "green", "yellow-green",
           "gradient", "other")


class TariffError(ValueError):
    # A bad table or argument: .field names it; str(e) is "field: message".

    def __init__(self, field, message):
        super().__init__("%s: %s" % (field, message))
        self.field = field
        self.message = message


def colour_code(value, field="colour"):
    # Plate colour code 0..7 from a code or a name (see COLOURS).
    code = value
    if type(value) is str:
        code = int(value) if value.isdigit() else COLOURS.index(value) if value in COLOURS else -1
    if type(code) is not int or not 0 <= code < 8:
        raise TariffError(field, "bad plate colour %r (0-7 or a name)" % (value,))
    return code


def load(doc):
    # A Tariff from a parsed table dict; TariffError naming the bad field.
    # Pure: doc is not modified, nothing else is touched.
    from parkgate.tariff_check import compile_table
    return compile_table(doc)


def loads(text):
    # A Tariff from JSON text or bytes.
    import json
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise TariffError("json", "not valid JSON (%s)" % exc)
    return load(doc)


class Tariff:
    # A compiled table. Public: version, digest, name, utc_offset_minutes,
    # grace_seconds, examples; the rest is for the engine.

    def class_of(self, colour):
        # The VehicleClass for a plate colour.
        return self.classes.get(colour_code(colour), self.base)


class VehicleClass:
    # name, percent, cap, no_entry_fee, daily_free_s, and plan_w / plan_nw:
    # the plan index on working / non-working days.
    pass


class Quote:
    # fee in fen; items: (kind, label, quantity, unit_price, amount) tuples
    # whose amounts add up to fee. Kinds: free, daily_free, units,
    # multiplier, cap, member, no_entry.

    def __init__(self, tf, entry, exit, colour, cls, member, fee, items):
        self.version = tf.version
        self.digest = tf.digest
        self.entry = entry
        self.exit = exit
        self.colour = colour
        self.vehicle_class = cls.name
        self.member = member
        self.fee = fee
        self.items = items

    def to_dict(self):
        items = []
        for kind, label, qty, price, amount in self.items:
            items.append({"kind": kind, "label": label, "quantity": qty,
                          "unit_price": price, "amount": amount})
        return {"fee": self.fee, "items": items, "version": self.version,
                "digest": self.digest, "entry": self.entry, "exit": self.exit,
                "colour": self.colour, "class": self.vehicle_class,
                "member": self.member}


def quote(tariff, entry, exit, colour=0, member=False):
    # The Quote for a stay from entry to exit (int unix seconds).
    # exit < entry raises TariffError("exit", ...), which is a ValueError.
    for field, t in (("entry", entry), ("exit", exit)):
        if type(t) is not int:
            raise TariffError(field, "expected integer unix seconds, got %r" % (t,))
    if exit < entry:
        raise TariffError("exit", "exit %d is before entry %d" % (exit, entry))
    colour = colour_code(colour)
    cls = tariff.class_of(colour)
    if member:
        return Quote(tariff, entry, exit, colour, cls, True, 0,
                     [("member", "member or monthly pass", 1, 0, 0)])
    fee, items = charge(tariff, cls, entry, exit)
    return Quote(tariff, entry, exit, colour, cls, False, fee, items)


def quote_no_entry(tariff, exit, colour=0):
    # The Quote for an exit with no matching entry record.
    if type(exit) is not int:
        raise TariffError("exit", "expected integer unix seconds, got %r" % (exit,))
    colour = colour_code(colour)
    cls = tariff.class_of(colour)
    fee = cls.no_entry_fee
    return Quote(tariff, None, exit, colour, cls, False, fee,
                 [("no_entry", "exit without matching entry", 1, fee, fee)])
