# The unix-sim board's own start-up: what MicroPython does on an ESP32 before
# main.py or the REPL (its frozen _boot.py): mount the filesystem (formatting
# a blank one), make it the current folder and the import path. Not deployed;
# run by the host (host_tools/parkgate_tools/sim_repl.py) as
#   micropython -i repl_boot.py        the REPL on a serial line (SimRepl)
#   micropython repl_boot.py           with PARKGATE_SIM_MAIN=1: main.py (FlashGate)
# with PARKGATE_SIM_DIR (the gate's folder: flash.img) and MICROPYPATH holding
# flashdev, the emulated flash chip: part of this "port" as esp32.Partition
# is of the ESP32's, it stays loaded, and the board adapter that deploy
# copied uses the device opened here (flashdev.BOOT_DEVICE). The geometry is
# the "flash" entry of ../board.json (the same as board.py's constants).
# Afterwards only what is on the flash can be imported: what a field tool's
# deploy copied is what runs. Writes PARKGATE_SIM_DIR/repl.ready when done.
import json
import os
import sys
import vfs

import flashdev

_dir = os.getenv("PARKGATE_SIM_DIR") or "."
with open(__file__.rsplit("/", 2)[0] + "/board.json") as _f:
    _geo = json.load(_f)["flash"]
flashdev.BOOT_DEVICE = flashdev.FlashDevice(_dir + "/" + _geo["image"], _geo["block_size"],
                                            _geo["block_count"])
_region = flashdev.Partition(flashdev.BOOT_DEVICE, 0, _geo["fs_blocks"])
_root = _geo["fs_path"]
try:
    vfs.mount(vfs.VfsLfs2(_region), _root)
except OSError:
    vfs.VfsLfs2.mkfs(_region)
    vfs.mount(vfs.VfsLfs2(_region), _root)
os.chdir(_root)
sys.path[:] = ["", ".frozen", _root + "/lib"]     # as on the ESP32: cwd, frozen, /lib
with open(_dir + "/repl.ready", "w") as _f:
    _f.write("ok\n")
del _f, _geo, _region, _root, _dir
if os.getenv("PARKGATE_SIM_MAIN"):
    import gc
    gc.collect()
    try:
        import main
    except ImportError as _exc:
        if "main" not in str(_exc):
            raise
        print("no main.py on the flash: deploy the firmware first")
        sys.exit(1)
