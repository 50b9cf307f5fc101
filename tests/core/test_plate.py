# Plate normalisation, mainland plate recognition, GBK through the table.
from check import raises
from parkgate import plate
from parkgate.plate import PlateError, decode_gbk, normalise
from parkgate_host.plates import encode_gbk, is_chinese_plate

# 粤S7Y12C in GBK (CPython: "粤S7Y12C".encode("gbk"))
YUE_GBK = b"\xd4\xc1S7Y12C"


def test_normalise_strips_separators_and_upper_cases():
    cases = [("粤b·12345", "粤B12345"), ("京A-D12345", "京AD12345"),
             (" 沪 a 1234 5 ", "沪A12345"), ("京A\u30fb12345", "京A12345"),
             ("abc-123", "ABC123"), ("京A.F1234学", "京AF1234学"),
             ("\uff21\uff22\uff23\uff11\uff12\uff13", "ABC123"),      # full width
             ("粤\uff22\u3000\uff11\uff12\uff13\uff14\uff15", "粤B12345")]
    for text, want in cases:
        assert normalise(text) == want, (text, normalise(text))
        assert normalise(want) == want      # idempotent


def test_confusables_fixed_by_position_on_chinese_plates_only():
    assert normalise("粤BO12I4") == "粤B01214"      # serial: never I or O
    assert normalise("粤0 12345") == "粤O12345"     # city code: a letter
    assert normalise("京AOOOOO") == "京A00000"
    assert normalise("使O1I234") == "使011234"
    assert normalise("民航·OI234") == "民航01234"
    assert normalise("京A1234应急") == "京A1234应急"
    assert normalise("OI1234") == "OI1234"          # not Chinese: untouched
    assert normalise("o1") == "O1"


def test_not_a_plate_raises_plate_error():
    for text in ("", " ", "·-", "粤B1234567890", "A" * 33, "粤B1234!", "粤B😀1",
                 "临A12345", "京A1234无", "\u00e9A1"):
        raises(PlateError, normalise, text)
    raises(PlateError, normalise, None)
    raises(PlateError, normalise, b"A1")
    assert isinstance(PlateError("x"), ValueError)
    assert len(normalise("粤B12345678")) == plate.MAX_PLATE


def test_is_chinese_plate():
    yes = ["粤B12345", "京AD12345", "京A12345D", "粤S7Y12C", "沪A1234学",
           "京A1234警", "粤Z1234港", "粤Z1234澳", "冀B1234挂", "沪A1234领",
           "使014578", "民航01234", "京A1234应急", "京A12345应急", "粤O12345"]
    no = ["ABC123", "粤B1234", "粤B123456789", "粤112345", "粤I12345", "粤BI2345",
          "使A14578", "民航1234", "京A123学", "学A12345", "京AB12345学", "A粤12345"]
    for text in yes:
        assert is_chinese_plate(text), text
    for text in no:
        assert not is_chinese_plate(text), text
    for p in "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼":
        assert is_chinese_plate(p + "A12345") and normalise(p + "a12345") == p + "A12345"


def test_decode_gbk_ascii_and_table():
    assert decode_gbk(YUE_GBK) == "粤S7Y12C"
    assert decode_gbk(b"") == "" and decode_gbk(b"AB 1") == "AB 1"
    assert decode_gbk(bytearray(YUE_GBK)) == "粤S7Y12C"
    assert decode_gbk(memoryview(b"xx" + YUE_GBK), 2) == "粤S7Y12C"
    assert decode_gbk(YUE_GBK, 0, 2) == "粤"
    assert decode_gbk(b"\xbe\xa9\xc3\xf1\xba\xbd\xd3\xa6\xbc\xb1\xce\xde") == "京民航应急无"
    assert encode_gbk("粤S7Y12C") == YUE_GBK
    assert decode_gbk(encode_gbk(plate._CHARS)) == plate._CHARS


def test_decode_gbk_unknown_codes():
    e = raises(PlateError, decode_gbk, b"A\xb0\xa1B")        # 啊: not in the table
    assert "0xb0a1" in str(e), str(e)
    for bad in (b"\xd4", b"A\x80", b"\xff\xa1", b"\xd4\x7f", b"\xd4\x22"):
        raises(PlateError, decode_gbk, bad)
    assert decode_gbk(b"A\xb0\xa1B\xd4", strict=False) == "A\ufffdB\ufffd"
    assert decode_gbk(b"\xd4\"x", strict=False) == "\ufffd\"x"
    raises(PlateError, encode_gbk, "啊")
    raises(PlateError, encode_gbk, "é")


def test_a_plate_already_normal_comes_back_as_it_is():
    # The gate's hot path: a camera's plate is normally already normal, and
    # normalise returns that very string (nothing built on the heap).
    for raw in ("京a·12345", "粤BO12IC", "京A0O1I2", "使０１２３４５", "民航O1234", "沪 A-12345",
                "苏E12345学", "粤S7Y12C", "京AD12345"):
        out = plate.normalise(raw)
        assert plate.normalise(out) is out, raw
    assert plate.normalise("京A12345") == "京A12345"


def test_similar_plates_are_one_glyph_or_two_confusable_ones_apart():
    from parkgate.plate import similar
    assert similar("粤B00077", "粤B00077")
    assert similar("粤B00077", "粤BD0077")        # 0 and D
    assert similar("粤B00077", "京B00077")        # the province character
    assert similar("粤B00077", "粤BD007T") is False   # three apart
    assert similar("粤B00071", "粤BD007T")        # two confusable glyphs
    assert not similar("粤B00077", "粤B00078")    # 7 and 8 are not confused
    assert not similar("粤B00077", "粤BDD071")    # three apart
    assert not similar("粤B00077", "粤B0007")     # lengths differ
