"""Host checks of parkgate.plate: the GBK table against CPython's gbk codec
(so the literal table cannot drift) and property round trips."""
from hypothesis import given, settings
from hypothesis import strategies as st

from parkgate import plate, vzenith
from parkgate_host import camera_frames, plates
from parkgate.plate import PlateError

PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
SPECIAL = "学警港澳挂使领民航应急"
SERIAL = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"     # no I, no O


def test_table_matches_cpython_gbk_codec():
    chars = plate._CHARS
    assert chars == PROVINCES + SPECIAL + "无"
    assert len(set(chars)) == len(chars) == 43
    assert len(plate._GBK) == 2 * len(chars)
    for k, ch in enumerate(chars):
        assert plate._GBK[2 * k:2 * k + 2] == ch.encode("gbk"), ch
        assert plate._UTF8[3 * k:3 * k + 3] == ch.encode("utf-8"), ch
    assert plate._GBK == chars.encode("gbk")
    assert plates.encode_gbk(chars + "AZ09") == (chars + "AZ09").encode("gbk")


def test_every_other_two_byte_gbk_code_is_refused():
    known = set(plate._GBK[i:i + 2] for i in range(0, len(plate._GBK), 2))
    refused = 0
    for lead in range(0x81, 0xFF):
        for trail in list(range(0x40, 0x7F)) + list(range(0x80, 0xFF)):
            code = bytes([lead, trail])
            if code in known:
                assert plate.decode_gbk(code) == code.decode("gbk")
                continue
            try:
                plate.decode_gbk(code)
            except PlateError as exc:
                assert "0x%02x%02x" % (lead, trail) in str(exc)
                refused += 1
            else:
                raise AssertionError(code)
            assert plate.decode_gbk(code, strict=False) == "\ufffd"
    assert refused == 126 * 190 - 43


ascii_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=40)
table_text = st.text(alphabet=st.sampled_from(list(plate._CHARS) + list("AZ09{}\":, \\")),
                     max_size=40)


@settings(max_examples=300)
@given(st.one_of(ascii_text, table_text))
def test_decode_encode_round_trip_equals_cpython(text):
    data = text.encode("gbk")
    assert plates.encode_gbk(text) == data
    assert plate.decode_gbk(data) == text
    assert plate.decode_gbk(data, strict=False) == text


@settings(max_examples=300)
@given(st.binary(max_size=40))
def test_decode_of_any_bytes_agrees_with_cpython_or_refuses(data):
    try:
        text = plate.decode_gbk(data)
    except PlateError:
        lenient = plate.decode_gbk(data, strict=False)
        assert "\ufffd" in lenient
        return
    assert text == data.decode("gbk")


chinese_plates = st.one_of(
    st.tuples(st.sampled_from(PROVINCES), st.sampled_from(SERIAL[:24]),
              st.text(alphabet=SERIAL, min_size=5, max_size=6)).map("".join),
    st.tuples(st.sampled_from(PROVINCES), st.sampled_from(SERIAL[:24]),
              st.text(alphabet=SERIAL, min_size=4, max_size=4),
              st.sampled_from(["学", "警", "挂", "领", "应急"])).map("".join))


@settings(max_examples=300)
@given(chinese_plates, st.data())
def test_decorated_plates_normalise_back(text, data):
    assert plates.is_chinese_plate(text)
    decorated = ""
    for k, ch in enumerate(text):
        if k == 2:
            decorated += data.draw(st.sampled_from(["", "·", " ", "-", "\u3000"]))
        if "A" <= ch <= "Z" or "0" <= ch <= "9":
            ch = data.draw(st.sampled_from([ch, ch.lower(), chr(ord(ch) + 0xFEE0)]))
        decorated += ch
    assert plate.normalise(decorated) == text
    # a camera's confusions in the serial come back right
    confused = text[:2] + text[2:].replace("0", "O").replace("1", "I")
    assert plate.normalise(confused) == text
    # the Vzenith frame carries it intact
    reads = []
    parser = vzenith.VzParser(reads.append, None)
    parser.feed(camera_frames.vz_frame(3, decorated, 1, 90, 1))
    assert reads[0].plate == text


@settings(max_examples=200)
@given(st.text(max_size=12))
def test_normalise_is_idempotent_or_refuses(text):
    try:
        once = plate.normalise(text)
    except PlateError:
        return
    assert plate.normalise(once) == once
    assert 1 <= len(once) <= plate.MAX_PLATE
