"""Camera streams on the gate's own image, both formats: a truncated or
corrupt frame followed at once, with no quiet gap on the line, by a good
one. Every good frame is read, no broken frame yields a plate, and the
gate stays up. A Vzenith offline replay is journaled with the camera's
time and FLAG_REPLAY, and the barrier does not open for it."""
import random

from parkgate import record
from parkgate_host import camera_frames

START = 1767225600   # 2026-01-01T00:00:00Z
CARS = 12


def camera_gate(offline_gate, name, camera):
    """An entry lane with no lot server, its camera speaking `camera`."""
    return offline_gate(name, "in", "cam", start=START, rate=1, site_extra={"camera": camera})


def plates(prefix):
    return ["%s%05d" % (prefix, 11111 * (i % 9) + i // 9) for i in range(CARS)]


def broken_pg(rnd, seq, plate):
    good = camera_frames.pg_frame(seq, plate)
    how = rnd.randrange(3)
    if how == 0:
        return good[:rnd.randrange(2, len(good) - 1)]          # cut short
    if how == 1:
        return good[:-1] + bytes([good[-1] ^ 0x5A])             # bad CRC
    return good[:2] + b"\xff\xff" + good[4:]                  # length out of range


def broken_vz(rnd, serial, plate):
    good = camera_frames.vz_frame(serial, plate, sec=START)
    how = rnd.randrange(3)
    if how == 0:
        return good[:rnd.randrange(3, len(good) - 8)]          # cut inside the JSON
    if how == 1:
        return good[:8] + b"{\"PlateResult\":[" + b"\x01" * 5  # corrupt JSON
    return good[:4] + b"\x00\x10\x00\x00" + good[8:40]        # length past the frame


def run_stream(gate, encode, broken, good_plates, phantom):
    rnd = random.Random(7)
    for i, plate in enumerate(good_plates):
        # One write: the broken frame and the good one right behind it.
        gate.write_raw(broken(rnd, 2 * i + 1, phantom) + encode(2 * i + 2, plate))
        gate.wait_line(r"EVENT in seq=%d plate=%s " % (i + 1, plate), 5)
    assert [e["plate"] for e in gate.events()] == good_plates
    assert not gate.lines(r"EVENT .*" + phantom)
    assert gate.lines(r" REJECT ") and not gate.lines(r" ERROR ")
    assert len(gate.lines(r" BOOT ")) == 1 and gate.relay_openings() == len(good_plates)


def test_project_frames_resynchronise_after_a_bad_frame(offline_gate):
    gate = camera_gate(offline_gate, "pg", "pg")
    run_stream(gate, lambda seq, p: camera_frames.pg_frame(seq & 0xFF, p),
               lambda rnd, seq, p: broken_pg(rnd, seq & 0xFF, p), plates("苏G"), "苏G99999")


def test_vzenith_frames_resynchronise_and_replays_do_not_open(offline_gate):
    gate = camera_gate(offline_gate, "vz", "vz")
    run_stream(gate, lambda serial, p: camera_frames.vz_frame(serial & 0xFF, p, sec=START),
               lambda rnd, serial, p: broken_vz(rnd, serial & 0xFF, p), plates("浙H"),
               "浙H99999")
    openings = gate.relay_openings()
    replayed_at = START - 3600
    gate.write_raw(camera_frames.vz_frame(200, "浙H12121", sec=replayed_at, offline=True))
    gate.wait_line(r"EVENT in seq=%d plate=浙H12121 " % (CARS + 1), 5)
    replay = gate.events()[-1]
    assert replay["t"] == replayed_at and replay["q"] == 2          # the camera's time
    assert replay["fl"] & record.FLAG_REPLAY
    assert gate.relay_openings() == openings
