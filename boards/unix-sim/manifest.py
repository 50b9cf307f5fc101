# What `make firmware BOARD=unix-sim` freezes into the simulator's 32-bit
# MicroPython image: exactly the bytecode a gate runs. Paths are relative to
# this file (MicroPython's manifest rules).
# The gate's code: the firmware, main.py and the pinned umqtt.simple.
include("../../firmware/manifest.py")
# The board: its adapters (board.py, with its time in simclock.py and its
# camera line in simuart.py), the emulated flash chip, the port's own boot
# module (the unix port's stand-in for the ESP32's frozen _boot.py), the
# simulator's provisioning script and the two image slots (ota_slots.py).
module("board.py")
module("simclock.py")
module("simuart.py")
module("flashdev.py")
module("simboot.py", base_path="port")
module("provision.py")
module("ota_slots.py")
