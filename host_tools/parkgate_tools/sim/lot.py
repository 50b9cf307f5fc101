"""A simulated car park for tests and benchmarks: a real mosquitto on a free
port, the lot bridge on SQLite, and simulated gates (the gate's own image)
sharing the lot's clock."""
import os

from parkgate_tools.lot.bridge import Bridge
from parkgate_tools.sim.broker import Broker
from parkgate_tools.sim.gate import DEFAULT_TARIFF, SimClock, SimGate
from parkgate_tools.sim.waiting import wait_until

START = 1795564800   # 2026-11-25 08:00 UTC+8


class SimLot:
    """Broker, bridge and gates in workdir; stop() (or leaving a with block)
    stops everything that was started.

    rate: simulated seconds per host second of the lot's clock. site: what
    every gate's site.json gets besides lot, gate, direction and broker.
    bridge=False: a lot whose server is not there (the broker only)."""

    def __init__(self, workdir, lot="t", rate=1, start=START, tariff=DEFAULT_TARIFF,
                 site=None, bridge=True):
        self.workdir = workdir
        self.lot = lot
        self.db = os.path.join(workdir, "lot.sqlite")
        self.site = {"backoff_max_ms": 1000} if site is None else dict(site)
        self.gates = []
        self.bridge = None
        self.clock = SimClock(start, rate)
        self.broker = Broker(os.path.join(workdir, "broker"))
        self.broker.start()
        if not bridge:
            return
        try:
            self.bridge = Bridge(lot, self.broker.host, self.broker.port, self.db, tariff,
                                 clock=self.clock.now)
            self.bridge.start()
        except Exception:
            self.stop()
            raise

    def gate(self, name, direction, site_extra=None, board_env=None, extra_files=None,
             clock="lot", boot=True, **options):
        """Provision and boot a gate (boot=False: provisioned only; its
        start() boots it); clock None: a gate with no clock set."""
        site = dict(self.site)
        site.update(site_extra or {})
        gate = SimGate(self.workdir, name, self.lot, direction, self.broker.port,
                       self.clock if clock == "lot" else clock, site_extra=site,
                       board_env=board_env, **options)
        self.gates.append(gate)
        gate.provision(extra_files)
        return gate.start() if boot else gate

    def journals(self, gate):
        """The bridge's summary of each journal of gate (one per flash the
        gate has had), oldest first."""
        return [j for j in self.bridge.store.summary()["journals"] if j["gate"] == gate]

    def stored(self, gate):
        """How many events of gate the bridge has stored."""
        journals = self.journals(gate)
        return journals[0]["count"] if journals else 0

    def wait_stored(self, gate, count, timeout=20):
        """Wait until gate's newest journal holds count events; returns
        journals(gate). AssertionError with what is stored after timeout."""
        def done():
            journals = self.journals(gate)
            return journals if journals and journals[-1]["count"] >= count else None
        try:
            return wait_until(done, timeout)
        except TimeoutError:
            raise AssertionError("%s: %r stored, wanted %d" % (
                gate, self.journals(gate), count)) from None

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
