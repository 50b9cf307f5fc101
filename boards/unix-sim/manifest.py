# What `make firmware BOARD=unix-sim` freezes into the simulator's 32-bit
# MicroPython image: exactly the bytecode a gate runs. Paths are relative to
# this file (MicroPython's manifest rules).
package("parkgate", base_path="../../firmware")
module("main.py", base_path="../../firmware")
# The board: its adapters, the emulated flash chip and the port's own boot
# script (the unix port's stand-in for the ESP32's frozen _boot.py).
module("board.py")
module("flashdev.py")
module("simboot.py", base_path="port")
module("provision.py")
# umqtt.simple as pinned by host_tools/fetch_umqtt.py (the ESP32 firmware
# freezes its own copy; this one is the same release).
package("umqtt", base_path="../../build/lib")
