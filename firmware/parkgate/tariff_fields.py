# Typed field reading for tariff validation, and the table digest.
# An object is checked against a spec "key=T key?=T ...": ? marks an
# optional key; T is i<lo>,<hi> an integer in range, m money (integer fen,
# 0..MONEY_MAX), b true/false, s a short string, S a long one, o an object,
# l<min>,<max> a list of min..max entries, * anything. Unknown keys are
# errors. Every error names the field.
import binascii
import hashlib

from parkgate.tariff_types import TariffError

MONEY_MAX = 100000000  # 1,000,000 yuan in fen: more is a typo


def obj(v, field, spec):
    # Checks object v against spec; returns v.
    if type(v) is not dict:
        raise TariffError(field or "table", "expected an object")
    spec = [item.split("=") for item in spec.split()]
    keys = [name.rstrip("?") for name, _ in spec]
    for k in sorted(v):
        if k not in keys:
            raise TariffError(field + "." + k if field else k, "unknown key")
    for name, kind in spec:
        key = name.rstrip("?")
        f = field + "." + key if field else key
        if key in v:
            value(v[key], f, kind)
        elif key == name:
            raise TariffError(f, "missing")
    return v


def value(v, field, kind):
    # Checks one value against kind (see above); returns v.
    t = type(v)
    k = kind[0]
    lo, hi = kind[1:].split(",") if "," in kind else (0, MONEY_MAX)
    if k in "iml":
        if t is not (list if k == "l" else int):
            raise TariffError(field, "expected %s, got %s" % ("a list" if k == "l" else "an integer",
                                                              ("%r" % (v,))[:40]))
        n = len(v) if k == "l" else v
        if n < 0 and k == "m":
            raise TariffError(field, "negative amount %d" % v)
        if not int(lo) <= n <= int(hi):
            raise TariffError(field, "%d not in %s..%s%s" % (n, lo, hi, " entries" if k == "l" else ""))
    elif k == "b" and v is not True and v is not False:
        raise TariffError(field, "expected true or false")
    elif k in "sS" and (t is not str or not v or len(v) > (64 if k == "s" else 2000)):
        raise TariffError(field, "expected a non-empty string")
    elif k == "o" and t is not dict:
        raise TariffError(field, "expected an object")
    return v


def canonical(v, emit):
    # Calls emit() with the canonical JSON of v: sorted keys, no spaces,
    # strings as CPython's json.dumps(ensure_ascii=False) writes them.
    t = type(v)
    if t is dict:
        sep = "{"
        for k in sorted(v):
            emit(sep)
            sep = ","
            canonical(k, emit)
            emit(":")
            canonical(v[k], emit)
        emit("}" if v else "{}")
    elif t is list:
        sep = "["
        for item in v:
            emit(sep)
            sep = ","
            canonical(item, emit)
        emit("]" if v else "[]")
    elif t is str:
        emit('"')
        emit(_escape(v))
        emit('"')
    elif v is True:
        emit("true")
    elif v is False:
        emit("false")
    elif v is None:
        emit("null")
    elif t is int:
        emit(str(v))
    else:
        raise TariffError("json", "%r cannot be in a table" % (v,))


def _escape(s):
    # JSON string body. Iterates bytes, not characters: on MicroPython a
    # 1-character string may be interned for good, a byte is a small int.
    raw = s.encode("utf-8")
    for c in raw:
        if c < 32 or c == 34 or c == 92:
            break
    else:
        return s  # nothing to escape
    out = bytearray()
    for c in raw:
        if c == 34 or c == 92:  # " and backslash
            out.append(92)
            out.append(c)
        elif c < 32:
            k = b"\b\t\n\f\r".find(bytes((c,)))
            out.extend(b"\\" + (b"btnfr"[k:k + 1] if k >= 0 else b"u%04x" % c))
        else:
            out.append(c)
    return out.decode("utf-8")


def digest_of(doc):
    # sha256 hex of the canonical JSON of the table without "examples".
    h = hashlib.sha256()
    content = {}
    for k in doc:
        if k != "examples":
            content[k] = doc[k]
    canonical(content, lambda s: h.update(s.encode("utf-8")))
    return binascii.hexlify(h.digest()).decode()
