"""Build a board's firmware image with the gate code frozen in.

usage: python host_tools/build_firmware.py BOARD      (make firmware BOARD=...)
       python host_tools/build_firmware.py unix-sim [--version N] [--variant crash|nolink]
                                           [--out DIR]

unix-sim: mpy-cross and a 32-bit (i386) MicroPython unix-port interpreter
whose image holds boards/unix-sim/manifest.py: build/firmware/unix-sim/micropython.
It is what every simulated gate runs. The build is cached: it is redone only
when a frozen file, the board folder, the manifest, this script or the
MicroPython source changes, and returns at once otherwise.

Every unix-sim image knows its version: the build generates a frozen
fw_version.py (VERSION, VARIANT) into DIR/gen and writes DIR/version. The
default image is version DEFAULT_VERSION in build/firmware/unix-sim; the OTA
tests build others (--version N --out DIR), and deliberately broken ones
(--variant: the image's main.py replaced by host_tools/firmware_variants/
<variant>_main.py, "crash" crashing at boot, "nolink" never bringing its link
up), each cached in its own DIR like the default one (firmware/docs/ota.md,
"The simulator's two slots").

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
import re
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
DEFAULT_VERSION = 1     # the version of build/firmware/unix-sim/micropython
VARIANTS_DIR = os.path.join(ROOT, "host_tools", "firmware_variants")
VARIANTS = ("crash", "nolink")


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


def _write_if_changed(path, text):
    # Unchanged generated files keep their mtime (make rebuilds nothing).
    if os.path.exists(path):
        with open(path) as f:
            if f.read() == text:
                return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".part", "w") as f:
        f.write(text)
    os.replace(path + ".part", path)


_ENTRY = re.compile(r'\s*(module|package)\("([^"]+)"(?:,\s*base_path="([^"]*)")?\)\s*$')
_INCLUDE = re.compile(r'\s*include\("([^"]+)"\)\s*$')


def _flattened(manifest, drop_main):
    """The module()/package() lines of a manifest and its includes, with
    absolute base paths (only the forms this repository's manifests use);
    drop_main leaves out the gate's main.py."""
    folder = os.path.dirname(os.path.abspath(manifest))
    lines = []
    with open(manifest) as f:
        for line in f:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            entry, include = _ENTRY.match(line), _INCLUDE.match(line)
            if include:
                lines += _flattened(os.path.join(folder, include.group(1)), drop_main)
            elif entry:
                kind, name, base = entry.groups()
                if drop_main and kind == "module" and name == "main.py":
                    continue
                lines.append("%s(%r, base_path=%r)" % (
                    kind, name, os.path.normpath(os.path.join(folder, base or "."))))
            else:
                raise BuildError("%s: cannot flatten %r" % (manifest, line.strip()))
    return lines


def _generated_manifest(board, out, version, variant):
    """Write DIR/gen/fw_version.py and DIR/gen/manifest.py (the board's
    manifest, plus fw_version, with a variant's main.py); returns the latter."""
    gen = os.path.join(out, "gen")
    board_manifest = os.path.join(ROOT, "boards", board, "manifest.py")
    _write_if_changed(os.path.join(gen, "fw_version.py"),
                      "# Generated by host_tools/build_firmware.py: this image's version.\n"
                      "VERSION = %d\nVARIANT = %r\n" % (version, variant or ""))
    if variant:
        _write_if_changed(os.path.join(gen, "variant", "main.py"),
                          _read(os.path.join(VARIANTS_DIR, variant + "_main.py")))
        lines = _flattened(board_manifest, drop_main=True)
        lines.append("module('main.py', base_path=%r)" % os.path.join(gen, "variant"))
    else:
        lines = ["include(%r)" % board_manifest]
    lines.append("module('fw_version.py', base_path=%r)" % gen)
    path = os.path.join(gen, "manifest.py")
    _write_if_changed(path, "# Generated by host_tools/build_firmware.py\n" + "\n".join(lines) + "\n")
    return path


def _read(path):
    with open(path) as f:
        return f.read()


def build_unix(board="unix-sim", version=None, variant=None, out=None):
    """Build (or find cached) the board's 32-bit unix-port image; returns its path.
    version: the image's fw_version.VERSION (DEFAULT_VERSION); variant: None
    or one of VARIANTS (a broken main for the OTA tests); out: its folder
    (build/firmware/<board>), each folder cached on its own.
    Safe to call from several processes at once (one builds, the others wait)."""
    version = DEFAULT_VERSION if version is None else int(version)
    if variant is not None and variant not in VARIANTS:
        raise BuildError("no variant %r (%s)" % (variant, ", ".join(VARIANTS)))
    default_out = os.path.dirname(unix_image_path(board))
    out = os.path.abspath(out) if out else default_out
    with _build_lock():
        manifest = os.path.join(ROOT, "boards", board, "manifest.py")
        binary = os.path.join(out, "micropython")
        stamp = binary + ".stamp"
        tree, source_id = source_tree()
        extra = [UNIX_FLAGS, os.path.relpath(manifest, ROOT), version, variant, out]
        if variant:
            extra.append(_read(os.path.join(VARIANTS_DIR, variant + "_main.py")))
        fingerprint = _fingerprint(board, source_id, extra)
        if os.path.exists(binary) and os.path.exists(stamp):
            with open(stamp) as f:
                if f.read().strip() == fingerprint:
                    return binary
        log("building %s version %d%s: MicroPython from %s" % (
            board, version, " variant " + variant if variant else "", source_id))
        frozen = _generated_manifest(board, out, version, variant)
        _run(["make", "-C", os.path.join(tree, "mpy-cross"), JOBS], "mpy-cross build")
        obj = os.path.join(out, "obj")
        seed = os.path.join(default_out, "obj")
        if out != default_out and not os.path.isdir(obj) and os.path.isdir(seed):
            # Start from the default image's objects: only the frozen
            # content differs, so make recompiles that and links.
            shutil.copytree(seed, obj, symlinks=True)
        _run(["make", "-C", os.path.join(tree, "ports", "unix"), JOBS] + UNIX_FLAGS +
             ["BUILD=" + obj, "PROG=micropython",
              "FROZEN_MANIFEST=" + frozen], "unix port build")
        part = binary + ".part"
        shutil.copyfile(os.path.join(obj, "micropython"), part)   # PROG is relative to BUILD
        os.chmod(part, 0o755)
        os.replace(part, binary)
        with open(os.path.join(out, "version"), "w") as f:
            f.write("%d\n" % version)
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
    import argparse
    parser = argparse.ArgumentParser(usage=__doc__.split("\n\n")[1])
    parser.add_argument("board")
    parser.add_argument("--version", type=int, help="unix-sim: the image's version")
    parser.add_argument("--variant", choices=VARIANTS, help="unix-sim: a broken main (tests)")
    parser.add_argument("--out", help="unix-sim: the image's folder")
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        sys.stderr.write(__doc__)
        return 2
    board = args.board
    board_json = os.path.join(ROOT, "boards", board, "board.json")
    if not os.path.exists(board_json):
        sys.stderr.write("no board %r: see boards/\n" % board)
        return 2
    with open(board_json) as f:
        port = json.load(f)["port"]
    try:
        if port == "unix":
            print(build_unix(board, args.version, args.variant, args.out))
            return 0
        if args.version is not None or args.variant or args.out:
            sys.stderr.write("--version, --variant and --out are for unix-port boards\n")
            return 2
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import build_esp32
        return build_esp32.main(board)
    except BuildError as exc:
        sys.stderr.write("firmware: %s\n" % exc)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
