# MicroPython, run on the board inside wrapper.py (field/transport.py).
# `parkgate board test-relay`: pulse the barrier relay.
# args: {"ms": pulse length}. Prints {"ms": measured}.
import time
stage[0] = "board"
import board
stage[0] = "relay"
relay = board.Relay()
t0 = time.ticks_ms()
relay.set(True)
try:
    time.sleep_ms(args["ms"])
finally:
    relay.set(False)
out({"ms": time.ticks_diff(time.ticks_ms(), t0)})
