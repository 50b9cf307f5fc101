# Camera serial frame: CRC, encoder (parkgate_host), incremental parser.
# Kept compact: the MicroPython unix port compiles this file inside a 64k
# heap (~5 bytes of heap per byte of source at the peak).
import gc
import sys

from camera_streams import bad_then_good_every_split, fuzz, garbage
from check import raises, xorshift
from parkgate import frame
from parkgate.frame import (BAD_CRC, BAD_LENGTH, BAD_PAYLOAD, BAD_VERSION,
                            GARBAGE, TRUNCATED, FrameParser)
from parkgate_host.camera_frames import crc16
from parkgate_host.camera_frames import pg_frame as encode


class Collector:
    def __init__(self, data=b""):
        self.reads = []              # (seq, plate, colour, confidence, time)
        self.rejects = []            # (reason, byte_count)
        self.parser = FrameParser(self.on_plate, self.on_reject)
        self.parser.feed(data)

    def on_plate(self, r):
        assert isinstance(r, frame.PlateRead)
        self.reads.append((r.seq, r.plate, r.colour, r.confidence, r.camera_time))

    def on_reject(self, reason, count):
        self.rejects.append((reason, count))

    def plates(self):
        return [r[1] for r in self.reads]

    def accounted(self):
        # every byte fed is in exactly one accepted frame or one reject
        n = 0
        for _, count in self.rejects:
            n += count
        for r in self.reads:
            n += 15 + len(r[1].encode())
        return n


def payload(plate, colour=0, confidence=100, length=None):
    # camera time 0x01020304
    if length is None:
        length = len(plate)
    return bytes([colour, confidence, 1, 2, 3, 4, length]) + plate


def raw_frame(body, version=1, seq=0):
    # any header and payload, with a correct CRC over version..payload
    covered = bytes([version, seq, len(body) >> 8, len(body) & 0xFF]) + body
    crc = crc16(covered)
    return b"PG" + covered + bytes([crc >> 8, crc & 0xFF])


THREE = [(1, "粤B12345", 1, 98, 1700000000), (2, "ABC123", 0, 7, 0),
         (255, "京A·D12345", 4, 100, 0xFFFFFFFF)]
STREAM = b"".join(encode(*f) for f in THREE)


def check_three(c):
    assert c.reads == THREE, c.reads
    assert c.rejects == []


def test_crc16_check_value_and_worked_example():
    assert crc16(b"123456789") == 0x29B1
    assert crc16(b"") == 0xFFFF and crc16(b"\x00") == 0xE1F0
    assert crc16(memoryview(b"x123456789y")[1:10]) == 0x29B1
    assert crc16(bytearray(b"56789"), crc16(b"1234")) == 0x29B1
    data = encode(7, "粤B12345", colour=1, confidence=98, camera_time=1700000000)
    assert data == bytes.fromhex("5047" "01" "07" "0010" "01" "62" "6553f100" "09"
                                 "e7b2a4423132333435" "7dd8")
    assert isinstance(data, bytes) and len(data) == 8 + 7 + 9


def test_encode_rejects_bad_fields():
    for args in ((256, "A1"), (-1, "A1"), (0, ""), (0, "ABCDEFGHIJKLMNOPQ"),
                 (0, "粤粤粤粤粤粤"), (0, b"A1"), (0, "A1", 8), (0, "A1", -1),
                 (0, "A1", 0, 101), (0, "A1", 0, 0, 1 << 32), (0, "A1", 0, 0, -1)):
        raises(ValueError, encode, *args)
    assert len(encode(0, "ABCDEFGHIJKLMNOP")) == 8 + 7 + 16


def test_round_trip_fields():
    for case in ((0, "A", 0, 0, 0), (255, "ABCDEFGHIJKLMNOP", 7, 100, 0xFFFFFFFF),
                 (8, "粤B123456789012", 5, 50, 1), (9, "沪AD12345", 4, 99, 1 << 31),
                 (10, "\U0001F697X", 6, 1, 2)):
        c = Collector(encode(*case))
        assert c.rejects == [] and c.reads == [case]
    assert frame.REJECT_NAMES[GARBAGE] == "garbage"
    assert len(set(frame.REJECT_NAMES)) == 6
    assert len(set([BAD_CRC, BAD_LENGTH, BAD_VERSION, BAD_PAYLOAD, TRUNCATED,
                    GARBAGE])) == 6


def test_three_frames_one_byte_at_a_time():
    c = Collector()
    for i in range(len(STREAM) - 1):
        c.parser.feed(STREAM[i:i + 1])
    assert len(c.reads) == 2         # the third is reported with its last byte
    c.parser.feed(STREAM[-1:])
    check_three(c)
    assert c.parser.frames == 3 and c.parser.rejects == 0


def test_three_frames_every_two_chunk_split():
    view = memoryview(STREAM)
    for split in range(len(STREAM) + 1):
        c = Collector(view[:split])
        c.parser.feed(bytearray(view[split:]))
        check_three(c)


def test_garbage_before_between_and_after_frames():
    runs = [b"\x00\xffhello", b"P", b"PPx", b"GPxPQ", b"PP"]
    stream = b"".join(run + encode(1, "A1") for run in runs)
    c = Collector(stream + b"zzP")
    assert c.rejects == [(GARBAGE, len(run)) for run in runs]
    assert len(c.reads) == len(runs)
    c.parser.idle()                  # trailing run, lone 0x50 included
    assert c.rejects[-1] == (GARBAGE, 3) and len(c.rejects) == len(runs) + 1
    assert c.accounted() == len(stream) + 3
    c = Collector()
    for _ in range(300):
        c.parser.feed(b"x")
    c.parser.feed(b"yP")
    c.parser.feed(b"Gz")             # "PG" then a bad version byte
    assert c.rejects == [(GARBAGE, 301), (BAD_VERSION, 3)]
    c.parser.feed(encode(2, "Z9"))
    assert c.plates() == ["Z9"] and c.parser.rejects == 2 and c.parser.frames == 1


def test_flipping_any_byte_never_yields_a_wrong_read():
    bad = encode(4, "粤B12345", 1, 90, 1234)
    good = encode(5, "GOOD1", 2, 80, 5678)
    for pos in range(len(bad)):
        for mask in (0x01, 0x80, 0xFF):
            corrupt = bytearray(bad)
            corrupt[pos] ^= mask
            c = Collector(corrupt + good)
            c.parser.idle()
            assert c.reads == [(5, "GOOD1", 2, 80, 5678)], pos
            assert len(c.rejects) >= 1
            if pos == len(bad) - 1:
                assert c.rejects[0][0] == BAD_CRC
            assert c.accounted() == len(bad) + len(good)


def test_truncated_frame_followed_by_good_frames():
    first = encode(1, "粤B11111")
    rest = encode(2, "粤B22222") + encode(3, "粤B33333")
    for cut in range(1, len(first)):
        c = Collector(first[:cut] + rest)
        assert c.plates() == ["粤B22222", "粤B33333"], cut
        assert c.accounted() == cut + len(rest), cut   # the cut frame rejected
    false_start = b"PG\x01\x09\x00\x40" + bytes(5)   # claims 64 payload bytes
    c = Collector(false_start + encode(6, "C3") + b"xy")
    assert c.reads == [] and c.rejects == []
    c.parser.idle()
    assert c.rejects == [(TRUNCATED, len(false_start)), (GARBAGE, 2)]
    assert c.plates() == ["C3"]


def test_length_out_of_range_rejected_without_buffering():
    for length in (0, 6, 65, 0x100, 0xFFFF):
        c = Collector(b"PG\x01\x00" + bytes([length >> 8, length & 0xFF]))
        assert c.rejects == [(BAD_LENGTH, 6)], length
        c.parser.feed(encode(1, "D4"))
        assert c.plates() == ["D4"]
    c = Collector(raw_frame(bytes(65)) + encode(1, "D4"))
    assert c.rejects[0] == (BAD_LENGTH, 6) and c.plates() == ["D4"]


def test_version_2_rejected():
    body = payload(b"E5")
    bad = raw_frame(body, 2)
    c = Collector(bad + raw_frame(body, 1, 9))
    # the rest of the unknown-version frame is skipped as garbage
    assert c.rejects == [(BAD_VERSION, 3), (GARBAGE, len(bad) - 3)]
    assert c.reads == [(9, "E5", 0, 100, 0x01020304)]
    c = Collector(raw_frame(body, 0))
    assert c.reads == [] and c.rejects[0] == (BAD_VERSION, 3)


def test_bad_payload_rejected():
    cases = [payload(b"AB12345", length=5), payload(b"AB", length=3),
             payload(b"", length=0), payload(b"A" * 17), payload(b"A" * 57),
             payload(b"A1", colour=8), payload(b"A1", colour=255),
             payload(b"A1", confidence=101)]
    # invalid UTF-8: bad bytes, cut short, overlong, surrogate, > U+10FFFF
    for plate in (b"\xff1", b"\x80", b"\xe7\xb2", b"\xe7\xb2A", b"\xc0\xaf",
                  b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                  b"\xf8\x88\x80\x80\x80"):
        cases.append(payload(plate))
    for body in cases:
        bad = raw_frame(body)
        c = Collector(bad + encode(9, "F6"))
        assert c.rejects == [(BAD_PAYLOAD, len(bad))], body
        assert c.plates() == ["F6"], body


def test_idle_drops_a_partial_frame_once_and_then_nothing():
    data = encode(1, "G7")
    for cut in range(2, len(data)):
        c = Collector(data[:cut])
        assert c.rejects == [] and c.reads == []
        c.parser.idle()
        c.parser.idle()
        assert c.rejects == [(TRUNCATED, cut)], cut
        c.parser.feed(data)          # a fresh start after the reset
        c.parser.idle()              # nothing buffered: nothing reported
        assert c.plates() == ["G7"] and len(c.rejects) == 1
    c = Collector()
    c.parser.idle()
    assert c.rejects == []
    c.parser.feed(b"P")
    c.parser.idle()
    assert c.rejects == [(GARBAGE, 1)]


def test_fuzz_random_bytes_yield_nothing_then_good_frame_parses():
    # fixed-seed xorshift32 (the same bytes on both runtimes); markers and
    # plausible headers are mixed in so candidates are often collected
    rand = xorshift(20240611)

    reads = []
    counted = [0]

    def on_reject(reason, count):
        counted[0] += count

    parser = FrameParser(reads.append, on_reject)
    chunk = bytearray(64)
    fed = 0
    while fed < 20000:
        size = 1 + rand(64)
        for i in range(size):
            chunk[i] = rand(256)
        kind = rand(4)
        if kind == 0:
            chunk[0:6] = bytes([0x50, 0x47, 1, 0, 0, 7 + rand(58)])
        elif kind == 1:
            chunk[0:2] = b"PG"
        parser.feed(memoryview(chunk)[:size])
        fed += size
    parser.idle()
    assert reads == [] and parser.rejects > 300 and counted[0] == fed
    parser.feed(encode(3, "粤Z99999"))
    assert len(reads) == 1 and reads[0].plate == "粤Z99999"


def with_crc_of(data):
    # data (a frame from encode) with its CRC made good again
    crc = crc16(data[2:-2])
    return bytes(data[:-2]) + bytes([crc >> 8, crc & 0xFF])


def test_bad_frame_then_good_frames_at_once_every_split():
    good = [(2, "粤B22222", 1, 90, 7), (3, "C3", 0, 80, 0)]
    goods = b"".join(encode(*f) for f in good)
    first = encode(1, "粤B11111", 2, 99, 5)
    flipped = bytearray(first)
    flipped[9] ^= 0x10                               # CRC fails
    longer = bytearray(first)
    longer[5] = 40                                   # in range, past the frame
    cases = [
        (first[:3], None), (first[:6], None), (first[:14], None),  # truncated
        (first[:-1], None), (bytes(flipped), BAD_CRC), (bytes(longer), None),
        (b"PG\x01\x00\x00\x41" + first[6:], BAD_LENGTH),        # out of range
        (b"PG\x01\x00\x00\x06", BAD_LENGTH), (b"PG\x03", BAD_VERSION),
        (b"\x00PPGP\x47PG", None),                   # markers inside garbage
        (with_crc_of(first)[:-1] + b"P", None),      # a 0x50 for a CRC byte
    ]
    bad_then_good_every_split(Collector, cases, goods, good, Collector.accounted)


def test_longer_length_is_rescanned_without_a_quiet_line():
    # a header claiming 64 bytes, then good frames at once: each good frame
    # is read as soon as the false one has failed, with no idle()
    plates = ["A%d" % k for k in range(1, 7)]
    c = Collector(b"PG\x01\x07\x00\x40" + b"".join(encode(k, p) for k, p in enumerate(plates)))
    assert c.plates() == plates, c.reads
    assert c.rejects == [(BAD_CRC, 6)]


def test_random_stream_of_good_bad_and_garbage_in_random_chunks():
    # xorshift32 with a fixed seed: good frames, broken frames (cut short,
    # a byte flipped, a length changed) and garbage rich in "P"/"PG",
    # back to back with no quiet line, fed in chunks of 1..64 bytes
    rand = xorshift(0x9E3779B9)
    want = []
    accepted = [0]

    def make_unit(unit, seq, text):
        data = bytearray(encode(seq, text, rand(8), rand(101), rand(1 << 30)))
        kind = rand(6)
        if kind < 2:
            want.append((seq, text))
            accepted[0] += len(data)
        elif kind == 2:
            data = data[:1 + rand(len(data) - 1)]
        elif kind == 3:
            data[2 + rand(len(data) - 2)] ^= 1 + rand(255)
        elif kind == 4:
            data[5] = (data[5] + 1 + rand(79)) % 80       # another length
        else:
            data = garbage(rand, (b"P", b"PG", b"PG\x01", b"PG\x01\x00\x00"))
        return data

    def check_reads(unit, reads):
        while len(reads) > 8:           # keep the heap small: check as they come
            r = reads.pop(0)
            assert (r.seq, r.plate) == want.pop(0), (r, unit)

    parser, reads, counted, fed = fuzz(FrameParser, rand, 600, make_unit, check_reads)
    assert [(r.seq, r.plate) for r in reads] == want
    assert parser.frames > 150 and parser.rejects > 300
    assert counted + accepted[0] == fed


def ignore(arg, count=0):
    pass


def test_feeding_one_byte_at_a_time_allocates_little():
    if sys.implementation.name != "micropython" or not hasattr(gc, "mem_alloc"):
        return
    # one good frame, then repeated: a false header claiming 64 bytes, two
    # bad-CRC frames, a bad version, garbage; 10,000 bytes in all
    bad = bytearray(encode(1, "粤B12345"))
    bad[-1] ^= 0x55
    unit = (b"PG\x01\x01\x00\x40" + b"PG\x01\x01\x00\x10" + bytes(18) + bad
            + b"PG\x02" + b"noise\x00\xffPx" + bytes(40))
    good = encode(2, "B12345")
    parser = FrameParser(ignore, ignore)
    one = bytearray(1)
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        for i in range(10000):
            one[0] = good[i] if i < len(good) else unit[i % len(unit)]
            parser.feed(one)
        grown = gc.mem_alloc() - before
    finally:
        gc.enable()
    assert parser.frames == 1 and parser.rejects > 400
    assert grown < 2000, grown
