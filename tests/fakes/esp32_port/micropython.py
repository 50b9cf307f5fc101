"""A fake of MicroPython's micropython module (see machine.py here)."""


def const(value):
    return value
