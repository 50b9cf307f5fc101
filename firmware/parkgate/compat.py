# Names MicroPython has built in and CPython lacks, defined once for the core.
try:
    from micropython import const
except ImportError:
    def const(value):
        return value

try:
    from time import ticks_diff, ticks_add
except ImportError:
    # CPython runs the core with plain integer milliseconds that never wrap.
    def ticks_diff(end, start):
        return end - start

    def ticks_add(ticks, delta):
        return ticks + delta
