# The camera parser a lane uses, by the site config's camera kind:
# "pg" the project's own frame (frame.py), "vz" Vzenith (vzenith.py).
# Only the kind's modules are imported: on the board each module's objects
# take heap (on the 32-bit image frame's with resync, their shared
# resynchronising base, about 1.5 KB; vzenith's about 1.5 KB more).
KINDS = ("pg", "vz")


def make_parser(kind, on_plate, on_reject):
    if kind == "pg":
        from parkgate import frame
        return frame.FrameParser(on_plate, on_reject)
    if kind == "vz":
        from parkgate import vzenith
        return vzenith.VzParser(on_plate, on_reject)
    raise ValueError("camera kind %r is not one of %r" % (kind, KINDS))


def reject_names(kind):
    """reason code -> name for the kind's parser (vzenith's extend frame's)."""
    if kind == "vz":
        from parkgate import vzenith
        return vzenith.REJECT_NAMES
    from parkgate import frame
    return frame.REJECT_NAMES
