# The gate's OTA core (parkgate.ota, parkgate.ota_record) with the host's
# signer (parkgate_host.ota_signing): offers and chunk frames checked before
# a block is written, the download into a slot on emulated NOR flash
# (boards/unix-sim/flashdev), power cuts (resume from the last recorded
# block, never a half image staged), the read-back check before set_boot and
# the probation after the switch. Runs on CPython and on the gate's image.
# Power cuts: test_ota_cuts.py; a Hypothesis property over cut points:
# tests/test_ota_properties.py.
import binascii
import gc
import hashlib
import json
import os
import sys

from check import raises, xorshift
from flashdev import FlashDevice, Partition
from parkgate import ota
from parkgate.ota import Download, OtaError, parse_offer
from parkgate.ota_record import NONE, ROLLED_BACK, TRIAL, Probation, Progress
from parkgate_host import ota_signing, signing

KEY = b"0123456789abcdef0123456789abcdef"
GATE = "g1"
RUNNING = 6
V = 7
SLOT_BLOCKS = 4
SLOT_SIZE = SLOT_BLOCKS * 4096


def image(size=3 * 4096 + 1000, seed=1):
    rand = xorshift(seed)
    out = bytearray(size)
    for i in range(size):
        out[i] = rand(255) + 1      # no 0 byte: any 0 bit programmed shows
    return bytes(out)


# made first, while the test's heap is whole (on the gate's image)
IMAGE = image()
OTHER = image(seed=2)


class Slot(Partition):
    """An app slot of the contract over flashdev: the partition methods of
    esp32.Partition, set_boot counted."""

    def __init__(self, flash, first, count, label):
        Partition.__init__(self, flash, first, count)
        self.label = label
        self.boots = 0
        self.max_read = 0
        self.fail_write = 0       # > 0: the n-th writeblocks from now raises OSError

    def info(self):
        return (0, 0x10, self.first * 4096, self.count * 4096, self.label, False)

    def readblocks(self, block, buf, offset=0):
        self.max_read = max(self.max_read, len(buf))
        Partition.readblocks(self, block, buf, offset)

    def writeblocks(self, block, buf, offset=None):
        if self.fail_write:
            self.fail_write -= 1
            if not self.fail_write:
                raise OSError(5, "EIO")
        Partition.writeblocks(self, block, buf, offset)

    def set_boot(self):
        self.boots += 1


class Slots:
    def __init__(self):
        self.flash = FlashDevice(None, 4096, 2 * SLOT_BLOCKS)
        self.a = Slot(self.flash, 0, SLOT_BLOCKS, "ota_0")
        self.b = Slot(self.flash, SLOT_BLOCKS, SLOT_BLOCKS, "ota_1")
        self.valid = 0
        zeros = bytes(512)       # slot b holds an older image: all 0 bits
        for at in range(0, SLOT_SIZE, 512):
            self.b.writeblocks(at // 4096, zeros, at % 4096)
        self.flash.reset_counters()

    def running(self):
        return self.a

    def next_update(self):
        return self.b

    def mark_app_valid_cancel_rollback(self):
        self.valid += 1


def record_path():
    folder = "/tmp/pg_ota_%s_%s" % (sys.implementation.name,
                                    binascii.hexlify(os.urandom(4)).decode())
    os.mkdir(folder)
    return folder + "/ota.rec"


def offered(data=IMAGE, chunk=512, version=V, key=KEY, gate=GATE, running=RUNNING):
    env = ota_signing.offer(key, gate, version, data, chunk)
    return parse_offer(KEY, env, GATE, running, SLOT_SIZE)


def frames(data=IMAGE, chunk=512, version=V, start=0, key=KEY, gate=GATE):
    return list(ota_signing.chunks(key, gate, version, data, chunk, start))


def slot_holds(slot, data):
    """Whether the slot's first len(data) bytes are data (compared a piece
    at a time: no copy of the image on the test's heap)."""
    piece = bytearray(512)
    for at in range(0, len(data), 512):
        k = min(512, len(data) - at)
        Partition.readblocks(slot, at // 4096, memoryview(piece)[0:k], at % 4096)
        if piece[0:k] != data[at:at + k]:
            return False
    return True


def fresh(chunk=512, data=IMAGE):
    slots = Slots()
    progress = Progress(record_path())
    return slots, progress, Download(slots.b, offered(data, chunk), progress)


def test_full_download_verifies_and_stages():
    for chunk in (512, 64):
        gc.collect()
        slots, progress, dl = fresh(chunk)
        assert dl.next_index() == 0
        # frames as they are made: a list of 208 fragments the test's heap
        rx = bytearray(ota.FRAME_MAX)      # chunk 512: through a receive buffer, as a link has
        for i, frame in enumerate(ota_signing.chunks(KEY, GATE, V, IMAGE, chunk)):
            assert dl.next_index() == i
            if chunk == 512:
                rx[0:len(frame)] = frame
                frame = memoryview(rx)[0:len(frame)]
            dl.accept(frame)
        assert dl.next_index() is None and dl.blocks_done() == 4
        assert slots.flash.erases == 4
        # the record: once at the start, once per block, never per chunk
        assert progress.saves == 1 + 4
        assert progress.read() == ("dl", V, len(IMAGE), dl.offer.sha_hex, chunk, 4)
        assert slots.b.boots == 0
        dl.stage()
        assert dl.verified is True and slots.b.boots == 1 and slots.a.boots == 0
        assert progress.read() == ("pending", V)
        assert slot_holds(slots.b, IMAGE)
        assert slots.b.max_read <= 512
        assert str(raises(OtaError, Download, slots.b, dl.offer, progress)).startswith(
            "version 7 is pending")


def _refused(env, running=RUNNING, slot_size=SLOT_SIZE, gate=GATE):
    return str(raises(OtaError, parse_offer, KEY, env, gate, running, slot_size))


def _signed(body, version=V, kind="image", key=KEY):
    return json.dumps(signing.sign(key, kind, GATE, version, body)).encode()


def test_offers_refused_with_their_reason():
    sha = binascii.hexlify(hashlib.sha256(IMAGE).digest()).decode()
    good = ota_signing.offer(KEY, GATE, V, IMAGE)
    o = parse_offer(KEY, good, GATE, RUNNING, SLOT_SIZE)
    assert (o.version, o.size, o.sha_hex, o.chunk, o.count) == (V, len(IMAGE), sha, 512, 26)
    assert _refused(ota_signing.offer(b"another gate's key", GATE, V, IMAGE)) == "bad signature"
    forged = json.loads(good)
    forged["b"] = "%d %d %s 512" % (V, len(IMAGE) - 1, sha)
    assert _refused(json.dumps(forged)) == "bad signature"
    assert _refused(good, gate="g2").startswith("for image/g1, not image/g2")
    assert _refused(_signed("%d 10 %s 512" % (V, sha), kind="tariff")).startswith("for tariff")
    assert _refused(good, running=V) == "version 7 not newer than the running 7"
    assert _refused(good, running=V + 5).startswith("version 7 not newer")
    assert _refused(_signed("%d 0 %s 512" % (V, sha))) == \
        "image of 0 bytes, the slot holds %d" % SLOT_SIZE
    assert _refused(good, slot_size=len(IMAGE) - 1).startswith("image of %d bytes" % len(IMAGE))
    for chunk in (32, 63, 100, 1024, 0):
        assert _refused(_signed("%d 10 %s %d" % (V, sha, chunk))).startswith("chunk of")
    assert _refused(_signed("%d 10 %s 512" % (V, sha.upper()))) == "malformed SHA-256"
    assert _refused(_signed("%d 10 %s 512" % (V, sha[1:]))) == "malformed SHA-256"
    assert _refused(_signed("%d 10 %s 512" % (V + 1, sha))).startswith("body names version 8")
    for body in ("%d 10 %s" % (V, sha), "%d  10 %s 512" % (V, sha), "%d 010 %s 512" % (V, sha),
                 "%d -1 %s 512" % (V, sha), "%d 10 %s 512 " % (V, sha)):
        assert _refused(_signed(body)) == "malformed offer body", body
    assert _refused(b"{not json") == "not an envelope"
    assert _refused(b"[1]") == "not an envelope"


def _tampered(frame, at):
    out = bytearray(frame)
    out[at] ^= 1
    return bytes(out)


def test_a_tampered_chunk_is_refused_before_anything_is_written():
    slots, progress, dl = fresh()
    fs = frames()
    for k in (0, 8):        # the first chunk of a block: its erase comes first
        before = slots.flash.snapshot()
        erases = slots.flash.erases
        for at in (ota.FRAME_HEAD, ota.FRAME_HEAD + 300, len(fs[k]) - 1):
            assert str(raises(OtaError, dl.accept, _tampered(fs[k], at))) == \
                "chunk %d: bad signature" % k
        assert slots.flash.snapshot() == before and slots.flash.erases == erases
        assert dl.next_index() == k
        for frame in fs[k:k + 8]:
            dl.accept(frame)
    assert dl.next_index() == 16


def test_chunks_out_of_order_replayed_or_of_another_image_are_refused():
    slots, progress, dl = fresh()
    fs = frames()
    dl.accept(fs[0])
    before = slots.flash.snapshot()
    assert str(raises(OtaError, dl.accept, fs[0])) == "chunk 0 out of order: chunk 1 is next"
    assert str(raises(OtaError, dl.accept, fs[2])) == "chunk 2 out of order: chunk 1 is next"
    other_version = frames(version=V + 1)[1]
    assert str(raises(OtaError, dl.accept, other_version)).startswith("chunk of version 8")
    other_image = frames(data=OTHER)[1]
    assert str(raises(OtaError, dl.accept, other_image)).startswith("chunk of version 7, another")
    assert str(raises(OtaError, dl.accept, frames(gate="g2")[1])) == "chunk 1: bad signature"
    assert str(raises(OtaError, dl.accept, frames(key=b"k" * 32)[1])) == "chunk 1: bad signature"
    assert str(raises(OtaError, dl.accept, fs[1][:-1])).startswith("chunk 1: 512 data bytes in")
    assert str(raises(OtaError, dl.accept, fs[1] + b"\x00")) == "not a chunk frame"
    assert str(raises(OtaError, dl.accept, b"PGI")) == "not a chunk frame"
    assert str(raises(OtaError, dl.accept, 5)) == "not a chunk frame"
    assert str(raises(OtaError, dl.accept, b"XXXX" + fs[1][4:])) == "not a chunk frame"
    # a frame claiming fewer bytes, signed: the length is the offer's
    short = list(ota_signing.chunks(KEY, GATE, V, IMAGE[:1000], 512))[1]
    assert str(raises(OtaError, dl.accept, short)).startswith("chunk of version 7, another")
    assert slots.flash.snapshot() == before and dl.next_index() == 1
    for frame in fs[1:-1]:
        dl.accept(frame)
    last = fs[-1][:16] + b"\x00\x02" + fs[-1][18:] + bytes(24)     # claims 512 bytes
    assert str(raises(OtaError, dl.accept, last)) == \
        "chunk 25: 512 data bytes in 562, expected 488"
    assert str(raises(OtaError, dl.accept, fs[-1] + b"\x00")).startswith("chunk 25: 488 data")
    dl.accept(fs[-1])
    assert str(raises(OtaError, dl.accept, fs[-1])).startswith("chunk 25: all 26 chunks")
    assert dl.verify()


def test_the_host_frames_from_a_start_index_and_their_size():
    fs = frames()
    assert frames(start=9) == fs[9:]
    assert len(fs) == 26 and max(len(f) for f in fs) == ota.FRAME_MAX
    assert len(fs[-1]) == ota.FRAME_HEAD + len(IMAGE) - 25 * 512 + ota.MAC_LEN
    assert raises(ValueError, ota_signing.offer, KEY, GATE, V, b"").args[0] == "an empty image"
    assert str(raises(ValueError, ota_signing.offer, KEY, GATE, V, IMAGE, 100)).startswith("chunk")


def test_verify_fails_on_a_corrupted_slot_and_set_boot_is_not_called():
    slots, progress, dl = fresh()
    for frame in frames():
        dl.accept(frame)
    slots.b.writeblocks(2, b"\x00", 777)       # one byte of the slot programmed to 0
    assert dl.verify() is False and not slot_holds(slots.b, IMAGE)
    assert str(raises(OtaError, dl.stage)) == "version 7: the slot's SHA-256 is not the offer's"
    assert slots.b.boots == 0 and progress.read() is None
    again = Download(slots.b, dl.offer, progress)
    assert again.next_index() == 0           # the record cleared: from the start


def test_a_slot_too_small_or_of_other_blocks_is_refused():
    small = Slot(FlashDevice(None, 4096, 3), 0, 3, "ota_1")
    progress = Progress(record_path())
    assert str(raises(OtaError, Download, small, offered(), progress)) == \
        "image of 13288 bytes, the slot holds 12288"
    odd = Slot(FlashDevice(None, 2048, 8), 0, 8, "ota_1")
    assert str(raises(OtaError, Download, odd, offered(), progress)) == \
        "slot blocks of 2048 bytes, not 4096"
    assert progress.read() is None


def test_a_download_of_another_image_starts_over():
    slots, progress, dl = fresh()
    for frame in frames()[:12]:
        dl.accept(frame)
    dl2 = Download(slots.b, offered(OTHER), progress)
    assert dl2.next_index() == 0 and progress.read()[5] == 0
    # and the first image's offer no longer resumes where it was
    assert Download(slots.b, offered(), progress).next_index() == 0


def test_probation_trial_rolled_back_and_none():
    slots, progress, dl = fresh()
    for frame in frames():
        dl.accept(frame)
    dl.stage()
    # the next boot runs version 7: on trial until proven
    p = Probation(Progress(progress.path), V)
    assert (p.state, p.version) == (TRIAL, V)
    assert slots.valid == 0
    assert p.proven(slots) and slots.valid == 1 and progress.read() is None
    assert not p.proven(slots) and slots.valid == 1
    assert Probation(progress, V).state == NONE
    # a cut after the mark, before the record is cleared: proven again
    progress.save_pending(V)
    p = Probation(progress, V)
    assert p.state == TRIAL and p.proven(slots) and slots.valid == 2
    # the image reset before proving itself: the bootloader ran version 6
    progress.save_pending(V)
    p = Probation(progress, RUNNING)
    assert (p.state, p.version) == (ROLLED_BACK, V)
    assert not p.proven(slots) and slots.valid == 2
    assert p.reported() and progress.read() is None and not p.reported()
    assert Probation(progress, RUNNING).state == NONE
    # a download under way, or no record: none
    Download(slots.b, offered(), progress)
    assert Probation(progress, RUNNING).state == NONE
    progress.clear()
    assert Probation(progress, RUNNING).state == NONE
    with open(progress.path, "w") as f:
        f.write("pending x\n")
    assert Probation(progress, RUNNING).state == NONE


def test_a_failed_flash_write_takes_the_block_again_from_its_first_chunk():
    slots, progress, dl = fresh()
    fs = frames()
    for frame in fs[:10]:
        dl.accept(frame)
    slots.b.fail_write = 1
    assert raises(OSError, dl.accept, fs[10]).args[0] == 5
    assert dl.next_index() == 8 and dl.blocks_done() == 1
    while dl.next_index() is not None:
        dl.accept(fs[dl.next_index()])
    assert dl.verify() and slots.flash.erases == 5
