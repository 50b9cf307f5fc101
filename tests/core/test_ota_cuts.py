# Power cuts during an OTA download (parkgate.ota): the flash's programs and
# erases torn (boards/unix-sim/flashdev), the record's save cut before its
# rename; after each a new Download of the same offer resumes at the first
# chunk of the block after the last recorded one, and nothing is staged
# before the whole image is in the slot. Helpers from test_ota; runs on
# CPython and on the gate's image; tests/test_ota_properties.py draws the
# cut points with Hypothesis.
import gc

from check import raises, xorshift
from flashdev import TORN_PARTIAL, PowerCut
from parkgate.ota import Download, OtaError
from parkgate.ota_record import NONE, ROLLED_BACK, Probation, Progress
from test_ota import IMAGE, RUNNING, V, Slots, frames, offered, record_path, slot_holds


class CutRecord(Progress):
    """A record whose n-th save is cut after <path>.new is written, before
    the rename (the power goes)."""

    def __init__(self, path, cut_at):
        Progress.__init__(self, path)
        self.cut_at = cut_at

    def _write(self, line):
        if self.saves + 1 == self.cut_at:
            with open(self._new, "w") as f:
                f.write(line[:len(line) // 2])
            self.saves += 1
            raise PowerCut(5, "PowerCut")
        Progress._write(self, line)


def download_with_cuts(cuts, chunk=512, data=IMAGE):
    """Download data, cutting the power at each (chunks fed, kind, n,
    seed) of cuts: kind 0 the flash's n-th program/erase from there
    (torn), kind 1 the n-th record save from there; after each cut a new
    Download of the same offer. Returns (slots, progress, download, the
    chunk indexes resumed at)."""
    slots = Slots()
    path = record_path()
    offer = offered(data, chunk)
    fs = frames(data=data, chunk=chunk)
    progress = Progress(path)
    dl = Download(slots.b, offer, progress)
    resumed = []
    for fed, kind, n, seed in cuts:
        for _ in range(fed):
            if dl.next_index() is None:
                break
            dl.accept(fs[dl.next_index()])
        recorded = dl.blocks_done()
        if kind == 0:
            slots.flash.cut_after(n, TORN_PARTIAL, seed)
        else:
            progress = CutRecord(path, n)
            dl.progress = progress
        try:
            while dl.next_index() is not None:
                dl.accept(fs[dl.next_index()])
            dl.verify()
        except PowerCut:
            pass
        slots.flash.power_on()
        # the reboot: a new offer parsed, a new record object, a new Download
        progress = Progress(path)
        assert Probation(progress, RUNNING).state == NONE
        dl = Download(slots.b, offered(data, chunk), progress)
        nxt = dl.next_index()
        assert dl.blocks_done() >= recorded
        assert nxt is None or nxt == dl.blocks_done() * offer.per_block
        assert slots.b.boots == 0
        if nxt is not None:
            assert str(raises(OtaError, dl.stage)).startswith("chunk %d of" % nxt)
            assert slots.b.boots == 0
        resumed.append(nxt)
    while dl.next_index() is not None:
        dl.accept(fs[dl.next_index()])
    return slots, progress, dl, resumed


def test_power_cuts_resume_at_the_last_recorded_block_and_never_stage_half_an_image():
    rand = xorshift(16)
    for trial in range(12):
        gc.collect()
        cuts = [(rand(9), rand(2), 1 + rand(4), rand(1000)) for _ in range(1 + rand(4))]
        slots, progress, dl, resumed = download_with_cuts(cuts, chunk=(512, 256)[trial % 2])
        assert slot_holds(slots.b, IMAGE), cuts
        dl.stage()
        assert slots.b.boots == 1 and progress.read() == ("pending", V)


def test_a_cut_in_the_first_block_resumes_at_chunk_0_and_a_cut_record_keeps_the_old():
    slots, progress, dl, resumed = download_with_cuts([(3, 0, 1, 1)])
    assert resumed == [0]
    slots, progress, dl, resumed = download_with_cuts([(10, 0, 2, 1)])
    assert resumed == [8]
    # the second save (block 0 done) cut before its rename: block 0 again
    slots, progress, dl, resumed = download_with_cuts([(0, 1, 1, 0)])
    assert resumed == [0]
    slots, progress, dl, resumed = download_with_cuts([(0, 1, 3, 0)])
    assert resumed == [16]
    assert dl.verify()


class CutPending(Progress):
    """A record whose pending save lands, and then the power goes (before
    set_boot)."""

    def save_pending(self, version):
        Progress.save_pending(self, version)
        raise PowerCut(5, "PowerCut")


def test_a_cut_between_the_pending_record_and_set_boot_reads_as_a_rollback():
    slots = Slots()
    path = record_path()
    dl = Download(slots.b, offered(), CutPending(path))
    for frame in frames():
        dl.accept(frame)
    raises(PowerCut, dl.stage)
    assert slots.b.boots == 0
    # the next boot runs the old image, a pending record for version 7
    p = Probation(Progress(path), RUNNING)
    assert (p.state, p.version) == (ROLLED_BACK, V)
    assert p.reported() and Progress(path).read() is None
    # offered again, it is downloaded again from the start
    assert Download(slots.b, offered(), Progress(path)).next_index() == 0
