"""Which image each gate is to take and when it reboots into it (issue
#16): one JSON file per gate in a folder (the lot's state/ota/), written
atomically, read by the image server, the web page and the CLI, each in
its own process. A plan: {"version", "reboot" ("now" | "HH:MM" |
"manual"), "offered_at", "state", "rolled_back": [versions], "progress":
[done, total] or null, "reboot_sent_at", "running"}.

States: offered -> downloading ("ota" [v, done, total, "dl"|"ck"] in the
gate's status) -> staged ("ota" [v, .., "staged"]) -> rebooting (the
reboot command sent) -> running (status "fw" == v); "rolled back" (status
"rb" == v: v is added to rolled_back and never offered again unless
offered with force=True); "cancelled"."""
import functools
import json
import os
import re
import time

from parkgate_tools.files import locked, write_atomic
from parkgate_tools.ids import check_id
from parkgate_tools.lot.images import ImageStore, check_version

STATES = ("offered", "downloading", "staged", "rebooting", "running", "rolled back",
          "cancelled")
FINISHED = ("running", "rolled back", "cancelled")
HHMM = re.compile(r"\A([01][0-9]|2[0-3]):[0-5][0-9]\Z")   # a quiet hour, lot local time


def lot_stores(config):
    """(ImageStore, OtaPlan) of a lot directory (a LotConfig): its
    state/images and state/ota, shared by `parkgate lot image`, the page and
    the image server of `parkgate lot run`."""
    return (ImageStore(os.path.join(config.state_dir, "images")),
            OtaPlan(os.path.join(config.state_dir, "ota")))


def check_reboot(reboot, manual=True):
    """reboot if it is "now", "HH:MM" (or "manual" if allowed), else ValueError."""
    if reboot == "now" or (manual and reboot == "manual") or (
            isinstance(reboot, str) and HHMM.match(reboot)):
        return reboot
    raise ValueError("reboot %r: now, HH:MM%s" % (reboot, " or manual" if manual else ""))


def _locked(method):
    # one writer at a time across processes (the server, the page, the CLI):
    # every read-modify-write of a plan file holds folder/.lock
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self._lock():
            return method(self, *args, **kwargs)
    return run


class OtaPlan:
    """The plans of a lot's gates in folder."""

    def __init__(self, folder, clock=time.time):
        self.folder = folder
        self.clock = clock

    def _lock(self):
        return locked(self.folder, ".lock")

    def _path(self, gate):
        check_id("gate", gate)
        return os.path.join(self.folder, gate + ".json")

    def plan(self, gate):
        """gate's plan (a dict), or None."""
        try:
            with open(self._path(gate), encoding="utf-8") as f:
                doc = json.load(f)
        except (FileNotFoundError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def plans(self):
        """{gate: plan} of every gate with a plan."""
        try:
            names = sorted(os.listdir(self.folder))
        except FileNotFoundError:
            return {}
        found = {}
        for name in names:
            if name.endswith(".json"):
                doc = self.plan(name[:-5])
                if doc is not None:
                    found[name[:-5]] = doc
        return found

    def stamp(self):
        """A value that changes when a plan file is written (the server's re-read)."""
        try:
            return tuple(sorted((e.name, e.stat().st_mtime_ns) for e in os.scandir(self.folder)
                                if e.name.endswith(".json")))
        except FileNotFoundError:
            return ()

    def _save(self, gate, doc):
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        with write_atomic(self._path(gate), encoding="utf-8") as f:
            json.dump(doc, f, sort_keys=True)
        return doc

    @_locked
    def offer(self, gates, version, reboot="manual", force=False):
        """Plan version for each gate, rebooting "now", at "HH:MM" (lot
        local time) or "manual"; returns {gate: plan}. ValueError, and
        nothing written for any gate, if a gate rolled version back
        already (unless force: then it is taken off that gate's list)."""
        check_version(version)
        check_reboot(reboot)
        olds = {gate: self.plan(gate) or {} for gate in gates}
        for gate, old in olds.items():
            if version in old.get("rolled_back", []) and not force:
                raise ValueError("gate %s rolled version %d back: offer it with force" % (
                    gate, version))
        made = {}
        for gate, old in olds.items():
            rolled = [v for v in old.get("rolled_back", []) if v != version]
            made[gate] = self._save(gate, {
                "version": version, "reboot": reboot, "offered_at": int(self.clock()),
                "state": "offered", "rolled_back": rolled, "progress": None,
                "reboot_sent_at": None, "running": old.get("running"),
                # forced: offered again although the gate's status still shows
                # its rollback of this version ("rb" stays until it takes one)
                "forced": version in old.get("rolled_back", [])})
        return made

    def _unfinished(self, gates):
        docs = {}
        for gate in gates:
            doc = self.plan(gate)
            if doc is None:
                raise ValueError("gate %s has no plan" % gate)
            if doc["state"] in FINISHED:
                raise ValueError("gate %s: its plan of version %d is %s" % (
                    gate, doc["version"], doc["state"]))
            docs[gate] = doc
        return docs

    @_locked
    def reboot(self, gates, at="now"):
        """Reboot each gate into its plan's version at "now" or "HH:MM"
        once staged; returns the gates. ValueError, and nothing written,
        if a gate has no plan or a finished one."""
        check_reboot(at, manual=False)
        docs = self._unfinished(gates)
        for gate, doc in docs.items():
            doc["reboot"] = at
            self._save(gate, doc)
        return list(docs)

    @_locked
    def cancel(self, gates):
        """Cancel each gate's plan; returns the gates. ValueError, and
        nothing written, if a gate has no plan or a finished one."""
        docs = self._unfinished(gates)
        for gate, doc in docs.items():
            doc["state"] = "cancelled"
            self._save(gate, doc)
        return list(docs)

    @_locked
    def set_state(self, gate, state, **fields):
        """Move gate's plan to state (and fields); the new plan."""
        if state not in STATES:
            raise ValueError("state %r" % (state,))
        doc = self.plan(gate)
        if doc is None:
            return None
        doc.update(fields)
        doc["state"] = state
        return self._save(gate, doc)

    @_locked
    def heard(self, gate, status):
        """Move gate's plan by its status (fw, ota, rb); returns the plan
        if it changed, else None."""
        doc = self.plan(gate)
        if doc is None or not isinstance(status, dict):
            return None
        v, state, before = doc["version"], doc["state"], dict(doc)
        fw, ota, rb = status.get("fw"), status.get("ota"), status.get("rb")
        if isinstance(fw, int):
            doc["running"] = fw
        # On trial the gate runs v but may still roll back: running once proven.
        on_trial = isinstance(ota, list) and len(ota) == 4 and ota[3] == "trial"
        if state != "cancelled":
            if rb == v and fw != v and state != "rolled back" and not (
                    doc.get("forced") and state == "offered"):
                if v not in doc["rolled_back"]:
                    doc["rolled_back"].append(v)
                doc["state"] = "rolled back"
            elif fw == v and not on_trial:
                doc["state"], doc["progress"] = "running", None
            elif isinstance(ota, list) and len(ota) == 4 and ota[0] == v and \
                    state not in FINISHED:
                doc["progress"] = [ota[1], ota[2]]
                if ota[3] in ("dl", "ck") and state == "offered":
                    doc["state"] = "downloading"
                elif ota[3] == "staged" and state in ("offered", "downloading"):
                    doc["state"] = "staged"
        if doc == before:
            return None
        return self._save(gate, doc)
