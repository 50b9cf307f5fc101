"""The push keeper of `parkgate lot run`: keeps every gate at the newest
tariff and member list pushed to it.

It is the lot's MQTT user _push and hears every gate's retained status
(pg/<lot>/+/status). When a gate that is online (on 1, as after every
reconnect) shows a tariff (tv) or member list (mv) older than the newest
push kept for it (state/pushes/<gate>/<kind>.json, lot/push_state.py), the
keeper sends that push again; a member delta whose base the gate does not
have becomes the whole list (state/members.json). A push is sent again to
the same gate at most every RESEND_S while the gate stays online, so a
gate that refuses it is not flooded.

A tariff a gate has taken is the one the bridge answers fees from, if it
is newer than the one in use (on_tariff: the bridge's own rule,
tariff_in_use.is_newer), so that the lot and its gates charge alike.

Tables the lot takes from the central server (lot/forwarder.py) flow on:
the keeper signs them for every gate, keeps them as the newest push if
they are newer, and sends them to the gates that are behind."""
import logging
import queue
import threading
import time

from parkgate_tools.lot import pushes
from parkgate_tools.lot.push_state import PushState
from parkgate_tools.lot.security import PUSH_ROLE

log = logging.getLogger("parkgate.push_keeper")

RESEND_S = 60.0
PUSH_GRACE_S = 10.0    # a push command's own wait for the gate (its default is 30 s)
NEVER = 0xFFFFFFFF     # the central server's "until" of a member with no end


def central_members(doc):
    """The members.json document for the central server's member list
    {"version", "members": [{"p", "name", "from", "until"}]}."""
    members = []
    for member in doc.get("members", []):
        start, until = member.get("from") or None, member.get("until")
        members.append({"plate": member["p"], "from": start,
                        "until": None if until in (None, NEVER) else until,
                        "window": None, "blacklist": False})
    return {"version": int(doc["version"]), "members": members}


class PushKeeper:
    """Runs in a thread of its own beside the bridge (start(), stop())."""

    def __init__(self, config, state=None, clock=time.monotonic, on_tariff=None):
        self.config = config
        self.on_tariff = on_tariff    # on_tariff(JSON text): a gate took this table
        self._taken_version = 0
        self.state = state or PushState(config)
        self.clock = clock
        self.watch = pushes.GateWatch(config, PUSH_ROLE, on_status=self._on_status)
        self._gates = {gate.id for gate in config.gates}
        self._work = queue.Queue()
        self._sent = {}          # (gate, kind) -> (version, when sent)
        self._heard, self._away = set(), set()    # gates heard from; gone since
        self._thread = None
        self.resent = 0          # pushes sent again to a gate that was behind
        self.passed_on = 0       # tables from the central server signed for the gates
        self.failures = 0

    @property
    def connected(self):
        """True while subscribed to the gates' status."""
        return self.watch.connected

    def start(self):
        self.watch.start()
        self._thread = threading.Thread(target=self._run, name="push-keeper", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout=5):
        self._work.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.watch.stop()

    def taken(self, kind, taken):
        """A table taken from the central server (Forwarder.taken): ("tariff",
        JSON text) or ("members", its member document)."""
        self._work.put((kind, taken))

    # ---- the keeper's thread ----

    def _on_status(self, gate, status):
        if gate not in self._gates:
            return
        if status.get("on") != 1:
            self._away.add(gate)
            for kind in ("tariff", "members"):
                self._sent.pop((gate, kind), None)    # send at once when it is back
            return
        back = gate in self._away or gate not in self._heard   # (re)connected
        self._away.discard(gate)
        self._heard.add(gate)
        self._work.put(("status", gate, back))

    def _run(self):
        while True:
            item = self._work.get()
            if item is None:
                return
            try:
                if item[0] == "status":
                    self._catch_up(*item[1:])
                else:
                    self._pass_on(*item)
            except Exception:    # a bad file, a key missing: keep the keeper
                self.failures += 1
                log.exception("push keeper: %s failed", item[0])

    def _catch_up(self, gate, back=True):
        """Send gate what it is behind on. back False (a status of a gate
        that stayed online): not a push made in the last PUSH_GRACE_S, whose
        command is still waiting for the gate's answer."""
        status = self.watch.status(gate)
        if status.get("on") != 1:
            return
        for kind in ("tariff", "members"):
            newest = self.state.newest(gate, kind)
            if newest is None:
                continue
            have = status.get(pushes.STATUS_FIELD[kind])
            if isinstance(have, int) and have >= newest["v"]:
                self._sent.pop((gate, kind), None)
                if kind == "tariff" and have == newest["v"] > self._taken_version:
                    self._taken_version = have
                    if self.on_tariff is not None:
                        self.on_tariff(newest["envelopes"][0]["b"])
                continue
            if not back and time.time() - newest.get("at", 0) < PUSH_GRACE_S:
                continue
            sent = self._sent.get((gate, kind))
            if sent is not None and sent[0] == newest["v"] and \
                    self.clock() - sent[1] < RESEND_S:
                continue
            push = pushes.Push(gate, kind, newest["v"], newest["envelopes"],
                               "again")
            if kind == "members" and newest.get("base") is not None and \
                    have != newest["base"]:
                push = self._whole_members(gate, newest["v"]) or push
            log.info("gate %s has %s %s, sending version %d (%s)", gate, kind, have,
                     push.version, push.form)
            self._sent[(gate, kind)] = (push.version, self.clock())
            self.watch.publish(push)
            self.resent += 1

    def _whole_members(self, gate, version):
        doc = self.state.members()
        if doc is None or doc["version"] < version:
            return None
        push = pushes.members_push(self.config, gate, doc)
        self.state.record(gate, "members", push.version, push.envelopes, base=None)
        return push

    def _pass_on(self, kind, taken):
        """Sign a table from the central server for every gate, keep it as
        the newest push where it is newer, then send it to those behind."""
        gates = sorted(self._gates)
        if kind == "tariff":
            made = [pushes.tariff_push(self.config, gate, taken) for gate in gates]
        else:
            doc = central_members(taken)
            base = self.state.members()
            if base is not None and base["version"] >= doc["version"]:
                base = None
            made = pushes.member_pushes(self.config, gates, doc, base, self.watch.status)
            self.state.keep_members(doc)
        for push in made:
            extra = {"base": push.base} if kind == "members" else {}
            if self.state.record(push.gate, kind, push.version, push.envelopes, **extra):
                self._sent.pop((push.gate, kind), None)
        self.passed_on += 1
        log.info("%s version %d from the central server signed for %d gates", kind,
                 made[0].version if made else 0, len(made))
        for gate in gates:
            self._catch_up(gate)

