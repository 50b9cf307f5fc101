"""Field tools: service a gate board over its USB serial line with mpremote.

Every operation runs ``mpremote connect PORT [resume] ...`` as a subprocess
(``python -m mpremote``): the installer's own tool, wrapped, not replaced.
Files go over with ``mpremote fs cp``; everything else is a short MicroPython
program sent with ``mpremote exec`` that imports the board's own modules
(``board``, ``parkgate.journal``, ``parkgate.record``, ``parkgate.clock``:
frozen in the board's image, or .mpy files a ``deploy --code`` put on its
flash) and prints its answers as JSON lines prefixed ``PG>``.
A failure on the board is caught there and printed as one ``PG!`` line,
which becomes a ``DeviceError`` here ("device: journal: no journal
partition: ..."), never a traceback.

    device = Device("/dev/ttyUSB0")          # or Device(sim.port, resume=True)
    COMMANDS["status"](device)               # -> dict

The command table ``COMMANDS`` maps each ``parkgate board`` command to its
function; ``Device`` is the small state object they share (port, mpremote
options, what the board said about itself, the mpremote commands it ran).
Formats and behaviour: firmware/docs/field-tools.md.
"""
import csv
import datetime
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

from parkgate import members, plate, record, tariff
from parkgate.clock import EARLIEST_VALID
from parkgate_tools import runtime

OUT = "PG>"
ERR = "PG!"
MANIFEST = "deploy.json"
MAX_MEMBERS = 50000     # members.bin: 16 bytes a member, looked up on flash
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")   # lot and gate ids go into MQTT topics


class FieldToolError(Exception):
    """A field tool failure, worded for the person at the gate."""


class DeviceUnreachable(FieldToolError):
    """mpremote could not open the port or get a REPL on it."""


class DeviceError(FieldToolError):
    """The board ran the command and reported an error.

    stage: what the board was doing; kind: the MicroPython exception type;
    detail: its message."""

    def __init__(self, stage, kind, detail):
        self.stage = stage
        self.kind = kind
        self.detail = detail
        super().__init__("device: " + _explain(stage, kind, detail))


class Refused(FieldToolError):
    """A file or value was refused on the host; nothing was sent.

    field names what is wrong ("plans.wk.bands[1].start", "members[3].plate")."""

    def __init__(self, what, field, message):
        self.what = what
        self.field = field
        super().__init__("%s refused: %s: %s" % (what, field, message))


class VerifyError(FieldToolError):
    """A file on the board does not have the SHA-256 it was sent with."""


def _explain(stage, kind, detail):
    if kind == "ImportError" and ("'board'" in detail or "parkgate" in detail):
        return ("no parkgate firmware on the board (%s): flash the image `make firmware "
                "BOARD=NAME` builds (firmware/docs/boards.md), or for development "
                "`parkgate board deploy --code`" % detail)
    if stage == "site" and kind == "OSError":
        return "no site.json on the flash: deploy with --site FILE or use `parkgate board config set`"
    if kind in ("OSError", "JournalError", "RuntimeError", "ValueError", "RecordError"):
        return "%s: %s" % (stage, detail)
    return "%s: %s: %s" % (stage, kind, detail)


# --- board definitions -------------------------------------------------------

class BoardDef:
    """boards/<name>/board.json: how the field tools deploy to a board.

    fs_root: where the board's filesystem is (the REPL's cwd); umqtt_frozen:
    umqtt.simple is in the MicroPython image and deploy --code does not copy
    it; modules: the board folder's adapter modules (frozen by its
    manifest.py; copied by deploy --code, removed by a deploy without it);
    reset: "machine" (machine.reset()) or "process" (the simulator: restart
    the process); site_required: site.json keys this board needs."""

    def __init__(self, name, doc):
        self.name = name
        self.doc = doc
        self.fs_root = doc.get("fs_root", "/")
        self.umqtt_frozen = bool(doc.get("umqtt_frozen", False))
        self.modules = list(doc.get("modules", ["board.py"]))
        self.reset = doc.get("reset", "machine")
        self.site_required = list(doc.get("site_required", []))
        self.folder = os.path.join(runtime.BOARDS, name)


def board_names():
    """Names of the boards that have a board.json."""
    return sorted(name for name in os.listdir(runtime.BOARDS)
                  if os.path.isfile(os.path.join(runtime.BOARDS, name, "board.json")))


def load_board(name):
    """The BoardDef of boards/<name>; FieldToolError if there is none."""
    path = os.path.join(runtime.BOARDS, name, "board.json")
    try:
        with open(path, encoding="utf-8") as f:
            return BoardDef(name, json.load(f))
    except FileNotFoundError:
        raise FieldToolError("no board %r: boards with a board.json are %s"
                             % (name, ", ".join(board_names()))) from None


def remote_join(root, name):
    """root + "/" + name, for the board's paths ("/" + "x" is "/x")."""
    return root.rstrip("/") + "/" + name


# --- validation on the host ---------------------------------------------------

_SITE_INTS = ("relay_pulse_ms", "fee_timeout_ms", "repeat_window_ms", "keepalive_s",
              "socket_timeout_ms", "backoff_max_ms", "inside_max", "uplink_batch",
              "uplink_window", "command_max_s", "passage_ms", "clock_resync_s")
# Keys with a fixed set of values (firmware/parkgate/app.py DEFAULTS, the boards).
_SITE_CHOICES = {"camera": ("pg", "vz"), "exit_policy": ("confirm", "owed"),
                 "passage": (True, False), "rtc": (None, "ds3231")}
_SITE_STRS = ("broker", "mqtt_user", "mqtt_password", "wifi_ssid", "wifi_password")
SITE_REQUIRED = ("lot", "gate", "direction", "broker")


def check_site_value(key, value):
    """Refused("site", key, ...) unless value is right for the site key.
    Returns a warning string for an unknown key, else None."""
    def refuse(message):
        raise Refused("site", key, message)
    if key in ("lot", "gate"):
        if not isinstance(value, str) or not _NAME.match(value):
            refuse("%r is not 1-32 of A-Z a-z 0-9 _ . - (it goes into MQTT topics)" % (value,))
    elif key == "direction":
        if value not in ("in", "out"):
            refuse("%r is not \"in\" or \"out\"" % (value,))
    elif key in _SITE_STRS:
        if not isinstance(value, str) or not value:
            refuse("%r is not a non-empty string" % (value,))
    elif key == "port":
        if type(value) is not int or not 0 < value < 65536:
            refuse("%r is not a TCP port" % (value,))
    elif key in _SITE_INTS:
        if type(value) is not int or value < 0:
            refuse("%r is not a non-negative integer" % (value,))
    elif key in _SITE_CHOICES:
        if value not in _SITE_CHOICES[key] or type(value) is int:
            refuse("%r is not one of %s" % (value, ", ".join(
                json.dumps(c) for c in _SITE_CHOICES[key])))
    elif key == "utc_offset_minutes":
        if type(value) is not int or not -720 <= value <= 840:
            refuse("%r is not minutes in -720..840" % (value,))
    elif key == "ntp":
        if value is not None and (not isinstance(value, str) or not re.fullmatch(
                r"(\d{1,3}\.){3}\d{1,3}(:\d{1,5})?", value)):
            refuse("%r is not an IP address with an optional :port (the gate does no "
                   "DNS on the lane)" % (value,))
    elif key == "key":
        if value is not None and (not isinstance(value, str) or not value or len(value) % 2
                                  or not re.fullmatch(r"[0-9a-fA-F]+", value)):
            refuse("the gate key must be hex digits (an even number of them)")
    elif key == "ip":
        if value is not None and (not isinstance(value, list) or len(value) != 4
                                  or not all(isinstance(v, str) for v in value)):
            refuse("expected null (DHCP) or [address, netmask, gateway, dns]")
    else:
        return "site: %s: not a key the firmware knows (kept)" % key
    return None


def check_site(doc, board=None):
    """Validate a whole site.json document; returns warnings, raises Refused."""
    if not isinstance(doc, dict):
        raise Refused("site", "site.json", "expected a JSON object")
    required = list(SITE_REQUIRED) + (board.site_required if board else [])
    for key in required:
        if key not in doc:
            raise Refused("site", key, "missing (required%s)" % (
                " on %s" % board.name if board and key in board.site_required else ""))
    warnings = []
    for key, value in doc.items():
        warning = check_site_value(key, value)
        if warning:
            warnings.append(warning)
    return warnings


def check_tariff(data):
    """Validate tariff JSON (bytes) with the firmware's own parkgate.tariff;
    returns the Tariff, raises Refused naming the field."""
    try:
        return tariff.loads(data)
    except tariff.TariffError as exc:
        raise Refused("tariff", exc.field, exc.message) from None


def check_members(doc):
    """Validate a member list: {"version": N, "members": [{"plate": str,
    "until": unix seconds or null, optional "from": unix seconds or null,
    "window": [start, end] minutes of the local day or null, "blacklist":
    bool}, ...]}. Returns the member count."""
    def refuse(field, message):
        raise Refused("members", field, message)
    if not isinstance(doc, dict):
        refuse("members.json", "expected a JSON object")
    for key in doc:
        if key not in ("version", "members"):
            refuse(key, "unknown field")
    version = doc.get("version")
    if type(version) is not int or not 0 < version < 2 ** 31:
        refuse("version", "%r is not a positive integer" % (version,))
    members = doc.get("members")
    if not isinstance(members, list):
        refuse("members", "expected a list")
    if len(members) > MAX_MEMBERS:
        refuse("members", "%d members, at most %d fit a board" % (len(members), MAX_MEMBERS))
    seen = set()
    for i, member in enumerate(members):
        where = "members[%d]" % i
        if not isinstance(member, dict):
            refuse(where, "expected an object")
        for key in member:
            if key not in ("plate", "from", "until", "window", "blacklist"):
                refuse("%s.%s" % (where, key), "unknown field")
        plate = member.get("plate")
        if not isinstance(plate, str) or not 0 < len(plate.encode()) <= record.MAX_PLATE_BYTES:
            refuse(where + ".plate", "%r is not a plate (1-%d UTF-8 bytes)"
                   % (plate, record.MAX_PLATE_BYTES))
        if plate in seen:
            refuse(where + ".plate", "%s is listed twice" % plate)
        seen.add(plate)
        if "until" not in member:
            refuse(where + ".until", "missing (unix seconds, or null for no end)")
        for key in ("from", "until"):
            value = member.get(key)
            if value is not None and (type(value) is not int or not 0 <= value < 2 ** 32):
                refuse("%s.%s" % (where, key), "%r is not unix seconds or null" % (value,))
        window = member.get("window")
        if window is not None and not (
                isinstance(window, list) and len(window) == 2
                and all(type(m) is int and 0 <= m < 1440 for m in window)):
            refuse(where + ".window", "%r is not [start, end] minutes of the day" % (window,))
        if type(member.get("blacklist", False)) is not bool:
            refuse(where + ".blacklist", "expected true or false")
    return len(members)


def parse_value(text):
    """A config value from the command line: JSON if it parses, else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


# --- programs run on the board --------------------------------------------------
# MicroPython source. The wrapper gives each body: args (a dict), out(obj)
# (one PG> line), stage (a list whose item 0 names what the board is doing,
# reported with an error), sha(path) and join(root, name). It runs in a
# function so that nothing is left in the REPL's globals.

_WRAPPER = '''\
def _pg(args):
    import json
    import sys
    stage = ["start"]

    def out(obj):
        sys.stdout.write("PG>" + json.dumps(obj) + "\\n")

    def join(root, name):
        return root.rstrip("/") + "/" + name

    def sha(path):
        import binascii
        import hashlib
        h = hashlib.sha256()
        buf = bytearray(512)
        mv = memoryview(buf)
        with open(path, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(mv[:n])
        return binascii.hexlify(h.digest()).decode()

    def origin(mod):
        # Where an imported module came from: "flash" (the filesystem) or
        # "image" (frozen: its __file__ names no file; the REPL's current
        # folder is the filesystem's root, where sys.path's "" looks).
        import os
        try:
            os.stat(mod.__file__)
            return "flash"
        except (AttributeError, OSError):
            return "image"

    def has_journal(dev):
        # A journal block header starts with the magic (firmware/docs/journal.md).
        head = bytearray(4)
        for b in range(dev.ioctl(4, 0)):
            dev.readblocks(b, head, 0)
            if bytes(head) == b"PGJ\\x01":
                return True
        return False

    try:
%s
    except Exception as exc:
        sys.stdout.write("PG!" + json.dumps({"stage": stage[0], "type": type(exc).__name__,
                                             "message": str(exc)}) + "\\n")


_pg(json_loads(%r))
del _pg
'''

PROGRAMS = {
    # What the board is, where its filesystem is, where its code comes from.
    "info": '''
stage[0] = "board"
res = {"micropython": "%d.%d.%d" % sys.implementation.version[:3]}
try:
    import board
except ImportError as exc:
    if "board" not in str(exc):
        raise
    res["board"] = None
else:
    res["board"] = board.NAME
    res["root"] = board.mount_flash()
    res["code"] = origin(board)
out(res)
''',
    # Free heap after a collection, as a deploy with --code needs it.
    "heap": '''
import gc
stage[0] = "heap"
gc.collect()
out({"free": gc.mem_free(), "alloc": gc.mem_alloc()})
''',
    # Remove code folders and files, make folders, drop files a deploy no
    # longer brings.
    "prepare": '''
import os
removed = []

def rmtree(path):
    for entry in os.ilistdir(path):
        inner = join(path, entry[0])
        if entry[1] == 0x4000:
            rmtree(inner)
        else:
            os.remove(inner)
            removed.append(inner)
    os.rmdir(path)
    removed.append(path + "/")

stage[0] = "old code"
for d in args["purge"]:
    try:
        is_dir = os.stat(d)[0] & 0x4000
    except OSError:
        continue
    if is_dir:
        rmtree(d)
    else:
        os.remove(d)
        removed.append(d)
for path in args["remove"]:
    try:
        os.remove(path)
        removed.append(path)
    except OSError:
        pass
stage[0] = "folders"
for d in args["dirs"]:
    try:
        os.mkdir(d)
    except OSError:
        if not os.stat(d)[0] & 0x4000:
            raise OSError("%s exists and is not a folder" % d)
stage[0] = "old files"
for d in args["clean"]:
    keep = args["clean"][d]
    for name in os.listdir(d):
        path = join(d, name)
        if name not in keep and not os.stat(path)[0] & 0x4000:
            os.remove(path)
            removed.append(path)
out({"removed": removed})
''',
    # SHA-256 of files (None: missing).
    "hash": '''
stage[0] = "hash"
found = {}
for path in args["files"]:
    try:
        found[path] = sha(path)
    except OSError:
        found[path] = None
out({"sha": found})
''',
    # Check a copied temp file, then rename it over the real one.
    "commit": '''
import os
stage[0] = "verify"
got = sha(args["tmp"])
if got != args["sha"]:
    os.remove(args["tmp"])
    out({"ok": False, "sha": got})
else:
    stage[0] = "rename"
    os.rename(args["tmp"], args["final"])
    out({"ok": True, "sha": sha(args["final"])})
''',
    "status": '''
import gc
import os
stage[0] = "board"
import board
root = board.mount_flash()
res = {"board": board.NAME, "root": root}
try:
    res["micropython"] = "%d.%d.%d" % sys.implementation.version[:3]
    res["machine"] = os.uname().machine
except (AttributeError, OSError):
    pass
import parkgate.clock
res["code"] = {"board": origin(board), "parkgate": origin(parkgate.clock)}
stage[0] = "firmware"
try:
    with open(join(root, "deploy.json")) as f:
        man = json.load(f)
except OSError:
    man = None
if man is not None:
    changed = []
    for path in man["files"]:
        try:
            ok = sha(join(root, path)) == man["files"][path]
        except OSError:
            ok = False
        if not ok:
            changed.append(path)
    res["firmware"] = {"version": man.get("version"), "build": man.get("build"),
                       "board": man.get("board"), "deployed": man.get("time"),
                       "code": man.get("code", "flash"), "files": len(man["files"]),
                       "changed": changed}
else:
    res["firmware"] = None
stage[0] = "clock"
from parkgate.clock import Clock, EARLIEST_VALID, QUALITY_NAMES
clock = Clock(board.ClockSource(), board.BOOT_CLOCK_QUALITY)
now = clock.now()
res["clock"] = {"time": now, "valid": now >= EARLIEST_VALID,
                "quality": QUALITY_NAMES[clock.quality]}
stage[0] = "site"
try:
    site = board.load_site()
    res["site"] = {"lot": site.get("lot"), "gate": site.get("gate"),
                   "direction": site.get("direction"), "broker": site.get("broker")}
except OSError:
    res["site"] = None
stage[0] = "tariff"
try:
    with open(join(root, "tariff.json")) as f:
        doc = json.load(f)
    res["tariff"] = {"version": doc.get("version"), "name": doc.get("name")}
except OSError:
    res["tariff"] = None
except ValueError:
    res["tariff"] = {"error": "not valid JSON"}
doc = None
stage[0] = "members"
try:
    from parkgate import members
    listed = members.MemberList(join(root, "members.bin"))
    res["members"] = {"version": listed.version, "count": listed.count}
    listed.close()
except OSError:
    res["members"] = None
except ValueError as exc:
    res["members"] = {"error": str(exc)}
stage[0] = "journal"
dev = board.journal_device()
if has_journal(dev):
    from parkgate.journal import Journal
    from parkgate import record
    j = Journal(dev)
    j.mount()
    st = j.stats()
    last = []
    for seq, kind, body in j.records():
        last.append((seq, kind, body))
        if len(last) > args["events"]:
            last.pop(0)
    events = []
    for seq, kind, body in last:
        try:
            w = record.to_wire(record.decode_body(kind, seq, body))
        except Exception as exc:
            w = {"s": seq, "kind": kind, "error": str(exc)}
        w["acked"] = seq <= j.acked
        events.append(w)
    res["journal"] = {"id": j.journal_id, "next_seq": j.next_seq, "acked": j.acked,
                      "pending": st["pending"], "blocks": st["blocks"],
                      "free_blocks": st["free_blocks"], "full": st["full"]}
    res["events"] = events
    j = last = None
else:
    res["journal"] = None
    res["events"] = []
stage[0] = "memory"
gc.collect()
res["heap_free"] = board.free_heap()
res["flash_free"] = board.free_flash(root)
out(res)
''',
    "journal": '''
import binascii
stage[0] = "board"
import board
stage[0] = "journal"
dev = board.journal_device()
if not has_journal(dev):
    out({"journal": None})
else:
    from parkgate.journal import Journal
    from parkgate import record
    j = Journal(dev)
    j.mount()
    st = j.stats()
    out({"journal": {"id": j.journal_id, "next_seq": j.next_seq, "acked": j.acked,
                     "pending": st["pending"]}})
    n = 0
    for seq, kind, body in j.records():
        try:
            w = record.to_wire(record.decode_body(kind, seq, body))
        except Exception as exc:
            w = {"s": seq, "kind": kind, "error": str(exc),
                 "raw": binascii.hexlify(body).decode()}
        w["acked"] = seq <= j.acked
        out(w)
        n += 1
    out({"end": n})
''',
    "set_clock": '''
stage[0] = "board"
import board
stage[0] = "clock"
from parkgate.clock import EPOCH_OFFSET
source = board.ClockSource()
source.set_seconds(args["time"] - EPOCH_OFFSET)
out({"time": int(board.ClockSource().seconds()) + EPOCH_OFFSET})
''',
    "relay": '''
import time
stage[0] = "board"
import board
stage[0] = "relay"
relay = board.Relay()
t0 = time.ticks_ms()
relay.set(True)
try:
    time.sleep_ms(args["ms"])
finally:
    relay.set(False)
out({"ms": time.ticks_diff(time.ticks_ms(), t0)})
''',
    "site_get": '''
stage[0] = "board"
import board
stage[0] = "site"
try:
    site = board.load_site()
except OSError:
    site = None
except ValueError:
    raise ValueError("site.json on the board is not valid JSON")
out({"site": site, "root": board.mount_flash()})
''',
}


def program(name, args=None):
    """The MicroPython source that runs PROGRAMS[name] with args on the board."""
    body = "\n".join(("        " + line) if line.strip() else ""
                     for line in PROGRAMS[name].strip("\n").split("\n"))
    source = _WRAPPER % (body, json.dumps(args or {}))
    return "from json import loads as json_loads\n" + source + "del json_loads\n"


# --- the device ---------------------------------------------------------------

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
        """Run PROGRAMS[name] on the board; yields each PG> object as it
        arrives; raises DeviceError for a PG! line."""
        argv = self.argv("exec", program(name, args))
        label = "<fieldtool.PROGRAMS[%r], %d bytes>" % (name, len(argv[-1]))
        for line in self._lines(argv, timeout or self.timeout, label):
            if line.startswith(OUT):
                yield json.loads(line[len(OUT):])
            elif line.startswith(ERR):
                error = json.loads(line[len(ERR):])
                raise DeviceError(error["stage"], error["type"], error["message"])

    def call(self, name, args=None, timeout=None):
        """Run PROGRAMS[name]; returns its single answer."""
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


# --- the commands ---------------------------------------------------------------

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


def firmware_files(board):
    """[(local file, path relative to the board's root)] of a deploy with
    --code: the firmware compiled by runtime.mpy_cross() (the mpy-cross of
    the MicroPython the images are built from), umqtt unless frozen, the
    board's modules, main.py."""
    runtime.build_mpy(board.name)
    files = []
    umqtt = False
    for source, relative, out_root in runtime.sources(board.name):
        compiled = os.path.join(runtime.BUILD_MPY, out_root, relative[:-3] + ".mpy")
        remote = relative[:-3].replace(os.sep, "/") + ".mpy"
        if out_root == "firmware":
            files.append((compiled, remote))
        elif out_root == "lib":
            umqtt = True
            if not board.umqtt_frozen:
                files.append((compiled, "lib/" + remote))
        elif os.path.basename(source) in board.modules:
            files.append((compiled, remote))
    if not board.umqtt_frozen and not umqtt:
        raise FieldToolError("umqtt.simple is not in build/lib: run "
                             "`python host_tools/fetch_umqtt.py build/lib` (make setup does)")
    missing = set(board.modules) - {os.path.basename(r)[:-4] + ".py" for _, r in files}
    if missing:
        raise FieldToolError("board %s: board.json lists %s, not in %s"
                             % (board.name, ", ".join(sorted(missing)), board.folder))
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
        files += [module, module[:-3] + ".mpy"]
    return ["parkgate", "lib/umqtt"], files


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


def code_heap_needed(files):
    """The heap (bytes) a gate needs with these code files on the flash."""
    size = sum(os.path.getsize(local) for local, _ in files)
    return GATE_DATA_HEAP + int(CODE_HEAP_FACTOR * size), size


def _sha_file(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _read_config(board, site, tariff_path, members_path):
    """[(name on the board, bytes)] of the configuration, each checked;
    warnings. Raises Refused before anything is sent."""
    config = []
    warnings = []
    if site:
        with open(site, "rb") as f:
            data = f.read()
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise Refused("site", os.path.basename(site), "not valid JSON (%s)" % exc) from None
        warnings += check_site(doc, board)
        config.append(("site.json", data))
    if tariff_path:
        with open(tariff_path, "rb") as f:
            data = f.read()
        check_tariff(data)
        config.append(("tariff.json", data))
    if members_path:
        with open(members_path, "rb") as f:
            data = f.read()
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise Refused("members", os.path.basename(members_path),
                          "not valid JSON (%s)" % exc) from None
        check_members(doc)
        config.append(("members.bin", members_file(doc)))
    return config, warnings


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
    config, warnings = _read_config(board, site, tariff_path, members_path)
    root = board.fs_root
    result = {"board": board.name, "code": "flash" if code else "image"}
    if code:
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
        for _, remote in files:
            parts = remote.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                folder = remote_join(root, "/".join(parts[:i]))
                if folder not in dirs:
                    dirs.append(folder)
        keep = {}
        for _, remote in files:
            folder, _, name = remote.rpartition("/")
            if folder:
                keep.setdefault(remote_join(root, folder), []).append(name)
        # MicroPython imports X.py before X.mpy from the same folder.
        shadow = [remote_join(root, remote[:-4] + ".py") for _, remote in files
                  if remote.endswith(".mpy")]
        prepare = {"purge": [], "remove": shadow, "dirs": dirs, "clean": keep}
    else:
        files = []
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
        prepare = {"purge": [remote_join(root, f) for f in folders],
                   "remove": [remote_join(root, n) for n in names], "dirs": [], "clean": {}}
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
    on_board = device.call("hash", {"files": [remote_join(root, r) for r in every]})["sha"]
    bad = [remote for remote, digest in every.items()
           if on_board.get(remote_join(root, remote)) != digest]
    if bad:
        raise VerifyError("after the copy these files differ on the board: %s"
                          % ", ".join(sorted(bad)))
    say("verified %d files by SHA-256 on the board" % len(every))
    result.update({"version": manifest["version"], "build": build, "files": len(files),
                   "config": sorted(installed), "removed": removed, "warnings": warnings})
    for name, key in (("site.json", "site_sha256"), ("tariff.json", "tariff_sha256"),
                      ("members.bin", "members_sha256")):
        if name in installed:
            result[key] = installed[name]
    if not reset:
        result["reset"] = "skipped: reset the board to run the new firmware"
    elif board.reset == "machine":
        device.mpremote("exec", "--no-follow", "import machine\nmachine.reset()")
        result["reset"] = "machine.reset()"
    else:
        result["reset"] = ("restart the simulator's process to boot the new firmware "
                           "(SimRepl.restart(), or stop and start it)")
    device.info = None
    return result


def status(device, events=5):
    """Versions, clock, backlog, journal identity, memory and the last
    events, read from the board's flash by its own modules. Returns a dict."""
    return device.call("status", {"events": events})


def journal(device):
    """Yields the journal: first {"journal": {...} or None}, then every record
    decoded on the board (wire keys of parkgate.record.to_wire plus "acked";
    "error" and "raw" for one that does not decode), then {"end": count}."""
    return device.stream("journal", timeout=max(device.timeout, 3600))


CSV_COLUMNS = ("seq", "kind", "time", "time_utc", "plate", "colour", "confidence", "quality",
               "flags", "fee", "fee_source", "tariff_version", "entry_time", "acked", "error",
               "raw")
_CSV_KEYS = {"seq": "s", "kind": "k", "time": "t", "plate": "p", "colour": "c",
             "confidence": "cf", "quality": "q", "flags": "fl", "fee": "fee",
             "fee_source": "fs", "tariff_version": "tv", "entry_time": "et", "acked": "acked",
             "error": "error", "raw": "raw"}


def _utc(seconds):
    if not isinstance(seconds, int):
        return ""
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def csv_row(rec):
    """One journal record (as journal() yields it) as a CSV row dict."""
    row = {column: rec.get(key) for column, key in _CSV_KEYS.items()}
    if row["kind"] is None and "kind" in rec:
        row["kind"] = rec["kind"]
    row["time_utc"] = _utc(rec.get("t"))
    row["acked"] = 1 if rec.get("acked") else 0
    return {k: ("" if v is None else v) for k, v in row.items()}


def write_journal(records, out, fmt="csv"):
    """Write journal() output to the text stream out as CSV or JSON;
    returns (journal header, record count)."""
    header = None
    rows = []
    writer = None
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
    count = 0
    for rec in records:
        if "journal" in rec:
            header = rec["journal"]
        elif "end" in rec:
            continue
        else:
            count += 1
            if writer:
                writer.writerow(csv_row(rec))
            else:
                rows.append(rec)
    if not writer:
        json.dump({"journal": header, "records": rows}, out, ensure_ascii=False, indent=1)
        out.write("\n")
    return header, count


def push_tariff(device, path):
    """Validate a tariff table with parkgate.tariff.loads, then put it on the
    board as tariff.json atomically. Returns version, digest and SHA-256."""
    with open(path, "rb") as f:
        data = f.read()
    table = check_tariff(data)
    digest = device.push_file(data, "tariff.json")
    return {"version": table.version, "digest": table.digest, "sha256": digest}


def members_file(doc):
    """The gate's binary member list (parkgate.members) for a checked doc."""
    entries = [{"plate": plate.normalise(m["plate"]), "from": m.get("from"),
                "until": m["until"], "window": m.get("window"),
                "blacklist": m.get("blacklist", False)} for m in doc["members"]]
    try:
        return members.build(entries, doc["version"])
    except ValueError as exc:
        raise Refused("members", "members", str(exc)) from None


def push_members(device, path):
    """Validate a JSON member list (check_members), build the gate's binary
    list from it and put it on the board as members.bin atomically."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise Refused("members", os.path.basename(path), "not valid JSON (%s)" % exc) from None
    count = check_members(doc)
    digest = device.push_file(members_file(doc), "members.bin")
    return {"version": doc["version"], "members": count, "sha256": digest}


def set_clock(device, when="now"):
    """Set the board's clock to when (unix seconds, or "now": this host's
    clock) through board.ClockSource().set_seconds, and read it back."""
    if when in (None, "now"):
        seconds = int(round(time.time()))
    else:
        try:
            seconds = int(when)
        except (TypeError, ValueError):
            raise Refused("clock", "--time", "%r is not unix seconds or \"now\"" % (when,)) from None
    if not EARLIEST_VALID <= seconds < 2 ** 32:
        raise Refused("clock", "--time", "%d is before 2024-01-01 or past 2106" % seconds)
    sent = time.time()
    answer = device.call("set_clock", {"time": seconds})
    elapsed = time.time() - sent
    return {"set": seconds, "read_back": answer["time"],
            "difference": answer["time"] - seconds, "round_trip_s": round(elapsed, 3)}


def test_relay(device, ms=500):
    """Pulse the barrier relay through board.Relay() for ms milliseconds."""
    if type(ms) is not int or not 0 < ms <= 10000:
        raise Refused("relay", "--ms", "%r is not 1..10000" % (ms,))
    return device.call("relay", {"ms": ms}, timeout=device.timeout + ms / 1000)


def config_get(device, key=None):
    """The board's site.json (or one key of it)."""
    site = device.call("site_get")["site"]
    if site is None:
        raise FieldToolError("device: no site.json on the flash: deploy with --site FILE "
                             "or use `parkgate board config set`")
    if key is None:
        return site
    if key not in site:
        raise FieldToolError("site.json on the board has no %r" % key)
    return site[key]


def config_set(device, key, value):
    """Set one key of the board's site.json (value: a JSON value, see
    parse_value) after checking it; written atomically. Returns warnings."""
    answer = device.call("site_get")
    site = answer["site"] or {}
    warning = check_site_value(key, value)
    site[key] = value
    device.push_file(json.dumps(site, ensure_ascii=False, indent=1).encode(), "site.json",
                     answer["root"])
    warnings = [warning] if warning else []
    warnings += ["site: %s: missing (required)" % k for k in SITE_REQUIRED if k not in site]
    return {"key": key, "value": value, "warnings": warnings}


COMMANDS = {
    "deploy": deploy,
    "status": status,
    "journal": journal,
    "push-tariff": push_tariff,
    "push-members": push_members,
    "set-clock": set_clock,
    "test-relay": test_relay,
    "config-get": config_get,
    "config-set": config_set,
}


def format_status(st):
    """status() as lines of text for a person."""
    out = io.StringIO()
    w = out.write
    site = st.get("site") or {}
    w("board     %s%s\n" % (st["board"], "  (MicroPython %s)" % st["micropython"]
                            if st.get("micropython") else ""))
    origin = st.get("code") or {}
    if origin:
        w("code      %s\n" % ("frozen in the image" if set(origin.values()) == {"image"} else
                             ", ".join("%s from the %s" % item for item in sorted(origin.items()))))
    if site:
        w("gate      %s of lot %s, direction %s, broker %s\n" % (
            site.get("gate"), site.get("lot"), site.get("direction"), site.get("broker")))
    else:
        w("gate      no site.json\n")
    fw = st.get("firmware")
    if fw and fw.get("code") == "image":
        w("firmware  %s build %s, deployed for the image's code\n" % (fw["version"], fw["build"]))
    elif fw:
        w("firmware  %s build %s, %d code files on the flash%s\n" % (
            fw["version"], fw["build"], fw["files"],
            ", all as deployed" if not fw["changed"] else
            ", CHANGED since deploy: " + " ".join(fw["changed"])))
    else:
        w("firmware  no deploy.json: not deployed with parkgate board deploy\n")
    clock = st["clock"]
    w("clock     %s (%d), quality %s%s\n" % (_utc(clock["time"]), clock["time"],
                                             clock["quality"],
                                             "" if clock["valid"] else ", NOT SET"))
    tf = st.get("tariff")
    w("tariff    %s\n" % ("none: exits are charged only online" if tf is None else
                         "version %s %s" % (tf.get("version"), tf.get("name") or "")
                         if "error" not in tf else tf["error"]))
    members = st.get("members")
    if members is not None:
        w("members   %s\n" % ("version %s, %s plates" % (members.get("version"),
                                                          members.get("count"))
                              if "error" not in members else members["error"]))
    j = st.get("journal")
    if j is None:
        w("journal   none yet (the gate formats one at its first boot)\n")
    else:
        w("journal   id %08x, next seq %d, acked %d, backlog %d, %d of %d blocks free%s\n" % (
            j["id"], j["next_seq"], j["acked"], j["pending"], j["free_blocks"], j["blocks"],
            ", FULL" if j["full"] else ""))
    w("memory    heap %d B free, flash %d B free\n" % (st["heap_free"], st["flash_free"]))
    if st.get("events"):
        w("last %d events:\n" % len(st["events"]))
        for ev in st["events"]:
            if "error" in ev:
                w("  %6d  unreadable: %s\n" % (ev["s"], ev["error"]))
                continue
            w("  %6d  %-3s %s  %-10s%s%s\n" % (
                ev["s"], ev["k"], _utc(ev["t"]), ev["p"],
                "  fee %d (%s)" % (ev["fee"], ev["fs"]) if ev["k"] == "out" else "",
                "" if ev["acked"] else "  not acked"))
    return out.getvalue()
