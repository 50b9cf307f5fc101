# MicroPython, run on the board inside wrapper.py (field/transport.py).
# An atomic file update: check a copied temp file's SHA-256, then rename it
# over the real one (a rename replaces atomically on littlefs).
# args: {"tmp", "final", "sha"}. Prints {"ok", "sha"}; a bad copy is removed.
import os
stage[0] = "verify"
got = sha(args["tmp"])
if got != args["sha"]:
    os.remove(args["tmp"])
    out({"ok": False, "sha": got})
else:
    stage[0] = "rename"
    os.rename(args["tmp"], args["final"])
    out({"ok": True, "sha": sha(args["final"])})
