# The camera parser a lane uses, by the site config's camera kind:
# "pg" the project's own frame (frame.py), "vz" Vzenith (vzenith.py).
from parkgate import frame, vzenith

KINDS = ("pg", "vz")
# reason code -> name for either parser: vzenith's names extend frame's
REJECT_NAMES = vzenith.REJECT_NAMES


def make_parser(kind, on_plate, on_reject):
    if kind == "pg":
        return frame.FrameParser(on_plate, on_reject)
    if kind == "vz":
        return vzenith.VzParser(on_plate, on_reject)
    raise ValueError("camera kind %r is not one of %r" % (kind, KINDS))
