"""The lot's firmware images (lot/images.py), the per-gate plans and their
states moved by the gate's status (lot/ota_plan.py), and the `parkgate lot
image` commands (lot/ota_cli.py)."""
import hashlib
import json
import os

import pytest

from parkgate_tools.cli import main as parkgate
from parkgate_tools.lot.images import MAX_IMAGE_BYTES, ImageError, ImageStore
from parkgate_tools.lot.ota_plan import OtaPlan

LOT = "lot1"


def test_the_store_keeps_images_and_refuses_what_is_wrong(tmp_path):
    store = ImageStore(str(tmp_path / "images"))
    assert store.list() == [] and store.get(3) is None
    a = store.add(b"abc" * 100, 3, "first", clock=lambda: 1000)
    assert (a.version, a.size, a.sha256, a.added, a.note) == (
        3, 300, hashlib.sha256(b"abc" * 100).hexdigest(), 1000, "first")
    store.add(b"newer", 10)
    assert [i.version for i in store.list()] == [10, 3]
    assert store.read(3) == b"abc" * 100 and store.get(3) == a
    assert store.add(b"abc" * 100, 3) == a                    # the same bytes again
    with pytest.raises(ImageError, match="other bytes"):
        store.add(b"abd" * 100, 3)
    with pytest.raises(ImageError, match="empty"):
        store.add(b"", 4)
    for bad in (0, -1, 2 ** 30, "5", 5.0, True):
        with pytest.raises(ImageError, match="1..1073741823"):
            store.add(b"x", bad)
    with pytest.raises(ImageError, match="largest slot"):
        store.add(bytes(MAX_IMAGE_BYTES + 1), 5)
    store.add(bytes(MAX_IMAGE_BYTES), 5)
    with pytest.raises(ImageError, match="no image"):
        store.read(6)
    with open(os.path.join(store.folder, "3.bin"), "r+b") as f:
        f.write(b"X")
    with pytest.raises(ImageError, match="not the bytes"):
        store.read(3)
    assert sorted(os.listdir(store.folder)) == ["10.bin", "10.json", "3.bin", "3.json",
                                                "5.bin", "5.json"]      # no part file left


def test_the_plan_moves_by_the_gates_status(tmp_path):
    plan = OtaPlan(str(tmp_path / "ota"), clock=lambda: 50)
    assert plan.plans() == {} and plan.plan("g1") is None
    made = plan.offer(["g1", "g2"], 7, "03:00")
    assert made["g1"] == {"version": 7, "reboot": "03:00", "offered_at": 50,
                          "state": "offered", "rolled_back": [], "progress": None,
                          "reboot_sent_at": None, "running": None, "forced": False}
    assert plan.heard("g1", {"fw": 6, "ota": None})["running"] == 6
    assert plan.heard("g1", {"fw": 6, "ota": None}) is None          # nothing new
    assert plan.heard("g1", {"fw": 6, "ota": [7, 1, 3, "dl"]})["state"] == "downloading"
    assert plan.heard("g1", {"fw": 6, "ota": [7, 3, 3, "ck"]})["progress"] == [3, 3]
    assert plan.heard("g1", {"fw": 6, "ota": [8, 1, 3, "dl"]}) is None   # not its version
    assert plan.heard("g1", {"fw": 6, "ota": [7, 3, 3, "staged"]})["state"] == "staged"
    with pytest.raises(ValueError, match="g3 has no plan"):
        plan.reboot(["g1", "g3"], "now")
    assert plan.plan("g1")["reboot"] == "03:00", "nothing written"
    assert plan.reboot(["g1"], "now") == ["g1"] and plan.plan("g1")["reboot"] == "now"
    plan.set_state("g1", "rebooting")
    on_trial = plan.heard("g1", {"fw": 7, "ota": [7, 0, 0, "trial"]})
    assert on_trial["state"] == "rebooting" and on_trial["running"] == 7   # not proven yet
    assert plan.heard("g1", {"fw": 7, "ota": None})["state"] == "running"
    for change in (plan.reboot, plan.cancel):
        with pytest.raises(ValueError, match="g1: its plan of version 7 is running"):
            change(["g1"])
    # g2 rolls back: never offered again unless forced
    assert plan.heard("g2", {"fw": 6, "rb": 7})["state"] == "rolled back"
    assert plan.plan("g2")["rolled_back"] == [7]
    with pytest.raises(ValueError, match="g2 rolled version 7 back"):
        plan.offer(["g1", "g2"], 7, "now")
    assert plan.plan("g1")["state"] == "running", "nothing written for any gate"
    assert plan.offer(["g2"], 8, "now")["g2"]["rolled_back"] == [7]
    forced = plan.offer(["g2"], 7, "now", force=True)["g2"]
    assert forced["rolled_back"] == [] and forced["forced"]
    assert plan.heard("g2", {"fw": 6, "rb": 7}) is None, "its old rollback, not a new one"
    assert plan.cancel(["g2"]) == ["g2"]
    assert plan.heard("g2", {"fw": 7})["state"] == "cancelled"
    for bad in ("later", "24:00", "3:00", None):
        with pytest.raises(ValueError):
            plan.offer(["g1"], 9, bad)
    with pytest.raises(ValueError):
        plan.reboot(["g1"], "manual")
    with pytest.raises(ValueError):
        plan.offer(["../x"], 9, "now")
    # a reset on trial: the bootloader goes back, the gate reports it
    plan.offer(["g3"], 7, "now")
    assert plan.heard("g3", {"fw": 7, "ota": [7, 0, 0, "trial"]})["state"] == "offered"
    assert plan.heard("g3", {"fw": 6, "ota": None, "rb": 7})["state"] == "rolled back"
    assert set(plan.plans()) == {"g1", "g2", "g3"}


def test_the_image_commands(tmp_path, capsys):
    lot_dir = str(tmp_path / "lot")
    assert parkgate(["lot", "init", lot_dir, "--lot", LOT, "--gate", "in-1",
                     "--gate", "out-1:out"]) == 0
    image = tmp_path / "fw.bin"
    image.write_bytes(b"\x7fELF" + bytes(5000))
    capsys.readouterr()
    assert parkgate(["lot", "image", "add", lot_dir, str(image), "--version", "7",
                     "--note", "fix"]) == 0
    assert "image 7: 5004 bytes" in capsys.readouterr().out
    assert parkgate(["lot", "image", "add", lot_dir, str(tmp_path / "none"),
                     "--version", "8"]) == 2
    assert parkgate(["lot", "image", "list", lot_dir]) == 0
    assert "7\t5004 bytes" in capsys.readouterr().out
    assert parkgate(["lot", "image", "offer", lot_dir, "8", "--all"]) == 2
    assert "no image of version 8" in capsys.readouterr().err
    assert parkgate(["lot", "image", "offer", lot_dir, "7"]) == 2            # no gates named
    assert parkgate(["lot", "image", "offer", lot_dir, "7", "--gate", "in-9"]) == 2
    capsys.readouterr()
    assert parkgate(["lot", "image", "offer", lot_dir, "7", "--gate", "in-1",
                     "--reboot", "02:30"]) == 0
    assert capsys.readouterr().out == "in-1: version 7 offered, reboot 02:30\n"
    plan_path = os.path.join(lot_dir, "state", "ota", "in-1.json")
    with open(plan_path) as f:
        assert json.load(f)["reboot"] == "02:30"
    OtaPlan(os.path.dirname(plan_path)).heard("in-1", {"fw": 6, "ota": [7, 1, 2, "dl"]})
    assert parkgate(["lot", "image", "reboot", lot_dir, "--gate", "out-1"]) == 2
    assert "out-1 has no plan" in capsys.readouterr().err
    assert parkgate(["lot", "image", "reboot", lot_dir, "--all", "--at", "now"]) == 0
    assert capsys.readouterr().out == "in-1: reboot now once staged\n"
    assert parkgate(["lot", "image", "status", lot_dir]) == 0
    assert capsys.readouterr().out == (
        "in-1: running 6; version 7 downloading, reboot now, 1/2 blocks (50%); "
        "rolled back: none\nout-1: no plan\n")
    assert parkgate(["lot", "image", "cancel", lot_dir, "--gate", "out-1"]) == 2
    assert "out-1 has no plan" in capsys.readouterr().err
    assert parkgate(["lot", "image", "cancel", lot_dir, "--all"]) == 0
    assert capsys.readouterr().out == "in-1: plan cancelled\n"
    assert OtaPlan(os.path.dirname(plan_path)).plan("in-1")["state"] == "cancelled"
    assert parkgate(["lot", "image", "cancel", lot_dir, "--all"]) == 2
    assert "no gate has a plan under way" in capsys.readouterr().err
