# Names MicroPython has built in and CPython lacks, defined once for the core.
try:
    from micropython import const
except ImportError:
    def const(value):
        return value
