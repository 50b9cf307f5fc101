"""Imported first when an ESP32 board module runs on CPython against the
fakes in this folder (tests/board_conformance.py PRELUDE): what MicroPython's
own micropython, time, gc and u-modules have that CPython's lack, and the
board's /site.json read from PARKGATE_FAKE_SITE. Only in that subprocess
(MicroPython has all of it, and reads its fakes of machine, network and
esp32 from this folder as they are)."""
import binascii
import builtins
import gc
import os
import socket
import struct
import sys
import time
import types

_start = time.monotonic()
time.ticks_ms = lambda: int((time.monotonic() - _start) * 1000)
time.ticks_diff = lambda end, start: end - start
time.ticks_add = lambda ticks, delta: ticks + delta
time.sleep_ms = lambda ms: time.sleep(ms / 1000)
time.sleep_us = lambda us: time.sleep(us / 1000000)
_time = time.time
time.time = lambda: int(_time())      # whole seconds, as MicroPython's
gc.mem_free = lambda: 64 * 1024
_micropython = types.ModuleType("micropython")
_micropython.const = lambda value: value
for _name, _module in (("usocket", socket), ("ustruct", struct), ("ubinascii", binascii),
                       ("micropython", _micropython)):
    sys.modules.setdefault(_name, _module)

_open = builtins.open


def _board_open(path, *args, **kwargs):
    if path == "/site.json":
        path = os.environ["PARKGATE_FAKE_SITE"]
    return _open(path, *args, **kwargs)


builtins.open = _board_open
