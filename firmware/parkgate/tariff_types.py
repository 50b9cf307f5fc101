# The tariff's plain types and the one error every tariff module raises:
# the bottom layer of the tariff modules, importing none of them (the
# layers: tariff.py).

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
