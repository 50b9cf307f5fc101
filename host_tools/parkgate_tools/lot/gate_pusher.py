"""The operator page's pusher (OperatorPage's pusher(kind, payload, who)):
a tariff pushed to every gate of the lot, or a remote open of one gate,
signed with each gate's key and published as the lot's user _ops, as
`parkgate lot push-tariff` and `parkgate lot open` do (lot/push_cli.py),
then each gate's answer waited for. Each push is kept in
state/pushes/<gate>/<kind>.json (lot/push_state.py), so that the push
keeper of `parkgate lot run` sends a tariff again to a gate that was
offline. Who pushed is the page's to record (its audit log)."""
import logging
import time

from parkgate import tariff
from parkgate_tools.lot import pushes
from parkgate_tools.lot.push_state import PushState
from parkgate_tools.lot.security import OPS_ROLE

log = logging.getLogger("parkgate.pushes")

ANSWER_WAIT_S = 10.0     # for the gates' answers (the page waits: shorter than the CLI's 30 s)
OPEN_WITHIN_S = 30       # a remote open expires unless carried out within this


class GatePusher:
    """pusher(kind, payload, who) for a LotConfig: kind "tariff" (payload:
    the table's JSON text) to every gate, or "open" (payload {"gate": id}).
    Returns {gate: "accepted: ..." | "refused: ..." | "no answer: ..."}.
    ValueError for a table that is no table or a gate the lot has not;
    ConnectionError if the broker does not take the _ops user."""

    def __init__(self, config, wait_s=ANSWER_WAIT_S, open_within_s=OPEN_WITHIN_S):
        self.config, self.wait_s, self.open_within_s = config, wait_s, open_within_s

    def _pushes(self, kind, payload, state):
        config = self.config
        if kind == "tariff":
            tariff.loads(payload)                     # TariffError (a ValueError) first
            return [pushes.tariff_push(config, gate.id, payload) for gate in config.gates]
        if kind == "open":
            gate = config.gate(payload["gate"]).id    # ConfigError (a ValueError)
            return [pushes.command_push(config, gate, "open", state.next_command(gate),
                                        expiry=int(time.time()) + self.open_within_s)]
        raise ValueError("push: %r is neither a tariff nor an open" % (kind,))

    def __call__(self, kind, payload, who):
        state = PushState(self.config)
        made = self._pushes(kind, payload, state)
        log.info("%s: %s to %s", who, kind, ", ".join(push.gate for push in made))
        watch = pushes.GateWatch(self.config, OPS_ROLE).start()
        try:
            watch.wait_subscribed()
            results = pushes.publish_and_wait(watch, state, made, self.wait_s)
        finally:
            watch.stop()
        answers = {}
        for push, (result, detail) in results:
            if result == "waiting":
                result, detail = "no answer", "in %g s (gate %s)" % (self.wait_s, detail)
            answers[push.gate] = "%s: v%d %s" % (result, push.version, detail)
        return answers
