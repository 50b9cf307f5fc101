# Stream checks both camera formats share (test_frame, test_vzenith): the
# splits a stream is fed in, a bad frame followed by good ones in every
# split, and the one fuzz generator: units of a stream (good frames, broken
# ones, garbage) back to back with no quiet line, fed in chunks of 1..64
# bytes, all drawn from one fixed-seed xorshift32 (check.xorshift) so both
# runtimes see the same bytes.


def feeds(stream):
    # the stream fed whole, split in two at every byte, one byte at a time
    view = memoryview(stream)
    yield [stream]
    for split in range(1, len(stream)):
        yield [view[:split], view[split:]]
    yield [view[i:i + 1] for i in range(len(stream))]


def bad_then_good_every_split(make_collector, cases, goods, good, counted):
    """For each (bad, reason) of cases: bad, then goods (the frames of the
    reads good), fed in every split of feeds() with no quiet line needed:
    the good reads come at once, bad is rejected (first with reason unless
    None) and counted(collector) == every byte fed."""
    for bad, reason in cases:
        for chunks in feeds(bad + goods):     # no quiet line needed: see early
            c = make_collector()
            for chunk in chunks:
                c.parser.feed(chunk)
            early = list(c.reads)
            c.parser.idle()
            assert c.reads == good, (bad, c.reads, c.rejects)
            assert early == c.reads, (bad, early)
            assert c.rejects, bad
            if reason is not None:
                assert c.rejects[0][0] == reason, (bad, c.rejects)
            assert counted(c) == len(bad) + len(goods), bad


def garbage(rand, markers):
    """Up to 39 random bytes with up to 3 of markers (4 byte strings: start
    markers and false headers) put in at random places."""
    data = bytearray(rand(256) for _ in range(rand(40)))
    for _ in range(rand(4)):
        at = rand(len(data) + 1)
        data[at:at] = markers[rand(4)]
    return data


def fuzz(parser_class, rand, units, make_unit, after_unit=None):
    """Feed a parser_class(on_plate, on_reject) the stream of units units:
    make_unit(unit, seq, text) gives the bytes of unit number unit, built
    around a frame numbered seq (unit & 0xFF) for the plate text (drawn
    here: a Chinese plate or "Z<unit>"). The stream goes in chunks of
    1 + rand(64) bytes once more than 64 wait (all of it after the last
    unit); after_unit(unit, reads), if given, runs after each unit's chunks.
    Returns (parser, reads, bytes rejected, bytes fed), the parser idle."""
    reads = []
    rejected = [0]

    def on_reject(reason, count):
        rejected[0] += count

    parser = parser_class(reads.append, on_reject)
    pending = bytearray()
    fed = 0
    for unit in range(units):
        text = "粤B%05d" % rand(100000) if rand(2) else "Z%d" % unit
        data = make_unit(unit, unit & 0xFF, text)
        pending += data
        fed += len(data)
        while len(pending) > 64 or (unit == units - 1 and pending):
            size = 1 + rand(64)
            parser.feed(pending[:size])
            pending = pending[size:]
        if after_unit is not None:
            after_unit(unit, reads)
    parser.idle()
    return parser, reads, rejected[0], fed
