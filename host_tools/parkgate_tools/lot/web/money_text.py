"""Money as the operator reads and types it: integer fen in the store,
yuan with two decimals on the page (exact: no float on the way)."""
import decimal

MAX_YUAN_CHARS = 16      # a typed amount is no longer than this
MAX_FEN = 10 ** 10       # 100,000,000.00 yuan: no correction is more


def yuan(fen):
    """'12.50' from 1250 fen (exact: integers only)."""
    sign = "-" if fen < 0 else ""
    return "%s%d.%02d" % ((sign,) + divmod(abs(fen), 100))


def fen_from_yuan(text):
    """1250 from '12.5' or '12.50'; ValueError if not a non-negative amount
    to the fen, at most MAX_FEN (nor longer than MAX_YUAN_CHARS)."""
    text = str(text).strip()
    if len(text) > MAX_YUAN_CHARS:
        raise ValueError("amount: %r is longer than %d characters" % (text, MAX_YUAN_CHARS))
    try:
        amount = decimal.Decimal(text or "0")
    except decimal.InvalidOperation:
        raise ValueError("amount: %r is not a number of yuan" % (text,)) from None
    if not amount.is_finite():
        raise ValueError("amount: %r is not a number of yuan" % (text,))
    fen = amount * 100
    if fen != fen.to_integral_value() or fen < 0:
        raise ValueError("amount: %r is not a yuan amount to the fen" % (text,))
    if fen > MAX_FEN:
        raise ValueError("amount: %r is more than %s yuan" % (text, yuan(MAX_FEN)))
    return int(fen)
