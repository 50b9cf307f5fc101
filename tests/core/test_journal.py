# The journal on an in-memory emulated NOR flash (boards/unix-sim/flashdev),
# on CPython and on the MicroPython unix port alike. Kept small: under a
# 64 KiB heap this module and the journal must both compile. Longer
# workloads: tests/test_journal_powercut.py.
from parkgate.journal import Journal, JournalError, JournalFull, MAX_BODY, KIND_ACK
from flashdev import FlashDevice, Partition
from check import raises


def mounted(blocks=8):
    # Journal on blocks [2, 2+blocks) of a device of 256-byte blocks; the
    # first two stand for littlefs.
    dev = FlashDevice(None, 256, blocks + 2)
    j = Journal(Partition(dev, 2, blocks))
    j.mount()
    return dev, j


def remount(j):
    k = Journal(j._bdev)
    k.mount()
    return k


def body(i):
    return bytes((i + k) & 0xFF for k in range(24))


def seqs(recs):
    return [r[0] for r in recs]


def test_round_trip_and_ack():
    dev, j = mounted()
    assert j.formatted and j.next_seq == 1 and j.acked == 0
    assert [j.append(1 + i % 2, body(i)) for i in range(3)] == [1, 2, 3]
    assert j.pending(9) == [(1, 1, body(0)), (2, 2, body(1)), (3, 1, body(2))]
    j.ack(2)
    j.ack(1)                        # below the watermark: ignored
    assert j.acked == 2 and j.pending(9) == [(3, 1, body(2))]
    raises(JournalError, j.ack, 4)
    raises(JournalError, j.append, 0, b"")
    raises(JournalError, j.append, KIND_ACK, b"")
    raises(JournalError, j.append, 1, bytes(MAX_BODY + 1))
    assert j.append(5, bytes(MAX_BODY)) == 4 and j.append(6, b"") == 5
    st = j.stats()
    assert (st["pending"], st["acked"], st["next_seq"], st["blocks"], st["full"]) == (3, 2, 6, 8, False)
    assert st["journal_id"] == j.journal_id
    raises(JournalError, Journal, FlashDevice(None, 512, 2))
    raises(JournalError, Journal(FlashDevice(None, 512, 4)).append, 1, b"")


def test_seq_and_ack_marker_survive_remount():
    dev, j = mounted()
    for i in range(30):             # two blocks
        j.append(1, body(i))
    j.ack(27)
    assert [r for r in j.records(True) if r[1] == KIND_ACK] == [(27, KIND_ACK, b"")]
    k = remount(j)
    assert not k.formatted and k.journal_id == j.journal_id
    assert k.next_seq == 31 and k.acked == 27 and seqs(k.pending(9)) == [28, 29, 30]
    assert list(k.records()) == [(i + 1, 1, body(i)) for i in range(30)]
    assert k.append(2, b"z") == 31


def test_new_id_after_erasing_region():
    dev, j = mounted()
    j.append(1, b"old")
    for b in range(8):
        j._bdev.ioctl(6, b)
    k = remount(j)
    assert k.formatted and k.journal_id != j.journal_id and k.next_seq == 1
    k.append(1, b"x")
    old = k.journal_id
    k.format()                      # explicit: new id, the old records gone
    assert k.journal_id != old and k.next_seq == 1
    k = remount(k)
    assert k.journal_id != old and list(k.records()) == []


def test_garbage_region_formats_cleanly():
    dev, j = mounted()
    for b in range(10):
        dev.writeblocks(b, bytes((b * 37 + i * 101) & 0xFF for i in range(256)))
    j = remount(j)
    assert j.formatted and j.next_seq == 1
    for i in range(40):
        j.append(3, body(i))
    k = remount(j)
    assert not k.formatted and seqs(k.records()) == list(range(1, 41))


def test_pending_limit_and_order():
    dev, j = mounted()
    for i in range(40):
        j.append(1, body(i))
    assert seqs(j.pending(3)) == [1, 2, 3] and seqs(j.pending(3, 30)) == [31, 32, 33]
    assert seqs(j.pending(99)) == list(range(1, 41)) and j.pending(0) == []
    j.ack(25)
    assert seqs(j.pending(2)) == [26, 27] and seqs(j.pending(2, 10)) == [26, 27]
    assert j.pending(5, 40) == []


def test_torn_tail_dropped():
    dev, j = mounted()
    for i in range(5):
        j.append(1, body(i))
    crc = bytearray(4)
    j._bdev.readblocks(0, crc, j._off - 4)
    # a CRC byte of record 5 torn: programming can only clear bits, so pick
    # one that is not already zero (the CRC depends on the random journal id)
    at = [i for i in range(4) if crc[i]][0]
    j._bdev.writeblocks(0, b"\x00", j._off - 4 + at)
    k = remount(j)
    assert k.next_seq == 5 and list(k.records()) == [(i + 1, 1, body(i)) for i in range(4)]
    free = k.stats()["free_blocks"]
    assert k.append(2, b"new") == 5     # in the next block, not over the torn bytes
    assert k.stats()["free_blocks"] == free - 1
    k = remount(k)
    assert list(k.records())[-1] == (5, 2, b"new") and k.next_seq == 6


def test_full_then_reserve_then_ack_frees():
    dev, j = mounted(4)
    n = 0
    try:
        while True:
            j.append(1, body(n))
            j.maintain()
            n += 1
    except JournalFull:
        pass
    st = j.stats()
    assert st["full"] and st["pending"] == n and st["free_blocks"] == 1
    m = 0
    try:
        while True:                 # exits may still use the reserve block
            j.append(2, body(m), True)
            j.maintain()
            m += 1
    except JournalFull:
        pass
    try:
        while True:                 # fill the head block to the last byte
            j.append(2, b"", True)
            m += 1
    except JournalFull:
        pass
    assert m > 0 and j.stats()["free_blocks"] == 0
    assert seqs(j.records()) == list(range(1, n + m + 1))
    j.ack(n + m)                    # no room for an ack marker: it waits
    assert j.acked == n + m and j._aflash == 0
    dev.cut_after(1)                # power fails after maintain()'s erase
    raises(OSError, j.maintain)
    dev.power_on()
    k = remount(j)                  # the reclaimed block's records count as acked
    assert k.acked == seqs(k.records())[0] - 1 > 0
    k.ack(n + m)
    assert k.maintain() and not k.stats()["full"]
    s = k.append(1, b"again")
    k = remount(k)
    assert k.acked == n + m and k.pending(5) == [(s, 1, b"again")]


def test_wrap_reclaims_acked_blocks():
    dev, j = mounted(4)
    for i in range(300):            # about 20 laps of a 4-block ring
        s = j.append(1, body(i)[:1 + i % 24])
        if i % 5 == 4:
            j.ack(s - 2)
        if i % 3 == 0:
            j.maintain()
    k = remount(j)
    assert k.next_seq == 301 and k.acked == j.acked == 298
    got = list(k.records())
    assert got[-1] == (300, 1, body(299)[:1 + 299 % 24])
    assert seqs(got) == list(range(got[0][0], 301))
    assert max(dev.erase_counts[2:]) - min(dev.erase_counts[2:]) <= 1
    assert dev.erase_counts[:2] == [0, 0]
