"""The lot bridge against a real mosquitto and fake gates: exactly-once
storage, acks only after commit, refusal of bad input, fee answers, broker
crashes, the broker's backlog, the summary, the lot server's presence
(retained, with a last will), the size cap at mosquitto and at the bridge,
lane catch-up pages, and the `parkgate bridge` command (which gives up,
naming the lock, on a SQLite file locked past --lock-wait). Every test that
stores runs on SQLite and on PostgreSQL (fixture db_path)."""
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
import pytest

from fixtures_mqtt import (backend, broker, bridge, db_path, gates, make_bridge,  # noqa: F401
                           pg_server)
from fixtures_mqtt import (LOT, TARIFF, WAIT_S, FakeGate, entry, exit_, fetch_all, store_class,
                           wait_for)
from parkgate import record, tariff
from parkgate_tools.lot import downlink
from parkgate_tools.bench.bridge import Worker
from parkgate_tools.lot.bridge import CATCHUP_MAX_BYTES, Bridge, load_tariff
from parkgate_tools.sim.broker import MAX_MESSAGE_BYTES, Broker
from parkgate_tools.lot.store import CATCHUP_PAGE

T0 = 1795564800          # 2026-11-25 08:00 at UTC+8
PLATE_A = "京A12345"
PLATE_B = "沪B67890"
PLATE_C = "粤C24680"



def fee_answer(request, plate, fee, entry_time):
    """The exact bytes of a fee answer: compact JSON, the plate in UTF-8."""
    return ('{"r":%d,"p":"%s","fee":%d,"tv":1,"et":%s}' % (
        request, plate, fee, "null" if entry_time is None else entry_time)).encode()

def batch(gate, jid, events):
    return {"g": gate, "j": jid, "e": events}


def three_events():
    return [entry(1, PLATE_A, T0), entry(2, PLATE_B, T0 + 60),
            exit_(3, PLATE_A, T0 + 3600, 200, entry_time=T0)]


def stored_rows(db):
    return fetch_all(
        db, "SELECT gate, jid, seq, kind, time, quality, plate, colour, confidence, flags, fee,"
            " fee_source, tariff_version, entry_time FROM events ORDER BY gate, jid, seq")


def test_batch_is_stored_and_acked(bridge, gates, db_path):
    gate = gates("in-1")
    gate.publish("up/events", batch("in-1", 7, three_events()))
    assert gate.expect("down/ack") == [b'{"j":7,"f":1,"l":3}']
    assert stored_rows(db_path) == [
        ("in-1", 7, 1, "in", T0, 5, PLATE_A, 0, 90, 0, None, None, None, None),
        ("in-1", 7, 2, "in", T0 + 60, 5, PLATE_B, 0, 90, 0, None, None, None, None),
        ("in-1", 7, 3, "out", T0 + 3600, 5, PLATE_A, 0, 90, 0, 200, "on", 1, T0),
    ]


def test_batch_with_a_hole_is_acked_per_run(bridge, gates):
    gate = gates("in-1")
    gate.publish("up/events", batch("in-1", 7, [entry(1, PLATE_A, T0), entry(2, PLATE_B, T0),
                                                entry(4, PLATE_C, T0)]))
    assert gate.expect("down/ack", 2) == [b'{"j":7,"f":1,"l":2}', b'{"j":7,"f":4,"l":4}']


def test_retransmitted_batch_is_stored_once_and_acked_each_time(bridge, gates, db_path):
    gate = gates("in-1")
    for _ in range(3):
        gate.publish("up/events", batch("in-1", 7, three_events()))
    assert gate.expect("down/ack", 3) == [b'{"j":7,"f":1,"l":3}'] * 3
    assert len(stored_rows(db_path)) == 3
    assert bridge.store.summary()["rows"] == 3


def failing_commit_store(db):
    """A Store (or PgStore) whose next `fail` commits raise, as a full disk would."""
    class FailingCommitStore(store_class(db)):
        fail = 0

        def _commit(self):
            if self.fail:
                self.fail -= 1
                raise OSError("disk I/O error (injected)")
            super()._commit()
    return FailingCommitStore(db, LOT)


def test_no_ack_before_commit(make_bridge, gates, db_path, caplog):
    caplog.set_level(logging.ERROR, logger="parkgate.bridge")
    store = failing_commit_store(db_path)
    store.fail = 1
    bridge = make_bridge(store=store)
    gate = gates("in-1")
    gate.publish("up/events", batch("in-1", 7, three_events()))
    # The bridge handles messages in order: once the fee answer that follows
    # is here, any ack for the failed batch would be here too.
    gate.publish("up/fee", {"r": 1, "p": PLATE_C, "c": 0, "t": T0, "et": None})
    gate.expect("down/fee")
    assert gate.received("down/ack") == []
    assert stored_rows(db_path) == []
    assert bridge.failed == 1
    assert "not acknowledged" in caplog.text and "disk I/O error (injected)" in caplog.text
    gate.publish("up/events", batch("in-1", 7, three_events()))
    assert gate.expect("down/ack") == [b'{"j":7,"f":1,"l":3}']
    assert len(stored_rows(db_path)) == 3


def test_malformed_input_is_refused_and_the_bridge_carries_on(bridge, gates, db_path, caplog):
    caplog.set_level(logging.WARNING, logger="parkgate.bridge")
    gate = gates("in-1")
    bad_event = dict(entry(2, PLATE_B, T0), k="sideways")
    refused = [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps(batch("in-2", 7, three_events())).encode(), "g: 'in-2' is not the topic's"),
        (json.dumps(batch("in-1", "7", three_events())).encode(), "j: '7' is not an integer"),
        (json.dumps(batch("in-1", 7, [])).encode(), "e: not a non-empty list"),
        (json.dumps(batch("in-1", 7, [entry(1, PLATE_A, T0), bad_event])).encode(),
         "e[1]: k: 'sideways' is not in/out"),
        (json.dumps(batch("in-1", 7, [dict(entry(1, PLATE_A, T0), s=0)])).encode(), "e[0]: s:"),
    ]
    for payload, _ in refused:
        gate.publish("up/events", payload)
    gate.publish("up/fee", b'{"r": 5, "p": ""}')
    gate.publish("up/events", batch("in-1", 8, [entry(1, PLATE_C, T0)]))
    assert gate.expect("down/ack") == [b'{"j":8,"f":1,"l":1}']
    assert gate.received("down/fee") == []
    assert stored_rows(db_path) == [
        ("in-1", 8, 1, "in", T0, 5, PLATE_C, 0, 90, 0, None, None, None, None)]
    assert bridge.refused == len(refused) + 1
    for _, reason in refused:
        assert reason in caplog.text
    assert "p: '' is not a plate" in caplog.text


def test_fee_answers(bridge, gates):
    table = load_tariff(TARIFF)
    entrance, exit_lane = gates("in-1"), gates("out-1")
    entrance.publish("up/events", batch("in-1", 3, [entry(1, PLATE_A, T0)]))
    entrance.expect("down/ack")
    now = T0 + 2 * 3600 + 5
    expected = [
        # the entry another gate reported
        ({"r": 41, "p": PLATE_A, "c": 0, "t": now, "et": None},
         T0, tariff.quote(table, T0, now, 0).fee),
        # the gate knows an older entry than the one stored: the stored one
        ({"r": 42, "p": PLATE_A, "c": 0, "t": now, "et": T0 - 3600},
         T0, tariff.quote(table, T0, now, 0).fee),
        # the gate knows a later entry, not stored yet: that one
        ({"r": 43, "p": PLATE_A, "c": 0, "t": now, "et": T0 + 3600},
         T0 + 3600, tariff.quote(table, T0 + 3600, now, 0).fee),
        # nothing stored, nothing known by the gate: the no-entry fee
        ({"r": 44, "p": PLATE_B, "c": 4, "t": now, "et": None},
         None, tariff.quote_no_entry(table, now, 4).fee),
        # nothing stored, but the gate knows an entry time
        ({"r": 45, "p": PLATE_C, "c": 1, "t": now, "et": T0 + 1800},
         T0 + 1800, tariff.quote(table, T0 + 1800, now, 1).fee),
    ]
    for query, _, _ in expected:
        exit_lane.publish("up/fee", query)
    answers = exit_lane.expect("down/fee", len(expected))
    assert answers == [
        fee_answer(q["r"], q["p"], fee, et)
        for q, et, fee in expected]
    # by hand from default.json: 2 h 5 s = 5 started half hours, 1 h 5 s = 3,
    # 1 h 30 min 5 s = 4
    assert [json.loads(a)["fee"] for a in answers] == [500, 500, 300, 2000, 400]
    assert entrance.received("down/fee") == []
    # once the exit is stored, the entry is closed: the next query finds none
    exit_lane.publish("up/events", batch("out-1", 9, [exit_(1, PLATE_A, now, 500, entry_time=T0)]))
    exit_lane.expect("down/ack")
    exit_lane.publish("up/fee", {"r": 46, "p": PLATE_A, "c": 0, "t": now + 60, "et": None})
    assert exit_lane.expect("down/fee", 6)[5] == fee_answer(46, PLATE_A, 2000, None)
    # an entry after the exit (a gate clock gone wrong) gets no answer: the
    # gate charges offline after its fee timeout
    exit_lane.publish("up/fee", {"r": 47, "p": PLATE_B, "c": 0, "t": now, "et": now + 60})
    exit_lane.publish("up/fee", {"r": 48, "p": PLATE_B, "c": 0, "t": now, "et": None})
    assert exit_lane.expect("down/fee", 7)[6] == fee_answer(48, PLATE_B, 2000, None)
    assert bridge.refused == 1


def test_bridge_reconnects_after_a_broker_crash(broker, bridge, gates, db_path):
    gate = gates("in-1")
    gate.publish("up/events", batch("in-1", 7, [entry(1, PLATE_A, T0)]))
    gate.expect("down/ack")
    broker.kill()
    wait_for(lambda: not bridge.live, what="the bridge to notice the crash")
    broker.start()
    wait_for(lambda: bridge.live, what="the bridge to reconnect")
    gate.wait_connected()
    ack = gate.send_until_answered("up/events", batch("in-1", 7, [entry(2, PLATE_B, T0)]),
                                   "down/ack")
    assert ack == b'{"j":7,"f":2,"l":2}'
    assert [row[:3] for row in stored_rows(db_path)] == [("in-1", 7, 1), ("in-1", 7, 2)]


def test_backlog_is_stored_but_stale_fee_queries_are_not_answered(broker, make_bridge, gates,
                                                                   db_path):
    first = make_bridge()
    first.stop()   # its persistent session stays: the broker queues for it
    wait_for(lambda: "Client %s disconnected" % first.client_id in broker.log_text(),
             what="the broker to see the bridge go")
    gate = gates("out-1")
    gate.publish("up/fee", {"r": 1, "p": PLATE_A, "c": 0, "t": T0, "et": None})
    gate.publish("up/events", batch("out-1", 2, [exit_(1, PLATE_A, T0, 2000)]))
    make_bridge()
    assert gate.expect("down/ack") == [b'{"j":2,"f":1,"l":1}']
    # The gate rebooted meanwhile: its request ids started again at 1.
    gate.publish("up/fee", {"r": 1, "p": PLATE_B, "c": 0, "t": T0 + 1800, "et": T0})
    assert gate.expect("down/fee") == [fee_answer(1, PLATE_B, 100, T0)]
    assert len(stored_rows(db_path)) == 1


def test_status_is_kept(bridge, gates):
    gate = gates("in-1")
    status = {"on": 1, "jid": 7, "seq": 4, "acked": 3, "backlog": 0, "heap": 41000,
              "clock": 5, "tv": 1}
    gate.publish("status", status, retain=True)
    wait_for(lambda: "in-1" in bridge.store.statuses(), what="the status")
    assert bridge.store.statuses()["in-1"][0] == status
    gate.publish("status", {"on": 0}, retain=True)
    wait_for(lambda: bridge.store.statuses()["in-1"][0] == {"on": 0}, what="the last will")


def test_summary_counts_and_gaps(db_path):
    store = store_class(db_path)(db_path, LOT)
    ev = record.from_wire
    assert store.ingest("in-1", 1, [ev(entry(s, "A%d" % s, T0 + s)) for s in (1, 2, 3)]) \
        == (1, 3, 3)
    assert store.ingest("in-1", 1, [ev(entry(s, "A%d" % s, T0 + s)) for s in (3, 5, 6, 9)]) \
        == (3, 9, 3)
    assert store.ingest("out-1", 2, [ev(exit_(2, "A1", T0 + 99, 300)),
                                     ev(exit_(3, "A2", T0 + 99, 400, record.FEE_OFFLINE)),
                                     ev(exit_(4, "A3", T0 + 99, 500, record.FEE_OFFLINE))]) \
        == (2, 4, 3)
    assert store.open_entry("A5", T0 + 99) == ("in-1", 1, 5, T0 + 5, 0)
    assert store.open_entry("A1", T0 + 99) is None      # closed by its exit
    assert store.open_entry("A5", T0 + 4) is None       # entered later
    assert store.summary() == {
        "rows": 9, "identities": 9,
        "per_gate": {"in-1": {"in": 6, "out": 0}, "out-1": {"in": 0, "out": 3}},
        "exits": {"on": {"count": 1, "fees": 300}, "off": {"count": 2, "fees": 900}},
        "journals": [
            {"gate": "in-1", "jid": 1, "count": 6, "max_seq": 9, "missing": 3,
             "gaps": [[4, 4], [7, 8]]},
            {"gate": "out-1", "jid": 2, "count": 3, "max_seq": 4, "missing": 1,
             "gaps": [[1, 1]]},
        ],
    }
    store.close()


def test_bridge_refuses_a_bad_tariff(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(tariff.TariffError):
        Bridge(LOT, "127.0.0.1", 1, str(tmp_path / "x.sqlite"), str(bad))


def test_bridge_refuses_a_store_of_another_lot(tmp_path):
    store = store_class("x")(str(tmp_path / "x.sqlite"), "other-lot")
    try:
        with pytest.raises(ValueError, match="of lot 'other-lot', not of this bridge's"):
            Bridge(LOT, "127.0.0.1", 1, None, TARIFF, store=store)
    finally:
        store.close()


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


# ---- voided entries and unconfirmed exits in fee answers ----

def test_fee_answers_respect_voided_entries_and_unconfirmed_exits(bridge, gates):
    table = load_tariff(TARIFF)
    entrance, exit_lane = gates("in-1"), gates("out-1")
    now = T0 + 3600
    entrance.publish("up/events", batch("in-1", 1, [
        entry(1, PLATE_A, T0), entry(2, PLATE_B, T0 + 60),
        dict(entry(3, PLATE_A, T0), fl=record.FLAG_NO_PASSAGE)]))     # voids seq 1
    entrance.expect("down/ack")
    exit_lane.publish("up/events", batch("out-1", 1, [
        exit_(1, PLATE_B, T0 + 120, 0, flags=record.FLAG_NO_PASSAGE)]))  # closes nothing
    exit_lane.expect("down/ack")
    exit_lane.publish("up/fee", {"r": 1, "p": PLATE_A, "c": 0, "t": now, "et": None})
    exit_lane.publish("up/fee", {"r": 2, "p": PLATE_B, "c": 0, "t": now, "et": None})
    assert exit_lane.expect("down/fee", 2) == [
        fee_answer(1, PLATE_A, tariff.quote_no_entry(table, now, 0).fee, None),
        fee_answer(2, PLATE_B, tariff.quote(table, T0 + 60, now, 0).fee, T0 + 60)]


# ---- lane catch-up: up/catchup, down/catchup ----

def catchup_pages(gate, since, first_request=1):
    """Ask page after page as a gate does; returns the decoded answers."""
    answers, cursor, request = [], 0, first_request
    while True:
        before = len(gate.received("down/catchup"))
        gate.publish("up/catchup", {"r": request, "s": since, "c": cursor})
        payload = gate.expect("down/catchup", before + 1)[before]
        assert len(payload) <= CATCHUP_MAX_BYTES
        answer = json.loads(payload)
        assert answer["r"] == request
        answers.append(answer)
        cursor, request = answer["c"], request + 1
        if cursor is None:
            return answers
        assert len(answers) < 50


def test_catchup_pages_the_open_sessions_of_every_gate(bridge, gates):
    in1, in2, out = gates("in-1"), gates("in-2"), gates("out-1")
    # 13 entries in one second from in-1, 6 in the same second from in-2,
    # in interleaved batches; one voided, two closed by exits
    # (each ack awaited: the store's order is the order of arrival)
    in1.publish("up/events", batch("in-1", 1, [entry(s, "A%02d" % s, T0) for s in range(1, 8)]))
    in1.expect("down/ack")
    in2.publish("up/events", batch("in-2", 1, [entry(s, "B%02d" % s, T0) for s in range(1, 7)]))
    in2.expect("down/ack")
    in1.publish("up/events", batch("in-1", 1, [entry(s, "A%02d" % s, T0) for s in range(8, 14)]
                                   + [dict(entry(14, "A03", T0), fl=record.FLAG_NO_PASSAGE)]))
    in1.expect("down/ack", 2)
    out.publish("up/events", batch("out-1", 1, [exit_(1, "A05", T0 + 60, 100),
                                                exit_(2, "B02", T0 + 60, 100)]))
    out.expect("down/ack")
    in2.publish("up/events", batch("in-2", 1, [entry(7, "B07", T0 + 90)]))
    in2.expect("down/ack", 2)
    expected = ([("in-1", "A%02d" % s, s) for s in range(1, 8) if s not in (3, 5)]
                + [("in-2", "B%02d" % s, s) for s in range(1, 7) if s != 2]
                + [("in-1", "A%02d" % s, s) for s in range(8, 14)]
                + [("in-2", "B07", 7)])
    answers = catchup_pages(out, T0 - 3600)
    assert [len(a["e"]) for a in answers] == [CATCHUP_PAGE, CATCHUP_PAGE, 1]
    assert all(type(a["c"]) is int for a in answers[:-1]) and answers[-1]["c"] is None
    got = [(e["g"], e["p"], e["s"]) for a in answers for e in a["e"]]
    assert got == expected
    # each entry in the wire form of record.to_wire, with its gate
    first = answers[0]["e"][0]
    assert first == dict(entry(1, "A01", T0), g="in-1")
    assert record.from_wire(first).plate == "A01"
    # the asker's own entries come too; s filters by entry time
    assert [(e["g"], e["p"]) for a in catchup_pages(in2, T0 + 1, 100) for e in a["e"]] == [
        ("in-2", "B07")]
    assert catchup_pages(out, T0 + 91, 200) == [{"r": 200, "e": [], "c": None}]
    assert in1.received("down/catchup") == []      # answers go to the asker only


def test_a_full_catchup_page_fits_the_gates_heap(bridge, gates):
    """The largest entries (16-byte plates, seqs and times near 2^32, every
    flag, 16-character gate ids) still make a page under 1 KB; longer gate
    ids make shorter pages, and the cursor goes on exactly."""
    plates = ["京A%s" % ("%012d" % i) for i in range(12)]
    assert all(len(p.encode()) == record.MAX_PLATE_BYTES for p in plates)
    big = 0xFFFFFFF0

    def big_entry(seq, plate):
        return dict(entry(seq, plate, big, colour=255), cf=100, q=6, fl=0xFF & ~64)
    short_gate = gates("g" * 16)
    short_gate.publish("up/events", batch("g" * 16, 1, [big_entry(big + i, p)
                                                         for i, p in enumerate(plates[:10])]))
    short_gate.expect("down/ack")
    answers = catchup_pages(short_gate, big)
    assert [len(a["e"]) for a in answers] == [CATCHUP_PAGE, 2]
    full = short_gate.received("down/catchup")[0]
    assert len(full) < 1024, len(full)
    long_gate = gates("g" * 40)
    long_gate.publish("up/events", batch("g" * 40, 1, [big_entry(big + i, p)
                                                        for i, p in enumerate(plates[10:])]))
    long_gate.publish("up/events", batch("g" * 40, 2, [big_entry(big + i, "L%d" % i)
                                                        for i in range(CATCHUP_PAGE)]))
    long_gate.expect("down/ack", 2)
    answers = catchup_pages(long_gate, big, 10)
    sizes = [len(payload) for payload in long_gate.received("down/catchup")]
    assert max(sizes) <= CATCHUP_MAX_BYTES
    # 40-character ids: a page of 8 would be about 1,180 bytes
    assert [len(a["e"]) for a in answers] == [CATCHUP_PAGE, 7, 5]
    assert [e["p"] for a in answers for e in a["e"]] == plates + ["L%d" % i
                                                                  for i in range(CATCHUP_PAGE)]


def test_junk_catchup_requests_get_no_answer(bridge, gates, caplog):
    caplog.set_level(logging.WARNING, logger="parkgate.bridge")
    gate = gates("out-1")
    gate.publish("up/events", batch("out-1", 1, [entry(1, PLATE_A, T0)]))
    gate.expect("down/ack")
    junk = [
        (b"[1]", "not a JSON object"),
        ({"s": T0, "c": 0}, "r: None is not an integer in 0..65535"),
        ({"r": 65536, "s": T0, "c": 0}, "r: 65536"),
        ({"r": -1, "s": T0, "c": 0}, "r: -1"),
        ({"r": "1", "s": T0, "c": 0}, "r: '1'"),
        ({"r": True, "s": T0, "c": 0}, "r: True"),
        ({"r": 1, "s": 1.5, "c": 0}, "s: 1.5"),
        ({"r": 1, "s": 2 ** 32, "c": 0}, "s: 4294967296"),
        ({"r": 1, "s": T0}, "c: None"),
        ({"r": 1, "s": T0, "c": -3}, "c: -3"),
        ({"r": 1, "s": T0, "c": 2 ** 63}, "c: 9223372036854775808"),
        ({"r": 1, "s": T0, "c": 987654321}, "c: 987654321 is not a stored row id"),
    ]
    for payload, _ in junk:
        gate.publish("up/catchup", payload)
    gate.publish("up/catchup", {"r": 65535, "s": 0, "c": 0})
    answer = json.loads(gate.expect("down/catchup")[0])
    assert answer["r"] == 65535 and [e["p"] for e in answer["e"]] == [PLATE_A]
    assert len(gate.received("down/catchup")) == 1
    assert bridge.refused == len(junk)
    for _, reason in junk:
        assert reason in caplog.text, reason
