"""The link to a board: mpremote over its serial line, and the programs run on it.

Every operation runs ``mpremote connect PORT [resume] ...`` as a subprocess
(``python -m mpremote``): the installer's own tool, wrapped, not replaced.
Files go over with ``mpremote fs cp``; everything else is one of the
MicroPython programs in field/onboard/ (real .py files: ``make lint``
compiles them, the tests run them on the simulated board), sent with
``mpremote exec`` inside onboard/wrapper.py. They import the board's own
modules (``board``, ``parkgate.journal``, ``parkgate.record``,
``parkgate.clock``: frozen in the board's image, or .mpy files a ``deploy
--code`` put on its flash) and print their answers as JSON lines prefixed
``PG>``. A failure on the board is caught there and printed as one ``PG!``
line, which becomes a DeviceError here ("device: journal: no journal
partition: ..."), never a traceback; mpremote's own failures (no such port,
no REPL, no answer in time) become DeviceUnreachable.

    device = Device("/dev/ttyUSB0")          # or Device(sim.port, resume=True)
    device.call("status", {"events": 5})     # -> dict
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading

from parkgate_tools.field.errors import (DeviceError, DeviceUnreachable, FieldToolError,
                                         VerifyError)

OUT = "PG>"
ERR = "PG!"
ONBOARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "onboard")
WRAPPER = os.path.join(ONBOARD, "wrapper.py")
_SLOT = "        pass  # the program\n"   # the line of wrapper.py a program replaces
# The programs: every onboard/NAME.py but wrapper.py, their frame.
PROGRAMS = tuple(sorted(name[:-3] for name in os.listdir(ONBOARD)
                        if name.endswith(".py") and name != "wrapper.py"))


def onboard_files():
    """Every file of on-board code: the wrapper and the programs."""
    return [WRAPPER] + [os.path.join(ONBOARD, name + ".py") for name in PROGRAMS]


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def program(name, args=None):
    """The MicroPython source that runs onboard/NAME.py with args on the board:
    wrapper.py with the program's lines in its slot, called once with args
    (JSON-able), then deleted."""
    if name not in PROGRAMS:
        raise ValueError("no on-board program %r: the programs are %s" % (name, ", ".join(PROGRAMS)))
    wrapper = _read(WRAPPER)
    if wrapper.count(_SLOT) != 1:
        raise FieldToolError("%s: no single %r line to put the program in" % (WRAPPER, _SLOT.strip()))
    body = "".join("        " + line
                   for line in _read(os.path.join(ONBOARD, name + ".py")).splitlines(True))
    source = "from json import loads as json_loads\n" + wrapper.replace(_SLOT, body)
    # Comment lines and blank lines are for the reader: not sent over the serial line.
    lines = [line for line in source.splitlines(True)
             if line.strip() and not line.lstrip().startswith("#")]
    return "".join(lines) + "_pg(json_loads(%r))\ndel _pg, json_loads\n" % json.dumps(args or {})


def remote_join(root, name):
    """root + "/" + name, for the board's paths ("/" + "x" is "/x")."""
    return root.rstrip("/") + "/" + name


class Device:
    """A board on a serial port, driven through mpremote.

    port: the serial device (/dev/ttyUSB0; the simulator's pty link).
    resume: pass mpremote's `resume` (no soft reset on connect; required for
    the unix-port simulator, whose soft reset ends the process, and for
    looking at a running gate without restarting it). timeout: seconds for
    one mpremote run. echo: a callable that gets each mpremote command line
    (for --verbose). State kept: info (the board's name and filesystem root,
    once asked), commands (every mpremote argv run)."""

    def __init__(self, port, resume=False, timeout=120, echo=None):
        self.port = port
        self.resume = resume
        self.timeout = timeout
        self.echo = echo
        self.info = None
        self.commands = []

    def argv(self, *command):
        """The mpremote command line for command (e.g. "exec", code)."""
        argv = [sys.executable, "-m", "mpremote", "connect", self.port]
        if self.resume:
            argv.append("resume")
        return argv + list(command)

    def _lines(self, argv, timeout, label=None):
        # Yields mpremote's output lines as they come; raises on failure.
        self.commands.append(argv)
        if self.echo:
            shown = ["mpremote"] + argv[3:]
            if label:
                shown[-1] = label
            self.echo(" ".join(("'%s'" % a if " " in a else a) for a in shown))
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        expired = []

        def expire():
            expired.append(True)
            proc.kill()
        timer = threading.Timer(timeout, expire)
        timer.start()
        other = []
        try:
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if not line.startswith((OUT, ERR)):
                    other.append(line)
                    del other[:-20]
                yield line
            proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        if expired:
            raise DeviceUnreachable("%s: no answer from the board within %.0f s"
                                    % (self.port, timeout))
        if proc.returncode != 0:
            raise self._failure(other)

    def _failure(self, lines):
        # mpremote's own failure, as a host error.
        text = "\n".join(lines).strip()
        if "failed to access" in text or "no device found" in text:
            return DeviceUnreachable(
                "cannot open %s: no such serial device, or another program (mpremote, a "
                "serial monitor) has it open" % self.port)
        if "could not enter raw repl" in text:
            return DeviceUnreachable(
                "%s: the board does not answer as a MicroPython REPL (wrong port? a "
                "program that does not stop on Ctrl-C? try again without --resume)" % self.port)
        if "Traceback" in text:
            return DeviceError("exec", "error", text.splitlines()[-1])
        return FieldToolError("mpremote failed on %s: %s" % (
            self.port, text.splitlines()[-1] if text else "no output"))

    def mpremote(self, *command, timeout=None):
        """Run one mpremote command; returns its output lines."""
        return list(self._lines(self.argv(*command), timeout or self.timeout))

    def stream(self, name, args=None, timeout=None):
        """Run the on-board program NAME (onboard/NAME.py); yields each PG>
        object as it arrives; raises DeviceError for a PG! line."""
        argv = self.argv("exec", program(name, args))
        label = "<field/onboard/%s.py, %d bytes>" % (name, len(argv[-1]))
        for line in self._lines(argv, timeout or self.timeout, label):
            if line.startswith(OUT):
                yield json.loads(line[len(OUT):])
            elif line.startswith(ERR):
                error = json.loads(line[len(ERR):])
                raise DeviceError(error["stage"], error["type"], error["message"])

    def call(self, name, args=None, timeout=None):
        """Run the on-board program NAME; returns its single answer."""
        answers = list(self.stream(name, args, timeout))
        if len(answers) != 1:
            raise FieldToolError("unexpected answer from the board: %r" % (answers,))
        return answers[0]

    def board_info(self):
        """{"board": NAME, "root": filesystem root, "code": "image" or
        "flash", "micropython": version} of the board; DeviceError if its
        MicroPython has no parkgate board module."""
        if self.info is None:
            info = self.call("info")
            if info["board"] is None:
                raise DeviceError("board", "ImportError", "no module named 'board'")
            self.info = info
        return self.info

    def copy(self, pairs, force=False):
        """Copy local files to the board: pairs of (local path, remote path),
        one mpremote run per remote folder."""
        groups = {}
        for local, remote in pairs:
            folder, name = remote.rsplit("/", 1)
            if os.path.basename(local) != name:
                raise ValueError("copy keeps file names: %s -> %s" % (local, remote))
            groups.setdefault(folder or "/", []).append(local)
        for folder, files in groups.items():
            command = ["fs", "cp"] + (["-f"] if force else []) + files
            self.mpremote(*(command + [":" + folder.rstrip("/") + "/"]))

    def push_file(self, data, name, root=None):
        """Put data on the board as root/name atomically: copy to name.new,
        check its SHA-256 on the board, rename over name. Returns the hash."""
        root = root or self.board_info()["root"]
        digest = hashlib.sha256(data).hexdigest()
        with tempfile.TemporaryDirectory(prefix="parkgate-") as tmp:
            local = os.path.join(tmp, name + ".new")
            with open(local, "wb") as f:
                f.write(data)
            temp_remote = remote_join(root, name + ".new")
            self.copy([(local, temp_remote)], force=True)
        answer = self.call("commit", {"tmp": temp_remote, "final": remote_join(root, name),
                                      "sha": digest})
        if not answer["ok"]:
            raise VerifyError("%s: the copy on the board has SHA-256 %s, sent %s; the old "
                              "file is kept" % (name, answer["sha"], digest))
        if answer["sha"] != digest:
            raise VerifyError("%s: SHA-256 on the board %s after the rename, sent %s"
                              % (name, answer["sha"], digest))
        return digest
