# The gate's OTA lane (parkgate.ota_lane) on its own: a fake port (the
# Gate's link, log, refusals and status), the fake slots of test_ota.py handed
# in, the record in a folder of its own. Offers taken and refused, one ask
# at a time, re-asked after 3 s, chunks dropped while the lane is busy, the
# pause between blocks, resuming from the record after a restart, the
# read-back then staged, the reboot command, the probation at boot. Runs on
# CPython and on the gate's image. Through the Gate itself: test_ota_lane_gate.py.
import json

from parkgate import ota_lane
from parkgate.ota_lane import OtaLane
from parkgate.ota_record import Progress
from parkgate_host import ota_signing
from test_ota import GATE, IMAGE, KEY, RUNNING, V, Slots, record_path, slot_holds

TOPIC = "pg/t/g1/up/image"
GAP = 3000


class FakeLink:
    def __init__(self):
        self.up = True
        self.sent = []

    def publish(self, topic, payload, retain=False):
        if not self.up:
            return False
        self.sent.append((topic, payload))
        return True

    def asks(self):
        return [json.loads(p)["i"] for t, p in self.sent if t == TOPIC]


class Port:
    """What the lane takes from the Gate (parkgate.app/gate_link)."""

    def __init__(self):
        self.link = FakeLink()
        self.key = KEY
        self.gate_id = GATE
        self.lines = []
        self.refused = []
        self.statuses = 0
        self.lane = None

    def log(self, line):
        self.lines.append(line)

    def logged(self, start):
        return [line for line in self.lines if line.startswith(start)]

    def _refuse(self, kind, envelope, why):
        self.refused.append((kind, envelope.get("v"), str(why)))

    def _publish_status(self):
        # as GateLink._publish_status: a second status once proven
        self.statuses += 1
        if self.link.up and self.lane is not None and self.lane.status_published():
            self._publish_status()


class Clock:
    def __init__(self):
        self.now = 1000

    def __call__(self):
        return self.now


def folder():
    return record_path()[:-len("/ota.rec")]


def make(fs=None, slots=None, running=RUNNING, no_slots=False, port=None, clock=None,
         probation_s=300):
    fs = fs or folder()
    slots = slots or Slots()
    port = port or Port()
    clock = clock or Clock()
    resets = []
    lane = OtaLane(port, fs, (lambda: None) if no_slots else (lambda: slots),
                   lambda: resets.append(clock.now), clock, running, TOPIC, GAP, probation_s)
    port.lane = lane
    return lane, port, slots, clock, resets, fs


def offer(version=V, data=IMAGE, key=KEY):
    return json.loads(ota_signing.offer(key, GATE, version, data, 512))


def frames(version=V, data=IMAGE, start=0):
    return list(ota_signing.chunks(KEY, GATE, version, data, 512, start))


def feed(lane, clock, fs_frames, upto):
    """Answer each ask with its frame until chunk upto (not included) is
    written, stepping the clock past each block's pause."""
    while lane.dl.next_index() is not None and lane.dl.next_index() < upto:
        lane.idle_step(clock.now)
        if lane.asked is None:
            clock.now += GAP
            continue
        lane.chunk(fs_frames[lane.asked], True, clock.now)
        clock.now += 10


def test_an_offer_is_taken_asked_chunk_by_chunk_checked_and_staged():
    lane, port, slots, clock, resets, fs = make()
    assert lane.offer(offer()) is None
    assert port.logged("OTA offer") == ["OTA offer version=7 size=%d blocks=4" % len(IMAGE)]
    assert port.statuses == 1 and lane.status() == [V, 0, 4, "dl"]
    fs_frames = frames()
    lane.idle_step(clock.now)
    assert port.link.asks() == [0] and port.link.sent[0] == (TOPIC, '{"v":7,"i":0}')
    lane.idle_step(clock.now + 100)
    assert port.link.asks() == [0]            # one ask outstanding
    lane.chunk(fs_frames[0], True, clock.now)
    lane.idle_step(clock.now)
    assert port.link.asks() == [0, 1]
    feed(lane, clock, fs_frames, 26)
    assert lane.dl.next_index() is None and lane.status() == [V, 4, 4, "ck"]
    assert port.link.asks() == list(range(26)) and port.refused == []
    steps = 0
    while lane.status()[3] == "ck":
        assert lane.idle_step(clock.now) is True
        steps += 1
    assert steps == (len(IMAGE) + 511) // 512      # one 512-byte piece a pass
    lane.chunk(fs_frames[25], True, clock.now)      # a late answer, twice: refused once
    lane.chunk(fs_frames[25], True, clock.now)
    assert port.refused == [("chunk", V, "all 26 chunks written")]
    assert lane.status() == [V, 4, 4, "staged"] and port.logged("OTA staged") == [
        "OTA staged version=7"]
    # Staged is checked, not set_boot: a reset now still boots the running image.
    assert slots.b.boots == 0 and slot_holds(slots.b, IMAGE) and port.statuses == 2
    assert Progress(fs + "/ota").read()[0:2] == ("dl", V)
    assert resets == []
    assert lane.idle_step(clock.now) is False      # nothing more to do until the reboot


def test_offers_refused_with_their_reason():
    lane, port, slots, clock, resets, fs = make()
    assert lane.offer(offer(key=b"another key, not this gate's....")) == "bad signature"
    assert lane.offer(offer(version=RUNNING)) == "version 6 not newer than the running 6"
    big = bytes(4 * 4096 + 1)                      # the fake slot holds 4 blocks
    assert lane.offer(offer(data=big)) == "image of 16385 bytes, the slot holds 16384"
    lane2, port2 = make(no_slots=True)[0:2]
    assert lane2.offer(offer()) == "this board has no OTA slots"
    assert lane.dl is None and lane.status() is None and port.statuses == 0
    assert lane.idle_step(clock.now) is False and port.link.sent == []


def test_asks_only_when_idle_and_a_chunk_while_busy_is_dropped_and_asked_again():
    lane, port, slots, clock, resets, fs = make()
    lane.offer(offer())
    fs_frames = frames()
    lane.idle_step(clock.now)
    assert port.link.asks() == [0]
    lane.chunk(fs_frames[0], False, clock.now)      # a car at the barrier
    assert lane.dl.next_index() == 0 and lane.dropped == 1 and slots.flash.erases == 0
    assert port.refused == []
    lane.idle_step(clock.now + 1)                   # asked again at once, not after 3 s
    assert port.link.asks() == [0, 0]
    lane.chunk(fs_frames[0], True, clock.now + 2)
    assert lane.dl.next_index() == 1 and slots.flash.erases == 1


def test_an_unanswered_ask_is_asked_again_after_3_s():
    lane, port, slots, clock, resets, fs = make()
    lane.offer(offer())
    lane.idle_step(1000)
    lane.idle_step(1000 + ota_lane.ASK_AGAIN_MS - 1)
    assert port.link.asks() == [0]
    lane.idle_step(1000 + ota_lane.ASK_AGAIN_MS)
    assert port.link.asks() == [0, 0]
    port.link.up = False                            # no ask while the link is down
    lane.idle_step(1000 + 3 * ota_lane.ASK_AGAIN_MS)
    assert port.link.asks() == [0, 0]


def test_the_next_block_is_asked_only_after_the_gap():
    lane, port, slots, clock, resets, fs = make()
    lane.offer(offer())
    fs_frames = frames()
    t = 1000
    for i in range(8):                              # block 0: chunks 0..7
        lane.idle_step(t)
        assert port.link.asks()[-1] == i
        lane.chunk(fs_frames[i], True, t)
        t += 5
    done = t - 5                                    # the block's last chunk written
    lane.idle_step(done + GAP - 1)
    assert port.link.asks() == list(range(8))
    lane.idle_step(done + GAP)
    assert port.link.asks()[-1] == 8


def test_a_restart_resumes_from_the_last_recorded_block():
    lane, port, slots, clock, resets, fs = make()
    lane.offer(offer())
    fs_frames = frames()
    feed(lane, clock, fs_frames, 19)                # blocks 0, 1 whole, 3 chunks of block 2
    assert lane.dl.blocks_done() == 2
    # the power goes; at boot the record is all the lane has (no new offer)
    lane2, port2 = make(fs=fs, slots=slots, clock=clock)[0:2]
    assert port2.logged("OTA resume") == ["OTA resume version=7 block=2"]
    assert lane2.status() == [V, 2, 4, "dl"]
    lane2.idle_step(clock.now)
    assert port2.link.asks() == [16]
    feed(lane2, clock, fs_frames, 26)
    while lane2.status()[3] == "ck":
        lane2.idle_step(clock.now)
    assert lane2.status()[3] == "staged" and slot_holds(slots.b, IMAGE)
    # a power cut once staged: not set_boot yet, so the running image boots;
    # the record has every block, the slot is read back again, staged again
    assert slots.b.boots == 0
    lane4, port4 = make(fs=fs, slots=slots, clock=clock)[0:2]
    assert port4.logged("OTA resume") == ["OTA resume version=7 block=4"]
    assert lane4.status() == [V, 4, 4, "ck"]
    while lane4.status()[3] == "ck":
        lane4.idle_step(clock.now)
    assert lane4.status()[3] == "staged" and port4.link.asks() == [] and slots.b.boots == 0
    # the same offer again while downloading goes on where it is
    lane3, port3, slots3, clock3 = make()[0:4]
    lane3.offer(offer())
    feed(lane3, clock3, fs_frames, 3)
    assert lane3.offer(offer()) is None and lane3.dl.next_index() == 3
    assert port3.logged("OTA offer") == ["OTA offer version=7 size=%d blocks=4" % len(IMAGE)]


def test_a_refused_chunk_is_refused_once_and_asked_again():
    lane, port, slots, clock, resets, fs = make()
    lane.offer(offer())
    bad = bytearray(frames()[0])
    bad[30] ^= 1
    lane.idle_step(1000)
    lane.chunk(bytes(bad), True, 1001)
    lane.chunk(bytes(bad), True, 1002)
    assert port.refused == [("chunk", V, "chunk 0: bad signature")]
    assert slots.flash.erases == 0 and lane.dl.next_index() == 0
    lane.idle_step(1000 + ota_lane.ASK_AGAIN_MS)
    assert port.link.asks() == [0, 0]
    lane2, port2 = make()[0:2]
    lane2.chunk(frames()[0], True, 1000)            # no download: refused, nothing written
    assert port2.refused == [("chunk", None, "no download under way")]


def _staged():
    made = make()
    lane, port, slots, clock = made[0:4]
    lane.offer(offer())
    feed(lane, clock, frames(), 26)
    while lane.status()[3] == "ck":
        lane.idle_step(clock.now)
    return made


def test_reboot_only_into_the_staged_version_at_the_first_idle_pass():
    lane, port, slots, clock, resets, fs = make()
    assert lane.reboot("7") == "version 7 is not staged: nothing is"
    lane.offer(offer())
    assert lane.reboot("7") == "version 7 is not staged: nothing is"   # downloading
    lane, port, slots, clock, resets, fs = _staged()
    assert lane.reboot("8") == "version 8 is not staged: version 7 is"
    assert lane.reboot("07") == "version 07 is not staged: version 7 is"
    assert resets == [] and not lane.reboot_pending
    assert lane.reboot("7") is None and resets == [] and slots.b.boots == 0
    assert lane.idle_step(clock.now) is True
    assert resets == [clock.now] and port.logged("OTA reboot") == ["OTA reboot version=7"]
    # set_boot with the reboot, after the pending record (parkgate.ota.stage)
    assert slots.b.boots == 1 and Progress(fs + "/ota").read() == ("pending", V)


def test_a_slot_that_does_not_read_back_is_not_staged():
    lane, port, slots, clock, resets, fs = make()
    lane.offer(offer())
    feed(lane, clock, frames(), 26)
    zero = bytes(16)
    slots.b.writeblocks(1, zero, 100)               # a bit flipped on the flash
    while lane.status() is not None and lane.status()[3] == "ck":
        lane.idle_step(clock.now)
    assert lane.status() is None and slots.b.boots == 0
    assert port.refused == [("image", V, "the slot's SHA-256 is not the offer's")]
    assert Progress(fs + "/ota").read() is None


def test_a_trial_is_proven_by_the_first_status_with_the_link_up():
    fs = folder()
    Progress(fs + "/ota").save_pending(V)
    lane, port, slots, clock, resets, fs = make(fs=fs, running=V)
    assert lane.status() == [V, 0, 0, "trial"] and lane.rb is None
    assert lane.offer(offer(version=V + 1)).startswith("version 7 is pending")
    assert lane.status_published() is True
    assert slots.valid == 1 and port.logged("OTA valid") == ["OTA valid version=7"]
    assert Progress(fs + "/ota").read() is None and lane.status() is None
    assert lane.status_published() is False and slots.valid == 1
    # through the port as the Gate does: proven, then a second status
    Progress(fs + "/ota").save_pending(V)
    lane, port, slots = make(fs=fs, running=V)[0:3]
    port._publish_status()
    assert port.statuses == 2 and slots.valid == 1 and lane.status() is None
    port._publish_status()
    assert port.statuses == 3


def test_the_probation_deadline_resets_the_gate():
    fs = folder()
    Progress(fs + "/ota").save_pending(V)
    clock = Clock()
    lane, port, slots, clock, resets, fs = make(fs=fs, running=V, clock=clock, probation_s=300)
    lane.service(1000 + 300 * 1000 - 1)
    assert resets == []
    lane.service(1000 + 300 * 1000)
    assert len(resets) == 1
    assert port.logged("OTA probation over") == [
        "OTA probation over: not proven in 300 s, resetting"]
    lane.service(1000 + 400 * 1000)
    assert len(resets) == 1
    # proven in time: no reset
    Progress(fs + "/ota").save_pending(V)
    lane, port, slots, clock, resets = make(fs=fs, running=V)[0:5]
    port._publish_status()
    lane.service(1000 + 400 * 1000)
    assert resets == []


def test_a_rollback_is_in_the_status_until_a_new_offer_is_taken():
    fs = folder()
    Progress(fs + "/ota").save_pending(V)
    lane, port, slots, clock, resets, fs = make(fs=fs, running=RUNNING)
    assert lane.rb == V and lane.status() is None
    assert port.logged("OTA rolled back") == ["OTA rolled back version=7 running=6"]
    port._publish_status()
    port._publish_status()
    assert lane.rb == V and slots.valid == 0 and Progress(fs + "/ota").read() == ("pending", V)
    assert lane.offer(offer(key=b"x" * 32)) == "bad signature" and lane.rb == V
    assert lane.offer(offer(version=V + 1)) is None
    assert lane.rb is None and lane.status() == [V + 1, 0, 4, "dl"]
    assert Progress(fs + "/ota").read()[0:2] == ("dl", V + 1)
