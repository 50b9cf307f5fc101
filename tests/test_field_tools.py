"""`parkgate board` against the simulated gate as a board on a serial line.

A SimGate journals a few cars (two acknowledged by the lot bridge, two not,
the broker gone), then the same gate folder is started as a REPL on a socat
pseudo-terminal (SimRepl: the unix-sim image, its code frozen in, as an
ESP32 runs a parkgate image) and the field tools run against it through
mpremote in `resume` mode: deploy (the configuration only, then with --code
the .mpy files, refused in the gate's 64 KiB heap and shadowing the frozen
code in a larger one, then the configuration only again, which removes
them), status, journal, push-tariff, push-members, set-clock, test-relay,
config. Their effects are checked inside the gate, through mpremote's own
commands where possible."""
import csv
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time

import pytest

from parkgate import members, tariff
from parkgate_tools import lint, runtime
from parkgate_tools.field import boards, commands, deploy, errors, transport, validate
from parkgate_tools.field.flash import read_csv
from parkgate_tools.lot.bridge import Bridge
from parkgate_tools.sim.broker import Broker
from parkgate_tools.sim.gate import DEFAULT_TARIFF, SimClock, SimGate
from parkgate_tools.sim.repl import FlashGate, SimRepl

LOT = "ft"
START = 1795564800   # 2026-11-25 08:00 UTC+8
PLATES = ["京A10001", "沪B20002", "粤C30003", "苏D40004"]
TARIFFS = os.path.dirname(DEFAULT_TARIFF)
SIMBOOT = os.path.join(runtime.BOARDS, "unix-sim", "port", "simboot.py")
ESP32_BOARDS = [name for name in boards.board_names()
                if boards.load_board(name).doc.get("port") == "esp32"]


def sha_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def parkgate(*args, timeout=120):
    """Run the `parkgate` command as a field engineer would."""
    return subprocess.run([sys.executable, "-m", "parkgate_tools.cli"] + list(args),
                          capture_output=True, text=True, timeout=timeout)


def mpremote(port, *args):
    """mpremote itself, for checks independent of the field tools."""
    proc = subprocess.run([sys.executable, "-m", "mpremote", "connect", port, "resume"]
                          + list(args), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def device_sha256(port, paths):
    out = mpremote(port, "fs", "sha256sum", *[":" + p for p in paths]).split()
    # "sha256sum :PATH" then the digest, for each path
    found = {}
    for i, word in enumerate(out):
        if word == "sha256sum":
            found[out[i + 1][1:]] = out[i + 2]
    return found


def flash_listing(port):
    """Every path on the board's filesystem (recursive)."""
    return sorted(mpremote(port, "fs", "tree", ":/flash").split())


def imported_from(port, *modules):
    """{module: (its __file__, "flash" or "image")} as the board imports it."""
    code = ("import os\n"
            "for name in %r:\n"
            "    m = __import__(name, None, None, ['x'])\n"
            "    try:\n"
            "        os.stat(m.__file__)\n"
            "        where = 'flash'\n"
            "    except OSError:\n"
            "        where = 'image'\n"
            "    print(name, m.__file__, where)\n" % (list(modules),))
    lines = mpremote(port, "exec", code).split("\n")
    return {line.split()[0]: tuple(line.split()[1:]) for line in lines if line.strip()}


def gpio_edges(folder):
    with open(os.path.join(folder, "gpio.log")) as f:
        return [(float(t), int(level)) for t, pin, level in (line.split() for line in f)
                if pin == "relay"]


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    """A gate folder whose flash holds a journal of four cars, then the
    same gate as a REPL on a pty; yields (repl, events logged by the gate)."""
    work = str(tmp_path_factory.mktemp("field"))
    broker = Broker(os.path.join(work, "broker"))
    broker.start()
    bridge = Bridge(LOT, broker.host, broker.port, os.path.join(work, "lot.sqlite"),
                    DEFAULT_TARIFF)
    bridge.start()
    gate = SimGate(work, "g-in", LOT, "in", broker.port, SimClock(START, 60),
                   site_extra={"backoff_max_ms": 500})
    try:
        gate.provision()
        gate.start()
        gate.wait_line(r"LINK up", 10)
        for plate in PLATES[:2]:
            gate.send_plate(plate)
            time.sleep(0.05)
        gate.wait_line(r"ACK upto=2", 10)
        broker.kill()                       # the last two stay unacknowledged
        for plate in PLATES[2:]:
            gate.send_plate(plate)
            time.sleep(0.05)
        gate.wait_line(r"EVENT in seq=4 ", 5)
        events = gate.events()
    finally:
        gate.stop()
        bridge.stop()
        broker.stop()
    assert [e["plate"] for e in events] == PLATES
    repl = SimRepl(work, "g-in")
    repl.start()
    repl.events = events
    repl.site_path = os.path.join(work, "site-g-in.json")
    with open(repl.site_path, "w") as f:
        json.dump({"lot": LOT, "gate": "g-in", "direction": "in", "broker": "127.0.0.1",
                   "port": broker.port, "backoff_max_ms": 500}, f)
    repl.members_path = os.path.join(work, "members-g-in.json")
    with open(repl.members_path, "w") as f:
        json.dump({"version": 1, "members": [{"plate": PLATES[0], "until": None}]}, f,
                  ensure_ascii=False)
    yield repl
    repl.stop()


@pytest.fixture(scope="module")
def deployed(field):
    """The gate's configuration deployed onto the REPL's flash by `parkgate
    board deploy` (the code is the image's), the board rebooted."""
    port = field.port
    # Nothing deployed yet: the image's own code answers, from the flash's
    # journal, with no deploy.json.
    before = parkgate("board", "status", "--port", port, "--resume", "--json")
    assert before.returncode == 0, before.stderr
    st = json.loads(before.stdout)
    assert st["firmware"] is None and st["code"] == {"board": "image", "parkgate": "image"}
    assert st["journal"]["next_seq"] == 5
    proc = parkgate("board", "deploy", "--port", port, "--resume", "--board", "unix-sim",
                    "--site", field.site_path, "--members", field.members_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verified 2 files by SHA-256 on the board" in proc.stdout
    assert "code frozen in the image; config members.bin, site.json" in proc.stdout
    assert "restart the simulator" in proc.stdout
    field.restart()
    return field


def test_deploy_puts_the_configuration_on_the_flash_with_its_hashes(deployed):
    port = deployed.port
    with open(deployed.members_path, encoding="utf-8") as f:
        members_bin = validate.members_file(json.load(f))
    config = {"/flash/site.json": sha_file(deployed.site_path),
              "/flash/members.bin": hashlib.sha256(members_bin).hexdigest()}
    assert device_sha256(port, sorted(config)) == config
    site = json.loads(mpremote(port, "fs", "cat", ":/flash/site.json"))
    with open(deployed.site_path) as f:
        assert site == json.load(f)
    manifest = json.loads(mpremote(port, "fs", "cat", ":/flash/deploy.json"))
    assert manifest["board"] == "unix-sim" and manifest["code"] == "image"
    assert manifest["files"] == {}
    assert {"/flash/" + k: v for k, v in manifest["config"].items()} == config
    # No code on the flash: what runs in the rebooted board is the image's.
    listing = flash_listing(port)
    assert not [p for p in listing if p.endswith((".mpy", "main.py", "board.py"))], listing
    assert "parkgate" not in listing and "umqtt" not in listing
    assert imported_from(port, "board", "parkgate.journal") == {
        "board": ("board.py", "image"), "parkgate.journal": ("parkgate/journal.py", "image")}


def test_deploy_refuses_an_image_of_another_board(deployed):
    port = deployed.port
    before = flash_listing(port)
    proc = parkgate("board", "deploy", "--port", port, "--resume", "--board", "esp32-devkitc")
    assert proc.returncode == 1
    assert ("the image on %s is parkgate for board unix-sim, not esp32-devkitc" % port
            in proc.stderr), proc.stderr
    assert flash_listing(port) == before


def test_status_reports_the_journal_the_gate_wrote(deployed):
    proc = parkgate("board", "status", "--port", deployed.port, "--resume", "--json",
                    "--events", "3")
    assert proc.returncode == 0, proc.stderr
    st = json.loads(proc.stdout)
    assert st["board"] == "unix-sim" and st["root"] == "/flash"
    assert st["site"] == {"lot": LOT, "gate": "g-in", "direction": "in", "broker": "127.0.0.1"}
    assert st["firmware"]["changed"] == [] and st["firmware"]["files"] == 0
    assert st["firmware"]["code"] == "image"
    assert st["code"] == {"board": "image", "parkgate": "image"}
    with open(DEFAULT_TARIFF, "rb") as f:
        default = tariff.loads(f.read())
    assert st["tariff"]["version"] == default.version
    journal = st["journal"]
    assert journal["next_seq"] == 5 and journal["acked"] == 2 and journal["pending"] == 2
    assert not journal["full"] and journal["free_blocks"] > 0
    events = deployed.events
    assert [(e["s"], e["p"], e["t"], e["acked"]) for e in st["events"]] == [
        (e["seq"], e["plate"], e["t"], e["seq"] <= 2) for e in events[1:]]
    assert st["clock"]["quality"] == "unset" and not st["clock"]["valid"]
    assert st["heap_free"] > 10000 and st["flash_free"] > 100000
    text = parkgate("board", "status", "--port", deployed.port, "--resume")
    assert text.returncode == 0
    assert "backlog 2" in text.stdout and "粤C30003" in text.stdout
    assert "journal   id %08x" % journal["id"] in text.stdout
    assert "code      frozen in the image" in text.stdout


def test_journal_csv_rows_match_the_events(deployed, tmp_path):
    out = tmp_path / "journal.csv"
    proc = parkgate("board", "journal", "--port", deployed.port, "--resume", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "4 records, next seq 5, acked 2, backlog 2" in proc.stderr
    with open(out, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["seq"]), r["kind"], r["plate"], int(r["time"]), int(r["quality"]),
             int(r["acked"])) for r in rows] == [
        (e["seq"], "in", e["plate"], e["t"], e["q"], int(e["seq"] <= 2))
        for e in deployed.events]
    assert all(r["time_utc"].endswith("Z") and r["error"] == "" for r in rows)
    as_json = parkgate("board", "journal", "--port", deployed.port, "--resume",
                       "--format", "json")
    doc = json.loads(as_json.stdout)
    assert doc["journal"]["next_seq"] == 5
    assert [r["p"] for r in doc["records"]] == PLATES


def test_push_tariff_refuses_a_bad_table_and_installs_a_good_one(deployed, tmp_path):
    port = deployed.port
    with open(DEFAULT_TARIFF, encoding="utf-8") as f:
        bad = json.load(f)
    bad["grace_seconds"] = -5
    bad_path = tmp_path / "bad.json"
    bad_path.write_text(json.dumps(bad))
    proc = parkgate("board", "push-tariff", str(bad_path), "--port", port, "--resume")
    assert proc.returncode == 1
    assert "tariff refused: grace_seconds:" in proc.stderr
    assert device_sha256(port, ["/flash/tariff.json"]) == {
        "/flash/tariff.json": sha_file(DEFAULT_TARIFF)}, "the old tariff is kept"
    good = os.path.join(TARIFFS, "airport.json")
    proc = parkgate("board", "push-tariff", good, "--port", port, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert device_sha256(port, ["/flash/tariff.json"]) == {"/flash/tariff.json": sha_file(good)}
    listing = mpremote(port, "fs", "ls", ":/flash")
    assert "tariff.json.new" not in listing


def test_push_members_validates_and_installs(deployed, tmp_path):
    port = deployed.port
    bad = tmp_path / "bad-members.json"
    bad.write_text(json.dumps({"version": 1, "members": [{"plate": "京A10001", "until": None},
                                                         {"plate": "", "until": None}]}))
    proc = parkgate("board", "push-members", str(bad), "--port", port, "--resume")
    assert proc.returncode == 1 and "members refused: members[1].plate:" in proc.stderr
    good = tmp_path / "members.json"
    good.write_text(json.dumps({"version": 3, "members": [
        {"plate": "京A10001", "until": None}, {"plate": "沪B20002", "until": START + 86400}]},
        ensure_ascii=False))
    proc = parkgate("board", "push-members", str(good), "--port", port, "--resume")
    assert proc.returncode == 0, proc.stderr
    built = validate.members_file(json.loads(good.read_text()))
    assert device_sha256(port, ["/flash/members.bin"]) == {
        "/flash/members.bin": hashlib.sha256(built).hexdigest()}
    st = commands.status(transport.Device(port, resume=True))
    assert st["members"] == {"version": 3, "count": 2}
    listed = members.MemberList(io.BytesIO(built))
    assert listed.lookup("京A10001", START, 480)[0] == members.MEMBER
    assert listed.lookup("沪B20002", START + 2 * 86400, 480)[0] == members.EXPIRED


def test_set_clock_reads_back_what_was_set(deployed):
    port = deployed.port
    target = START + 12345
    proc = parkgate("board", "set-clock", "--time", str(target), "--port", port, "--resume")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "reads back %d" % target in proc.stdout
    # Read independently of the tool: the board's clock source, in unix time.
    now = int(mpremote(port, "exec", "import board\nfrom parkgate.clock import EPOCH_OFFSET\n"
                                     "print(int(board.ClockSource().seconds()) + EPOCH_OFFSET)"))
    assert target <= now <= target + 5
    st = commands.status(transport.Device(port, resume=True))
    assert st["clock"]["valid"] and target <= st["clock"]["time"] <= target + 5
    refused = parkgate("board", "set-clock", "--time", "12", "--port", port, "--resume")
    assert refused.returncode == 1 and "clock refused: --time" in refused.stderr


def test_test_relay_pulses_the_relay_in_gpio_log(deployed):
    before = gpio_edges(deployed.dir)
    started = time.time()
    proc = parkgate("board", "test-relay", "--ms", "300", "--port", deployed.port, "--resume")
    assert proc.returncode == 0, proc.stderr
    new = gpio_edges(deployed.dir)[len(before):]
    assert [level for _, level in new] == [1, 0]
    assert started <= new[0][0] and 0.29 <= new[1][0] - new[0][0] < 1.0


def test_config_get_and_set(deployed):
    port = deployed.port
    proc = parkgate("board", "config", "get", "gate", "--port", port, "--resume")
    assert proc.returncode == 0 and json.loads(proc.stdout) == "g-in"
    proc = parkgate("board", "config", "set", "relay_pulse_ms", "650", "--port", port, "--resume")
    assert proc.returncode == 0, proc.stderr
    proc = parkgate("board", "config", "set", "direction", "sideways", "--port", port, "--resume")
    assert proc.returncode == 1 and "site refused: direction:" in proc.stderr
    site = commands.config_get(transport.Device(port, resume=True))
    assert site["relay_pulse_ms"] == 650 and site["direction"] == "in"


def test_deploy_with_code_checks_the_heap_and_shadows_the_frozen_code(deployed):
    """--code: refused in the gate's 64 KiB heap with nothing changed; in a
    larger heap the .mpy files go on the flash, are what the board imports
    and gate a car in the heap the tool estimated; a deploy without --code
    then removes them and the image's code runs again."""
    port = deployed.port
    board = boards.load_board("unix-sim")
    files = deploy.firmware_files(board)
    need, size = deploy.code_heap_needed(files)
    assert need == deploy.GATE_DATA_HEAP + int(deploy.CODE_HEAP_FACTOR * size)
    before = flash_listing(port)
    proc = parkgate("board", "deploy", "--port", port, "--resume", "--board", "unix-sim",
                    "--code")
    assert proc.returncode == 1
    refused = re.search(r"deploy refused: --code: the code would not fit: (\d+) B of \.mpy "
                        r"files need about (\d+) B of heap .* the board has (\d+) B free "
                        r"after gc\.collect\(\)\. Deploy without --code", proc.stderr)
    assert refused, proc.stderr
    assert (int(refused.group(1)), int(refused.group(2))) == (size, need)
    assert int(refused.group(3)) < 64 * 1024 < need
    assert flash_listing(port) == before, "nothing was sent"

    deployed.heap = "256k"
    deployed.restart()
    proc = parkgate("board", "deploy", "--port", port, "--resume", "--board", "unix-sim",
                    "--code")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"heap: \d+ B free on the board, the code needs about %d B" % need,
                     proc.stdout), proc.stdout
    assert "code from %d files on the flash" % len(files) in proc.stdout
    deployed.restart()
    remote = {"/flash/" + r: sha_file(local) for local, r in files}
    assert "/flash/parkgate/journal.mpy" in remote and "/flash/board.mpy" in remote
    assert "/flash/main.py" in remote and "/flash/provision.mpy" not in remote
    assert device_sha256(port, sorted(remote)) == remote
    manifest = json.loads(mpremote(port, "fs", "cat", ":/flash/deploy.json"))
    assert manifest["code"] == "flash"
    assert {"/flash/" + k: v for k, v in manifest["files"].items()} == remote
    # Compiled by the mpy-cross of the image's MicroPython (the board imports
    # them below: an .mpy of another version would not load), and on the
    # flash they shadow the frozen modules, as on a board.
    assert "with %s" % runtime.mpy_cross() in proc.stdout
    assert imported_from(port, "board", "parkgate.journal", "parkgate.app") == {
        "board": ("board.mpy", "flash"), "parkgate.journal": ("parkgate/journal.mpy", "flash"),
        "parkgate.app": ("parkgate/app.mpy", "flash")}
    st = commands.status(transport.Device(port, resume=True))
    assert st["code"] == {"board": "flash", "parkgate": "flash"}
    assert st["firmware"]["files"] == len(files) and st["firmware"]["changed"] == []

    # The gate boots that code from its flash and gates a car, in the heap
    # the tool said it needs.
    deployed.stop()
    gate = FlashGate(os.path.dirname(deployed.dir), "g-in", SimClock(START + 3600, 1),
                     heap="%dk" % -(-need // 1024))
    try:
        gate.start()
        assert "next_seq=5 acked=2" in gate.lines(r" BOOT ")[0]
        gate.send_plate("闽F60006")
        gate.wait_line(r"EVENT in seq=5 plate=闽F60006", 5)
    finally:
        gate.stop()
    deployed.heap = None
    deployed.start()
    proc = parkgate("board", "deploy", "--port", port, "--resume", "--board", "unix-sim")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "removed old files: " in proc.stdout and "/flash/parkgate/ " in proc.stdout
    deployed.restart()
    listing = flash_listing(port)
    assert "parkgate" not in listing and not [p for p in listing if p.endswith(".mpy")]
    assert imported_from(port, "board", "parkgate.journal") == {
        "board": ("board.py", "image"), "parkgate.journal": ("parkgate/journal.py", "image")}


def test_deploy_copies_a_board_module_from_outside_the_board_folder(deployed):
    """A board.json module path that leads out of the board folder (the ESP32
    boards' "../esp32/esp32_board.py") goes to the board's root under its
    base name with --code, is verified by its SHA-256 there, and a deploy
    without --code removes it again. The simulator here lists the ESP32
    boards' shared module as its own (it is never imported)."""
    port = deployed.port
    sim = boards.load_board("unix-sim")
    board = boards.BoardDef("unix-sim", dict(sim.doc, modules=sim.modules + [
        "../esp32/esp32_board.py"]))
    files = dict((remote, local) for local, remote in deploy.firmware_files(board))
    shared = files["esp32_board.mpy"]
    assert shared == os.path.join(runtime.BUILD_MPY, "boards", "esp32", "esp32_board.mpy")
    assert "esp32_board.py" in deploy.code_paths(board)[1]
    deployed.heap = "256k"
    deployed.restart()
    try:
        result = deploy.deploy(transport.Device(port, resume=True), board, code=True)
        assert result["files"] == len(files)
        assert device_sha256(port, ["/flash/esp32_board.mpy"]) == {
            "/flash/esp32_board.mpy": sha_file(shared)}
        manifest = json.loads(mpremote(port, "fs", "cat", ":/flash/deploy.json"))
        assert manifest["files"]["esp32_board.mpy"] == sha_file(shared)
        result = deploy.deploy(transport.Device(port, resume=True), board)
        assert "/flash/esp32_board.mpy" in result["removed"]
        assert "esp32_board.mpy" not in flash_listing(port)
    finally:
        deployed.heap = None
        deployed.restart()


def test_a_failure_on_the_board_is_one_device_error(deployed):
    """An exception in an on-board program comes back as a DeviceError naming
    the stage and the MicroPython exception, and the programs leave nothing
    in the REPL's globals."""
    device = transport.Device(deployed.port, resume=True)
    with pytest.raises(errors.DeviceError) as caught:
        device.call("hash", {"files": 5})
    assert (caught.value.stage, caught.value.kind) == ("hash", "TypeError")
    assert str(caught.value).startswith("device: hash: TypeError: ")
    left = mpremote(deployed.port, "exec", "print(sorted(k for k in globals() if k in "
                                           "('_pg', 'json_loads', 'out', 'stage', 'args')))")
    assert left.strip() == "[]"


def test_the_deployed_flash_boots_as_a_gate(deployed):
    """The last test: the REPL is powered off and the same flash boots the
    image's main.py with the deployed site, the pushed tariff and the
    journal, in the gate's 64 KiB heap."""
    deployed.stop()
    gate = FlashGate(os.path.dirname(deployed.dir), "g-in", SimClock(START + 7200, 1))
    try:
        gate.start()
        boot = gate.lines(r" BOOT ")[0]
        with open(os.path.join(TARIFFS, "airport.json"), "rb") as f:
            airport = tariff.loads(f.read())
        assert "next_seq=6 acked=2" in boot and "tariff=%d" % airport.version in boot
        gate.send_plate("浙E50005")
        gate.wait_line(r"EVENT in seq=6 plate=浙E50005", 5)
    finally:
        gate.stop()
    deployed.start()


def test_unreachable_port_is_a_clear_error(tmp_path):
    proc = parkgate("board", "status", "--port", str(tmp_path / "ttyUSB9"))
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cannot open %s" % (tmp_path / "ttyUSB9"))


def test_device_errors_are_worded_for_the_field():
    err = errors.DeviceError("journal", "OSError",
                             "no journal partition: flash boards/esp32-devkitc/partitions.csv")
    assert str(err) == ("device: journal: no journal partition: flash "
                        "boards/esp32-devkitc/partitions.csv")
    missing = str(errors.DeviceError("board", "ImportError", "no module named 'board'"))
    assert "flash the image `make firmware BOARD=NAME` builds" in missing
    assert "`parkgate board deploy --code`" in missing


def test_every_board_program_compiles_with_mpy_cross(tmp_path):
    files = []
    for name in transport.PROGRAMS:
        path = tmp_path / (name + ".py")
        path.write_text(transport.program(name, {"x": "粤B", "n": [1, None, True]}),
                        encoding="utf-8")
        files.append(str(path))
    files.append(SIMBOOT)
    assert lint.check(files) == []


def test_board_definitions_and_site_examples():
    names = boards.board_names()
    assert {"unix-sim", "esp32-devkitc", "wt32-eth01", "esp32-s3-devkitc-1-n8r8"} <= set(names)
    for name in names:
        board = boards.load_board(name)
        for module in board.modules:
            assert os.path.exists(os.path.join(board.folder, module)), (name, module)
        with open(os.path.join(board.folder, "site.example.json")) as f:
            assert validate.check_site(json.load(f), board) == [], name
        if board.doc.get("port") == "esp32":
            assert board.umqtt_frozen and board.fs_root == "/" and board.reset == "machine"
            assert os.path.exists(os.path.join(board.folder, "manifest.py")), name


def test_board_modules_are_named_by_base_name_and_stay_under_boards():
    """board.json "modules": paths relative to the board folder; the ESP32
    boards share one module outside theirs, which firmware_files() and
    code_paths() name by its base name; a missing file, a file outside
    boards/ and two modules of one name are refused."""
    for name in ESP32_BOARDS:
        board = boards.load_board(name)
        sources = dict(board.module_sources())
        assert sources[os.path.join(runtime.BOARDS, "esp32", "esp32_board.py")] == "esp32_board.py"
        assert {"esp32_board.py", "esp32_board.mpy", "board.py"} <= set(deploy.code_paths(board)[1])
    sim = boards.load_board("unix-sim")
    for modules, message in ((["board.py", "../esp32/nothing.py"], "not a .py file"),
                             (["board.py", "../../firmware/main.py"], "outside boards/"),
                             (["board.py", "../esp32-devkitc/board.py"], "two modules named")):
        with pytest.raises(errors.FieldToolError) as caught:
            boards.BoardDef("unix-sim", dict(sim.doc, modules=modules)).module_sources()
        assert message in str(caught.value), modules


def test_sim_boot_geometry_is_the_board_adapters():
    """board.json's flash geometry and board.py's constants (which the
    image's simboot.py mounts the flash with) must agree."""
    board = boards.load_board("unix-sim")
    with open(os.path.join(board.folder, "board.py")) as f:
        source = f.read()
    constants = {name: value for name, value in re.findall(
        r'^([A-Z_]+) = ("[^"]*"|\d+)', source, re.M)}
    geo = board.doc["flash"]
    assert int(constants["BLOCK_SIZE"]) == geo["block_size"]
    assert int(constants["BLOCK_COUNT"]) == geo["block_count"]
    assert int(constants["FS_BLOCKS"]) == geo["fs_blocks"]
    assert constants["FS_PATH"] == '"%s"' % geo["fs_path"] == '"%s"' % board.fs_root
    assert '"/flash.img"' in source and geo["image"] == "flash.img"


@pytest.mark.parametrize("board", ESP32_BOARDS)
def test_partition_table_fits_the_module(board):
    definition = boards.load_board(board)
    flash = {"4MB": 4, "8MB": 8, "16MB": 16}[definition.doc["flash_size"]] * 1024 * 1024
    rows = read_csv(os.path.join(definition.folder, "partitions.csv"))
    by_name = {r[0]: r for r in rows}
    end = 0x9000                            # after the bootloader and the table itself
    for name, kind, subtype, offset, size in sorted(rows, key=lambda r: r[3]):
        assert offset >= end, "%s overlaps the partition before it" % name
        assert offset % 0x1000 == 0 and size % 0x1000 == 0, name
        if kind == "app":
            assert offset % 0x10000 == 0, "%s: app partitions are 64 KiB aligned" % name
        end = offset + size
    assert end <= flash
    assert by_name["factory"][1] == "app" and by_name["vfs"][1] == "data"
    journal = by_name["journal"]
    assert journal[1] == "data" and journal[4] // 4096 >= 3   # parkgate.journal.MIN_BLOCKS


def test_members_and_site_checks():
    ok = {"version": 1, "members": [{"plate": "京A10001", "until": 1795564800},
                                    {"plate": "沪B20002", "until": None}]}
    assert validate.check_members(ok) == 2
    cases = [
        ({"version": 0, "members": []}, "version"),
        ({"version": 1}, "members"),
        ({"version": 1, "members": [{"plate": "A", "until": "soon"}]}, "members[0].until"),
        ({"version": 1, "members": [{"plate": "A"}]}, "members[0].until"),
        ({"version": 1, "members": [{"plate": "A", "until": None, "x": 1}]}, "members[0].x"),
        ({"version": 1, "members": [{"plate": "A", "until": None}] * 2}, "members[1].plate"),
        ({"version": 1, "members": [{"plate": "X" * 17, "until": None}]}, "members[0].plate"),
    ]
    for doc, field in cases:
        with pytest.raises(errors.Refused) as caught:
            validate.check_members(doc)
        assert caught.value.field == field, doc
    site = {"lot": "l1", "gate": "g/1", "direction": "in", "broker": "10.0.0.2"}
    with pytest.raises(errors.Refused) as caught:
        validate.check_site(site)
    assert caught.value.field == "gate"
    devkit = boards.load_board("esp32-devkitc")
    with pytest.raises(errors.Refused) as caught:
        validate.check_site(dict(site, gate="g1"), devkit)
    assert caught.value.field == "wifi_ssid"
    assert validate.check_site(dict(site, gate="g1", colour="red")) == [
        "site: colour: not a key the firmware knows (kept)"]


def test_site_keys_for_clocks_passage_and_the_lane_are_checked():
    from parkgate_tools.field.errors import Refused
    from parkgate_tools.field.validate import check_site_value
    for key, value in (("ntp", "192.168.1.1:123"), ("passage", True), ("rtc", "ds3231"),
                       ("camera", "vz"), ("exit_policy", "owed"), ("passage_ms", 8000),
                       ("clock_resync_s", 3600), ("utc_offset_minutes", 480)):
        assert check_site_value(key, value) is None, key
    for key, value in (("ntp", "pool.ntp.org"), ("passage", 1), ("rtc", "ds1307"),
                       ("exit_policy", "free"), ("utc_offset_minutes", 900)):
        try:
            check_site_value(key, value)
        except Refused:
            continue
        raise AssertionError("%s=%r accepted" % (key, value))
