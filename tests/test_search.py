"""Finding things, on SQLite and PostgreSQL: plates by full and fuzzy match
on the usual misreads (0/O, 8/B, 1/I: parkgate.plate's normalise and
similar), a plate's session history (entry, exit, fee, source, flags), date
ranges, paging and the CSV export, in the store and through the page."""
import csv
import io
import json

from fixtures_mqtt import backend, db_path, pg_server  # noqa: F401 (fixtures)
from fixtures_mqtt import TARIFF, entry, exit_
from parkgate import record
from parkgate_tools.lot.tariff_in_use import load_tariff
from test_store_backends import ev, store  # noqa: F401 (store: a fixture)
from web_client import logged_in, started_page

DAY0 = 1795536000          # 2026-11-25 00:00 UTC+8, a lot's local midnight
HOUR, DAY = 3600, 86400
OFF = record.FEE_OFFLINE


def a_week(store):
    """京A8B001 parks daily for a week (one exit missed on day 3, one exit
    without entry on day 5), and plates its misreads could be mistaken for."""
    entries, exits = [], []
    for d in range(7):
        t = DAY0 + d * DAY + 9 * HOUR
        if d != 5:
            entries.append(ev(entry(len(entries) + 1, "京A8B001", t)))
        if d != 3:
            exits.append(ev(exit_(len(exits) + 1, "京A8B001", t + 2 * HOUR, 1000 + d, OFF,
                                  entry_time=0 if d == 5 else t,
                                  flags=record.FLAG_NO_ENTRY if d == 5 else 0)))
    entries += [ev(entry(len(entries) + i, p, DAY0 + HOUR)) for i, p in enumerate((
        "京AB8001", "京A8B007", "沪A8B001", "京A88001", "G1234"), 1)]
    store.ingest("in-1", 1, entries)
    store.ingest("out-1", 2, exits)


def test_find_plates_full_and_fuzzy(store):
    a_week(store)
    # O and I typed for 0 and 1, 8 and B swapped, the province misread.
    assert store.find_plates("京A8BOOI", fuzzy=False) == ["京A8B001"]
    assert store.find_plates("京a8b-001") == ["京A8B001", "京A88001", "京AB8001", "沪A8B001"]
    assert store.find_plates("京AB8OO1") == ["京AB8001", "京A88001", "京A8B001"]
    assert "京A8B007" not in store.find_plates("京A8B001")     # 7 is no misread of 1
    assert store.find_plates("8B00") == ["京A8B001", "京A8B007", "沪A8B001"]   # a part of a plate
    assert store.find_plates("G1234") == ["G1234"]
    assert store.find_plates("GI234") == ["G1234"]             # I/O folded on any plate
    assert store.find_plates("  ") == []


def test_a_plates_history_and_a_date_range(store):
    a_week(store)
    history = store.plate_history("京A8B001")
    assert len(history) == 7
    first = history[0]
    assert (first["entry_gate"], first["entry_time"], first["exit_gate"], first["exit_time"],
            first["fee"], first["fee_source"], first["flags"]) == (
        "in-1", DAY0 + 9 * HOUR, "out-1", DAY0 + 11 * HOUR, 1000, "off", 0)
    assert history[3]["exit_time"] is None                      # the exit missed
    assert history[5]["entry_gate"] is None and history[5]["flags"] == record.FLAG_NO_ENTRY
    in_range = store.plate_history("京A8B001", DAY0 + 2 * DAY, DAY0 + 4 * DAY)
    assert [s["fee"] for s in in_range] == [1002, None]


def test_sessions_between_pages(store):
    a_week(store)
    day0 = store.sessions_between(DAY0, DAY0 + DAY)
    assert sorted(s["plate"] for s in day0) == sorted(
        ["京A8B001", "京AB8001", "京A8B007", "沪A8B001", "京A88001", "G1234"])
    week = store.sessions_between(DAY0, DAY0 + 7 * DAY)
    pages = [store.sessions_between(DAY0, DAY0 + 7 * DAY, offset, 4) for offset in (0, 4, 8)]
    assert [len(p) for p in pages] == [4, 4, len(week) - 8]
    assert sum(pages, []) == week


def test_the_page_searches_pages_and_exports(store, monkeypatch):
    import parkgate_tools.lot.operator_page as operator_page
    monkeypatch.setattr(operator_page, "PAGE_SIZE", 3)
    a_week(store)
    table = load_tariff(TARIFF)
    with started_page(store, table, lambda: DAY0 + 7 * DAY) as page:
        attendant = logged_in(page, store, "att", "attendant")

        def get(path):
            status, _, text = attendant.get(path)
            assert status == 200, (path, status, text[:200])
            return text
        found = json.loads(get("api/search?plate=%E4%BA%ACAB8OO1"))
        assert found["plates"][0] == "京AB8001" and "京A8B001" in found["plates"]
        assert (found["total"], found["pages"], len(found["sessions"])) == (9, 3, 3)
        last = json.loads(get("api/search?plate=%E4%BA%ACA8BOO1&fuzzy=0&page=3"))
        assert last["plates"] == ["京A8B001"] and len(last["sessions"]) == 1
        html = get("search?plate=%E4%BA%ACA8BOO1&fuzzy=0&from=2026-11-27&to=2026-11-28")
        assert html.count('class="session"') == 2 and "no exit" in html
        assert 'rel="next"' not in html
        assert 'action="/search"' in get("")
        rows = list(csv.DictReader(io.StringIO(get("sessions.csv?from=2026-11-25&to=2026-11-25"))))
        assert len(rows) == 6
        a8b = [r for r in rows if r["plate"] == "京A8B001"]
        assert (a8b[0]["entry_local"], a8b[0]["exit_local"], a8b[0]["yuan"],
                a8b[0]["fee_source"]) == ("2026-11-25 09:00:00", "2026-11-25 11:00:00",
                                          "10.00", "off")
        week = list(csv.DictReader(io.StringIO(get("sessions.csv?from=2026-11-25&to=2026-12-01"))))
        assert len(week) == 12
