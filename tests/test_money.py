"""Money that adds up, on SQLite and on PostgreSQL: the day's collected,
owed and corrected totals equal sums worked out here from the rows (SQL of
this test, not the store's), a "collected" on an exit let out unpaid
(record.FLAG_OWED) moves its fee from owed to collected once, however often
it is recorded, and the owed list says what each plate still owes, from
which exits."""
from fixtures_mqtt import backend, db_path, pg_server  # noqa: F401 (fixtures)
from fixtures_mqtt import TARIFF, entry, exit_, fetch_all, wait_for
from parkgate import record
from parkgate_tools.lot.bridge import load_tariff
from parkgate_tools.lot.operator_page import OperatorPage
from test_store_backends import ev, store  # noqa: F401 (store: a fixture)
from web_client import logged_in

T0 = 1795564800                  # 2026-11-25 08:00 UTC+8
DAY = (T0 - 8 * 3600, T0 + 16 * 3600)
OFF, ON = record.FEE_OFFLINE, record.FEE_ONLINE
OWED, MEMBER, NO_ENTRY = record.FLAG_OWED, record.FLAG_MEMBER, record.FLAG_NO_ENTRY


def page_of(store):
    table = load_tariff(TARIFF)
    return OperatorPage(store, store.lot, lambda: table, clock=lambda: T0 + 7200, aside=False)


def a_day(store):
    """A day of paid-online, paid-offline, owed, member and corrected exits,
    and an owed exit of the day before. Returns the owed exits' identities."""
    store.ingest("in-1", 1, [ev(entry(s, p, T0 + s)) for s, p in enumerate(
        ("A1", "B2", "C3", "D4", "M5", "F7", "G8"), 1)])
    store.ingest("out-1", 2, [
        ev(exit_(1, "A1", T0 + 3600, 1000, ON, entry_time=T0 + 1)),              # paid online
        ev(exit_(2, "B2", T0 + 3601, 1500, OFF, entry_time=T0 + 2)),             # paid offline
        ev(exit_(3, "C3", T0 + 3602, 2000, ON, entry_time=T0 + 3, flags=OWED)),  # owed
        ev(exit_(4, "D4", T0 + 3603, 500, OFF, entry_time=T0 + 4, flags=OWED)),  # owed
        ev(exit_(5, "M5", T0 + 3604, 0, OFF, entry_time=T0 + 5, flags=MEMBER)),  # member
        ev(exit_(6, "E6", T0 + 3605, 2000, OFF, flags=NO_ENTRY)),                # refunded
        ev(exit_(7, "F7", T0 + 3606, 800, ON, entry_time=T0 + 6, flags=OWED)),   # collected x2
        ev(exit_(8, "G8", T0 + 3607, 300, ON, entry_time=T0 + 7, flags=OWED)),   # waived
        ev(exit_(9, "C3", T0 - 86400, 700, OFF, flags=OWED | NO_ENTRY))])        # the day before
    store.add_correction("out-1", 2, 6, "refunded", 1500, "entry found", "operator")
    store.add_correction("out-1", 2, 1, "collected", 200, "short-charged", "operator")
    store.add_correction("out-1", 2, 7, "collected", 800, "paid at the booth", "operator")
    store.add_correction("out-1", 2, 7, "collected", 800, "paid at the booth, again", "operator")
    store.add_correction("out-1", 2, 8, "waived", 0, "broken ticket machine", "operator")


def totals_from_rows(db_path, start, end):
    """The day's totals from the rows, by this test's own SQL and rule."""
    def one(sql):
        return int(fetch_all(db_path, sql, (start, end))[0][0])
    day = "kind = 'out' AND time >= ? AND time < ?"
    at_gate = one("SELECT COALESCE(SUM(fee), 0) FROM events WHERE %s AND (flags & 8) = 0" % day)
    owed_exits = fetch_all(db_path, "SELECT gate, jid, seq, fee FROM events"
                                    " WHERE %s AND (flags & 8) = 8" % day, (start, end))
    rows = fetch_all(db_path, "SELECT c.gate, c.jid, c.seq, c.action, c.amount FROM corrections c"
                              " JOIN events e USING (gate, jid, seq) WHERE e.time >= ?"
                              " AND e.time < ? ORDER BY c.created_at, c.id", (start, end))
    owed_ids = {x[:3] for x in owed_exits}
    by_hand, corrected, settled = 0, 0, set()
    for gate, jid, seq, action, amount in rows:
        key = (gate, jid, seq)
        if key in owed_ids and action in ("collected", "waived"):
            if action == "collected" and key not in settled:
                by_hand += amount
            settled.add(key)
        elif action in ("collected", "refunded"):
            corrected += amount if action == "collected" else -amount
    owed = sum(fee for gate, jid, seq, fee in owed_exits if (gate, jid, seq) not in settled)
    return {"collected": at_gate + by_hand, "owed": owed, "corrected": corrected,
            "by_hand": by_hand}


def test_the_days_totals_equal_sums_from_the_rows(store, db_path):
    a_day(store)
    expected = totals_from_rows(db_path, *DAY)
    # at the gates 1000 + 1500 + 0 + 2000 (A1, B2, M5, E6), by hand 800 (F7 once)
    assert expected == {"collected": 4500 + 800, "owed": 2000 + 500,
                        "corrected": 200 - 1500, "by_hand": 800}
    money = store.money(*DAY)
    assert {k: money[k] for k in ("collected", "by_hand", "corrected")} == {
        k: expected[k] for k in ("collected", "by_hand", "corrected")}
    assert money["owed"] == (2, expected["owed"])
    assert money["online"] == (1, 1000) and money["offline"] == (3, 1500 + 0 + 2000)
    revenue = page_of(store).work_out()["revenue"]
    assert (revenue["collected_fen"], revenue["owed_fen"], revenue["adjustments_fen"]) == (
        expected["collected"], expected["owed"], expected["corrected"])
    assert revenue["total_fen"] == expected["collected"] + expected["corrected"]
    assert revenue["owed"] == "25.00" and revenue["collected"] == "53.00"


def test_collected_on_an_owed_exit_counts_once_even_when_recorded_twice(store, db_path):
    store.ingest("out-1", 2, [ev(exit_(1, "C3", T0, 2000, ON, flags=OWED))])
    assert [f["seq"] for f in store.flagged()] == [1]       # flag bit 3 wants a look
    before = store.money(*DAY)
    assert (before["collected"], before["owed"], before["corrected"]) == (0, (1, 2000), 0)
    for note in ("paid at the booth", "paid at the booth (clicked twice)"):
        store.add_correction("out-1", 2, 1, "collected", 2000, note, "operator")
        after = store.money(*DAY)
        assert (after["collected"], after["by_hand"], after["owed"], after["corrected"]) == (
            2000, 2000, (0, 0), 0)
        assert totals_from_rows(db_path, *DAY)["collected"] == 2000
    assert store.owed_by_plate() == []
    snapshot = page_of(store).work_out()
    [flag] = snapshot["flagged"]
    assert "let out unpaid: fee owed" in flag["reasons"]
    assert [c["counted"] for c in flag["corrections"]] == [True, False]
    assert snapshot["revenue"]["total"] == "20.00"


def test_the_owed_list_per_plate(store):
    a_day(store)
    owed = store.owed_by_plate()
    assert [(p["plate"], p["fen"], [(x["gate"], x["jid"], x["seq"]) for x in p["sessions"]])
            for p in owed] == [("C3", 700 + 2000, [("out-1", 2, 9), ("out-1", 2, 3)]),
                               ("D4", 500, [("out-1", 2, 4)])]
    store.add_correction("out-1", 2, 9, "collected", 700, "paid the old one", "operator")
    assert [(p["plate"], p["fen"]) for p in store.owed_by_plate()] == [("C3", 2000), ("D4", 500)]
    page = page_of(store)
    snapshot = page.work_out()
    assert (snapshot["owed"]["fen"], snapshot["owed"]["plates_total"]) == (2500, 2)
    page.start()
    try:
        html = logged_in(page, store, "att", "attendant").get("")[2]
    finally:
        page.stop()
    owed = html.split('<table id="owed">')[1].split("</table>")[0]
    assert 'data-plate="C3" data-id="out-1/2/3"' in owed and "out-1/2/9" not in owed


def test_an_owed_fee_collected_by_hand_through_the_page(store):
    store.ingest("out-1", 2, [ev(exit_(1, "D4", T0, 500, OFF, flags=OWED))])
    page = page_of(store)
    page.aside = True
    page.start()
    try:
        attendant = logged_in(page, store, "att", "attendant")
        attendant.get("")
        assert attendant.post("corrections", {"gate": "out-1", "jid": 2, "seq": 1,
                                              "action": "collected", "amount": "5.00",
                                              "note": "at the booth"})[0] == 200
        wait_for(lambda: store.corrections(), what="the correction")
        assert store.corrections()[0]["made_by"] == "att"
        revenue = page.snapshot()["revenue"]
        assert (revenue["by_hand"], revenue["owed"], revenue["collected"]) == (
            "5.00", "0.00", "5.00")
    finally:
        page.stop()
