"""What the lot server keeps about its pushes to the gates, in the lot
directory's state/ (one lock for all of it, so the `parkgate lot push-*`
commands and the push keeper of `parkgate lot run` can write at once):

- state/commands.json: per gate, the last version given to a signed command
  (open, set-clock). It only moves forward: it is written, under the lock,
  before the command is signed, so no version is given out twice.
- state/pushes/<gate>/<kind>.json: the newest signed envelope(s) pushed to a
  gate per kind, with their version. A table's record (tariff, members)
  never goes back to an older version: the push keeper sends it again to a
  gate that reports an older one.
- state/members.json: the newest member list pushed (the field tools'
  members.json form), from which the keeper signs the whole list for a gate
  too far behind for the delta pushed last.

Every file is 0600: envelopes are signed, but the member list is personal data."""
import json
import os
import time

from parkgate_tools.files import locked, write_atomic

COMMANDS_NAME = "commands.json"
MEMBERS_NAME = "members.json"
TABLE_KINDS = ("tariff", "members")     # kept for gates that are behind
COMMAND_KINDS = ("open", "setclock")    # one counter per gate for both


def read_json(path, default=None):
    """The JSON in path, or default if there is no such file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def _write_json(path, doc):
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with write_atomic(path, private=True, encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, separators=(",", ":"))


class PushState:
    """The push records of a lot directory (config: a lot.config.LotConfig)."""

    def __init__(self, config):
        self.config = config

    def _locked(self):
        return locked(self.config.state_dir, ".pushes.lock")

    # ---- the command counter ----

    def next_command(self, gate):
        """The version of gate's next signed command: one more than the last
        given out (1 the first time), kept before it is returned."""
        path = os.path.join(self.config.state_dir, COMMANDS_NAME)
        with self._locked():
            counters = read_json(path, {})
            version = int(counters.get(gate, 0)) + 1
            counters[gate] = version
            _write_json(path, counters)
        return version

    # ---- the newest push per gate and kind ----

    def push_path(self, gate, kind):
        return os.path.join(self.config.pushes_dir, gate, kind + ".json")

    def newest(self, gate, kind):
        """The record of the newest push of kind to gate, or None: {"kind",
        "gate", "v", "at", "envelopes": [...]} and, for members, "base"
        (the version a delta applies to; None: the whole list)."""
        return read_json(self.push_path(gate, kind))

    def record(self, gate, kind, version, envelopes, **extra):
        """Keep envelopes as the newest push of kind to gate. A table's
        record is not replaced by an older version (the gate refuses that
        one anyway); returns whether it was kept."""
        doc = {"kind": kind, "gate": gate, "v": version, "at": int(time.time()),
               "envelopes": envelopes}
        doc.update(extra)
        with self._locked():
            current = self.newest(gate, kind)
            if kind in TABLE_KINDS and current is not None and current["v"] > version:
                return False
            _write_json(self.push_path(gate, kind), doc)
        return True

    # ---- the lot's newest member list ----

    def members(self):
        """The newest member list pushed (a members.json document), or None."""
        return read_json(os.path.join(self.config.state_dir, MEMBERS_NAME))

    def keep_members(self, doc):
        """Keep doc as the newest member list unless a newer one is kept."""
        path = os.path.join(self.config.state_dir, MEMBERS_NAME)
        with self._locked():
            current = read_json(path)
            if current is not None and current["version"] > doc["version"]:
                return False
            _write_json(path, doc)
        return True
