# Plate text: normalisation and GBK decoding of the characters a plate can
# carry (MicroPython decodes only UTF-8). Recognising mainland plates and GBK
# encoding are the host's (parkgate_host.plates). See firmware/docs/lane.md.
#
# Normalised form: no separators, Latin letters upper-case, full-width ASCII
# made half-width; only A-Z, 0-9 and the characters of _CHARS remain. On a
# plate that starts with a province character, confusables are fixed by
# position: GA 36 never uses the letters I and O in the serial (so O->0,
# I->1 there), and the city code is always a letter (so 0->O there: O is a
# city code of provincial organs, a digit never is).
from parkgate.compat import const


class PlateError(ValueError):
    pass


MAX_PLATE = const(10)       # characters, normalised ("京A12345应急" is 9)
_MAX_INPUT = const(32)      # characters, before separators are removed

# Characters a plate can carry beyond A-Z and 0-9, in GBK table order:
# 0..30 province abbreviations, 31..41 special characters, 42 "无" (a
# Vzenith camera's license for "no plate"; decodable but not a plate char).
_CHARS = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼学警港澳挂使领民航应急无"
_PROVINCES = const(31)
_PLATE_CHARS = const(42)
# GBK code of each character of _CHARS, 2 bytes each (lead, trail), the
# same order; tests/test_plate_gbk.py checks it against CPython's codec.
_GBK = (b"\xbe\xa9\xbd\xf2\xbb\xa6\xd3\xe5\xbc\xbd\xd4\xa5\xd4\xc6\xc1\xc9"
        b"\xba\xda\xcf\xe6\xcd\xee\xc2\xb3\xd0\xc2\xcb\xd5\xd5\xe3\xb8\xd3"
        b"\xb6\xf5\xb9\xf0\xb8\xca\xbd\xfa\xc3\xc9\xc9\xc2\xbc\xaa\xc3\xf6"
        b"\xb9\xf3\xd4\xc1\xc7\xe0\xb2\xd8\xb4\xa8\xc4\xfe\xc7\xed\xd1\xa7"
        b"\xbe\xaf\xb8\xdb\xb0\xc4\xb9\xd2\xca\xb9\xc1\xec\xc3\xf1\xba\xbd"
        b"\xd3\xa6\xbc\xb1\xce\xde")
_UTF8 = _CHARS.encode()     # 3 UTF-8 bytes per character, the same order
_REPLACEMENT = b"\xef\xbf\xbd"   # U+FFFD, for unknown codes when not strict

_SEPARATORS = " \t\u3000\u00b7\u2022\u30fb\u2027.-"


def _index(ch):
    # position of ch in _CHARS, -1 if absent
    return _CHARS.find(ch)


def normalise(text):
    """The plate in its normalised form; PlateError if text is not a plate."""
    if not isinstance(text, str):
        raise PlateError("plate must be a str")
    if len(text) > _MAX_INPUT:
        raise PlateError("plate too long: %r" % text)
    if _already_normal(text):
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if 0xFF01 <= code <= 0xFF5E:        # full-width ASCII
            code -= 0xFEE0
            ch = chr(code)
        if ch in _SEPARATORS:
            continue
        if 0x61 <= code <= 0x7A:            # a..z
            ch = chr(code - 0x20)
        elif not (0x41 <= code <= 0x5A or 0x30 <= code <= 0x39):
            i = _index(ch)
            if i < 0 or i >= _PLATE_CHARS:
                raise PlateError("not a plate character %r in %r" % (ch, text))
        out.append(ch)
    n = len(out)
    if n == 0:
        raise PlateError("empty plate")
    if n > MAX_PLATE:
        raise PlateError("plate too long: %r" % text)
    serial = _serial_start(out, n)
    if serial == 2 and out[1] == "0" and _is_province(out[0]):
        out[1] = "O"
    if serial:
        for k in range(serial, n):
            if out[k] == "O":
                out[k] = "0"
            elif out[k] == "I":
                out[k] = "1"
    return "".join(out)


def _already_normal(text):
    # True if normalise would return text unchanged: checked without
    # building anything, as the camera's plates mostly are (the gate's hot
    # path). Anything else takes normalise's full path.
    n = len(text)
    if n == 0 or n > MAX_PLATE:
        return False
    for k in range(n):
        c = text[k]
        if not ("A" <= c <= "Z" or "0" <= c <= "9" or 0 <= _index(c) < _PLATE_CHARS):
            return False
    serial = _serial_start(text, n)
    if serial == 2 and text[1] == "0" and _is_province(text[0]):
        return False
    for k in range(serial if serial else n, n):
        if text[k] == "O" or text[k] == "I":
            return False
    return True


# Glyphs an ANPR camera confuses with one another on Chinese plates (which
# never use I or O), letters against digits: a read differing from another
# in such glyphs is taken for the same car. Digit against digit (1 and 7)
# is left out: plates numbered in sequence would collide.
_CONFUSABLE = ("0DQU", "8B", "2Z", "5S", "6G", "1T", "4A")


def _confusable(x, y):
    for group in _CONFUSABLE:
        if x in group and y in group:
            return True
    return False


def similar(a, b):
    """True if two normalised plates may be reads of one car: the same, or
    of one length and differing in at most two characters, each the
    province character or a glyph the camera confuses with the other
    (_CONFUSABLE). A misread is taken to change one glyph, so two misreads
    of one car differ in at most two. Allocates nothing."""
    if a == b:
        return True
    n = len(a)
    if n != len(b):
        return False
    differ = 0
    for i in range(n):
        if a[i] != b[i]:
            differ += 1
            if differ > 2 or (i and not _confusable(a[i], b[i])):
                return False
    return True


def _is_province(ch):
    return 0 <= _index(ch) < _PROVINCES


def _serial_start(chars, n):
    # Where the serial (I/O read as 1/0) begins in a plate's n characters:
    # after a province and the city letter, after 使, after 民航; 0: no serial.
    if _is_province(chars[0]) and n >= 2:
        return 2
    if chars[0] == "使":
        return 1
    if n >= 2 and chars[0] == "民" and chars[1] == "航":
        return 2
    return 0


def _trail(b):
    # a GBK trail byte: 0x40..0xFE except 0x7F
    return 0x40 <= b <= 0xFE and b != 0x7F


def decode_gbk(data, start=0, end=-1, strict=True):
    """data[start:end] (GBK bytes) as str. ASCII passes as is; two-byte
    codes must be in the plate table: otherwise PlateError naming the bytes,
    or U+FFFD when strict is False."""
    if end < 0:
        end = len(data)
    table = _GBK
    # first pass: the UTF-8 length; second: fill
    size = 0
    i = start
    while i < end:
        b = data[i]
        if b < 0x80:
            size += 1
            i += 1
        elif 0x81 <= b <= 0xFE and i + 1 < end and _trail(data[i + 1]):
            size += 3
            i += 2
        else:
            if strict:
                raise PlateError("bad GBK byte 0x%02x at %d" % (b, i))
            size += 3
            i += 1
    out = bytearray(size)
    o = 0
    i = start
    while i < end:
        b = data[i]
        if b < 0x80:
            out[o] = b
            o += 1
            i += 1
            continue
        k = -1
        if 0x81 <= b <= 0xFE and i + 1 < end and _trail(data[i + 1]):
            lo = data[i + 1]
            j = 0
            while j < len(table):
                if table[j] == b and table[j + 1] == lo:
                    k = j // 2
                    break
                j += 2
            if k < 0 and strict:
                raise PlateError("unknown GBK code 0x%02x%02x at %d" % (b, lo, i))
            i += 2
        else:
            i += 1
        src = _UTF8 if k >= 0 else _REPLACEMENT
        at = 3 * k if k >= 0 else 0
        out[o] = src[at]
        out[o + 1] = src[at + 1]
        out[o + 2] = src[at + 2]
        o += 3
    return str(out, "utf-8")
