# The OTA lane through the Gate (parkgate.app on tests/fakes/board.py, the
# fake slots of test_ota.py handed in as the board's ota_slots()): the
# downlinks image, chunk and reboot on the gate's own topics, asks only while
# the lane is idle, a chunk dropped while a car is at the barrier, the status
# fields fw/ota/rb, the reboot command against the command counter, the size
# caps, and the probation made at boot from the record. CPython and the
# gate's image.
import binascii
import json
import sys

from parkgate import app
from parkgate.gate_link import FW_VERSION     # 0 on CPython, the image's own on the image
from parkgate.ota_record import Progress
from parkgate_host import ota_signing, signing
from test_ota import GATE, IMAGE, KEY, Slots, record_path

try:
    from fakes.board import FakeBoard       # CPython: tests/ is on the path
except ImportError:
    sys.path.insert(0, "tests/fakes")       # the gate's image, run from the repository
    from board import FakeBoard

V = 7
SITE = {"lot": "t", "gate": GATE, "direction": "in", "broker": "127.0.0.1",
        "key": binascii.hexlify(KEY).decode()}
DOWN = "pg/t/g1/down/"


def gate_on(slots=None, fs=None):
    fs = fs or record_path()[:-len("/ota.rec")]
    board = FakeBoard(SITE, fs, seconds=800000000)
    board.slots = slots
    gate = app.Gate(board)
    return gate, board


def run(gate, board, ms, answer=None):
    """Passes for ms of fake time, 5 ms each; answer(index) -> a frame to
    deliver for each new ask seen."""
    seen = len(asks(board))
    for _ in range(ms // 5):
        gate.step()
        board.ticks.advance(5)
        now = asks(board)
        if answer is not None and len(now) > seen:
            seen = len(now)
            board.broker.inbox.append(((DOWN + "chunk").encode(), answer(now[-1])))


def published(board, leaf):
    return [p for t, p, _ in board.broker.published if t == "pg/t/g1/" + leaf]


def asks(board):
    return [json.loads(p)["i"] for p in published(board, "up/image")]


def statuses(board):
    return [json.loads(p) for p in published(board, "status")]


def refusals(board):
    return [json.loads(p) for p in published(board, "up/refused")]


def send(board, leaf, payload):
    if isinstance(payload, dict):
        payload = json.dumps(payload)
    if isinstance(payload, str):
        payload = payload.encode()
    board.broker.inbox.append(((DOWN + leaf).encode(), payload))


def reboot(version_body, v):
    return signing.sign(KEY, "reboot", GATE, v, version_body)


def test_a_gate_with_nothing_under_way_holds_no_ota_lane():
    gate, board = gate_on(Slots())
    run(gate, board, 100)
    assert "ota" not in gate.__dict__ and gate.ota is None
    status = statuses(board)[-1]
    assert status["fw"] == FW_VERSION and status["ota"] is None and status["rb"] is None
    send(board, "chunk", b"PGI\x01" + bytes(60))
    send(board, "reboot", reboot("7", 1))
    run(gate, board, 50)
    assert [(r["k"], r["why"]) for r in refusals(board)] == [
        ("chunk", "no download under way"), ("reboot", "version 7 is not staged: nothing is")]
    assert board.resets == 0 and gate._last_command == 1


def test_the_size_caps_of_image_and_chunk():
    gate, board = gate_on(Slots())
    run(gate, board, 50)
    send(board, "image", b"x" * 513)
    send(board, "chunk", b"x" * 601)
    send(board, "reboot", b"x" * 513)
    run(gate, board, 50)
    assert [(r["k"], r["why"]) for r in refusals(board)] == [
        ("image", "513 bytes, at most 512"), ("chunk", "601 bytes, at most 600"),
        ("reboot", "513 bytes, at most 512")]
    send(board, "image", ota_signing.offer(b"k" * 32, GATE, V, IMAGE))
    run(gate, board, 50)
    assert refusals(board)[-1] == {"k": "image", "v": V, "why": "bad signature"}
    assert board.lines.count("REFUSED image v=7: bad signature") == 1
    # a refused offer leaves no lane and no OTA module behind
    assert gate.ota is None and "parkgate.ota_lane" not in sys.modules


def test_an_image_over_the_link_asked_only_while_idle_staged_and_rebooted():
    slots = Slots()
    gate, board = gate_on(slots)
    run(gate, board, 50)
    send(board, "image", ota_signing.offer(KEY, GATE, V, IMAGE))
    run(gate, board, 20)
    assert board.logged("OTA offer") == ["OTA offer version=7 size=%d blocks=4" % len(IMAGE)]
    assert statuses(board)[-1]["ota"] == [V, 0, 4, "dl"]
    assert asks(board) == [0]
    frames = list(ota_signing.chunks(KEY, GATE, V, IMAGE, 512))
    # a car at the barrier: the relay's pulse; no ask, a chunk is dropped
    gate._open_barrier()
    send(board, "chunk", frames[0])
    run(gate, board, 500)
    assert asks(board) == [0] and gate.ota.dropped == 1 and slots.flash.erases == 0
    run(gate, board, 400)                           # the pulse is over: asked again
    assert asks(board) == [0, 0] and refusals(board) == []
    send(board, "reboot", reboot("7", 1))           # not staged yet
    run(gate, board, 20, lambda i: frames[i])
    assert refusals(board)[-1] == {"k": "reboot", "v": 1,
                                   "why": "version 7 is not staged: nothing is"}
    for _ in range(20):                             # 4 blocks, a 3 s pause after each
        run(gate, board, 3500, lambda i: frames[i])
        if gate.ota.state == "staged":
            break
    assert board.logged("OTA staged") == ["OTA staged version=7"] and slots.b.boots == 0
    assert statuses(board)[-1]["ota"] == [V, 4, 4, "staged"]
    assert sorted(set(asks(board))) == list(range(26))
    send(board, "reboot", reboot("8", 2))
    run(gate, board, 20)
    assert refusals(board)[-1]["why"] == "version 8 is not staged: version 7 is"
    assert board.resets == 0
    send(board, "reboot", reboot("7", 2))           # replayed v
    run(gate, board, 20)
    assert refusals(board)[-1]["why"] == "stale: version 2, 2 applied" and board.resets == 0
    gate._open_barrier()                            # the reboot waits for an idle lane
    send(board, "reboot", reboot("7", 3))
    run(gate, board, 400)
    assert board.resets == 0
    run(gate, board, 600)
    assert board.resets == 1 and board.logged("OTA reboot") == ["OTA reboot version=7"]
    assert gate._last_command == 3 and slots.b.boots == 1


def test_at_boot_a_trial_is_proven_after_the_first_status():
    fs = record_path()[:-len("/ota.rec")]
    Progress(fs + "/ota").save_pending(FW_VERSION)  # the running image's version
    slots = Slots()
    gate, board = gate_on(slots, fs)
    assert gate.ota is not None and gate.ota.status() == [FW_VERSION, 0, 0, "trial"]
    run(gate, board, 50)
    assert slots.valid == 1 and board.logged("OTA valid") == ["OTA valid version=%d" % FW_VERSION]
    first, second = statuses(board)[0:2]
    assert first["ota"] == [FW_VERSION, 0, 0, "trial"] and second["ota"] is None
    assert Progress(fs + "/ota").read() is None
    # proven: the lane and its modules are off the heap; the next offer brings them back
    assert gate.ota is None and "parkgate.ota_lane" not in sys.modules
    assert "parkgate.ota_record" not in sys.modules
    send(board, "image", ota_signing.offer(KEY, GATE, FW_VERSION + 1, IMAGE))
    run(gate, board, 20)
    assert statuses(board)[-1]["ota"] == [FW_VERSION + 1, 0, 4, "dl"] and asks(board) == [0]


def test_at_boot_a_rollback_is_reported_in_every_status():
    fs = record_path()[:-len("/ota.rec")]
    Progress(fs + "/ota").save_pending(V)           # 7 pending, another running: rolled back
    gate, board = gate_on(Slots(), fs)
    assert board.logged("OTA rolled back") == ["OTA rolled back version=7 running=%d" % FW_VERSION]
    run(gate, board, 50)
    gate._publish_status()
    assert [s["rb"] for s in statuses(board)] == [V, V]
    send(board, "image", ota_signing.offer(KEY, GATE, V + 1, IMAGE))
    run(gate, board, 20)
    assert statuses(board)[-1]["rb"] is None and statuses(board)[-1]["ota"][0] == V + 1
