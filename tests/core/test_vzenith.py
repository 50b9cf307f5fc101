# Vzenith VZ frames: encoder (parkgate_host) and incremental parser
# (frame.FrameParser's contract: every byte fed is in an accepted frame, a
# heartbeat or a reject).
import gc
import sys

from camera_streams import bad_then_good_every_split, feeds, fuzz, garbage
from check import raises, xorshift
from parkgate import camera, frame, vzenith
from parkgate.vzenith import (BAD_JSON, BAD_LENGTH, BAD_PAYLOAD, BAD_PLATE, BAD_TYPE,
                              GARBAGE, NO_PLATE, TRUNCATED, VzParser)
from parkgate_host.camera_frames import pg_frame
from parkgate_host.camera_frames import vz_frame as encode


class Collector:
    def __init__(self, data=b"", max_body=1024):
        self.reads = []          # (seq, plate, colour, confidence, time)
        self.rejects = []        # (reason, byte_count)
        self.accepted = 0        # bytes in accepted frames
        self.parser = VzParser(self.on_plate, self.on_reject, max_body=max_body)
        self.parser.feed(data)

    def on_plate(self, r):
        assert isinstance(r, frame.PlateRead)
        self.reads.append((r.seq, r.plate, r.colour, r.confidence, r.camera_time))
        self.offline = r.offline

    def on_reject(self, reason, count):
        self.rejects.append((reason, count))

    def plates(self):
        return [r[1] for r in self.reads]

    def rejected(self):
        n = 0
        for _, count in self.rejects:
            n += count
        return n


def raw(body, kind=0, serial=0, length=None):
    if length is None:
        length = len(body)
    return (b"VZ" + bytes([kind, serial]) + bytes([(length >> s) & 0xFF for s in (24, 16, 8, 0)])
            + body)


YUE = b"\xd4\xc1S7Y12C"         # 粤S7Y12C in GBK
THREE = [(1, "粤S7Y12C", 0, 98, 1700000000), (2, "ABC123", 3, 7, 0),
         (255, "京AD12345", 4, 100, 0xFFFFFFFF)]
STREAM = b"".join(encode(*f) for f in THREE)


def test_gbk_frame_from_a_camera_yields_the_plate():
    # as a camera sends it: nested under AlarmInfoPlate/result, other fields,
    # a non-plate GBK string whose trail byte is a backslash, an image after
    body = (b'{"AlarmInfoPlate":{"channel":0,"deviceName":"\xb3\xf6\x81\\",'
            b'"result":{"PlateResult":{"license":"' + YUE + b'","colorType":2,'
            b'"confidence":91,"direction":4,"triggerType":8,"isoffline":1,'
            b'"timeStamp":{"Timeval":{"sec":1718000000,"usec":12}},'
            b'"timeString":"2024-06-10 14:13:20"}}}}\n' + bytes(range(256)) * 3)
    c = Collector(raw(body, serial=9))
    assert c.reads == [(9, "粤S7Y12C", 1, 91, 1718000000)], c.rejects
    assert c.offline is True and c.rejects == []
    c = Collector(raw(b'{"PlateResult":{"license":"' + YUE + b'"}}'))
    assert c.reads == [(0, "粤S7Y12C", 7, 0, 0)]
    assert c.offline is False


def test_encode_round_trip_and_fields():
    data = encode(7, "粤S7Y12C", 1, 98, 1700000000)
    assert data[:8] == b"VZ\x00\x07" + bytes([0, 0, 0, len(data) - 8])
    assert YUE in data and data[8:9] == b"{"
    for case in THREE + [(0, "使014578", 7, 0, 1), (3, "京A1234应急", 2, 50, 5)]:
        c = Collector(encode(*case))
        want = case if case[2] <= 4 else case[:2] + (7,) + case[3:]  # no colorType for 5..7
        assert c.reads == [want] and c.rejects == [], (case, c.reads, c.rejects)
    assert Collector(encode(1, "A1", offline=True)).offline is True
    assert encode(4, "", heartbeat=True) == b"VZ\x01\x04\x00\x00\x00\x00"
    for args in ((256, "A1"), (-1, "A1"), (0, "A1", 8), (0, "A1", 0, 101),
                 (0, "A1", 0, 0, -1), (0, "A1", 0, 0, 1 << 32), (0, ""), (0, "啊1")):
        raises(ValueError, encode, *args)
    assert vzenith.REJECT_NAMES[:6] == frame.REJECT_NAMES
    assert vzenith.REJECT_NAMES[BAD_PLATE] == "bad_plate" and len(set(vzenith.REJECT_NAMES)) == 10


def test_every_two_chunk_split_and_one_byte_at_a_time():
    data = STREAM + encode(5, "", heartbeat=True) + raw(b"xyz", kind=1)
    view = memoryview(data)
    for split in range(len(data) + 1):
        c = Collector(view[:split])
        c.parser.feed(bytearray(view[split:]))
        assert c.reads == THREE and c.rejects == [] and c.parser.heartbeats == 2, split
    c = Collector()
    for i in range(len(data)):
        c.parser.feed(data[i:i + 1])
    assert c.reads == THREE and c.parser.frames == 3 and c.parser.heartbeats == 2


def test_garbage_resync_and_false_starts():
    good = encode(1, "A1")
    runs = [b"\x00hello", b"V", b"VVx", b"VZ\x07", b"VZ\x00\x00\x00\x00\x00\x05[1]",
            b"VZ\x00\x00\xff\xff\xff\xff"]
    c = Collector(b"".join(run + good for run in runs) + b"zzV")
    assert c.plates() == ["A1"] * len(runs)
    assert c.rejects[:3] == [(GARBAGE, 6), (GARBAGE, 1), (GARBAGE, 3)]
    assert c.rejects[3] == (BAD_TYPE, 3)
    assert (BAD_PAYLOAD, 9) in c.rejects and (BAD_LENGTH, 8) in c.rejects
    c.parser.idle()
    assert c.rejects[-1] == (GARBAGE, 3)
    assert c.rejected() == len(b"".join(runs)) + 3


def test_bad_bodies_rejected_then_good_frame():
    cases = [(b"{}", NO_PLATE), (b'{"PlateResult":{}}', NO_PLATE),
             (b'{"PlateResult":{"license":"_\xce\xde_"}}', NO_PLATE),     # _无_
             (b'{"PlateResult":{"license":5}}', NO_PLATE),
             (b'{"PlateResult":{"license":"\xb0\xa1B12345"}}', BAD_PLATE),
             (b'{"PlateResult":{"license":"A!"}}', BAD_PLATE),
             (b'{"PlateResult":{"license":"A1","confidence":101}}', BAD_PAYLOAD),
             (b'{"PlateResult":{"license":nul}}', BAD_JSON),
             (b'{"PlateResult":{"license":"A1"}', BAD_JSON),              # never closes
             (b'{"a":"}"', BAD_JSON), (b'{"a":"\\"}"}x', NO_PLATE)]   # x: an "image"
    for body, reason in cases:
        bad = raw(body)
        c = Collector(bad + encode(2, "F6"))
        assert c.rejects == [(reason, len(bad))], (body, c.rejects)
        assert c.plates() == ["F6"]


def test_oversize_json_rejected_without_buffering_image_skipped():
    # the buffered bytes are scanned again, the rest of the JSON is garbage
    big = b'{"PlateResult":{"license":"A1","pad":"' + b"x" * 300 + b'"}}'
    c = Collector(raw(big) + encode(1, "B2"), max_body=200)
    assert c.rejects == [(BAD_LENGTH, 208), (GARBAGE, len(big) - 200)]
    assert c.plates() == ["B2"]
    small = b'{"PlateResult":{"license":"C3"}}'
    c = Collector(raw(small + b"\n" + b"\xff" * 5000) + encode(1, "D4"), max_body=200)
    assert c.rejects == [] and c.plates() == ["C3", "D4"]


def test_idle_truncates_and_counts_every_byte():
    data = encode(1, "G7")
    for cut in range(2, len(data)):
        c = Collector(data[:cut])
        assert c.rejects == [] and c.reads == []
        c.parser.idle()
        c.parser.idle()
        assert c.rejects == [(TRUNCATED, cut)], (cut, c.rejects)
        c.parser.feed(data)
        c.parser.idle()
        assert c.plates() == ["G7"] and len(c.rejects) == 1
    c = Collector(b"VZ\x00\x01" + encode(3, "H8"))
    c.parser.idle()
    assert c.plates() == [] or c.plates() == ["H8"]
    assert c.rejected() + (len(encode(3, "H8")) if c.reads else 0) == 4 + len(encode(3, "H8"))


def test_fuzz_random_bytes_then_good_frame():
    rand = xorshift(20240611)

    reads = []
    counted = [0]

    def on_reject(reason, count):
        counted[0] += count

    parser = VzParser(reads.append, on_reject, max_frame=300)
    chunk = bytearray(64)
    fed = 0
    while fed < 20000:
        size = 9 + rand(56)
        for i in range(size):
            chunk[i] = rand(256)
        kind = rand(4)
        if kind == 0:
            chunk[0:9] = bytes([0x56, 0x5A, rand(2), 0, 0, 0, 0, rand(256), 0x7B])
        elif kind == 1:
            chunk[0:2] = b"VZ"
        parser.feed(memoryview(chunk)[:size])
        fed += size
        if rand(8) == 0:
            parser.idle()
    parser.idle()
    assert reads == [] and parser.rejects > 100
    assert counted[0] + parser.heartbeats * 8 <= fed
    parser.feed(encode(3, "粤Z99999"))
    assert len(reads) == 1 and reads[0].plate == "粤Z99999"


def relength(data, delta):
    # a frame from encode() with its body length changed by delta
    n = len(data) - 8 + delta
    return data[:4] + bytes([(n >> s) & 0xFF for s in (24, 16, 8, 0)]) + data[8:]


HEARTBEAT_4K = b"VZ\x01\x00\x00\x00\x10\x00"
GOOD = [(2, "粤S22222", 1, 90, 7), (3, "C3", 0, 80, 0)]
GOODS = b"".join(encode(*f) for f in GOOD)


def test_bad_frame_then_good_frames_at_once_every_split():
    first = encode(1, "粤B11111", 2, 99, 5)
    cases = [
        (first[:3], None), (first[:8], BAD_PAYLOAD), (first[:9], BAD_JSON),
        (first[:40], BAD_JSON), (first[:-1], BAD_JSON),        # cut short
        (relength(first, -3), BAD_JSON),           # the body ends in the JSON
        (b"VZ\x02" + first[3:], BAD_TYPE), (b"VZ\x00\x01\x00\x04\x00\x01{", BAD_LENGTH),
        (raw(b'{"PlateResult":{"license":"A1"}'), BAD_JSON),   # never closes
        (raw(b"{" + b"x" * 10, length=2000), BAD_JSON),        # next header in body
        (b"\x00VVZVZ\x00V\x00VZ\x00\x00\x00\x00\x00", None),   # markers in garbage
        (raw(b"ab\xffVZ\x01", kind=1, length=500), TRUNCATED),  # heartbeat body cut
    ]
    bad_then_good_every_split(Collector, cases, GOODS, GOOD, lambda c: (
        c.rejected() + len(GOODS) + 8 * c.parser.heartbeats))


def test_long_length_and_cut_image_keep_the_plate_and_the_next_frame():
    # the JSON closed, so the plate is read; the body it claimed is cut short
    # by the next frame's header and reported TRUNCATED with its bytes
    for bad, cut in ((relength(encode(1, "D4"), 500), 0),
                     (encode(1, "D4", image=b"\xff\xd8VZ\x00\x01" + bytes(300))[:-100], 207)):
        for chunks in feeds(bad + GOODS):
            c = Collector()
            for chunk in chunks:
                c.parser.feed(chunk)
            assert c.plates() == ["D4", "粤S22222", "C3"], c.reads
            assert c.rejects == [(TRUNCATED, cut)], c.rejects
    # a rejected frame's image cut short is reported with the frame
    bad = raw(b'{"PlateResult":{}}\nimage', length=100)
    c = Collector(bad + GOODS)
    assert c.rejects == [(NO_PLATE, len(bad))] and c.reads == GOOD


def test_markers_inside_a_failed_candidate_are_scanned_again():
    # a JSON full of "V" and "VZ" (no control byte, so no header inside)
    # that never closes: every marker in it is tried again after it fails,
    # the long remainders moved in one copy; the counts stay exact
    body = b'{"a":"' + b"VZ xV" * 60
    for bad, reason in ((raw(body), BAD_JSON), (raw(body, length=5000), TRUNCATED),
                        (raw(body + b"V" * 400, length=5000), BAD_LENGTH)):
        c = Collector(bad, max_body=600)
        if reason == TRUNCATED:
            c.parser.idle()
        c.parser.feed(GOODS)
        c.parser.idle()
        assert c.reads == GOOD, (reason, c.rejects)
        assert c.rejects[0] == (reason, 14), c.rejects[:2]
        assert c.rejected() == len(bad)
        assert len(c.rejects) > 100 and c.rejects[1:3] == [(BAD_TYPE, 4), (GARBAGE, 1)]


def test_offline_replay_is_marked_with_camera_time():
    assert frame.PlateRead.offline is False
    got = []
    p = VzParser(got.append, None)
    p.feed(encode(1, "粤S7Y12C", sec=1718000000, offline=True) + encode(2, "A1", sec=5))
    assert [(r.plate, r.offline, r.camera_time) for r in got] == [
        ("粤S7Y12C", True, 1718000000), ("A1", False, 5)]
    assert "offline" not in got[1].__dict__     # the class default, no dict slot
    for flag, offline in ((b"1", True), (b"true", True), (b'"1"', True), (b"0", False),
                          (b"false", False), (b'"0"', False), (b"null", False)):
        body = b'{"PlateResult":{"license":"A1","isoffline":' + flag + b"}}"
        p.feed(raw(body))
        assert got[-1].offline is offline, flag
    assert "offline=True" in repr(got[0]) and "offline" not in repr(got[1])


def test_random_stream_of_good_bad_and_garbage_in_random_chunks():
    # xorshift32 with a fixed seed: good frames (some with an image, some
    # offline), frames cut short or with a body shorter than the JSON or a
    # bad type, false heartbeats claiming a body, garbage rich in "V"/"VZ",
    # back to back with no quiet line, fed in chunks of 1..64 bytes; the
    # false heartbeats claim 4096 bytes, so the next frame always cuts them
    rand = xorshift(0x9E3779B9)
    want = []
    accepted = [0]

    def make_unit(unit, serial, text):
        image = bytes(rand(256) for _ in range(rand(120))) if rand(3) == 0 else b""
        offline = rand(4) == 0
        data = encode(serial, text, rand(5), rand(101), rand(1 << 30), offline=offline,
                      image=image)
        json_end = len(data) - (len(image) + 1 if image else 0)
        kind = rand(7)
        if kind < 3:
            want.append((serial, text, offline))
            accepted[0] += len(data)
        elif kind == 3:                     # cut short: in the JSON, or its image
            data = data[:1 + rand(len(data) - 1)]
            if len(data) >= json_end:
                want.append((serial, text, offline))
                accepted[0] += json_end
        elif kind == 4:                     # body shorter than its JSON
            data = relength(data, json_end - len(data) - 1 - rand(json_end - 12))
        elif kind == 5:
            data = data[:2] + bytes([2 + rand(254)]) + data[3:]
        else:
            data = garbage(rand, (b"V", b"VZ", b"VZ\x00", HEARTBEAT_4K))
        return data

    parser, reads, rejects, fed = fuzz(VzParser, rand, 300, make_unit)
    assert [(r.seq, r.plate, r.offline) for r in reads] == want
    assert len(want) > 100 and parser.rejects > 150
    assert rejects + accepted[0] + 8 * parser.heartbeats == fed


def test_camera_make_parser():
    got = []
    p = camera.make_parser("vz", got.append, None)
    p.feed(encode(1, "A1"))
    p = camera.make_parser("pg", got.append, None)
    p.feed(pg_frame(2, "B2"))
    assert [r.plate for r in got] == ["A1", "B2"]
    raises(ValueError, camera.make_parser, "xx", got.append, None)
    assert camera.reject_names("vz")[NO_PLATE] == "no_plate"


def ignore(arg, count=0):
    pass


def test_feeding_one_byte_at_a_time_allocates_little():
    if sys.implementation.name != "micropython" or not hasattr(gc, "mem_alloc"):
        return
    unit = (b"VZ\x00\x01\x00\x00\x00\x40" + b"noise" + b"VZ\x07" + b"VZ\x01\x02\x00\x00\x00\x00"
            + raw(b"{" + b"x" * 29) + bytes(20))
    parser = VzParser(ignore, ignore)
    one = bytearray(1)
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        for i in range(10000):
            one[0] = unit[i % len(unit)]
            parser.feed(one)
        grown = gc.mem_alloc() - before
    finally:
        gc.enable()
    assert parser.rejects > 100 and parser.heartbeats > 50
    assert grown < 2000, grown
