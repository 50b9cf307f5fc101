# Helpers for core tests that run on CPython (pytest) and on the MicroPython
# unix port (tests/mprun.py) alike: no pytest features, plain functions.


def raises(exc_type, fn, *args, **kwargs):
    """Call fn and return the exception of exc_type it raised; fail otherwise."""
    try:
        fn(*args, **kwargs)
    except exc_type as exc:
        return exc
    raise AssertionError("%s not raised" % exc_type.__name__)


def xorshift(seed):
    """rand(n) from a fixed-seed xorshift32: the same numbers on CPython and
    on MicroPython, with no random module."""
    state = [seed]

    def rand(n):
        x = state[0]
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        state[0] = x
        return x % n
    return rand
