"""Benchmark: how fast a gate drains its backlog after an outage.

A simulated gate boots with N entry events journaled while it was offline
(written into its flash image beforehand by the firmware's own Journal on
CPython), connects to a real mosquitto and lot bridge, and sends them in
batches, each acknowledged by the bridge after its SQLite commit. The
baseline, in the same run, is the same gate sending one event per publish
and waiting for that event's acknowledgement before the next (what a QoS 1
publish per event amounts to, with the commit in the loop). Rates come from
the gate's own log: from "LINK up" to the acknowledgement of the last event.
"""
import os
import re
import sys
import tempfile

from parkgate import journal, record
from parkgate_tools import runtime
from parkgate_tools.lot.bridge import Bridge
from parkgate_tools.sim.broker import Broker
from parkgate_tools.sim.gate import DEFAULT_TARIFF, SimClock, SimGate

EVENTS = 10000
BASELINE_EVENTS = 2000
LOT = "bench"
START = 1795564800


def prefill(gate, count):
    """Journal count entries on the gate's flash image, as if taken offline."""
    sys.path.insert(0, os.path.join(runtime.BOARDS, "unix-sim"))
    import flashdev
    device = flashdev.FlashDevice(os.path.join(gate.dir, "flash.img"), 4096, 512)
    region = flashdev.Partition(device, 320, 512 - 320)
    log = journal.Journal(region)
    log.mount()
    for i in range(count):
        event = record.Event(record.KIND_ENTRY, START + i, 6, "粤B%05d" % i, 0, 95)
        log.append(record.KIND_ENTRY, record.encode_body(event))
    device.close()


def drain(workdir, name, count, site_extra):
    """Seconds from connecting to the last acknowledgement, for count events."""
    broker = Broker(os.path.join(workdir, name + "-broker"))
    broker.start()
    bridge = Bridge(LOT, broker.host, broker.port, os.path.join(workdir, name + ".sqlite"),
                    DEFAULT_TARIFF)
    bridge.start()
    bridge.wait_live()
    gate = SimGate(workdir, name, LOT, "in", broker.port, SimClock(START, 1),
                   site_extra=site_extra)
    gate.provision()
    prefill(gate, count)
    try:
        gate.start()
        gate.wait_line(r"ACK upto=%d$" % count, 600)
        lines = gate.lines()
    finally:
        gate.stop()
        bridge.stop()
        broker.stop()
    up = next(int(l.split()[0]) for l in lines if " LINK up" in l)
    done = next(int(l.split()[0]) for l in lines if re.search(r"ACK upto=%d$" % count, l))
    return (done - up) / 1000.0


def main():
    with tempfile.TemporaryDirectory() as workdir:
        batched = drain(workdir, "batched", EVENTS, {})
        single = drain(workdir, "single", BASELINE_EVENTS,
                       {"uplink_batch": 1, "uplink_window": 1})
    rate = EVENTS / batched
    base_rate = BASELINE_EVENTS / single
    print("backlog drain, %d events queued offline: %.2f s, %.0f events/s" % (
        EVENTS, batched, rate))
    print("baseline, one event per publish acknowledged before the next (%d events): "
          "%.2f s, %.0f events/s" % (BASELINE_EVENTS, single, base_rate))
    print("ratio: %.1fx (target >= 10x; drain target < 30 s)" % (rate / base_rate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
