"""A simulated car park for tests and benchmarks: a real mosquitto on a free
port, the lot bridge on SQLite, and simulated gates (the gate's own image)
sharing the lot's clock."""
import os

from parkgate_tools.lot.bridge import Bridge
from parkgate_tools.sim.broker import Broker
from parkgate_tools.sim.gate import DEFAULT_TARIFF, SimClock, SimGate

START = 1795564800   # 2026-11-25 08:00 UTC+8


class SimLot:
    """Broker, bridge and gates in workdir; stop() (or leaving a with block)
    stops everything that was started.

    rate: simulated seconds per host second of the lot's clock. site: what
    every gate's site.json gets besides lot, gate, direction and broker."""

    def __init__(self, workdir, lot="t", rate=1, start=START, tariff=DEFAULT_TARIFF,
                 site=None):
        self.workdir = workdir
        self.lot = lot
        self.db = os.path.join(workdir, "lot.sqlite")
        self.site = {"backoff_max_ms": 1000} if site is None else dict(site)
        self.gates = []
        self.bridge = None
        self.clock = SimClock(start, rate)
        self.broker = Broker(os.path.join(workdir, "broker"))
        self.broker.start()
        try:
            self.bridge = Bridge(lot, self.broker.host, self.broker.port, self.db, tariff,
                                 clock=self.clock.now)
            self.bridge.start()
        except Exception:
            self.stop()
            raise

    def gate(self, name, direction, site_extra=None, board_env=None, extra_files=None,
             clock="lot", **options):
        """Provision and boot a gate; clock None: a gate with no clock set."""
        site = dict(self.site)
        site.update(site_extra or {})
        gate = SimGate(self.workdir, name, self.lot, direction, self.broker.port,
                       self.clock if clock == "lot" else clock, site_extra=site,
                       board_env=board_env, **options)
        self.gates.append(gate)
        gate.provision(extra_files)
        return gate.start()

    def stored(self, gate):
        """How many events of gate the bridge has stored."""
        for journal in self.bridge.store.summary()["journals"]:
            if journal["gate"] == gate:
                return journal["count"]
        return 0

    def stop(self):
        for gate in self.gates:
            gate.stop()
        if self.bridge is not None:
            self.bridge.stop()
        self.broker.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
