# MicroPython, run on the board inside wrapper.py (field/transport.py).
# `parkgate board set-clock`: set the board's clock through its ClockSource
# and read it back through a new one.
# args: {"time": unix seconds}. Prints {"time": unix seconds read back}.
stage[0] = "board"
import board
stage[0] = "clock"
from parkgate.clock import EPOCH_OFFSET
source = board.ClockSource()
source.set_seconds(args["time"] - EPOCH_OFFSET)
out({"time": int(board.ClockSource().seconds()) + EPOCH_OFFSET})
