"""The day's chart on the operator page: cars inside as a line (left axis)
and the fees collected at the gates per hour as bars in yuan (right axis),
drawn by pygal on the server as an SVG to inline in the page.

The SVG is self-contained: no script (pygal's tooltips script and its
inline config are taken out: the values are in <title> elements, which a
browser shows on hover without JavaScript), no stylesheet or font fetched
from elsewhere (pygal inlines its CSS, scoped to the element id chart-svg),
no XML declaration and no comments.

    points = snapshot["occupancy"]                 # [[minute of the day, cars], ...]
    bars = revenue_by_hour(events, day_start)      # 24 ints of fen
    svg = day_chart_svg(points, bars, "2026-12-02")  # put it in figure#chart

Money stays integer fen: yuan text comes from money_text.yuan; fen / 100
is only the bar's height. The bar class draws on pygal 3.1.3's graph
internals (requirements.txt pins it)."""
from pygal.graph.line import Line
from pygal.graph.xy import XY
from pygal.util import cached_property
from pygal.style import Style

from parkgate import record
from parkgate_tools.lot.web.money_text import yuan

DAY_S = 86400
HOUR_S = 3600
HOURS = 24
MINUTES = 1440
MAX_EVENTS = 2_000_000      # a day's events revenue_by_hour takes (a busy lot has ~200,000)
MAX_POINTS = MINUTES + 1    # occupancy points: at most one a minute
MAX_TITLE_CHARS = 200
MAX_CARS = 10 ** 6          # no lot holds more
CAR_TICKS = 5               # steps of the left axis, about
MAX_HOUR_FEN = 10 ** 10     # no hour collects more (money_text.MAX_FEN)
CHART_ID = "svg"            # pygal names the element "chart-" + this
BAR_WIDTH_MIN = 44          # of the hour's 60 minutes
COLLECTED_SOURCES = (record.FEE_SOURCE_NAMES[record.FEE_ONLINE],
                     record.FEE_SOURCE_NAMES[record.FEE_OFFLINE])
_STEPS_FEN = (10, 20, 25, 50)  # times 10 ** (1 and up): the right axis's steps, 1.00 yuan and up
_STYLE = Style(
    background="#ffffff", plot_background="#fafafa", foreground="#222222",
    foreground_strong="#222222", foreground_subtle="#dddddd", opacity=".75",
    opacity_hover=".95", colors=("#c0392b", "#5b8fc7"),
    font_family="sans-serif", label_font_size=12, major_label_font_size=12,
    legend_font_size=13, title_font_size=15, value_font_size=11)


def revenue_by_hour(events, day_start):
    """The fees collected at the gates in each hour of a local day, in fen:
    a list of 24 ints, [0] for day_start <= time < day_start + 3600.

    events: the dicts store.events_between returns (EVENT_FIELDS), of any
    period (those outside the day are left out); day_start: the unix second
    the lot's local day starts. An exit counts as store.money counts it
    collected at the gate: fee_source online or offline, not let out unpaid
    (record.FLAG_OWED). Entries, owed exits and exits with no fee source
    count nothing; money collected by hand later is a correction (not an
    event) and is not in these bars. Pure: no I/O."""
    if len(events) > MAX_EVENTS:
        raise ValueError("revenue_by_hour: %d events, at most %d" % (len(events), MAX_EVENTS))
    fen = [0] * HOURS
    for event in events:
        if (event["kind"] != record.KIND_NAMES[record.KIND_EXIT]
                or event["fee_source"] not in COLLECTED_SOURCES
                or event["flags"] & record.FLAG_OWED):
            continue
        since = event["time"] - day_start
        if 0 <= since < DAY_S:
            fen[since // HOUR_S] += event["fee"] or 0
    return fen


def day_chart_svg(occupancy_points, revenue_fen_by_hour, title):
    """The day's chart as an SVG string (the <svg> element, id "chart-svg",
    960 x 320 in its viewBox, scaling to its container's width) to inline
    in figure#chart.

    occupancy_points: [[minute of the day 0..1440, cars inside], ...] (the
    page snapshot's "occupancy"); revenue_fen_by_hour: 24 ints of fen
    (revenue_by_hour); title: a line over the chart (the day, say).
    ValueError on anything else."""
    points = _checked_points(occupancy_points)
    fen = _checked_fen(revenue_fen_by_hour)
    title = str(title)
    if len(title) > MAX_TITLE_CHARS:
        raise ValueError("chart title: %d characters, at most %d" % (len(title),
                                                                    MAX_TITLE_CHARS))
    most = max([cars for _, cars in points] + [4])
    step = _step(-(-most // CAR_TICKS), (1, 2, 5), 0)
    car_ticks = list(range(0, -(-most // step) * step + 1, step))
    chart = _LineOverBars(
        width=960, height=320, title=title, style=_STYLE, js=[],
        disable_xml_declaration=True, legend_at_bottom=True, legend_at_bottom_columns=2,
        xrange=(0, MINUTES), include_x_axis=True, y_labels=car_ticks,
        x_labels=[{"value": hour * 60 + 30, "label": "%02d" % hour} for hour in range(HOURS)],
        show_x_guides=False, show_y_guides=True, dots_size=1.8, stroke_style={"width": 2.5},
        y_labels_major_every=None, margin=12, spacing=8, truncate_legend=-1,
        value_formatter=lambda cars: "%d" % cars, no_data_text="")
    chart.uuid = CHART_ID
    chart.add_xml_filter(_self_contained)
    chart.add("cars inside (left)", [(minute, cars) for minute, cars in points],
              formatter=lambda xy: "%02d:%02d  %d cars inside" % (divmod(xy[0], 60) + (xy[1],)))
    chart.add("collected per hour, yuan (right)",
              [(hour * 60 + 30, fen[hour] / 100) for hour in range(HOURS)], secondary=True,
              formatter=lambda xy, index: "%02d:00-%02d:00  %s yuan" % (
                  index, index + 1, yuan(fen[index])))
    chart.fen_by_hour = fen
    return chart.render(is_unicode=True)


class _LineOverBars(XY):
    """pygal's XY line for the primary series, and bars (one per x value,
    BAR_WIDTH_MIN wide) for the secondary ones, drawn under the line; the
    right axis steps in round yuan amounts up past the top bar (fen_by_hour:
    the bars' fen, set before render); each value's text in a <title>."""

    @cached_property
    def _values(self):
        # pygal draws no series when the primary ones have no value (a day
        # with no occupancy point): the bars' values count too
        return Line._values.getter(self) + self._secondary_values

    def _plot(self):
        for serie in self.secondary_series:
            self._bars(serie)
        for serie in self.series:
            self.line(serie)

    def _bars(self, serie):
        serie_node = self.svg.serie(serie)
        bars = self.svg.node(serie_node["plot"], class_="bars")
        zero = self._rescale([(0, 0)])[0][1]
        for i, (x, y) in enumerate(self._rescale(serie.points)):
            left, top = self.view((x - BAR_WIDTH_MIN / 2, y))
            right, bottom = self.view((x + BAR_WIDTH_MIN / 2, zero))
            bar = self.svg.node(bars, class_="bar")
            self.svg.node(bar, "rect", x=left, y=top, width=right - left,
                          height=max(bottom - top, 0), class_="rect reactive tooltip-trigger")
            self._tooltip_data(bar, self._format(serie, i), (left + right) / 2, top, "centered")

    def _tooltip_data(self, node, value, x, y, classes=None, xlabel=None):
        super()._tooltip_data(node, value, x, y, classes, xlabel)
        self.svg.node(node, "title").text = value

    def _compute_secondary(self):
        """The right axis: as many labels as the left one has, at a step of
        1, 2, 2.5 or 5 times a power of ten yuan, from 0 up past the top bar."""
        if not (self.secondary_series and self._y_labels):
            return
        y_pos = [position for _, position in self._y_labels]
        steps = max(len(y_pos) - 1, 1)
        need = -(-max(self.fen_by_hour + [1]) // steps)
        step = _step(need, _STEPS_FEN, 1)
        self._y_2nd_labels = [(yuan(i * step), position) for i, position in enumerate(y_pos)]
        self._scale = abs(y_pos[-1] - y_pos[0]) / (steps * step / 100)
        self._scale_diff = y_pos[0]
        self._scale_min_2nd = 0


def _step(need, multiples, power):
    """The least of multiples times 10 ** (power and up) that is >= need."""
    while True:
        for multiple in multiples:
            if multiple * 10 ** power >= need:
                return multiple * 10 ** power
        power += 1


def _self_contained(root):
    """pygal's XML filter: take out its <script> elements (the inline config
    and any tooltip script) and its comments (they name pygal's site)."""
    for parent in list(root.iter()):
        for child in list(parent):
            if not isinstance(child.tag, str) or child.tag.rsplit("}", 1)[-1] == "script":
                parent.remove(child)
    return root


def _checked_points(occupancy_points):
    points = list(occupancy_points)
    if len(points) > MAX_POINTS:
        raise ValueError("occupancy: %d points, at most %d" % (len(points), MAX_POINTS))
    for point in points:
        if (len(point) != 2 or not all(type(v) is int for v in point)
                or not 0 <= point[0] <= MINUTES or not 0 <= point[1] <= MAX_CARS):
            raise ValueError("occupancy: %r is not [minute 0..%d, cars 0..%d]"
                             % (point, MINUTES, MAX_CARS))
    return [tuple(point) for point in points]


def _checked_fen(revenue_fen_by_hour):
    fen = list(revenue_fen_by_hour)
    if len(fen) != HOURS or not all(type(f) is int and 0 <= f <= MAX_HOUR_FEN for f in fen):
        raise ValueError("revenue: want %d ints of fen 0..%d, not %r"
                         % (HOURS, MAX_HOUR_FEN, fen[:HOURS + 1]))
    return fen
