"""Two lots on ONE PostgreSQL database (one cluster, one database URL), each
with its own lot bridge on one real mosquitto and its own gates. The lots
use the same gate ids, the same journal ids and seqs and the same plate, so
every stored key differs only by the lot: each lot's plates, cars inside,
money (store.money), owed list, search results, fee answers, statuses,
corrections and closed sessions stay its own. And every SQL statement of
the store's modules matches each table it reads on lot."""
import json
import re
import uuid

import pytest

from fixtures_mqtt import broker, pg_server  # noqa: F401 (fixtures)
from fixtures_mqtt import TARIFF, WAIT_S, FakeGate, entry, exit_, fetch_all
from parkgate import record, tariff
from parkgate_tools.lot.bridge import Bridge, load_tariff
from parkgate_tools.lot.store import accounts, debts, schema, session_sql

T0 = 1795564800                  # 2026-11-25 08:00 UTC+8
HOUR = 3600
DAY = (T0 - 8 * HOUR, T0 + 16 * HOUR)
SAME = "京A12345"                # a plate seen in both lots
OWED = record.FLAG_OWED | record.FLAG_NO_ENTRY
ON, OFF = record.FEE_ONLINE, record.FEE_OFFLINE

# Each lot's day, as its gates in-1 (journal 1) and out-1 (journal 2) send it.
DAYS = {
    "north": {  # SAME in at 08:00 and out at 10:00 paid online; R inside; Q let out owing
        "in-1": [entry(1, SAME, T0), entry(2, "京R00001", T0 + 600)],
        "out-1": [exit_(1, SAME, T0 + 2 * HOUR, 500, ON, entry_time=T0),
                  exit_(2, "京Q00002", T0 + 3 * HOUR, 700, OFF, flags=OWED)],
    },
    "south": {  # SAME in at 09:00, still inside; Z in and out paid offline; W owing
        "in-1": [entry(1, SAME, T0 + HOUR), entry(2, "沪Z00003", T0 + 700)],
        "out-1": [exit_(1, "沪Z00003", T0 + 2 * HOUR, 200, OFF, entry_time=T0 + 700),
                  exit_(2, "沪W00004", T0 + 3 * HOUR, 900, OFF, flags=OWED)],
    },
}
STATUS = {"north": {"on": 1, "jid": 1, "seq": 3, "backlog": 19},
          "south": {"on": 1, "jid": 1, "seq": 3, "backlog": 0}}


@pytest.fixture
def lots(broker, pg_server):  # noqa: F811
    """{lot: (its live Bridge, {gate id: FakeGate})} for north and south,
    both bridges on one new PostgreSQL database; (the dict, its URL)."""
    name = "two_lots_" + uuid.uuid4().hex[:12]
    url = pg_server.create_database(name)
    running, made = {}, []
    try:
        for lot in DAYS:
            bridge = Bridge(lot, broker.host, broker.port, url, TARIFF)
            bridge.start()
            made.append(bridge)
            assert bridge.wait_live(WAIT_S), "bridge of %s did not go live" % lot
            running[lot] = (bridge, {gate: FakeGate(broker, lot, gate) for gate in DAYS[lot]})
        yield running, url
    finally:
        for _, gates in running.values():
            for gate in gates.values():
                gate.close()
        for bridge in made:
            bridge.stop()
        pg_server.drop_database(name)


def send_days(lots):
    """Each lot's gates send its day and status; each batch is acked."""
    for lot, (_, gates) in lots.items():
        for gate_id, events in DAYS[lot].items():
            jid = 1 if gate_id == "in-1" else 2
            gates[gate_id].publish("up/events", {"g": gate_id, "j": jid, "e": events})
            assert gates[gate_id].expect("down/ack") == [
                json.dumps({"j": jid, "f": 1, "l": 2}, separators=(",", ":")).encode()]
        gates["in-1"].publish("status", STATUS[lot], retain=True)


def fee_of(gate, request, plate, at):
    """The fee answer (a dict) of the lot's bridge to gate's query for plate at time at."""
    gate.publish("up/fee", {"r": request, "p": plate, "c": 0, "t": at, "et": None})
    answer = json.loads(gate.expect("down/fee", request - 100)[-1])
    assert answer["r"] == request
    return answer


def test_two_lots_on_one_database_stay_apart(lots):
    lots, url = lots
    send_days(lots)
    north, south = (lots[lot][0].store for lot in ("north", "south"))
    # One database, the same identities twice: one row per lot.
    assert fetch_all(url, "SELECT lot, COUNT(*) FROM events GROUP BY lot ORDER BY lot") == [
        ("north", 4), ("south", 4)]
    assert fetch_all(url, "SELECT lot, plate FROM events WHERE gate = 'in-1' AND jid = 1"
                          " AND seq = 1 ORDER BY lot") == [("north", SAME), ("south", SAME)]
    # Plates and search.
    assert north.find_plates("0000") == ["京Q00002", "京R00001"]
    assert south.find_plates("0000") == ["沪W00004", "沪Z00003"]
    assert north.find_plates("京A1234S") == south.find_plates("京A12345") == [SAME]
    assert [(s["entry_time"], s["exit_time"], s["fee"]) for s in north.plate_history(SAME)] == [
        (T0, T0 + 2 * HOUR, 500)]
    assert [(s["entry_time"], s["exit_time"], s["fee"]) for s in south.plate_history(SAME)] == [
        (T0 + HOUR, None, None)]
    assert [s["plate"] for s in north.sessions_between(*DAY)] == [SAME, "京R00001", "京Q00002"]
    assert [s["plate"] for s in south.sessions_between(*DAY)] == ["沪Z00003", SAME, "沪W00004"]
    # Cars inside at noon.
    assert north.inside_at(T0 + 4 * HOUR) == {"京R00001"}
    assert south.inside_at(T0 + 4 * HOUR) == {SAME}
    # Money and what is owed.
    assert north.money(*DAY) == {"online": (1, 500), "offline": (0, 0), "by_hand": 0,
                                 "collected": 500, "owed": (1, 700), "corrected": 0}
    assert south.money(*DAY) == {"online": (0, 0), "offline": (1, 200), "by_hand": 0,
                                 "collected": 200, "owed": (1, 900), "corrected": 0}
    assert [(p["plate"], p["fen"]) for p in north.owed_by_plate()] == [("京Q00002", 700)]
    assert [(p["plate"], p["fen"]) for p in south.owed_by_plate()] == [("沪W00004", 900)]
    # Fee answers: SAME left north at 10:00 and is inside south since 09:00;
    # Q owes in north only.
    table = load_tariff(TARIFF)
    at = T0 + 5 * HOUR
    assert fee_of(lots["north"][1]["out-1"], 101, SAME, at)["fee"] == tariff.quote_no_entry(
        table, at, 0).fee
    south_answer = fee_of(lots["south"][1]["out-1"], 101, SAME, at)
    assert (south_answer["et"], south_answer["fee"]) == (
        T0 + HOUR, tariff.quote(table, T0 + HOUR, at, 0).fee)
    assert fee_of(lots["north"][1]["out-1"], 102, "京Q00002", at)["debt"] == 700
    assert "debt" not in fee_of(lots["south"][1]["out-1"], 102, "京Q00002", at)
    # Statuses: north's gate in-1 has a backlog, south's same-named gate none.
    assert north.statuses()["in-1"][0] == STATUS["north"]
    assert south.statuses()["in-1"][0] == STATUS["south"]
    assert north.latest_event("in-1")["seq"] == south.latest_event("in-1")["seq"] == 2
    # What an operator does in one lot changes nothing in the other.
    north.add_correction("out-1", 2, 2, "collected", 700, "paid at the booth", "ann")
    south.close_session("in-1", 1, 1, "left through the barrier by hand", "bob")
    assert north.owed_by_plate() == [] and north.money(*DAY)["by_hand"] == 700
    assert [(p["plate"], p["fen"]) for p in south.owed_by_plate()] == [("沪W00004", 900)]
    assert south.money(*DAY)["by_hand"] == 0 and south.corrections() == []
    assert south.inside_at(T0 + 4 * HOUR) == set() and north.session_closes() == []
    assert [row["action"] for row in north.audit_log()] == ["correction"]
    assert [row["action"] for row in south.audit_log()] == ["close-session"]
    # The summaries (and the forwarder's outboxes) are each lot's own.
    assert north.summary()["rows"] == south.summary()["rows"] == 4
    assert [j["gate"] for j in north.summary()["journals"]] == ["in-1", "out-1"]


# Every statement of the store's modules, as a guard beside the test above:
# each table it reads is matched on lot, each row it writes has one.
_TABLES = "|".join(sorted(schema.LOT_TABLES + ("debt_offers",), key=len, reverse=True))
_READ = re.compile(r"\b(?:FROM|JOIN)\s+(%s)\b(?:\s+(?!WHERE|ORDER|GROUP|LIMIT|ON\b)(\w+))?"
                   % _TABLES)
_KEYWORD = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b")


def statements():
    """(module.name, SQL) of every statement kept in the store's modules."""
    for module in (schema, session_sql, accounts, debts):
        for name, value in vars(module).items():
            if isinstance(value, str) and _KEYWORD.match(value):
                yield "%s.%s" % (module.__name__.rsplit(".", 1)[1], name), value


def lot_matched(sql, alias):
    """True if the rows aliased alias (None: the table's own name) are matched
    on lot: "alias.lot = ?" or "alias.lot = other.lot", the alias on the left."""
    if alias is None:
        return re.search(r"(?<![\w.])lot = \?", sql) is not None
    return re.search(r"(?<![\w.])%s\.lot = (\?|\w+\.lot)" % alias, sql) is not None


def test_every_statement_of_the_store_is_matched_on_lot():
    checked = 0
    for name, sql in statements():
        for table, alias in _READ.findall(sql):
            assert lot_matched(sql, alias or None), "%s reads %s %s not by lot" % (
                name, table, alias)
            checked += 1
        if sql.lstrip().startswith("INSERT"):
            assert re.search(r"INSERT INTO \w+ \(lot,", sql), "%s writes no lot" % name
        if sql.lstrip().startswith(("UPDATE", "DELETE")):
            assert "lot = ?" in sql, "%s changes rows of any lot" % name
    assert checked > 60
