"""`parkgate board deploy`: put a gate's configuration, and for development its
code, on a board; verify every file by its SHA-256 on the board; reset it.

firmware_files() and code_paths() say which code files a deploy with --code
brings and a deploy without it removes; code_heap_needed() is the heap
estimate that decides whether a board can run its code from .mpy files."""
import hashlib
import json
import os
import subprocess
import time

from parkgate_tools import runtime
from parkgate_tools.field.boards import load_board
from parkgate_tools.field.errors import FieldToolError, Refused, VerifyError
from parkgate_tools.field.transport import remote_join
from parkgate_tools.field.validate import (check_members, check_site, check_tariff, load_json,
                                           members_file)

MANIFEST = "deploy.json"
# Heap for a gate whose code is loaded from .mpy files (deploy --code): the
# heap the gate's data needs (runtime.GATE_HEAP, 64 KiB: the frozen image
# runs every simulated gate in that), plus CODE_HEAP_FACTOR times the bytes
# of the .mpy files. Measured on the 32-bit unix-sim image (16-byte GC
# blocks, as on an ESP32), a gate booted from its flash and gating three
# cars: with the code frozen it ran in a 50 KiB heap and not in 48 KiB;
# with the 63.8 KB of .mpy files on the flash it needed 110 KiB: 0.96 B of
# heap per byte of .mpy (importing them alone: 1.09 B per byte, 0.83 more
# than the frozen modules). 1.5 leaves room for a fragmented heap: the
# ESP32's grows in separate areas. firmware/docs/field-tools.md.
GATE_DATA_HEAP = 64 * 1024
CODE_HEAP_FACTOR = 1.5


def _compiled(source):
    # source compiled by runtime.mpy_cross() into build/mpy (its path under
    # the repository), again only if the source is newer.
    target = os.path.join(runtime.BUILD_MPY, os.path.relpath(source, runtime.ROOT))[:-3] + ".mpy"
    if not os.path.exists(target) or os.path.getmtime(target) < os.path.getmtime(source):
        runtime.compile_mpy(source, target)
    return target


def firmware_files(board):
    """[(local file, path relative to the board's root)] of a deploy with
    --code: the firmware compiled by runtime.mpy_cross() (the mpy-cross of
    the MicroPython the images are built from), umqtt unless frozen, the
    board's modules (each at the root under its base name, wherever in
    boards/ it is), main.py."""
    runtime.build_mpy()
    files = []
    umqtt = False
    for _, relative, out_root in runtime.sources():
        compiled = os.path.join(runtime.BUILD_MPY, out_root, relative[:-3] + ".mpy")
        remote = relative[:-3].replace(os.sep, "/") + ".mpy"
        if out_root == "firmware":
            files.append((compiled, remote))
        elif out_root == "lib":
            umqtt = True
            if not board.umqtt_frozen:
                files.append((compiled, "lib/" + remote))
    if not board.umqtt_frozen and not umqtt:
        raise FieldToolError("umqtt.simple is not in build/lib: run "
                             "`python host_tools/fetch_umqtt.py build/lib` (make setup does)")
    for source, name in board.module_sources():
        files.append((_compiled(source), name[:-3] + ".mpy"))
    files.append((os.path.join(runtime.FIRMWARE, "main.py"), "main.py"))
    return files


def code_paths(board):
    """(folders, files) relative to the board's root that hold gate code a
    deploy with --code leaves: removed by a deploy without it, since code on
    the filesystem shadows the image's ("" comes before ".frozen" on
    sys.path) and a parkgate/ folder, even an empty one, hides the whole
    frozen package."""
    files = ["main.py", "main.mpy"]
    for module in board.modules:
        name = os.path.basename(module)
        files += [name, name[:-3] + ".mpy"]
    return ["parkgate", "lib/umqtt"], files


def code_heap_needed(files):
    """The heap (bytes) a gate needs with these code files on the flash."""
    size = sum(os.path.getsize(local) for local, _ in files)
    return GATE_DATA_HEAP + int(CODE_HEAP_FACTOR * size), size


def _version():
    try:
        import importlib.metadata
        version = importlib.metadata.version("parkgate")
    except Exception:
        version = "0"
    try:
        described = subprocess.run(["git", "-C", runtime.ROOT, "describe", "--always", "--dirty"],
                                   capture_output=True, text=True, timeout=10)
        if described.returncode == 0 and described.stdout.strip():
            version += "+" + described.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return version


def _sha_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def read_config(board, site, tariff_path, members_path):
    """[(name on the board, bytes)] of the configuration, each checked;
    warnings. Raises Refused before anything is sent."""
    config = []
    warnings = []
    if site:
        data, doc = load_json(site, "site")
        warnings += check_site(doc, board)
        config.append(("site.json", data))
    if tariff_path:
        with open(tariff_path, "rb") as f:
            data = f.read()
        check_tariff(data)
        config.append(("tariff.json", data))
    if members_path:
        doc = load_json(members_path, "members")[1]
        check_members(doc)
        config.append(("members.bin", members_file(doc)))
    return config, warnings


def _code_plan(device, board, say, result):
    # deploy --code: the files to copy and what to prepare for them; Refused
    # if the board's heap is too small (before anything is changed).
    root = board.fs_root
    files = firmware_files(board)
    say("compiled %d files for %s with %s" % (len(files), board.name, runtime.mpy_cross()))
    need, size = code_heap_needed(files)
    heap = device.call("heap")
    result["heap"] = {"free": heap["free"], "need": need, "code_bytes": size}
    if heap["free"] < need:
        raise Refused("deploy", "--code", (
            "the code would not fit: %d B of .mpy files need about %d B of heap "
            "(%.1f x their size + %d B for the gate's data), the board has %d B free "
            "after gc.collect(). Deploy without --code to run the code frozen in the "
            "image, or use a board with PSRAM (firmware/docs/boards.md)") % (
            size, need, CODE_HEAP_FACTOR, GATE_DATA_HEAP, heap["free"]))
    say("heap: %d B free on the board, the code needs about %d B" % (heap["free"], need))
    dirs = []
    keep = {}
    for _, remote in files:
        parts = remote.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            folder = remote_join(root, "/".join(parts[:i]))
            if folder not in dirs:
                dirs.append(folder)
        folder, _, name = remote.rpartition("/")
        if folder:
            keep.setdefault(remote_join(root, folder), []).append(name)
    # MicroPython imports X.py before X.mpy from the same folder.
    shadow = [remote_join(root, remote[:-4] + ".py") for _, remote in files
              if remote.endswith(".mpy")]
    return root, files, {"purge": [], "remove": shadow, "dirs": dirs, "clean": keep}


def _image_plan(device, board):
    # A deploy of the configuration only: the board must run this board's
    # parkgate image; code a deploy --code left is removed.
    info = device.call("info")
    if info["board"] is None:
        raise FieldToolError(
            "the MicroPython image on %s has no parkgate firmware (no board module): "
            "flash the image `make firmware BOARD=%s` builds (firmware/docs/boards.md), "
            "or for development deploy the code with --code" % (device.port, board.name))
    if info["board"] != board.name:
        raise FieldToolError(
            "the image on %s is parkgate for board %s, not %s: flash the %s image, or "
            "deploy with --board %s" % (device.port, info["board"], board.name,
                                        board.name, info["board"]))
    root = info["root"]
    folders, names = code_paths(board)
    return root, [], {"purge": [remote_join(root, f) for f in folders],
                      "remove": [remote_join(root, n) for n in names], "dirs": [], "clean": {}}


def _verify(device, root, every):
    # Every installed file's SHA-256, computed on the board, against the host's.
    on_board = device.call("hash", {"files": [remote_join(root, r) for r in every]})["sha"]
    bad = [remote for remote, digest in every.items()
           if on_board.get(remote_join(root, remote)) != digest]
    if bad:
        raise VerifyError("after the copy these files differ on the board: %s"
                          % ", ".join(sorted(bad)))


def _reset(device, board, reset):
    if not reset:
        return "skipped: reset the board to run the new firmware"
    if board.reset == "machine":
        device.mpremote("exec", "--no-follow", "import machine\nmachine.reset()")
        return "machine.reset()"
    return ("restart the simulator's process to boot the new firmware "
            "(SimRepl.restart(), or stop and start it)")


def deploy(device, board, site=None, tariff_path=None, members_path=None, code=False,
           reset=True, progress=None):
    """Put a gate's configuration, and with code=True its code, on the device.

    By default the code is the one frozen into the board's MicroPython
    image (make firmware BOARD=...): the board must run a parkgate image for
    this board; any gate code a deploy with code=True left on the flash is
    removed (it would shadow the image's), then site (a site.json path),
    tariff_path and members_path (a JSON member list, installed as
    members.bin) are validated on the host and installed atomically.

    code=True (development): the firmware compiled to .mpy by runtime.mpy_cross(),
    the board's modules, main.py and umqtt unless frozen are copied too, after
    reading the board's free heap (gc.mem_free() after gc.collect()) and
    refusing if it is below code_heap_needed(). Those files shadow the
    frozen modules.

    Then deploy.json is written, every file's SHA-256 is checked on the
    board, and the board is reset (machine.reset()) unless reset is False.
    Returns a dict."""
    say = progress or (lambda text: None)
    board = load_board(board) if isinstance(board, str) else board
    config, warnings = read_config(board, site, tariff_path, members_path)
    result = {"board": board.name, "code": "flash" if code else "image"}
    if code:
        root, files, prepare = _code_plan(device, board, say, result)
    else:
        root, files, prepare = _image_plan(device, board)
    removed = device.call("prepare", prepare)["removed"]
    if removed:
        say("removed old files: " + " ".join(removed))
    if files:
        device.copy([(local, remote_join(root, remote)) for local, remote in files])
        say("copied %d files" % len(files))
    hashes = {remote: _sha_file(local) for local, remote in files}
    installed = {}
    for name, data in config:
        installed[name] = device.push_file(data, name, root)
        say("%s written" % name)
    every = dict(hashes)
    every.update(installed)
    build = hashlib.sha256("".join("%s %s\n" % item for item in sorted(every.items()))
                           .encode()).hexdigest()[:12]
    manifest = {"board": board.name, "version": _version(), "build": build,
                "time": int(time.time()), "code": result["code"], "files": hashes,
                "config": installed}
    device.push_file(json.dumps(manifest, sort_keys=True, indent=1).encode(), MANIFEST, root)
    _verify(device, root, every)
    say("verified %d files by SHA-256 on the board" % len(every))
    result.update({"version": manifest["version"], "build": build, "files": len(files),
                   "config": sorted(installed), "removed": removed, "warnings": warnings})
    for name, key in (("site.json", "site_sha256"), ("tariff.json", "tariff_sha256"),
                      ("members.bin", "members_sha256")):
        if name in installed:
            result[key] = installed[name]
    result["reset"] = _reset(device, board, reset)
    device.info = None
    return result
