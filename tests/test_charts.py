"""The operator page's day chart (lot/web/charts.py): the fees collected per
hour from a day's events, and the SVG drawn from them and the occupancy."""
import calendar
import re
import xml.etree.ElementTree as ET

import pytest

from parkgate import record
from parkgate_tools.lot.store.schema import EVENT_FIELDS
from parkgate_tools.lot.web.charts import day_chart_svg, revenue_by_hour

SVG = "{http://www.w3.org/2000/svg}"
DAY_START = calendar.timegm((2026, 12, 2, 0, 0, 0)) - 8 * 3600   # local midnight, UTC+8
ONLINE = record.FEE_SOURCE_NAMES[record.FEE_ONLINE]
OFFLINE = record.FEE_SOURCE_NAMES[record.FEE_OFFLINE]


def event(kind, at, fee=None, source=None, flags=0, plate="A12345"):
    """An event as store.events_between gives it (the keys of EVENT_FIELDS)."""
    return dict(dict.fromkeys(EVENT_FIELDS), gate="g1", jid=1, seq=at, kind=kind,
                time=DAY_START + at, plate=plate, colour=1, fee=fee, fee_source=source,
                flags=flags)


def exit_(at, fee, source=ONLINE, flags=0):
    return event("out", at, fee, source, flags)


def test_revenue_by_hour_counts_what_was_collected_at_the_gates():
    events = [
        event("in", 10),
        exit_(0, 500),                                   # the day's first second: 00
        exit_(3599, 250, OFFLINE),                       # offline counts, still 00
        exit_(3600, 1000),                               # 01 from its first second
        exit_(3700, 700, flags=record.FLAG_OWED),        # let out unpaid: not collected
        exit_(3800, 900, OFFLINE, flags=record.FLAG_OWED | record.FLAG_NO_ENTRY),
        exit_(3900, 0, flags=record.FLAG_MEMBER),        # a member: nothing
        exit_(4000, 300, flags=record.FLAG_NO_ENTRY),    # flagged but paid: counts
        exit_(5000, 400, source=None),                   # no fee source: not a gate's fee
        exit_(-1, 111),                                  # the day before
        exit_(86400, 222),                               # the day after
        exit_(86399, 1250),                              # the day's last second: 23
    ]
    fen = revenue_by_hour(events, DAY_START)
    assert fen == [750, 1300] + [0] * 21 + [1250]
    assert all(type(f) is int for f in fen)
    assert revenue_by_hour([], DAY_START) == [0] * 24


def test_revenue_by_hour_refuses_more_events_than_a_day_holds(monkeypatch):
    from parkgate_tools.lot.web import charts
    monkeypatch.setattr(charts, "MAX_EVENTS", 3)
    with pytest.raises(ValueError, match="at most 3"):
        revenue_by_hour([exit_(0, 1)] * 4, DAY_START)


def chart(points, fen, title="2026-12-02"):
    """(the SVG text, its root element parsed)."""
    svg = day_chart_svg(points, fen, title)
    return svg, ET.fromstring(svg)


def test_the_svg_is_self_contained_and_shows_both_series():
    points = [[0, 3], [15, 5], [540, 17], [555, 12], [600, 0]]
    fen = [0] * 24
    fen[9], fen[23] = 1250, 7
    svg, root = chart(points, fen)
    assert svg.startswith("<svg") and "<?xml" not in svg
    assert root.tag == SVG + "svg" and root.get("id") == "chart-svg"
    assert not [e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "script"]
    assert "<!--" not in svg and "<script" not in svg.lower()
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", svg))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, urls
    assert not re.search(r"url\(|@import|href=", svg)
    titles = [e.text for e in root.iter(SVG + "title")]
    assert "09:00-10:00  12.50 yuan" in titles and "23:00-24:00  0.07 yuan" in titles
    assert "00:00-01:00  0.00 yuan" in titles
    assert "09:00  17 cars inside" in titles and "09:15  12 cars inside" in titles
    labels = [e.text for e in root.iter(SVG + "text")]
    x_axis = [g for g in root.iter(SVG + "g") if g.get("class") == "axis x"]
    assert [e.text for e in x_axis[0].iter(SVG + "text")] == ["%02d" % h for h in range(24)]
    assert "2026-12-02" in labels
    legend = " ".join(t for t in labels if t)
    assert "cars inside" in legend and "yuan" in legend


def test_the_right_axis_reaches_the_top_bar_in_round_yuan():
    fen = [0] * 24
    fen[12] = 8250
    _, root = chart([[0, 40]], fen)
    right = [e.text for e in root.iter(SVG + "text")
             if re.fullmatch(r"\d+\.\d\d", e.text or "")]
    assert right[0] == "0.00" and all(t.endswith(".00") for t in right)
    assert 82.50 <= float(right[-1]) < 2 * 82.50
    bars = [e for e in root.iter(SVG + "rect") if "tooltip-trigger" in (e.get("class") or "")]
    assert len(bars) == 24
    tallest = max(bars, key=lambda e: float(e.get("height")))
    assert bars.index(tallest) == 12 and all(
        float(e.get("height")) == 0 for i, e in enumerate(bars) if i != 12)


def test_an_empty_day_renders():
    svg, root = chart([], [0] * 24, "2026-12-03")
    assert root.get("id") == "chart-svg"
    assert "00:00-01:00  0.00 yuan" in [e.text for e in root.iter(SVG + "title")]


@pytest.mark.parametrize("points, fen, title, why", [
    ([[0, 1]], [0] * 23, "x", "24 ints of fen"),
    ([[0, 1]], [0] * 23 + [1.5], "x", "24 ints of fen"),
    ([[0, 1]], [0] * 23 + [-1], "x", "24 ints of fen"),
    ([[0, 1.5]], [0] * 24, "x", "is not"),
    ([[1441, 1]], [0] * 24, "x", "is not"),
    ([[0, 1]] * 1442, [0] * 24, "x", "at most 1441"),
    ([[0, 1]], [0] * 24, "x" * 201, "at most 200"),
])
def test_what_the_chart_refuses(points, fen, title, why):
    with pytest.raises(ValueError, match=why):
        day_chart_svg(points, fen, title)
