"""Signed pushes from a lot server to its gates (firmware/docs/mqtt.md): a
Push is the envelopes of one tariff, member list, remote open or set-clock
for one gate, signed with that gate's key (keys/<gate>.key); GateWatch is a
session on the lot's broker that publishes pushes and hears what the gates
answer (their retained status and up/refused), and outcome() says whether
a gate took a push. The `parkgate lot push-*` commands (lot/push_cli.py)
and the push keeper of `parkgate lot run` (lot/push_keeper.py) use them."""
import json
import logging
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from parkgate_host import member_lists, signing
from parkgate_tools.field.validate import check_members, members_file
from parkgate_tools.lot import downlink

log = logging.getLogger("parkgate.pushes")

CONNECT_TIMEOUT_S = 10
RETAINED_WAIT_S = 1.0       # for the gates' retained status after subscribing
PUBLISH_TIMEOUT_S = 10
# The field of a gate's status that shows it took a push of each kind.
STATUS_FIELD = {"tariff": "tv", "members": "mv", "open": "cv", "setclock": "cv"}


@dataclass
class Push:
    """The signed envelopes of one push of kind to gate, in order (a
    member list's parts), and the version they carry. form: what was sent
    ("table", "whole", "delta from N", "command"); base: the version a
    member delta applies to (None: not a delta)."""
    gate: str
    kind: str
    version: int
    envelopes: list
    form: str = "table"
    base: int = None


def tariff_push(config, gate, text):
    """A tariff table (JSON text) for gate; TariffError if it is no table."""
    envelope = downlink.tariff_envelope(config.gate_key(gate), gate, text)
    return Push(gate, "tariff", envelope["v"], [envelope])


def members_data(doc):
    """The gate's binary member list of a members.json document, checked
    (field.validate.Refused says what is wrong)."""
    check_members(doc)
    return members_file(doc)


def member_changes(old, new):
    """The changes (member_lists.make_delta) turning members.json document
    old into new: removals, then members added or changed."""
    def by_plate(doc):
        return {m["plate"]: m for m in doc["members"]}
    before, after = by_plate(old), by_plate(new)
    changes = [{"plate": plate, "remove": True} for plate in before if plate not in after]
    for plate, member in after.items():
        if before.get(plate) != member:
            changes.append({"plate": plate, "from": member.get("from"),
                            "until": member["until"], "window": member.get("window"),
                            "blacklist": member.get("blacklist", False)})
    return changes


def members_push(config, gate, doc, base_doc=None):
    """A member list for gate in parts: the whole of members.json document
    doc, or (base_doc given) the delta from base_doc to doc."""
    base = None
    if base_doc is None:
        data, form = members_data(doc), "whole"
    else:
        if base_doc["version"] >= doc["version"]:
            raise ValueError("the delta's base is version %d, not older than %d" % (
                base_doc["version"], doc["version"]))
        data = member_lists.make_delta(members_data(base_doc), member_changes(base_doc, doc),
                                       doc["version"])
        base = base_doc["version"]
        form = "delta from %d" % base
    parts = downlink.members_parts(config.gate_key(gate), gate, data)
    return Push(gate, "members", doc["version"], parts, form, base)


def member_pushes(config, gates, doc, base_doc, status_of):
    """members_push for each gate: the delta from base_doc to a gate whose
    status (status_of(gate)) shows base_doc's version, the whole list to
    any other (base_doc None: to all)."""
    made = []
    for gate in gates:
        at_base = base_doc is not None and status_of(gate).get("mv") == base_doc["version"]
        made.append(members_push(config, gate, doc, base_doc if at_base else None))
    return made


def command_push(config, gate, kind, version, expiry=0):
    """A signed command (kind "open" or "setclock") with its version."""
    envelope = signing.sign(config.gate_key(gate), kind, gate, version, "{}", expiry=expiry)
    return Push(gate, kind, version, [envelope], "command")


class GateWatch:
    """A paho session of the lot server's user role (a lot.config role,
    e.g. "_ops") on the lot's broker: it hears every gate's retained status
    and refusals, numbered in arrival order (serial), and publishes pushes.
    It reconnects by itself; on_status(gate, status) is called on the
    network thread for each status heard (do not block in it)."""

    def __init__(self, config, role, on_status=None):
        self.config = config
        self.prefix = "pg/%s/" % config.lot
        self.user, password = config.mqtt_login(role)
        self.on_status = on_status
        self.serial = 0
        self.statuses = {}          # gate -> (serial, status dict)
        self.refusals = []          # (serial, gate, refusal dict)
        self.error = None           # why the broker refused us, if it did
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.user)
        client.username_pw_set(self.user, password)
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_subscribe = lambda c, u, mid, codes, p: self._subscribed.set()
        client.on_disconnect = lambda c, u, f, code, p: self._subscribed.clear()
        client.on_message = self._on_message
        self.client = client

    def start(self):
        """Connect in the background (reconnecting until stop())."""
        broker = self.config.broker
        self.client.connect_async(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        return self

    def wait_subscribed(self, timeout=CONNECT_TIMEOUT_S):
        """Wait until subscribed, then a moment for the retained statuses.
        ConnectionError naming the broker and user if not within timeout."""
        if not self._subscribed.wait(timeout):
            broker = self.config.broker
            raise ConnectionError("broker %s:%d: not connected as %s within %g s%s" % (
                broker.host, broker.port, self.user, timeout,
                ": %s" % self.error if self.error else ""))
        time.sleep(RETAINED_WAIT_S)

    @property
    def connected(self):
        """True while connected and subscribed."""
        return self._subscribed.is_set()

    def stop(self):
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self.error = str(reason_code)
            log.warning("broker refused %s: %s", self.user, reason_code)
            return
        self.error = None
        client.subscribe([(self.prefix + "+/status", 1), (self.prefix + "+/up/refused", 1)])

    def _on_message(self, client, userdata, message):
        levels = message.topic.split("/")
        try:
            payload = json.loads(message.payload) if message.payload else {}
        except ValueError:
            return
        if not isinstance(payload, dict) or len(levels) < 4:
            return
        gate = levels[2]
        with self._cond:
            self.serial += 1
            if levels[3] == "status":
                self.statuses[gate] = (self.serial, payload)
            else:
                self.refusals.append((self.serial, gate, payload))
                del self.refusals[:-1000]
            self._cond.notify_all()
        if levels[3] == "status" and self.on_status is not None:
            self.on_status(gate, payload)

    def status(self, gate):
        """gate's last status heard (a dict, {} if none)."""
        with self._cond:
            return self.statuses.get(gate, (0, {}))[1]

    def publish(self, push):
        """Publish push's envelopes in order on its gate's down/<kind>, each
        waited for (QoS 1); returns the serial before the first, from which
        on answers count (outcome)."""
        with self._cond:
            since = self.serial
        for envelope in push.envelopes:
            info = downlink.publish(self.client, self.config.lot, push.gate, push.kind, envelope)
            info.wait_for_publish(PUBLISH_TIMEOUT_S)
        return since

    def wait(self, pending, timeout):
        """Wait up to timeout s for an outcome of every (push, since, before)
        in pending (before: the gate's status before the push); returns
        [(push, outcome)] in the same order (outcome() for the text)."""
        deadline = time.monotonic() + timeout
        decided = {}     # index -> outcome: once decided, it stays
        with self._cond:
            while True:
                for i, (push, since, before) in enumerate(pending):
                    if i not in decided:
                        found = outcome(push, since, before, self.statuses.get(push.gate),
                                        self.refusals)
                        if found[0] != "waiting":
                            decided[i] = found
                left = deadline - time.monotonic()
                if len(decided) == len(pending) or left <= 0:
                    return [(push, decided.get(i) or outcome(
                        push, since, before, self.statuses.get(push.gate), self.refusals))
                            for i, (push, since, before) in enumerate(pending)]
                self._cond.wait(min(left, 0.5))


def outcome(push, since, before, status, refusals):
    """("accepted" | "refused" | "waiting", detail) of a push published
    when the serial was since: accepted if a status heard since shows its
    version (tv, mv or cv) and the status before it did not (a gate that
    had it already refuses it as stale); else refused if its gate said so
    on up/refused since (same kind and version). Acceptance first: a copy
    sent again meanwhile (the push keeper) is refused as stale after the
    gate took the first."""
    field = STATUS_FIELD[push.kind]
    had = before.get(field)
    if status is not None and status[0] > since:
        shown = status[1].get(field)
        if isinstance(shown, int) and shown >= push.version and not (
                isinstance(had, int) and had >= push.version):
            return "accepted", "%s=%d" % (field, shown)
    for serial, gate, refusal in refusals:
        if serial > since and gate == push.gate and refusal.get("k") == push.kind and \
                refusal.get("v") == push.version:
            return "refused", str(refusal.get("why"))
    return "waiting", "offline" if status is None or status[1].get("on") != 1 else "online"


def publish_and_wait(watch, state, made, wait_s):
    """Publish each Push of made on watch (a started, subscribed
    GateWatch), keep it in state, and wait up to wait_s for every
    gate's answer: [(push, (result, detail))], result "accepted",
    "refused" or "waiting" (outcome)."""
    pending = []
    for push in made:
        before = watch.status(push.gate)
        pending.append((push, watch.publish(push), before))
        state.record(push.gate, push.kind, push.version, push.envelopes,
                     **({"base": push.base} if push.kind == "members" else {}))
    return watch.wait(pending, wait_s)
