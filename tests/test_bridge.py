"""The lot bridge against a real mosquitto and fake gates: exactly-once
storage, acks only after commit, refusal of bad input, fee answers (voided
entries and unconfirmed exits too), broker crashes, the broker's backlog,
gate statuses, the summary, and a store of another lot refused. Every test
that stores runs on SQLite and on PostgreSQL (fixture db_path). The bridge
as a process, its presence and the size caps: test_bridge_process.py; lane
catch-up: test_bridge_catchup.py."""
import json
import logging

import pytest

from fixtures_mqtt import (backend, broker, bridge, db_path, gates, make_bridge,  # noqa: F401
                           pg_server)
from fixtures_mqtt import LOT, TARIFF, entry, exit_, fetch_all, store_class, wait_for
from parkgate import record, tariff
from parkgate_tools.lot.bridge import Bridge, load_tariff

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
