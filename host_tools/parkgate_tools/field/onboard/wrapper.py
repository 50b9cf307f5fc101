# MicroPython, run on the board: the frame every field tool program runs in.
# field/transport.py sends this file with a program's lines in place of the
# `pass` below, then calls _pg(args) and deletes it, so nothing stays in the
# REPL's globals. A program sees: args (a dict from the host), out(obj) (one
# "PG>" JSON line), stage (item 0 names what the board is doing, reported
# with an error), join(root, name), sha(path), origin(module) and
# has_journal(dev). Any exception becomes one "PG!" line {"stage", "type",
# "message"}, which the host raises as a DeviceError. Lines that are only a
# comment are not sent.


def _pg(args):
    import json
    import sys
    stage = ["start"]

    def out(obj):
        sys.stdout.write("PG>" + json.dumps(obj) + "\n")

    def join(root, name):
        return root.rstrip("/") + "/" + name

    def sha(path):
        import binascii
        import hashlib
        h = hashlib.sha256()
        buf = bytearray(512)
        mv = memoryview(buf)
        with open(path, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(mv[:n])
        return binascii.hexlify(h.digest()).decode()

    def origin(mod):
        # Where an imported module came from: "flash" (the filesystem) or
        # "image" (frozen: its __file__ names no file; the REPL's current
        # folder is the filesystem's root, where sys.path's "" looks).
        import os
        try:
            os.stat(mod.__file__)
            return "flash"
        except (AttributeError, OSError):
            return "image"

    def has_journal(dev):
        # A journal block header starts with the journal's magic
        # (parkgate.journal_ring, firmware/docs/journal.md); a region without
        # one is not formatted here.
        from parkgate.journal_ring import _MAGIC
        head = bytearray(4)
        for b in range(dev.ioctl(4, 0)):
            dev.readblocks(b, head, 0)
            if bytes(head) == _MAGIC:
                return True
        return False

    try:
        pass  # the program
    except Exception as exc:
        sys.stdout.write("PG!" + json.dumps({"stage": stage[0], "type": type(exc).__name__,
                                             "message": str(exc)}) + "\n")
