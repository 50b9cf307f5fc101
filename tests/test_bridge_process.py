"""The lot bridge as a process and on the wire, against a real mosquitto:
the `parkgate bridge` command (runs until SIGTERM, refuses a bad broker
address, gives up naming the lock on a SQLite file locked past
--lock-wait), the lot server's presence (retained, with a last will, put
back by a live worker), a gate named like the server refused, and the size
cap at mosquitto and at the bridge. Tests that store run on SQLite and on
PostgreSQL (fixture db_path, from conftest)."""
import glob
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import uuid

import paho.mqtt.client as mqtt

from fixtures_mqtt import LOT, TARIFF, WAIT_S, FakeGate, entry, wait_for
from parkgate_tools.bench.bridge import Worker
from parkgate_tools.lot import downlink
from parkgate_tools.lot.bridge import Bridge
from parkgate_tools.sim.broker import MAX_MESSAGE_BYTES, Broker
from test_bridge import PLATE_A, T0, batch, stored_rows


# `parkgate bridge ...` with only this subcommand registered, as cli.main does.
BRIDGE_COMMAND = [sys.executable, "-c", (
    "import argparse, sys\n"
    "from parkgate_tools.lot import cli as bridge_cli\n"
    "parser = argparse.ArgumentParser(prog='parkgate')\n"
    "bridge_cli.add_parser(parser.add_subparsers(required=True))\n"
    "args = parser.parse_args()\n"
    "sys.exit(args.run(args))\n"), "bridge"]


def test_bridge_command_runs_until_sigterm(broker, gates, db_path):
    proc = subprocess.Popen(
        BRIDGE_COMMAND + ["--lot", LOT, "--broker", "%s:%d" % (broker.host, broker.port),
                          "--db", db_path, "--tariff", TARIFF],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        gate = gates("in-1")
        ack = gate.send_until_answered("up/events", batch("in-1", 1, [entry(1, PLATE_A, T0)]),
                                       "down/ack")
        assert ack == b'{"j":1,"f":1,"l":1}'
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "connected to" in err


def test_bridge_command_rejects_a_bad_broker_address(db_path):
    proc = subprocess.run(
        BRIDGE_COMMAND + ["--lot", LOT, "--broker", "nowhere", "--db", db_path, "--tariff", TARIFF],
        capture_output=True, text=True, timeout=WAIT_S)
    assert proc.returncode == 2 and "expected HOST:PORT" in proc.stderr
    assert not os.path.exists(db_path)


def test_bridge_command_exits_naming_a_lock_held_past_lock_wait(tmp_path):
    db = str(tmp_path / "lot.sqlite")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")
    try:
        proc = subprocess.run(
            BRIDGE_COMMAND + ["--lot", LOT, "--broker", "127.0.0.1:1", "--db", db,
                              "--tariff", TARIFF, "--lock-wait", "1.5"],
            capture_output=True, text=True, timeout=WAIT_S)
    finally:
        holder.rollback()
        holder.close()
    assert proc.returncode == 2, proc.stderr
    assert "attempt 1, retrying" in proc.stderr
    assert ("cannot start: SQLite database %s is locked by another connection (creating the "
            "schema)" % db) in proc.stderr


# ---- the lot server's presence: pg/<lot>/server/status ----

PRESENCE = "pg/%s/server/status" % LOT


class Watcher:
    """A paho client subscribed to one topic, keeping (payload, retained)."""

    def __init__(self, broker, topic):
        self.messages = []
        self._cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id="watch-" + uuid.uuid4().hex[:8])
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, 1)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message):
        with self._cond:
            self.messages.append((message.payload, bool(message.retain)))
            self._cond.notify_all()

    def wait(self, predicate, what):
        with self._cond:
            assert self._cond.wait_for(lambda: predicate(self.messages), WAIT_S), (
                "%s: got %r" % (what, self.messages))
            return list(self.messages)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def retained_presence(broker):
    """What a gate connecting now gets on the presence topic (retained);
    None if the first message it got was a live publish that raced its
    subscription (the caller waits and asks again)."""
    watcher = Watcher(broker, PRESENCE)
    try:
        payload, retained = watcher.wait(len, "a retained presence")[0]
        return payload if retained else None
    finally:
        watcher.close()


def test_presence_is_retained_online_and_offline_after_a_clean_stop(broker, make_bridge):
    live = make_bridge(clock=lambda: T0)
    wait_for(lambda: retained_presence(broker) == b'{"on":1,"t":%d}' % T0,
             what="the retained presence online")
    assert "server" not in live.store.statuses()      # not kept as a gate
    assert live.refused == 0
    watcher = Watcher(broker, PRESENCE)
    watcher.wait(len, "the retained presence")
    live.stop()
    watcher.wait(lambda got: got[-1] == (b'{"on":0}', False), "offline published by the stop")
    watcher.close()
    assert retained_presence(broker) == b'{"on":0}'


def test_presence_goes_offline_by_the_last_will_when_the_bridge_is_killed(broker, tmp_path):
    worker = Worker(LOT, broker, str(tmp_path / "lot.sqlite"), 0)
    try:
        wait_for(lambda: worker.live() or worker.proc.poll() is not None, what="live")
        assert worker.live(), "".join(worker.lines)
        wait_for(lambda: json.loads(retained_presence(broker) or b"{}").get("on") == 1,
                 what="the presence online")
        watcher = Watcher(broker, PRESENCE)
        watcher.wait(len, "the retained presence")
        worker.proc.kill()
        worker.proc.wait()
        watcher.wait(lambda got: got[-1] == (b'{"on":0}', False), "the last will")
        watcher.close()
        assert retained_presence(broker) == b'{"on":0}'
    finally:
        worker.stop()


def test_a_live_worker_puts_presence_back_after_another_workers_will(broker, db_path, tmp_path):
    """Workers sharing a lot: one killed leaves its will (offline); the one
    still live says online again."""
    if db_path.startswith("postgresql://"):
        other_db = db_path
    else:
        other_db = str(tmp_path / "other.sqlite")   # the presence does not need one file
    first = Bridge(LOT, broker.host, broker.port, db_path, TARIFF, share_group="workers",
                   client_id="parkgate-bridge-%s-0" % LOT)
    second = Worker(LOT, broker, other_db, 1, share="workers",
                    client_id="parkgate-bridge-%s-1" % LOT)
    watcher = None
    try:
        first.start()
        assert first.wait_live(WAIT_S)
        wait_for(lambda: second.live() or second.proc.poll() is not None, what="worker live")
        assert second.live(), "".join(second.lines)
        watcher = Watcher(broker, PRESENCE)
        watcher.wait(len, "the retained presence")
        second.proc.kill()
        second.proc.wait()
        got = watcher.wait(lambda got: json.loads(got[-1][0])["on"] == 1
                           and (b'{"on":0}', False) in got, "offline, then online again")
        assert json.loads(got[-1][0])["on"] == 1
        assert json.loads(retained_presence(broker))["on"] == 1
    finally:
        if watcher is not None:
            watcher.close()
        second.stop()
        first.stop()


def test_a_gate_named_server_is_refused(bridge, gates, db_path):
    impostor = gates("server")
    impostor.publish("up/events", batch("server", 1, [entry(1, PLATE_A, T0)]))
    wait_for(lambda: bridge.refused == 1, what="the refusal")
    assert stored_rows(db_path) == []


# ---- one size cap: mosquitto's message_size_limit and the bridge ----

def padded_batch(gate, jid, seq, size):
    """A valid batch of one entry, padded with spaces to exactly size bytes."""
    payload = json.dumps(batch(gate, jid, [entry(seq, PLATE_A, T0 + seq)])).encode()
    assert len(payload) <= size
    return payload[:-1] + b" " * (size - len(payload)) + b"}"


def test_the_broker_drops_a_payload_over_the_cap(broker, bridge, gates, db_path):
    assert "message_size_limit %d\n" % MAX_MESSAGE_BYTES in open(broker.conf_path).read()
    gate = gates("in-1")
    gate.publish("up/events", padded_batch("in-1", 1, 1, MAX_MESSAGE_BYTES + 1))
    gate.publish("up/events", padded_batch("in-1", 1, 2, MAX_MESSAGE_BYTES))   # at the cap
    assert gate.expect("down/ack") == [b'{"j":1,"f":2,"l":2}']
    assert [row[2] for row in stored_rows(db_path)] == [2]
    assert bridge.refused == bridge.oversize == 0      # the bridge never saw it


def test_the_bridge_refuses_a_payload_over_the_cap_before_parsing_it(tmp_path, db_path, caplog):
    caplog.set_level(logging.WARNING, logger="parkgate.bridge")
    with Broker(str(tmp_path / "broker"), message_size_limit=4 * MAX_MESSAGE_BYTES) as roomy:
        bridge = Bridge(LOT, roomy.host, roomy.port, db_path, TARIFF)
        gate = None
        try:
            bridge.start()
            assert bridge.wait_live(WAIT_S)
            gate = FakeGate(roomy, LOT, "in-1")
            gate.publish("up/events", padded_batch("in-1", 1, 1, MAX_MESSAGE_BYTES + 1))
            gate.publish("up/fee", b'{"r": 1, "p": "' + b"x" * MAX_MESSAGE_BYTES + b'"}')
            gate.publish("up/events", padded_batch("in-1", 1, 2, MAX_MESSAGE_BYTES))
            assert gate.expect("down/ack") == [b'{"j":1,"f":2,"l":2}']
            assert gate.received("down/fee") == []
            assert bridge.oversize == bridge.refused == 2
            assert "refused pg/%s/in-1/up/events: %d bytes, more than %d" % (
                LOT, MAX_MESSAGE_BYTES + 1, MAX_MESSAGE_BYTES) in caplog.text
            assert [row[2] for row in stored_rows(db_path)] == [2]
        finally:
            if gate is not None:
                gate.close()
            bridge.stop()


def test_every_shipped_tariff_fits_the_cap_signed():
    for path in glob.glob(os.path.join(os.path.dirname(TARIFF), "*.json")):
        with open(path, encoding="utf-8") as f:
            envelope = downlink.tariff_envelope(bytes(32), "gate-with-a-long-id", f.read())
        payload = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
        assert len(payload) <= MAX_MESSAGE_BYTES, path
