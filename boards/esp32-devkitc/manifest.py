# What `make firmware BOARD=esp32-devkitc` freezes into this board's ESP32 image
# (host_tools/build_esp32.py passes it to the ESP32 port as FROZEN_MANIFEST;
# tests/test_frozen_manifests.py resolves and compiles it on every `make
# test`). Paths are relative to this file (MicroPython's manifest rules).
#
# In place of the port's own boards/manifest.py, which require()s
# micropython-lib (bundle-networking, its own umqtt.simple and umqtt.robust,
# ...): only what the gate needs, with umqtt.simple as pinned here.
#
# The ESP32 port's own start-up and helpers (ports/esp32/modules at v1.28.0:
# _boot.py mounts the "vfs" partition at /, or formats it through inisetup.py;
# flashbdev.py finds that partition; machine.py, espnow.py, apa106.py; the
# last needs micropython-lib's neopixel, not frozen here: nothing imports it).
freeze("$(PORT_DIR)/modules")
include("$(MPY_DIR)/extmod/asyncio")
# The gate's code (firmware/manifest.py), this board's pins and network
# (board.py) and the ESP32 adapters every ESP32 board shares.
include("../../firmware/manifest.py")
module("board.py")
module("esp32_board.py", base_path="../esp32")
