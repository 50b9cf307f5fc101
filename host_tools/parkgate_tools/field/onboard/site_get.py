# MicroPython, run on the board inside wrapper.py (field/transport.py).
# The board's site.json (for `config get` and `config set`).
# args: none. Prints {"site": the document or None, "root"}.
stage[0] = "board"
import board
stage[0] = "site"
try:
    site = board.load_site()
except OSError:
    site = None
except ValueError:
    raise ValueError("site.json on the board is not valid JSON")
out({"site": site, "root": board.mount_flash()})
