# Helpers for core tests that run on CPython (pytest) and on the MicroPython
# unix port (tests/mprun.py) alike: no pytest features, plain functions.


def raises(exc_type, fn, *args, **kwargs):
    """Call fn and return the exception of exc_type it raised; fail otherwise."""
    try:
        fn(*args, **kwargs)
    except exc_type as exc:
        return exc
    raise AssertionError("%s not raised" % exc_type.__name__)
