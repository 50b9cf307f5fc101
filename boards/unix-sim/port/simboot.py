# The unix-sim board's start-up, frozen into its image: what MicroPython's
# frozen _boot.py does on an ESP32 before main.py or the REPL. It mounts the
# littlefs region of the emulated flash at /flash (formatting a blank one)
# and makes it the current folder, so sys.path is as on a board:
# "" (the flash), ".frozen" (the image), "/flash/lib".
#   micropython -X heapsize=64k -i -m simboot    the REPL on a serial line (SimRepl)
#   micropython -X heapsize=64k -m simboot       with PARKGATE_SIM_MAIN=1: main (SimGate)
# PARKGATE_SIM_DIR is the gate's folder (flash.img). The emulated flash chip
# (flashdev) is part of this "port" as esp32.Partition is of the ESP32's:
# the board adapter uses the device opened here (flashdev.BOOT_DEVICE).
# Writes PARKGATE_SIM_DIR/repl.ready once mounted.
import os
import sys

import board
import flashdev

_dir = os.getenv("PARKGATE_SIM_DIR") or "."
flashdev.BOOT_DEVICE = board.flash_device()
board.mount_flash()
os.chdir(board.FS_PATH)
sys.path[:] = ["", ".frozen", board.FS_PATH + "/lib"]
# An ESP32's _boot.py imports no board module: let the next `import board`
# find it (and the board's simclock and simuart) through sys.path, so a
# board.mpy on the flash shadows the frozen one.
for _name in ("board", "simclock", "simuart"):
    del sys.modules[_name]
with open(_dir + "/repl.ready", "w") as _f:
    _f.write("ok\n")
del _f, _dir, _name, board   # nothing keeps this first board module on the heap
if os.getenv("PARKGATE_SIM_MAIN"):
    import gc
    gc.collect()
    import main  # noqa: F401  the image's main, unless the flash holds its own
