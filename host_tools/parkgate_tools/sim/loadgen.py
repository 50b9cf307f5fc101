"""Load generator: hundreds of simulated gates speaking the gate's MQTT
protocol to a lot bridge through a real broker.

Each simulated gate has its own MQTT client (client id ``pg-<lot>-<gate>``,
optional per-gate credentials), a journal id and a journal of events
encoded with ``parkgate.record.to_wire``, and sends them as the firmware's
uplink does (firmware/parkgate/uplink.py): batches of up to 16 events and
1,024 bytes, oldest unacknowledged first, one batch in flight, QoS 0; it waits for the
bridge's ack on ``down/ack`` and retransmits after ack_timeout, doubling up
to ack_timeout_max while nothing is acknowledged. All clients are driven by
one thread with select(), so hundreds cost little.

For the machine's own loopback only: it refuses any other broker address.

    python -m parkgate_tools.sim.loadgen --broker 127.0.0.1:1883 --lot L --gates 200 --events 100
"""
import argparse
import ipaddress
import json
import select
import sys
import threading
import time
import zlib

import paho.mqtt.client as mqtt

from parkgate import record

BATCH = 16
PAYLOAD_MAX = 1024   # bytes of one batch message, as the gate's uplink buffer
START_TIME = 1795564800   # 2026-11-25 08:00 UTC+8
_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"


def check_loopback(host):
    """ValueError unless host is this machine's loopback."""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError("loadgen sends load to loopback addresses only, not %r" % host)


class SimulatedGate:
    """The uplink state of one simulated gate; events are made on demand."""

    def __init__(self, lot, name, index, direction, batch=BATCH, ack_timeout=3.0,
                 ack_timeout_max=30.0):
        self.lot = lot
        self.name = name
        self.index = index
        self.direction = direction
        self.jid = zlib.crc32(("%s/%s" % (lot, name)).encode()) or 1
        self.prefix = "pg/%s/%s/" % (lot, name)
        self.batch = batch
        self.ack_timeout_min = self.ack_timeout = ack_timeout
        self.ack_timeout_max = ack_timeout_max
        self.journaled = 0      # highest seq journaled
        self.acked = 0          # highest seq acknowledged
        self.in_flight = None   # (first, last, sent at)
        self.batches_sent = 0
        self.retransmits = 0
        self.client = None
        self.connected = False

    def event(self, seq):
        """The record.Event with sequence number seq (deterministic)."""
        t = START_TIME + seq * 7 + self.index
        plate = "粤%s%05d" % (_LETTERS[self.index % len(_LETTERS)], (self.index * 7919 + seq)
                              % 100000)
        if self.direction == "in":
            return record.Event(record.KIND_ENTRY, t, 5, plate, 0, 95, seq=seq)
        return record.Event(record.KIND_EXIT, t, 5, plate, 0, 95, 0, 100 * (seq % 21),
                            record.FEE_ONLINE if seq % 3 else record.FEE_OFFLINE, 1, t - 3600,
                            seq=seq)

    def payload(self, first, last):
        """(message, last seq in it): the batch of seqs first..last, as many as
        fit in PAYLOAD_MAX bytes (at least one), as the gate's uplink sends it."""
        head = '{"g":%s,"j":%d,"e":[' % (json.dumps(self.name), self.jid)
        items = []
        size = len(head) + 2
        for seq in range(first, last + 1):
            item = json.dumps(record.to_wire(self.event(seq)), separators=(",", ":"),
                              ensure_ascii=False)
            grown = size + len(item.encode()) + (1 if items else 0)
            if items and grown > PAYLOAD_MAX:
                break
            items.append(item)
            size = grown
        return head + ",".join(items) + "]}", first + len(items) - 1

    def service(self, now):
        """Send the next batch, or retransmit one whose ack timed out; True if sent."""
        if not self.connected:
            return False
        if self.in_flight is not None:
            if now - self.in_flight[2] < self.ack_timeout:
                return False
            self.retransmits += 1
            self.ack_timeout = min(self.ack_timeout * 2, self.ack_timeout_max)
        if self.acked >= self.journaled:
            self.in_flight = None
            return False
        first = self.acked + 1
        message, last = self.payload(first, min(self.acked + self.batch, self.journaled))
        self.client.publish(self.prefix + "up/events", message, qos=0)
        self.in_flight = (first, last, now)
        self.batches_sent += 1
        return True

    def on_ack(self, message):
        """An ack {"j", "f", "l"}: advance as the gate's uplink does."""
        first, last = message.get("f"), message.get("l")
        if message.get("j") != self.jid or type(first) is not int or type(last) is not int:
            return
        if not first <= self.acked + 1 <= last or last > self.journaled:
            return
        self.acked = last
        self.ack_timeout = self.ack_timeout_min
        if self.in_flight is not None and last >= self.in_flight[1]:
            self.in_flight = None


class LoadGen:
    """gates simulated gates (half entry, half exit lanes, named
    ``<prefix>-in-NNN`` / ``<prefix>-out-NNN``) each with events_per_gate
    events journaled at the start, as after an outage; rate: further events
    per second per gate while running. credentials: gate name -> (user,
    password). run() returns a report."""

    def __init__(self, host, port, lot, gates=200, events_per_gate=100, rate=0.0, prefix="lg",
                 credentials=None, batch=BATCH, ack_timeout=3.0, ack_timeout_max=30.0,
                 status=True):
        check_loopback(host)
        self.host, self.port, self.lot = host, port, lot
        self.rate = rate
        self.credentials = credentials
        self.status = status
        self.gates = []
        for i in range(gates):
            direction = "in" if i % 2 == 0 else "out"
            gate = SimulatedGate(lot, "%s-%s-%03d" % (prefix, direction, i // 2), i, direction,
                                 batch, ack_timeout, ack_timeout_max)
            gate.journaled = events_per_gate
            self.gates.append(gate)
        self._by_ack_topic = {g.prefix + "down/ack": g for g in self.gates}
        self._stop = threading.Event()

    @property
    def names(self):
        """The simulated gates' names."""
        return [g.name for g in self.gates]

    def _connect(self, gate):
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id="pg-%s-%s" % (self.lot, gate.name))
        if self.credentials is not None:
            client.username_pw_set(*self.credentials(gate.name))

        def on_connect(c, userdata, flags, reason_code, properties):
            if reason_code.is_failure:
                return
            c.subscribe(gate.prefix + "down/#", 0)
            if self.status:
                c.publish(gate.prefix + "status", json.dumps(
                    {"on": 1, "jid": gate.jid, "seq": gate.journaled + 1, "acked": gate.acked,
                     "backlog": gate.journaled - gate.acked, "heap": 40000, "clock": 5,
                     "tv": 1}), retain=True)

        def on_subscribe(c, userdata, mid, reason_codes, properties):
            gate.connected = True
            gate.in_flight = None

        def on_disconnect(c, userdata, flags, reason_code, properties):
            gate.connected = False

        def on_message(c, userdata, message):
            if message.topic.endswith("/down/ack"):
                try:
                    gate.on_ack(json.loads(message.payload))
                except ValueError:
                    pass
        client.on_connect, client.on_subscribe = on_connect, on_subscribe
        client.on_disconnect, client.on_message = on_disconnect, on_message
        client.will_set(gate.prefix + "status", '{"on":0}', retain=True)
        client.connect(self.host, self.port, keepalive=30)
        gate.client = client

    def run(self, timeout=120.0):
        """Connect every gate, send until every event is acknowledged (or
        timeout, or stop()), disconnect. Returns {"gates", "events", "acked",
        "elapsed_s", "events_per_s", "batches", "retransmits", "complete"}."""
        for gate in self.gates:
            self._connect(gate)
        t0 = time.monotonic()
        deadline = t0 + timeout
        last_misc = 0.0
        added = 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if self.rate:
                    due = (now - t0) * self.rate
                    if int(due) > int(added):
                        for gate in self.gates:
                            gate.journaled += int(due) - int(added)
                    added = due
                elif all(g.acked >= g.journaled for g in self.gates):
                    break
                if now > deadline:
                    break
                self._poll(0.005)
                if now - last_misc > 0.5:
                    for gate in self.gates:
                        gate.client.loop_misc()
                        if not gate.client.is_connected() and gate.client.socket() is None:
                            try:
                                gate.client.reconnect()
                            except OSError:
                                pass
                    last_misc = now
                for gate in self.gates:
                    gate.service(now)
        finally:
            elapsed = time.monotonic() - t0
            for gate in self.gates:
                gate.client.disconnect()
                self._poll(0)
        events = sum(g.journaled for g in self.gates)
        acked = sum(g.acked for g in self.gates)
        return {"gates": len(self.gates), "events": events, "acked": acked,
                "elapsed_s": elapsed, "events_per_s": acked / elapsed if elapsed else 0.0,
                "batches": sum(g.batches_sent for g in self.gates),
                "retransmits": sum(g.retransmits for g in self.gates),
                "complete": acked == events}

    def stop(self):
        """Make run() return soon (from another thread)."""
        self._stop.set()

    def _poll(self, timeout):
        sockets = {}
        writers = []
        for gate in self.gates:
            sock = gate.client.socket()
            if sock is not None:
                sockets[sock] = gate.client
                if gate.client.want_write():
                    writers.append(sock)
        if not sockets:
            time.sleep(timeout)
            return
        readable, writable, _ = select.select(list(sockets), writers, [], timeout)
        for sock in writable:
            sockets[sock].loop_write()
        for sock in readable:
            sockets[sock].loop_read(100)


def main(argv=None):
    """Command line: run a load and print its report as JSON."""
    parser = argparse.ArgumentParser(prog="python -m parkgate_tools.sim.loadgen",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default="127.0.0.1:1883", metavar="HOST:PORT")
    parser.add_argument("--lot", required=True)
    parser.add_argument("--gates", type=int, default=200)
    parser.add_argument("--events", type=int, default=100, help="journaled per gate at start")
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args(argv)
    host, _, port = args.broker.rpartition(":")
    report = LoadGen(host, int(port), args.lot, args.gates, args.events).run(args.timeout)
    print(json.dumps(report, indent=1))
    return 0 if report["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
