# Plate text the gate never needs to produce or classify: GBK encoding (what
# a Vzenith camera sends) and recognising a mainland plate's form, through
# parkgate.plate's own character table.
from parkgate import plate
from parkgate.plate import PlateError

# suffix characters after province + city letter + 4 serial characters
_SUFFIXES = "学警港澳挂领"


def encode_gbk(text):
    """text as GBK bytes through the plate table (works on MicroPython);
    PlateError for a character outside ASCII and the table."""
    table = plate._GBK
    size = 0
    for ch in text:
        size += 1 if ord(ch) < 0x80 else 2
    out = bytearray(size)
    o = 0
    for ch in text:
        code = ord(ch)
        if code < 0x80:
            out[o] = code
            o += 1
            continue
        k = plate._index(ch)
        if k < 0:
            raise PlateError("no GBK code for %r" % ch)
        out[o] = table[2 * k]
        out[o + 1] = table[2 * k + 1]
        o += 2
    return bytes(out)


def _serial(text, start, end):
    # A-Z without I and O, or 0-9, for every character in text[start:end]
    for k in range(start, end):
        c = text[k]
        if not ("0" <= c <= "9" or ("A" <= c <= "Z" and c != "I" and c != "O")):
            return False
    return True


def is_chinese_plate(text):
    """True if the normalised text has a mainland plate's form: province,
    city letter and 5 characters (6 on new-energy plates); province, letter,
    4 characters and one of 学警港澳挂领, or 4 or 5 and 应急; 使 and 6
    digits; 民航 and 5 characters."""
    n = len(text)
    if n < 7 or n > 9:
        return False
    if plate._is_province(text[0]):
        city = text[1]
        if not ("A" <= city <= "Z") or city == "I":
            return False
        if n == 7 and text[6] in _SUFFIXES:
            return _serial(text, 2, 6)
        if text[n - 2:] == "应急":
            return n in (8, 9) and _serial(text, 2, n - 2)
        return n in (7, 8) and _serial(text, 2, n)
    if text[0] == "使":
        return n == 7 and _serial(text, 1, 7) and text[1:].isdigit()
    if text[:2] == "民航":
        return n == 7 and _serial(text, 2, 7)
    return False
