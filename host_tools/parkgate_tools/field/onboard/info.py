# MicroPython, run on the board inside wrapper.py (field/transport.py).
# What the board is, where its filesystem is, where its code comes from.
# args: none. Prints {"micropython", "board" (None: no parkgate board module), "root", "code"}.
stage[0] = "board"
res = {"micropython": "%d.%d.%d" % sys.implementation.version[:3]}
try:
    import board
except ImportError as exc:
    if "board" not in str(exc):
        raise
    res["board"] = None
else:
    res["board"] = board.NAME
    res["root"] = board.mount_flash()
    res["code"] = origin(board)
out(res)
