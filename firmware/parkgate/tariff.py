# Tariff engine API: the fee a gate computes offline is the fee the lot
# server computes online, from the same table with this same code.
# Pure: callers pass the parsed table and unix seconds (1970 epoch, UTC).
# Table format and charging rules: firmware/docs/tariff.md.
# The tariff modules in layers, each importing only those below it:
#   tariff_types   COLOURS, TariffError, colour_code, Tariff, VehicleClass
#   tariff_time    calendar arithmetic;  tariff_fields  typed field checks, digest
#   tariff_bands   plans and their bands;  tariff_check  the whole table
#   tariff_engine  the fee of a stay (needs none of the above)
#   tariff         this API: load, loads, quote, quote_no_entry
# Kept small: the code shares a 64 KiB heap with the data on the gate. The
# validation (tariff_check and below) is imported by load(), not here: the
# gate imports it itself at boot, on a short import chain (an ESP32's stack
# holds few nested imports).
from parkgate.tariff_engine import charge
from parkgate.tariff_types import (COLOURS, Tariff, TariffError, VehicleClass,  # noqa: F401
                                   colour_code)


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
