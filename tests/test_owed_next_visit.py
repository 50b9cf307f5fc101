"""Owed fees collected at the plate's next visit (store/debts.py), on SQLite
and PostgreSQL: the fee answer to an exit of a plate that owes adds the
debt and says how much ("debt"), the exit stored paid at that fee settles
the owed exits it covered ("settled" by next-visit), and the money totals
stay equal to sums over the rows worked out here. The races: a debt
collected by hand between answer and exit (paid twice: audited, counted
as taken), an exit charged offline (the debt stays), a replayed exit
(nothing twice), an exit let out unpaid again (the debt carried, owed
once). Then through the bridge and a broker, and on the gate's own image."""
import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixtures_mqtt import backend, db_path, pg_server  # noqa: F401 (fixtures)
from fixtures_mqtt import LOT, TARIFF, WAIT_S, exit_, fetch_all, store_class, wait_for
from parkgate import record, tariff
from parkgate.downlink import FEE_MAX
from parkgate_tools.lot import answers
from parkgate_tools.lot.tariff_in_use import load_tariff
from test_store_backends import ev, store  # noqa: F401 (store: a fixture)

T0 = 1795564800
ALL_TIME = (0, 2 ** 40)
ON, OFF, OWED = record.FEE_ONLINE, record.FEE_OFFLINE, record.FLAG_OWED
TABLE = load_tariff(TARIFF)
NO_ENTRY_FEE = tariff.quote_no_entry(TABLE, T0, 0).fee


def ask(store, plate, t):
    """The bridge's fee answer to out-2's query for plate leaving at t."""
    return answers.fee_answer(store, TABLE, "out-2", 7, plate, 0, t, None)


def leave(store, seq, plate, t, fee, source=ON, flags=0, gate="out-2"):
    """Store gate's exit; returns the batch (to replay it)."""
    batch = [ev(exit_(seq, plate, t, fee, source, flags=flags | record.FLAG_NO_ENTRY))]
    store.ingest(gate, 3, batch)
    return batch


def totals_from_rows(db, lot):
    """collected, owed (count, fen) and corrected of the lot over all time,
    by this test's own SQL and rule: fees of exits not let out unpaid, plus
    the first "collected" on each owed exit; owed: owed exits no
    collected, waived or settled correction closed."""
    exits = fetch_all(db, "SELECT gate, jid, seq, fee, flags FROM events"
                          " WHERE lot = ? AND kind = 'out'", (lot,))
    rows = fetch_all(db, "SELECT gate, jid, seq, action, amount FROM corrections"
                         " WHERE lot = ? ORDER BY created_at, id", (lot,))
    owed_fees = {(g, j, s): fee for g, j, s, fee, flags in exits if flags & OWED}
    collected = sum(fee for g, j, s, fee, flags in exits if not flags & OWED)
    settled, counted, corrected = set(), set(), 0
    for gate, jid, seq, action, amount in rows:
        key = (gate, jid, seq)
        if key in owed_fees and action in ("collected", "waived", "settled"):
            if action == "collected" and key not in counted:
                collected += amount
                counted.add(key)
            settled.add(key)
        elif action in ("collected", "refunded"):
            corrected += amount if action == "collected" else -amount
    owed = [fee for key, fee in owed_fees.items() if key not in settled]
    return {"collected": collected, "owed": (len(owed), sum(owed)), "corrected": corrected}


def store_totals(store):
    money = store.money(*ALL_TIME)
    return {k: money[k] for k in ("collected", "owed", "corrected")}


def settlements(store):
    return [(c["gate"], c["jid"], c["seq"], c["amount"], c["note"], c["made_by"])
            for c in store.corrections() if c["action"] == "settled"]


def test_a_debt_is_paid_at_the_next_visit_once(store, db_path):
    leave(store, 1, "C3", T0 - 86400, 700, flags=OWED)
    leave(store, 2, "C3", T0 - 3600, 300, OFF, flags=OWED)
    assert store.money(*ALL_TIME)["owed"] == (2, 1000)
    answer = ask(store, "C3", T0)
    assert answer["debt"] == 1000 and answer["fee"] == NO_ENTRY_FEE + 1000
    assert set(answer) == {"r", "p", "fee", "tv", "et", "debt"}
    paying = leave(store, 3, "C3", T0, answer["fee"])
    assert settlements(store) == [
        ("out-2", 3, 1, 700, "paid at the next visit, exit out-2/3/3", "next-visit"),
        ("out-2", 3, 2, 300, "paid at the next visit, exit out-2/3/3", "next-visit")]
    assert store.owed_by_plate() == []
    assert store_totals(store) == totals_from_rows(db_path, store.lot) == {
        "collected": NO_ENTRY_FEE + 1000, "owed": (0, 0), "corrected": 0}
    store.ingest("out-2", 3, paying)                       # a replay settles nothing again
    assert len(settlements(store)) == 2
    assert "debt" not in ask(store, "C3", T0 + 60)         # it owes nothing now
    assert [a["who"] for a in store.audit_log() if a["action"] == "correction"] == [
        "next-visit", "next-visit"]


def test_no_debt_no_change_to_the_answer(store):
    assert ask(store, "D4", T0) == {"r": 7, "p": "D4", "fee": NO_ENTRY_FEE, "tv": TABLE.version,
                                    "et": None}
    leave(store, 1, "D4", T0 - 60, 0, flags=OWED)          # let out with no fee known: nothing
    assert "debt" not in ask(store, "D4", T0)


def test_an_exit_charged_offline_leaves_the_debt_owed(store, db_path):
    leave(store, 1, "E5", T0 - 600, 500, flags=OWED)
    answer = ask(store, "E5", T0)                         # answered, but too late:
    leave(store, 2, "E5", T0, NO_ENTRY_FEE, OFF)           # the gate charged its own fee
    assert settlements(store) == []
    assert [p["fen"] for p in store.owed_by_plate()] == [500]
    assert store_totals(store) == totals_from_rows(db_path, store.lot)
    assert ask(store, "E5", T0 + 60)["fee"] == answer["fee"]   # asked again next time


def test_a_debt_collected_by_hand_meanwhile_is_paid_twice_and_audited(store, db_path):
    leave(store, 1, "F6", T0 - 600, 800, flags=OWED)
    answer = ask(store, "F6", T0)
    store.add_correction("out-2", 3, 1, "collected", 800, "paid at the booth", "ann")
    leave(store, 2, "F6", T0, answer["fee"])
    assert settlements(store) == []
    [overpaid] = [a for a in store.audit_log() if a["action"] == "next-visit-overpaid"]
    assert overpaid["who"] == "next-visit" and overpaid["detail"]["fen"] == 800
    assert overpaid["detail"]["owed"] == "out-2/3/1" and overpaid["detail"]["exit"] == "out-2/3/2"
    # both payments were taken, so both count: the audit says which to refund
    assert store_totals(store) == totals_from_rows(db_path, store.lot) == {
        "collected": 800 + answer["fee"], "owed": (0, 0), "corrected": 0}


def test_let_out_unpaid_again_the_debt_is_carried_and_owed_once(store, db_path):
    leave(store, 1, "G7", T0 - 600, 400, flags=OWED)
    answer = ask(store, "G7", T0)
    leave(store, 2, "G7", T0, answer["fee"], flags=OWED)
    assert settlements(store) == [
        ("out-2", 3, 1, 400, "carried into the fee owed by exit out-2/3/2", "next-visit")]
    assert store.money(*ALL_TIME)["owed"] == (1, answer["fee"])
    assert store_totals(store) == totals_from_rows(db_path, store.lot)
    assert ask(store, "G7", T0 + 60)["debt"] == answer["fee"]


def test_a_fee_that_would_pass_the_gates_cap_adds_what_fits(store):
    leave(store, 1, "H8", T0 - 900, FEE_MAX - NO_ENTRY_FEE - 10, flags=OWED)
    leave(store, 2, "H8", T0 - 600, 20, flags=OWED)
    answer = ask(store, "H8", T0)
    assert (answer["fee"], answer["debt"]) == (FEE_MAX - 10, FEE_MAX - NO_ENTRY_FEE - 10)
    leave(store, 3, "H8", T0, answer["fee"])
    assert [p["fen"] for p in store.owed_by_plate()] == [20]


def test_another_lots_debt_is_not_asked(db_path):  # noqa: F811 (fixture)
    first, second = (store_class(db_path)(db_path, lot) for lot in ("lot-x", "lot-y"))
    try:
        leave(first, 1, "K1", T0 - 600, 900, flags=OWED)
        assert "debt" not in ask(second, "K1", T0)
        leave(second, 1, "K1", T0, NO_ENTRY_FEE)
        assert [p["fen"] for p in first.owed_by_plate()] == [900]
    finally:
        first.close()
        second.close()


# ---- a property: any interleaving keeps the totals equal to the sums ----

PLATES = ("P1", "P2", "P3")
steps = st.lists(st.one_of(
    st.tuples(st.just("owe"), st.sampled_from(PLATES), st.integers(1, 5000)),
    st.tuples(st.just("hand"), st.integers(0, 9)),
    st.tuples(st.just("visit"), st.sampled_from(PLATES), st.booleans(),
              st.sampled_from(("online", "offline", "race")), st.booleans())),
    min_size=1, max_size=14)
examples = iter(range(10 ** 6))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=steps)
def test_any_interleaving_keeps_the_totals_equal_to_the_sums(db_path, steps):  # noqa: F811
    lot = "prop-%d" % next(examples)       # a lot of its own per example, one database
    store = store_class(db_path)(db_path, lot)
    cash, owed, seq = 0, {}, 0             # the model: money taken, {owed exit: fen}
    try:
        for step in steps:
            seq += 1
            t = T0 + 60 * seq
            if step[0] == "owe":
                leave(store, seq, step[1], t, step[2], flags=OWED)
                owed[("out-2", 3, seq)] = (step[1], step[2])
            elif step[0] == "hand" and owed:
                key = sorted(owed)[step[1] % len(owed)]
                store.add_correction(*key, "collected", owed[key][1], "booth", "ann")
                cash += owed.pop(key)[1]
            elif step[0] == "visit":
                _, plate, paid, how, replay = step
                answer = ask(store, plate, t)
                covered = sorted(k for k, (p, _) in owed.items() if p == plate)
                assert answer.get("debt", 0) == sum(owed[k][1] for k in covered)
                if how == "race" and covered:      # collected by hand meanwhile
                    store.add_correction(*covered[0], "collected", owed[covered[0]][1],
                                         "booth", "ann")
                    cash += owed.pop(covered[0])[1]
                fee = answer["fee"] if how != "offline" else answer["fee"] - answer.get("debt", 0)
                batch = leave(store, seq, plate, t, fee, OFF if how == "offline" else ON,
                              0 if paid else OWED)
                if how != "offline":
                    for key in covered:
                        owed.pop(key, None)
                if paid:
                    cash += fee
                else:
                    owed[("out-2", 3, seq)] = (plate, fee)
                if replay:
                    store.ingest("out-2", 3, batch)
            expected = {"collected": cash, "owed": (len(owed), sum(f for _, f in owed.values())),
                        "corrected": 0}
            assert store_totals(store) == totals_from_rows(db_path, lot) == expected
            assert sum(p["fen"] for p in store.owed_by_plate()) == expected["owed"][1]
    finally:
        store.close()


# ---- through the bridge and a broker ----

def test_through_the_bridge_the_next_exit_pays_fee_and_debt(make_bridge, gates, db_path):
    bridge = make_bridge()
    gate = gates("out-1")
    gate.publish("up/events", {"g": "out-1", "j": 5, "e": [
        exit_(1, "粤B12345", T0 - 86400, 1200, flags=OWED | record.FLAG_NO_ENTRY)]})
    gate.expect("down/ack")
    assert [p["fen"] for p in bridge.store.owed_by_plate()] == [1200]
    gate.publish("up/fee", {"r": 2, "p": "粤B12345", "c": 0, "t": T0, "et": None})
    answer = json.loads(gate.expect("down/fee")[0])
    assert (answer["fee"], answer["debt"]) == (NO_ENTRY_FEE + 1200, 1200)
    gate.publish("up/events", {"g": "out-1", "j": 5, "e": [
        exit_(2, "粤B12345", T0, answer["fee"], flags=record.FLAG_NO_ENTRY)]})
    gate.expect("down/ack", 2)
    wait_for(lambda: bridge.store.owed_by_plate() == [], what="the debt settled")
    assert store_totals(bridge.store) == totals_from_rows(db_path, LOT) == {
        "collected": NO_ENTRY_FEE + 1200, "owed": (0, 0), "corrected": 0}


def test_the_gate_takes_the_debt_and_charges_it(sim_lot):
    """On the gate's own image: a car let out unpaid at one exit (policy
    owed; no entry seen: the no-entry fee) comes in again; the other exit
    asks for its stay's fee plus the debt, the gate takes the answer as it
    is (nothing refused), the attendant confirms the payment, and the lot
    store settles the debt."""
    lot = sim_lot("t", rate=60)
    owing = lot.gate("out-a", "out", site_extra={"exit_policy": "owed"})
    entrance = lot.gate("in", "in")
    paying = lot.gate("out-b", "out")
    for gate in (owing, entrance, paying):
        gate.wait_line(r"LINK up", WAIT_S)
    plate = "粤B00091"
    owing.send_plate(plate)
    owing.wait_line(r"EVENT out seq=1 plate=%s .* src=on .* fl=9$" % plate, WAIT_S)
    lot.wait_stored("out-a", 1)
    [debt] = lot.bridge.store.owed_by_plate()
    assert debt["fen"] == NO_ENTRY_FEE
    entrance.send_plate(plate)
    entrance.wait_line(r"EVENT in seq=1 plate=%s" % plate, WAIT_S)
    lot.wait_stored("in", 1)
    time.sleep(1)                              # the exit lane hears the entry
    paying.send_plate(plate)
    paying.wait_line(r"AWAIT payment plate=%s fee=\d+ src=on" % plate, WAIT_S)
    fee = int(paying.lines(r"AWAIT payment")[-1].split("fee=")[1].split()[0])
    assert paying.display_lines()[-1] == "%s %d.%02d yuan please pay" % (
        (plate,) + divmod(fee, 100))
    assert paying.lines(r"REFUSED") == []
    paying.press_confirm()
    paying.wait_line(r"EVENT out seq=1 plate=%s .* fee=%d src=on" % (plate, fee), WAIT_S)
    lot.wait_stored("out-b", 1)
    paid = lot.bridge.store.events_between(*ALL_TIME)[-1]
    assert paid["fee"] == tariff.quote(TABLE, paid["entry_time"], paid["time"], 0).fee + debt["fen"]
    wait_for(lambda: lot.bridge.store.owed_by_plate() == [], what="the debt settled")
    money = lot.bridge.store.money(*ALL_TIME)
    assert money["owed"] == (0, 0) and money["collected"] == fee
