"""`parkgate demo`: one simulated car park, end to end.

Starts mosquitto, the lot bridge, an entry gate and an exit gate (two
MicroPython processes running the firmware), drives cars through, stops the
broker for part of the run, and prints what happened: cars in and out, relay
openings, events journaled and stored (each exactly once), fees charged
online and offline, and anything lost. It serves the lot's web application
with two accounts (an attendant and a manager; their passwords, made for the
run, are in the report) and at the end takes screenshots of its main pages
in headless Chromium into the demo's folder (sim/demo_web.py)."""
import os
import random
import secrets
import sqlite3
import sys
import tempfile
import time

from parkgate import tariff as tariff_engine
from parkgate_tools.lot import health
from parkgate_tools.lot.bridge import Bridge
from parkgate_tools.sim import demo_web
from parkgate_tools.sim.broker import Broker
from parkgate_tools.central.server import CentralServer
from parkgate_tools.lot.operator_page import OperatorPage
from parkgate_tools.sim.gate import DEFAULT_TARIFF, SimClock, SimGate
from parkgate_tools.sim.waiting import wait_until

LOT = "demo"
PROVINCES = "京沪粤苏浙川鄂湘"
LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
# 2026-11-25 08:00 in UTC+8: the morning the demo's simulated clock starts.
DEMO_START = 1795564800


class Car:
    def __init__(self, plate, colour, enter_at, exit_at):
        self.plate = plate
        self.colour = colour
        self.enter_at = enter_at   # host seconds from the start of the run
        self.exit_at = exit_at


# After the broker is back: time for the lanes and the bridge to reconnect
# (each with its own backoff) and for the entry lane's backlog to be heard.
RECONNECT_S = 10.0


def plan(cars, seed, spacing, outage):
    """Cars with entry and exit moments. A car that leaves while the exit lane
    is offline came in before the broker went down, so the exit lane heard
    its entry; a car that came in during the outage leaves after the lanes
    have reconnected (an exit lane cannot know an entry it never heard of:
    that case is flagged, see the no-entry fee)."""
    rng = random.Random(seed)
    plates = set()
    schedule = []
    for i in range(cars):
        while True:
            plate = rng.choice(PROVINCES) + rng.choice(LETTERS) + "".join(
                rng.choice("0123456789" + LETTERS) for _ in range(5))
            if plate not in plates:
                plates.add(plate)
                break
        enter_at = 1.0 + i * spacing
        exit_at = enter_at + rng.uniform(1.5, 16.0)
        if enter_at >= outage[0] - 0.5 and exit_at <= outage[1] + RECONNECT_S:
            exit_at = outage[1] + RECONNECT_S + rng.uniform(0.0, 8.0)
        schedule.append(Car(plate, rng.choice((0, 0, 0, 1, 4)), enter_at, exit_at))
    return schedule


def _actions(schedule):
    actions = []
    for car in schedule:
        actions.append((car.enter_at, "in", car))
        actions.append((car.exit_at, "out", car))
    actions.sort(key=lambda a: a[0])
    return actions


def stored_events(db_path):
    con = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True)
    try:
        return con.execute(
            "SELECT gate, jid, seq, kind, time, plate, colour, fee, fee_source, entry_time, flags "
            "FROM events ORDER BY gate, jid, seq").fetchall()
    finally:
        con.close()


def run(workdir=None, cars=60, seed=1, spacing=0.4, outage=(12.0, 26.0), rate=600,
        out=sys.stdout, gate_heap=None, http_port=None, upstream=False, central_outage=None,
        on_running=None, on_drained=None, screenshots=True):
    """Run the demo and return its report as a dict.

    The web application is served on http_port (default: a free port),
    with the accounts of demo_web.make_accounts; screenshots=False takes
    no screenshots at the end. Optional, off by default: upstream=True runs
    a central server the bridge forwards to,
    central_outage=(from, to) seconds of the run stops it meanwhile (and
    implies upstream); the report then says what reached it. on_running and
    on_drained are called with a context dict (lot, workdir, db_path,
    page_url, accounts, central, central_url, bridge, broker, gates, clock):
    once the gates are up, and once every event is stored, before anything
    stops."""
    workdir = workdir or tempfile.mkdtemp(prefix="parkgate-demo-")
    say = lambda text: (out.write(text + "\n"), out.flush())  # noqa: E731
    schedule = plan(cars, seed, spacing, outage)
    tariff_text = open(DEFAULT_TARIFF, encoding="utf-8").read()
    tariff = tariff_engine.loads(tariff_text)
    db_path = os.path.join(workdir, "lot.sqlite")
    broker = Broker(os.path.join(workdir, "broker"))
    central = bridge = page = None
    gates = {}
    # Everything started from here on is stopped in the finally below, also
    # when something fails to start (a gate that does not boot).
    broker.start()
    try:
        bridge_options = {}
        if upstream or central_outage:
            token = secrets.token_urlsafe(16)   # the central server refuses a lot without
            central = CentralServer(os.path.join(workdir, "central.sqlite"),
                                    tokens={LOT: token}).start()
            bridge_options = {"upstream": central.url, "upstream_token": token,
                              "forwarder_options": {"backoff_max": 2.0, "timeout": 2.0,
                                                    "sync_every": 5.0}}
        clock = SimClock(DEMO_START, rate)
        bridge = Bridge(LOT, broker.host, broker.port, db_path, DEFAULT_TARIFF, clock=clock.now,
                        **bridge_options)
        bridge.start()
        accounts = demo_web.make_accounts(bridge.store)
        page = OperatorPage(bridge.store, LOT, lambda: bridge.tariff, port=http_port or 0,
                            clock=clock.now,
                            health=lambda: health.bridge_health(bridge)).start()
        extra = {"backoff_max_ms": 2000}
        for name, direction in (("in", "in"), ("out", "out")):
            kwargs = {"heap": gate_heap} if gate_heap else {}
            gate = SimGate(workdir, "gate-" + name, LOT, direction, broker.port, clock,
                           site_extra=extra, **kwargs)
            gates[direction] = gate
            gate.provision()
            gate.start()
        say("parkgate demo in %s: %d cars, broker down from +%.0f s to +%.0f s, "
            "1 s = %d min of parking" % (workdir, cars, outage[0], outage[1], rate // 60))
        say("operator page: %s" % page.url)
        for role, (name, password) in accounts.items():
            say("  %s: user %s, password %s" % (role, name, password))
        context = {"lot": LOT, "workdir": workdir, "db_path": db_path,
                   "page_url": page.url, "accounts": accounts, "central": central,
                   "central_url": central.url if central else None, "bridge": bridge,
                   "broker": broker, "gates": gates, "clock": clock}
        central_state = {"down": False, "back": central_outage is None}
        for gate in gates.values():
            gate.wait_line(r"LINK up", 15)
        if on_running:
            on_running(context)
        start = time.time()
        broker_down = False
        broker_back = False
        for at, direction, car in _actions(schedule):
            while True:
                now = time.time() - start
                _central_outage(central, central_outage, central_state, now, say)
                if not broker_down and now >= outage[0]:
                    broker.kill()
                    broker_down = True
                    say("+%5.1f s  broker killed" % now)
                if broker_down and not broker_back and now >= outage[1]:
                    broker.start()
                    broker_back = True
                    say("+%5.1f s  broker restarted" % now)
                if now >= at:
                    break
                time.sleep(min(0.02, at - now))
            gates[direction].send_plate(car.plate, car.colour)
        while not broker_back or not central_state["back"]:
            now = time.time() - start
            if not broker_back and now >= outage[1]:
                broker.start()
                broker_back = True
            _central_outage(central, central_outage, central_state, now, say)
            time.sleep(0.05)
        # A car still waiting at a lane is read again by its camera.
        colours = {car.plate: car.colour for car in schedule}
        for gate in gates.values():
            gate.read_until_journaled([car.plate for car in schedule], 60, colours=colours)
        journaled = {g.gate: max(e["seq"] for e in g.events()) for g in gates.values()}

        def drained():
            rows = stored_events(db_path)
            return all(sum(1 for r in rows if r[0] == gate) >= n for gate, n in journaled.items())
        wait_until(drained, 60, "the gates' backlogs to drain to the bridge", every=0.1)
        if central is not None:
            wait_until(lambda: bridge.store.outbox_backlog() == 0, 60,
                       "the outbox to drain to the central server", every=0.1)
        elapsed = time.time() - start
        if on_drained:
            on_drained(context)
        shots, skipped = demo_web.screenshots(
            page.url, accounts, workdir, sorted({r[5] for r in stored_events(db_path)})
        ) if screenshots else ([], None)
    finally:
        if page is not None:
            page.stop()
        for gate in gates.values():
            gate.stop()
        if bridge is not None:
            bridge.stop()
        broker.stop()
        if central is not None:
            central.stop()
    report = analyse(schedule, gates, stored_events(db_path), tariff, journaled)
    report["elapsed_s"] = round(elapsed, 1)
    report["workdir"] = workdir
    report["accounts"] = accounts
    report["screenshots"] = shots
    print_report(report, say)
    for path in shots:
        say("screenshot: %s" % path)
    if skipped:
        say("screenshots skipped: %s" % skipped)
    if central is not None:
        report["upstream"] = upstream_report(central, stored_events(db_path))
        say("forwarded to the central server: %d of %d events, %d sent more than once "
            "(stored once)" % (report["upstream"]["stored"], report["stored_rows"],
                               report["upstream"]["duplicates_received"]))
        central.close()
    return report


def _central_outage(central, window, state, now, say):
    """Stop the central server at window[0] s into the run, start it at window[1]."""
    if window is None:
        return
    if not state["down"] and now >= window[0]:
        central.stop()
        state["down"] = True
        say("+%5.1f s  central server stopped" % now)
    if state["down"] and not state["back"] and now >= window[1]:
        central.start()
        state["back"] = True
        say("+%5.1f s  central server back" % now)


def upstream_report(central, rows):
    """What reached the central server: stored (rows), missing and extra
    identities against the lot's rows, duplicates it received."""
    lot_ids = {(r[0], r[1], r[2]) for r in rows}
    central_rows = central.store.events(LOT)
    central_ids = {(r[0], r[1], r[2]) for r in central_rows}
    return {"stored": len(central_rows), "identities": len(central_ids),
            "missing": len(lot_ids - central_ids), "extra": len(central_ids - lot_ids),
            "duplicates_received": central.duplicates}


def analyse(schedule, gates, rows, tariff, journaled):
    """Compare what was driven, what the gates did and what the bridge stored."""
    plates = {car.plate for car in schedule}
    identities = [(r[0], r[1], r[2]) for r in rows]
    entries = [r for r in rows if r[3] == "in"]
    exits = [r for r in rows if r[3] == "out"]
    entry_time = {r[5]: r[4] for r in entries}
    fee_errors = []
    for r in exits:
        if r[5] not in entry_time:
            fee_errors.append((r[5], "no entry stored"))
            continue
        expected = tariff_engine.quote(tariff, entry_time[r[5]], r[4], r[6]).fee
        if r[7] != expected:
            fee_errors.append((r[5], "charged %d, tariff says %d" % (r[7], expected)))
    per_gate = {}
    for gate in gates.values():
        stored = [r for r in rows if r[0] == gate.gate]
        seqs = sorted(r[2] for r in stored)
        per_gate[gate.gate] = {
            "journaled": journaled[gate.gate],
            "relay_openings": gate.relay_openings(),
            "stored": len(stored),
            "missing": len(set(range(1, journaled[gate.gate] + 1)) - set(seqs)),
            "rejects": len(gate.lines(r" REJECT ")),
        }
    online = [r for r in exits if r[8] == "on"]
    offline = [r for r in exits if r[8] == "off"]
    return {
        "cars": len(schedule),
        "cars_in": len({r[5] for r in entries} & plates),
        "cars_out": len({r[5] for r in exits} & plates),
        "gates": per_gate,
        "stored_rows": len(rows),
        "duplicates": len(identities) - len(set(identities))
        + (len(entries) - len({r[5] for r in entries}))
        + (len(exits) - len({r[5] for r in exits})),
        "lost": (len(plates) - len({r[5] for r in entries}))
        + (len(plates) - len({r[5] for r in exits}))
        + sum(g["missing"] for g in per_gate.values()),
        "exits_online": len(online),
        "exits_offline": len(offline),
        "fees_online_fen": sum(r[7] for r in online),
        "fees_offline_fen": sum(r[7] for r in offline),
        "fee_errors": fee_errors,
    }


def _yuan(fen):
    return "%d.%02d" % divmod(fen, 100)


def print_report(report, say):
    say("")
    say("gate      journaled  relay openings  stored by bridge  missing  camera rejects")
    for name, g in sorted(report["gates"].items()):
        say("%-9s %9d  %14d  %16d  %7d  %14d" % (
            name, g["journaled"], g["relay_openings"], g["stored"], g["missing"], g["rejects"]))
    say("cars driven %d: in %d, out %d" % (report["cars"], report["cars_in"], report["cars_out"]))
    say("exits charged online by the lot bridge: %d (%s yuan)" % (
        report["exits_online"], _yuan(report["fees_online_fen"])))
    say("exits charged offline on the gate:      %d (%s yuan)" % (
        report["exits_offline"], _yuan(report["fees_offline_fen"])))
    say("exit fees equal to the tariff quote for the stay: %d of %d" % (
        report["exits_online"] + report["exits_offline"] - len(report["fee_errors"]),
        report["exits_online"] + report["exits_offline"]))
    for plate, why in report["fee_errors"]:
        say("  fee error %s: %s" % (plate, why))
    say("events stored %d; lost %d; duplicated %d; %.1f s" % (
        report["stored_rows"], report["lost"], report["duplicates"], report["elapsed_s"]))


def add_parser(subparsers):
    parser = subparsers.add_parser("demo", help="run the simulated car park demo")
    parser.add_argument("--cars", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", help="keep the run's files here (default: a temp folder)")
    parser.add_argument("--http", type=int, metavar="PORT", default=0,
                        help="serve the operator page on this port (default: a free one)")
    parser.add_argument("--no-screenshots", action="store_true",
                        help="take no screenshots of the web application at the end")
    parser.add_argument("--upstream", action="store_true",
                        help="forward to a central server, stopped for a stretch of the run")
    parser.set_defaults(run=_main)


def _main(args):
    report = run(args.workdir, cars=args.cars, seed=args.seed, http_port=args.http,
                 upstream=args.upstream, central_outage=(8.0, 30.0) if args.upstream else None,
                 screenshots=not args.no_screenshots)
    ok = report["lost"] == 0 and report["duplicates"] == 0 and not report["fee_errors"]
    if "upstream" in report:
        ok = ok and report["upstream"]["missing"] == report["upstream"]["extra"] == 0
    return 0 if ok else 1
