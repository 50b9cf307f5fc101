import binascii

from check import raises

from parkgate import sign
from parkgate.sign import SignatureError
from parkgate_host import signing

KEY = b"0123456789abcdef0123456789abcdef"


def test_hmac_matches_rfc4231_case_2():
    mac = sign.hmac_sha256(b"Jefe", b"what do ya want for nothing?")
    assert binascii.hexlify(mac) == \
        b"5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_hmac_with_a_key_longer_than_a_block_rfc4231_case_6():
    mac = sign.hmac_sha256(b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First")
    assert binascii.hexlify(mac) == \
        b"60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"


def test_equal_is_exact():
    assert sign.equal(b"abc", b"abc")
    assert not sign.equal(b"abc", b"abd")
    assert not sign.equal(b"abc", b"ab")
    assert sign.equal(b"", b"")


def test_signed_envelope_verifies_and_returns_the_body():
    env = signing.sign(KEY, "tariff", "g1", 3, '{"version": 3}')
    assert sign.verify(KEY, env, "tariff", "g1", 2) == '{"version": 3}'


def _refusal(env, kind="tariff", gate="g1", applied=2, key=KEY, now=None):
    return str(raises(SignatureError, sign.verify, key, env, kind, gate, applied, now))


def test_tampered_unsigned_replayed_stale_and_misdirected_are_refused():
    env = signing.sign(KEY, "tariff", "g1", 3, '{"version": 3}')
    tampered = dict(env)
    tampered["b"] = '{"version": 4}'
    assert _refusal(tampered) == "bad signature"
    bumped = dict(env)
    bumped["v"] = 9
    assert _refusal(bumped) == "bad signature"
    unsigned = dict(env)
    del unsigned["s"]
    assert _refusal(unsigned) == "unsigned"
    assert _refusal(dict(env, s="zz" * 32)) == "unsigned"
    assert _refusal(env, key=b"another gate's key") == "bad signature"
    assert _refusal(env, applied=3).startswith("stale")       # replay
    assert _refusal(env, applied=7).startswith("stale")
    assert _refusal(env, gate="g2").startswith("for tariff/g1")
    assert _refusal(env, kind="members").startswith("for tariff/g1")
    assert _refusal([1]) == "not an envelope"
    assert _refusal(dict(env, v="3")) == "malformed envelope"


def test_commands_expire():
    env = signing.sign(KEY, "open", "g1", 10, "{}", expiry=1000)
    assert sign.verify(KEY, env, "open", "g1", 9, now=1000) == "{}"
    assert _refusal(env, kind="open", applied=9, now=1001).startswith("expired")
