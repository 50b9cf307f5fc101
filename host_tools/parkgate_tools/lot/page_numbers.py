"""The numbers of the operator page (lot/operator_page.py): one snapshot
of a lot's day, as a JSON-able dict, worked out from the store: the gates,
cars inside, the day's entries, exits and money (store.money), the flagged
sessions with their corrections, what each plate owes, the occupancy by
quarter hour, the revenue by hour, the stale and the closed sessions. A
base of OperatorPage; it uses self.store, self.tariff_source, self.clock,
self.utc_offset_s and self.lot."""
import calendar
import time

from parkgate import record, tariff
from parkgate.clock import QUALITY_NAMES
from parkgate_tools.lot.web.charts import revenue_by_hour
from parkgate_tools.lot.web.money_text import yuan

BIN_S = 900             # occupancy chart: one point every 15 minutes
STALE_AFTER_S = 90      # a gate sends its status every 30 s
FLAGGED_SHOWN = 200     # the latest flagged sessions listed (all are counted)
OWED_SHOWN = 200        # plates in the owed list, those owing most (all are summed)
DAY_S = 86400
ONLINE = record.FEE_SOURCE_NAMES[record.FEE_ONLINE]     # fee_source of a stored exit
OFFLINE = record.FEE_SOURCE_NAMES[record.FEE_OFFLINE]


class PageNumbers:
    """What the operator page shows, worked out (work_out) from the store."""

    def day_bounds(self, day=None):
        """(start, end, "YYYY-MM-DD") in unix seconds of the lot's local day
        (today by the lot's clock when day is None)."""
        if day is None:
            day = time.strftime("%Y-%m-%d", time.gmtime(self.clock() + self.utc_offset_s))
        start = calendar.timegm(time.strptime(day, "%Y-%m-%d")) - self.utc_offset_s
        return start, start + DAY_S, day

    def work_out(self, day=None, now=None):
        """The snapshot, worked out here and now (snapshot() is the one to
        call: it bounds how often this runs); now: the lot's time to use."""
        start, end, day = self.day_bounds(day)
        now = int(self.clock()) if now is None else now
        until = min(now, end)
        events = self.store.events_between(start, end)
        exits = self.store.exits_with_entries(start, end)
        corrections = self._corrections_by_event()
        entries = [e for e in events if e["kind"] == "in"]
        exits_charged = [e for e in events if e["kind"] == "out"
                         and e["fee_source"] in (ONLINE, OFFLINE)]
        money = self.store.money(start, end)
        revenue = {"online_fen": money["online"][1], "offline_fen": money["offline"][1],
                   "by_hand_fen": money["by_hand"], "collected_fen": money["collected"],
                   "owed_fen": money["owed"][1], "adjustments_fen": money["corrected"],
                   "total_fen": money["collected"] + money["corrected"]}
        for key in list(revenue):
            revenue[key[:-4]] = yuan(revenue[key])
        flagged = self._flagged(exits, corrections)
        max_stay = self.store.max_stay()
        stale, closed = self._stale(now)
        inside = self.store.inside_at(now + 1) if start <= now < end else (
            self.store.inside_at(end) if now >= end else set())
        return {
            "lot": self.lot, "day": day, "as_of": now, "as_of_local": self._local(now),
            "gates": self.gates(),
            "inside": len(inside),
            "entries": len(entries),
            "exits": len(exits_charged),
            "exits_online": money["online"][0], "exits_offline": money["offline"][0],
            "exits_owed": sum(1 for e in events if e["kind"] == "out"
                              and e["flags"] & record.FLAG_OWED),
            "exits_unsettled": money["owed"][0], "revenue": revenue,
            "owed": self._owed_list(),
            "flagged": flagged[-FLAGGED_SHOWN:], "flagged_total": len(flagged),
            "open_flags": sum(1 for f in flagged if not f["corrections"]),
            "occupancy": self._occupancy(start, until, events),
            "revenue_by_hour": revenue_by_hour(events, start),
            "upstream_backlog": self.store.outbox_backlog(),
            "max_stay_hours": None if max_stay is None else max_stay / 3600,
            "stale": stale, "closed_sessions": closed,
        }

    def gates(self):
        """Each gate's last status (store.statuses(): the status JSON the
        bridge stored). Its backlog is None ("delivered since") when an
        event of the gate was stored after that status came: the backlog
        it told of has been (or is being) delivered since. fw, ota, rb: the
        status's firmware fields as the gate sent them (firmware/docs/ota.md;
        None when absent), shown by the Firmware page (web/firmware_view.py)."""
        wall = time.time()
        gates = []
        for gate, (status, received_at) in sorted(self.store.statuses().items()):
            age = wall - received_at
            newest = self.store.latest_event(gate)
            delivered = newest is not None and newest["received_at"] > received_at
            if not status.get("on"):
                state = "offline"
            elif age > STALE_AFTER_S:
                state = "stale"
            else:
                state = "online"
            quality = status.get("clock")
            gates.append({
                "gate": gate, "state": state,
                "backlog": None if delivered else status.get("backlog"),
                "backlog_reported": status.get("backlog"),
                "seq": status.get("seq"), "acked": status.get("acked"),
                "heap": status.get("heap"), "tv": status.get("tv"),
                "fw": status.get("fw"), "ota": status.get("ota"), "rb": status.get("rb"),
                "clock_quality": quality,
                "clock": QUALITY_NAMES[quality] if type(quality) is int and 0 <= quality < len(
                    QUALITY_NAMES) else None,
                "last_seen_s": round(age, 1)})
        return gates

    def _flagged(self, exits, corrections):
        table = self.tariff_source()
        found = {}
        for x in exits:
            reasons = _flag_reasons(x["flags"])
            expected = None
            if table is not None:
                try:
                    if x["stored_entry"] is None:
                        expected = tariff.quote_no_entry(table, x["time"], x["colour"]).fee
                    else:
                        member = bool(x["flags"] & record.FLAG_MEMBER) or self.store.is_member(
                            x["plate"], x["time"])
                        expected = tariff.quote(table, x["stored_entry"], x["time"], x["colour"],
                                                member=member).fee
                except tariff.TariffError:
                    expected = None
            owed = None if expected is None else expected - x["fee"]
            if owed:
                reasons.append(("owes %s yuan" if owed > 0 else "overcharged %s yuan")
                               % yuan(abs(owed)))
            if reasons:
                found[(x["gate"], x["jid"], x["seq"])] = dict(
                    x, kind="out", expected=expected, owed=owed, reasons=reasons)
        for e in self.store.flagged():
            key = (e["gate"], e["jid"], e["seq"])
            if key not in found:
                found[key] = dict(e, expected=None, owed=None, stored_entry=None,
                                  reasons=_flag_reasons(e["flags"]))
        items = []
        for key, item in sorted(found.items(), key=lambda kv: (kv[1]["time"], kv[0])):
            # what the form offers to record: an owed fee, and what the tariff says is short
            owed_fee = (item["fee"] or 0) if item["flags"] & record.FLAG_OWED else 0
            item["collect_fen"] = max(item["owed"] or 0, 0) + owed_fee
            item["corrections"] = _counted(item, corrections.get(key, []))
            item["time_local"] = self._local(item["time"])
            items.append(item)
        return items

    def _corrections_by_event(self):
        """{(gate, jid, seq): [correction, ...]} of every correction."""
        corrections = {}
        for c in self.store.corrections():
            corrections.setdefault((c["gate"], c["jid"], c["seq"]), []).append(c)
        return corrections

    def flagged_between(self, start, end):
        """The flagged sessions of [start, end) as the snapshot lists them:
        {"flagged": the latest FLAGGED_SHOWN, "flagged_total", "open_flags"}."""
        exits = self.store.exits_with_entries(start, end)
        flagged = [f for f in self._flagged(exits, self._corrections_by_event())
                   if start <= f["time"] < end]
        return {"flagged": flagged[-FLAGGED_SHOWN:], "flagged_total": len(flagged),
                "open_flags": sum(1 for f in flagged if not f["corrections"])}

    def _owed_list(self, start=0, end=2 ** 62):
        """What each plate still owes (store.owed_by_plate) for exits in
        [start, end), the most first, at most OWED_SHOWN plates."""
        plates = []
        for plate in self.store.owed_by_plate():
            sessions = [x for x in plate["sessions"] if start <= x["time"] < end]
            if sessions:
                plates.append(dict(plate, sessions=sessions, fen=sum(x["fee"] for x in sessions)))
        plates.sort(key=lambda p: (-p["fen"], p["plate"]))
        for plate in plates[:OWED_SHOWN]:
            plate["yuan"] = yuan(plate["fen"])
            for owed in plate["sessions"]:
                owed["time_local"] = self._local(owed["time"])
        return {"plates": plates[:OWED_SHOWN], "plates_total": len(plates),
                "fen": sum(p["fen"] for p in plates),
                "yuan": yuan(sum(p["fen"] for p in plates))}

    def _occupancy(self, start, until, events):
        inside = set(self.store.inside_at(start))
        points = [[0, len(inside)]]
        boundary = start + BIN_S
        for e in events:
            while e["time"] >= boundary and boundary <= until:
                points.append([(boundary - start) // 60, len(inside)])
                boundary += BIN_S
            if e["time"] > until:
                break
            if e["kind"] == "in":
                inside.add(e["plate"])
            else:
                inside.discard(e["plate"])
        while boundary <= until:
            points.append([(boundary - start) // 60, len(inside)])
            boundary += BIN_S
        if until > start and (until - start) % BIN_S:
            points.append([(until - start) // 60, len(inside)])
        return points

    def _local(self, t):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t + self.utc_offset_s))

    def _stale(self, now):
        """Sessions past the maximum stay (not inside), oldest first, and
        the latest closed by hand."""
        stale = self.store.stale_sessions(now)
        for session in stale:
            session["time_local"] = self._local(session["time"])
            session["hours"] = (now - session["time"]) // 3600
        closed = self.store.session_closes()
        for session in closed:
            session["time_local"] = self._local(session["time"])
            session["closed_local"] = self._local(int(session["closed_at"]))
        return stale, closed



def _counted(item, corrections):
    """The corrections of a flagged item as shown, each with counted: False
    for a "collected" on an owed exit after its first (schema.CORRECTION_ACTIONS)."""
    owed = item["kind"] == "out" and item["flags"] & record.FLAG_OWED
    shown, collected = [], False
    for c in corrections:
        counted = not (owed and c["action"] == "collected" and collected)
        collected = collected or (owed and c["action"] == "collected")
        shown.append(dict({k: c[k] for k in ("id", "action", "amount", "note", "made_by")},
                          counted=counted))
    return shown


def _flag_reasons(flags):
    reasons = []
    if flags & record.FLAG_OWED:
        reasons.append("let out unpaid: fee owed")
    if flags & record.FLAG_NO_ENTRY:
        reasons.append("exit without entry")
    if flags & record.FLAG_REENTRY:
        reasons.append("re-entry closed an open session")
    return reasons
