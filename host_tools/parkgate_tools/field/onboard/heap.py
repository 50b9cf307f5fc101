# MicroPython, run on the board inside wrapper.py (field/transport.py).
# Free heap after a collection, as a deploy with --code needs it.
# args: none. Prints {"free", "alloc"}.
import gc
stage[0] = "heap"
gc.collect()
out({"free": gc.mem_free(), "alloc": gc.mem_alloc()})
