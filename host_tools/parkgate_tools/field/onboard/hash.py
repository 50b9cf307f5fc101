# MicroPython, run on the board inside wrapper.py (field/transport.py).
# SHA-256 of files, computed on the board.
# args: {"files": [path]}. Prints {"sha": {path: hex digest or None (missing)}}.
stage[0] = "hash"
found = {}
for path in args["files"]:
    try:
        found[path] = sha(path)
    except OSError:
        found[path] = None
out({"sha": found})
