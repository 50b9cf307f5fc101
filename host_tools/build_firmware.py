"""Build a board's firmware image with the gate code frozen in.

usage: python host_tools/build_firmware.py BOARD      (make firmware BOARD=...)

unix-sim: mpy-cross and a 32-bit (i386) MicroPython unix-port interpreter
whose image holds boards/unix-sim/manifest.py: build/firmware/unix-sim/micropython.
It is what every simulated gate runs. The build is cached: it is redone only
when a frozen file, the board folder, the manifest, this script or the
MicroPython source changes, and returns at once otherwise.

ESP32 boards: host_tools/build_esp32.py (needs ESP-IDF, IDF_PATH).

MicroPython's source comes from MICROPYTHON_SRC (a folder or a .tar.xz/.tar.gz
archive), else the archive in ../shared/micropython/ beside the repository,
else a shallow clone of the release tag.
"""
import contextlib
import fcntl
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
MICROPYTHON_TAG = "v1.28.0"
MICROPYTHON_GIT = "https://github.com/micropython/micropython.git"
SHARED_ARCHIVE = os.path.join(os.path.dirname(ROOT), "shared", "micropython",
                              "micropython-1.28.0-src.tar.xz")
# The unix port as the gate's stand-in: 32-bit like an ESP32 (small ints to
# 2**30 - 1, ticks wrapping every 2**30 ms), nothing the ESP32 lacks.
UNIX_FLAGS = ["VARIANT=standard", "MICROPY_FORCE_32BIT=1", "MICROPY_PY_FFI=0",
              "MICROPY_PY_BTREE=0", "MICROPY_SSL_MBEDTLS=0", "MICROPY_PY_SSL=0"]
JOBS = "-j%d" % max(1, min(2, os.cpu_count() or 1))


class BuildError(Exception):
    pass


def log(text):
    sys.stderr.write("firmware: %s\n" % text)


def _sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def source_tree():
    """(path of a MicroPython source tree, a string naming its content)."""
    given = os.environ.get("MICROPYTHON_SRC")
    if given:
        given = os.path.abspath(given)
        if os.path.isdir(given):
            return given, "dir:" + given
        if os.path.isfile(given):
            return _unpack(given), "archive:" + _sha256_file(given)
        raise BuildError("MICROPYTHON_SRC=%s is neither a folder nor an archive" % given)
    if os.path.isfile(SHARED_ARCHIVE):
        return _unpack(SHARED_ARCHIVE), "archive:" + _sha256_file(SHARED_ARCHIVE)
    target = os.path.join(BUILD, "micropython-src", "git-" + MICROPYTHON_TAG)
    if not os.path.isdir(os.path.join(target, "py")):
        log("cloning MicroPython %s (no MICROPYTHON_SRC, no shared archive)" % MICROPYTHON_TAG)
        shutil.rmtree(target, ignore_errors=True)
        subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", MICROPYTHON_TAG,
                        MICROPYTHON_GIT, target], check=True)
    return target, "git:" + MICROPYTHON_TAG


def _unpack(archive):
    digest = _sha256_file(archive)[:16]
    target = os.path.join(BUILD, "micropython-src", digest)
    done = os.path.join(target, ".unpacked")
    if os.path.exists(done):
        with open(done) as f:
            return f.read().strip()
    log("unpacking %s" % archive)
    shutil.rmtree(target, ignore_errors=True)
    os.makedirs(target)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    tops = [os.path.join(target, name) for name in os.listdir(target)]
    tree = tops[0] if len(tops) == 1 and os.path.isdir(tops[0]) else target
    if not os.path.isdir(os.path.join(tree, "py")):
        raise BuildError("%s holds no MicroPython source tree (no py/)" % archive)
    with open(done, "w") as f:
        f.write(tree + "\n")
    return tree


def frozen_inputs(board):
    """Every file whose change must rebuild the board's image."""
    paths = glob.glob(os.path.join(ROOT, "firmware", "parkgate", "*.py"))
    paths.append(os.path.join(ROOT, "firmware", "main.py"))
    paths.append(os.path.join(ROOT, "firmware", "manifest.py"))
    for folder, _, names in os.walk(os.path.join(ROOT, "boards", board)):
        paths += [os.path.join(folder, n) for n in names if not n.startswith("site.")]
    paths.append(os.path.join(BUILD, "lib", "umqtt", "simple.py"))
    paths.append(os.path.abspath(__file__))
    return sorted(p for p in paths if "__pycache__" not in p)


def _fingerprint(board, source_id, extra):
    digest = hashlib.sha256()
    digest.update(json.dumps([board, source_id, extra]).encode())
    for path in frozen_inputs(board):
        if not os.path.exists(path):
            raise BuildError("%s is missing (run `make setup`)" % os.path.relpath(path, ROOT))
        digest.update(os.path.relpath(path, ROOT).encode() + b"\0")
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def _run(argv, what):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-6000:])
        raise BuildError("%s failed (exit %d): %s" % (what, proc.returncode, " ".join(argv)))


def unix_image_path(board="unix-sim"):
    return os.path.join(BUILD, "firmware", board, "micropython")


@contextlib.contextmanager
def _build_lock():
    # One build at a time across processes (tests start several at once).
    os.makedirs(os.path.join(BUILD, "firmware"), exist_ok=True)
    with open(os.path.join(BUILD, "firmware", ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build_unix(board="unix-sim"):
    """Build (or find cached) the board's 32-bit unix-port image; returns its path.
    Safe to call from several processes at once (one builds, the others wait)."""
    with _build_lock():
        manifest = os.path.join(ROOT, "boards", board, "manifest.py")
        binary = unix_image_path(board)
        stamp = binary + ".stamp"
        tree, source_id = source_tree()
        fingerprint = _fingerprint(board, source_id, [UNIX_FLAGS, os.path.relpath(manifest, ROOT)])
        if os.path.exists(binary) and os.path.exists(stamp):
            with open(stamp) as f:
                if f.read().strip() == fingerprint:
                    return binary
        log("building %s: MicroPython from %s" % (board, source_id))
        _run(["make", "-C", os.path.join(tree, "mpy-cross"), JOBS], "mpy-cross build")
        obj = os.path.join(os.path.dirname(binary), "obj")
        _run(["make", "-C", os.path.join(tree, "ports", "unix"), JOBS] + UNIX_FLAGS +
             ["BUILD=" + obj, "PROG=micropython",
              "FROZEN_MANIFEST=" + os.path.abspath(manifest)], "unix port build")
        part = binary + ".part"
        shutil.copyfile(os.path.join(obj, "micropython"), part)   # PROG is relative to BUILD
        os.chmod(part, 0o755)
        os.replace(part, binary)
        with open(stamp, "w") as f:
            f.write(fingerprint + "\n")
        log("built %s" % os.path.relpath(binary, ROOT))
        return binary


def mpy_cross_path():
    """The mpy-cross built from the same MicroPython source as the images."""
    tree, _ = source_tree()
    path = os.path.join(tree, "mpy-cross", "build", "mpy-cross")
    if not os.path.exists(path):
        with _build_lock():
            if not os.path.exists(path):
                _run(["make", "-C", os.path.join(tree, "mpy-cross"), JOBS], "mpy-cross build")
    return path


def main(argv):
    if len(argv) != 1:
        sys.stderr.write(__doc__)
        return 2
    board = argv[0]
    board_json = os.path.join(ROOT, "boards", board, "board.json")
    if not os.path.exists(board_json):
        sys.stderr.write("no board %r: see boards/\n" % board)
        return 2
    with open(board_json) as f:
        port = json.load(f)["port"]
    try:
        if port == "unix":
            print(build_unix(board))
            return 0
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import build_esp32
        return build_esp32.main(board)
    except BuildError as exc:
        sys.stderr.write("firmware: %s\n" % exc)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
