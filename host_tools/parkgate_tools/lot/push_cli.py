"""`parkgate lot push-tariff`, `push-members`, `open` and `set-clock`: sign
a push for each gate with its key, publish it as the lot's user _ops, wait
(at most --wait s) for each gate's answer and print one line per gate:
accepted (its status shows the version), refused (its reason from
up/refused) or no answer. The exit code is 0 if every gate accepted, 1 if any
refused or did not answer, 2 if nothing was sent (a bad file, no broker).
Each push is kept in state/pushes/<gate>/<kind>.json (lot/push_state.py);
a tariff or member list a gate did not take (offline) is sent again by the
push keeper of `parkgate lot run` when the gate reconnects."""
import sys
import time

from parkgate import tariff
from parkgate_tools.field.errors import FieldToolError
from parkgate_tools.field.validate import load_json
from parkgate_tools.lot import pushes
from parkgate_tools.lot.config import load
from parkgate_tools.lot.push_state import PushState
from parkgate_tools.lot.security import OPS_ROLE


def _gates(config, names):
    return [config.gate(name).id for name in names] if names else [g.id for g in config.gates]


def _run(args, what, make_pushes):
    """Connect as _ops, publish make_pushes(config, state, watch), wait and report."""
    config = load(args.dir)
    state = PushState(config)
    watch = pushes.GateWatch(config, OPS_ROLE).start()
    try:
        try:
            watch.wait_subscribed()
            made = make_pushes(config, state, watch)
        except (OSError, ValueError, FieldToolError) as exc:   # ConnectionError too
            print("parkgate lot %s: %s" % (what, exc), file=sys.stderr)
            return 2
        try:
            results = pushes.publish_and_wait(watch, state, made, args.wait)
        except (RuntimeError, ValueError) as exc:   # the broker went away meanwhile
            print("parkgate lot %s: not sent: %s" % (what, exc), file=sys.stderr)
            return 2
    finally:
        watch.stop()
    failed = 0
    for push, (result, detail) in results:
        if result == "waiting":
            result, detail = "no answer", "in %g s (gate %s)" % (args.wait, detail)
            if push.kind in ("tariff", "members"):
                detail += "; `parkgate lot run` sends it again when the gate reconnects"
        failed += result != "accepted"
        print("%s: %s v%d (%s) %s: %s" % (push.gate, push.kind, push.version, push.form,
                                        result, detail))
    return 1 if failed else 0


def push_tariff(args):
    """`parkgate lot push-tariff DIR FILE [--gate G ...]`."""
    def make(config, state, watch):
        with open(args.file, encoding="utf-8") as f:
            text = f.read()
        try:
            return [pushes.tariff_push(config, gate, text) for gate in _gates(config, args.gates)]
        except tariff.TariffError as exc:
            raise ValueError("%s: %s" % (args.file, exc)) from None
    return _run(args, "push-tariff", make)


def push_members(args):
    """`parkgate lot push-members DIR FILE [--delta-from OLD_FILE] [--gate G ...]`:
    a gate whose status shows OLD_FILE's version gets the delta, any other
    the whole list."""
    def make(config, state, watch):
        doc = load_json(args.file, "members")[1]
        pushes.members_data(doc)
        base = load_json(args.delta_from, "members")[1] if args.delta_from else None
        made = pushes.member_pushes(config, _gates(config, args.gates), doc, base,
                                    watch.status)
        state.keep_members(doc)
        return made
    return _run(args, "push-members", make)


def open_gate(args):
    """`parkgate lot open DIR GATE --within S`."""
    def make(config, state, watch):
        gate = config.gate(args.gate).id
        if args.within < 1:
            raise ValueError("--within: %d is not a number of seconds >= 1" % args.within)
        return [pushes.command_push(config, gate, "open", state.next_command(gate),
                                    expiry=int(time.time()) + args.within)]
    return _run(args, "open", make)


def set_clock(args):
    """`parkgate lot set-clock DIR [GATE ...]`: each gate asks the lot
    server for the time at once (its round-trip-checked clock ask)."""
    def make(config, state, watch):
        return [pushes.command_push(config, gate, "setclock", state.next_command(gate))
                for gate in _gates(config, args.gates)]
    return _run(args, "set-clock", make)
