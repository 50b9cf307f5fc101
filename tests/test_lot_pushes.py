"""Pushes from a lot to its gates (must-show 2): a lot made by `parkgate lot
init`, mosquitto on its generated configuration, `parkgate lot run` in its
own process and two simulated gates provisioned from the generated
site.json files. A tariff, a member delta, a remote open and a set-clock
pushed from the CLI reach the gate they are for (and not the other) and are
acknowledged; a gate that was offline gets the tariff from the push keeper
when it comes back; a stale version is refused and shown refused. And the
lot server's start: a broker that is not there yet is waited for, with
/healthz saying so."""
import json
import logging
import os
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from fixtures_mqtt import wait_for
from parkgate_tools.central.server import CentralServer
from parkgate_tools.cli import main as parkgate
from parkgate_tools.lot import config, pushes
from parkgate_tools.lot.push_state import PushState
from parkgate_tools.lot.run import Backoff, LotServer, retry
from parkgate_tools.lot.security import OPS_ROLE
from parkgate_tools.sim.broker import Broker, free_port
from parkgate_tools.sim.gate import DEFAULT_TARIFF, SimClock, SimGate
from parkgate_tools.sim.pgserver import PgServer

LOT = "lot1"
WAIT_S = 20


def get(url):
    """(HTTP status, JSON body) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return None, None


class Lot:
    """A lot directory from `parkgate lot init` and what runs from it."""

    def __init__(self, tmp_path, *init_options, upstream="", token_file=""):
        self.dir, self.work = str(tmp_path / "lot"), str(tmp_path / "run")
        os.makedirs(self.work)
        assert parkgate(["lot", "init", self.dir, "--lot", LOT, "--gate", "in-1",
                         "--gate", "out-1:out", "--broker-port", str(free_port()),
                         "--http-port", str(free_port())] + list(init_options)) == 0
        if upstream:
            toml = os.path.join(self.dir, "lot.toml")
            with open(toml) as f:
                text = f.read()
            with open(toml, "w") as f:
                f.write(text.replace('[upstream]\nurl = ""', '[upstream]\nurl = "%s"' % upstream)
                        .replace('token_file = ""', 'token_file = "%s"' % token_file))
        self.cfg = config.load(self.dir)
        self.broker = Broker(self.work, self.cfg.broker.port,
                             conf_path=os.path.join(self.cfg.mosquitto_dir, "mosquitto.conf"))
        self.log_path = os.path.join(self.work, "lot-run.log")
        self.server = None
        self.gates = {}

    def run(self):
        """`parkgate lot run DIR` in its own process."""
        with open(self.log_path, "ab") as log:
            self.server = subprocess.Popen(
                [sys.executable, "-m", "parkgate_tools.cli", "lot", "run", self.dir],
                stdout=log, stderr=subprocess.STDOUT)

    def healthz(self):
        return get("http://%s:%d/healthz" % (self.cfg.http.host, self.cfg.http.port))

    def metrics(self):
        return get("http://%s:%d/metrics" % (self.cfg.http.host, self.cfg.http.port))[1]

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def gate(self, gate_id):
        """A simulated gate whose site.json is the lot directory's, booted."""
        with open(self.cfg.site_path(gate_id)) as f:
            site = json.load(f)
        site.update(backoff_max_ms=1000)
        gate = SimGate(self.work, gate_id, LOT, site["direction"], site["port"],
                       SimClock(time.time()), broker_host=site["broker"], site_extra=site)
        self.gates[gate_id] = gate
        gate.provision()
        return gate.start()

    def stop(self):
        for gate in self.gates.values():
            gate.stop()
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            self.server.wait(15)
        self.broker.stop()


    def start(self):
        """Broker, `parkgate lot run` (healthy), gates in-1 and out-1 linked
        with their status out; returns self."""
        self.broker.start()
        self.run()
        wait_for(lambda: self.healthz()[0] == 200, WAIT_S, "/healthz 200")
        for gate_id in ("in-1", "out-1"):
            self.gate(gate_id).wait_line(r"STATUS backlog", WAIT_S)
        return self


@pytest.fixture
def lot(tmp_path):
    """A running Lot."""
    made = Lot(tmp_path)
    try:
        yield made.start()
    finally:
        made.stop()


def push(lot, capsys, *argv):
    """Run a `parkgate lot` push command; (exit code, {gate: its line})."""
    capsys.readouterr()
    code = parkgate(["lot", argv[0], lot.dir] + list(argv[1:]))
    lines = capsys.readouterr().out.splitlines()
    return code, {line.split(":", 1)[0]: line for line in lines}


def tariff_file(tmp_path, version):
    doc = json.load(open(DEFAULT_TARIFF, encoding="utf-8"))
    doc["version"] = version
    doc.pop("examples", None)
    path = tmp_path / ("tariff-%d.json" % version)
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return str(path)


def members_file(tmp_path, version, plates):
    path = tmp_path / ("members-%d.json" % version)
    path.write_text(json.dumps({"version": version, "members": [
        {"plate": plate, "until": None} for plate in plates]}, ensure_ascii=False),
        encoding="utf-8")
    return str(path)


def test_each_push_reaches_its_gate_only_and_is_acknowledged(lot, tmp_path, capsys):
    inside, outside = lot.gates["in-1"], lot.gates["out-1"]
    code, lines = push(lot, capsys, "push-tariff", tariff_file(tmp_path, 2), "--gate", "in-1")
    assert code == 0 and list(lines) == ["in-1"], lines
    assert "tariff v2 (table) accepted: tv=2" in lines["in-1"]
    inside.wait_line(r"TARIFF installed version=2", 5)
    assert outside.lines(r"TARIFF installed") == []
    wait_for(lambda: lot.metrics()["bridge"]["tariff_version"] == 2, WAIT_S,
             "the lot's fees from the table a gate took")

    first = members_file(tmp_path, 1, ["粤B12345"])
    code, lines = push(lot, capsys, "push-members", first)
    assert code == 0 and sorted(lines) == ["in-1", "out-1"], lines
    assert all("members v1 (whole) accepted: mv=1" in line for line in lines.values()), lines
    second = members_file(tmp_path, 2, ["粤B12345", "粤B99999"])
    code, lines = push(lot, capsys, "push-members", second, "--delta-from", first,
                       "--gate", "out-1")
    assert code == 0 and "members v2 (delta from 1) accepted: mv=2" in lines["out-1"], lines
    outside.wait_line(r"MEMBERS installed version=2 count=2", 5)
    assert inside.lines(r"MEMBERS installed version=2") == []
    code, lines = push(lot, capsys, "push-members", members_file(tmp_path, 3, ["粤B99999"]),
                       "--delta-from", second)        # in-1 is at 1: the whole list
    assert code == 0 and "members v3 (delta from 2) accepted: mv=3" in lines["out-1"] and \
        "members v3 (whole) accepted: mv=3" in lines["in-1"], lines

    code, lines = push(lot, capsys, "open", "out-1", "--within", "30")
    assert code == 0 and "open v1 (command) accepted: cv=1" in lines["out-1"], lines
    outside.wait_line(r"OPEN remote command v=1", 5)
    assert outside.relay_openings() == 1 and inside.relay_openings() == 0

    code, lines = push(lot, capsys, "set-clock", "in-1")
    assert code == 0 and "setclock v1 (command) accepted: cv=1" in lines["in-1"], lines
    inside.wait_line(r"CLOCK asked by the lot office v=1", 5)
    inside.wait_line(r"CLOCK set from lot server", 5, count=2)
    assert outside.lines(r"CLOCK asked") == []
    for gate_id, base in (("out-1", 2), ("in-1", None)):
        record = json.load(open(os.path.join(lot.cfg.pushes_dir, gate_id, "members.json")))
        assert (record["v"], record["base"], len(record["envelopes"])) == (3, base, 1)


def set_back_the_counter(lot):
    """out-1's command counter back to 0, as a lost state/ would."""
    with open(os.path.join(lot.cfg.state_dir, "commands.json"), "w") as f:
        json.dump({"out-1": 0}, f)


def test_a_stale_version_is_refused_and_shown_refused(lot, tmp_path, capsys):
    table = tariff_file(tmp_path, 2)
    assert push(lot, capsys, "push-tariff", table, "--gate", "out-1")[0] == 0
    code, lines = push(lot, capsys, "push-tariff", table, "--gate", "out-1", "--wait", "10")
    assert code == 1 and "tariff v2 (table) refused: stale: version 2, 2 applied" in \
        lines["out-1"], lines
    code, lines = push(lot, capsys, "push-tariff", tariff_file(tmp_path, 1), "--gate", "out-1")
    assert code == 1 and "refused: stale: version 1, 2 applied" in lines["out-1"], lines

    # The command counter only moves forward; one set back is refused.
    assert push(lot, capsys, "open", "out-1", "--within", "20")[0] == 0
    set_back_the_counter(lot)
    code, lines = push(lot, capsys, "open", "out-1", "--within", "20")
    assert code == 1 and "open v1 (command) refused: stale: version 1, 1 applied" in \
        lines["out-1"], lines
    assert lot.gates["out-1"].relay_openings() == 1
    set_back_the_counter(lot)
    code, lines = push(lot, capsys, "set-clock", "out-1")
    assert code == 1 and "setclock v1 (command) refused: stale: version 1, 1 applied" in \
        lines["out-1"], lines


def test_a_gate_that_was_offline_gets_the_tariff_when_it_is_back(lot, tmp_path, capsys):
    away = lot.gates["in-1"]
    away.kill()
    wait_for(lambda: status_of(lot, "in-1") == {"on": 0}, WAIT_S, "in-1's last will")
    code, lines = push(lot, capsys, "push-tariff", tariff_file(tmp_path, 3), "--wait", "5")
    assert code == 1, lines
    assert "accepted: tv=3" in lines["out-1"], lines
    assert "tariff v3 (table) no answer: in 5 s (gate offline)" in lines["in-1"], lines
    assert away.lines(r"TARIFF installed") == []
    away.start()
    away.wait_line(r"TARIFF installed version=3", WAIT_S)
    assert "gate in-1 has tariff 1, sending version 3" in lot.log()
    # The keeper sends it once: the gate's status shows it now.
    time.sleep(2)
    assert len(away.lines(r"REFUSED tariff")) == 0


def status_of(lot, gate_id):
    """gate_id's retained status as the lot's _ops user hears it."""
    watch = pushes.GateWatch(lot.cfg, OPS_ROLE).start()
    try:
        watch.wait_subscribed()
        return watch.status(gate_id)
    finally:
        watch.stop()


def test_lot_run_waits_for_a_broker_that_is_not_there_yet(tmp_path):
    made = Lot(tmp_path)
    try:
        made.run()
        wait_for(lambda: made.healthz()[1] is not None and
                 made.healthz()[1].get("waiting_for") == "broker", WAIT_S, "waiting for broker")
        assert made.healthz() == (503, {"lot": LOT, "status": "starting",
                                        "waiting_for": "broker"})
        wait_for(lambda: "attempt 2 failed, retrying in 2 s" in made.log(), WAIT_S, "a retry")
        made.broker.start()
        wait_for(lambda: made.healthz()[0] == 200, 40, "/healthz 200 once the broker is up")
        status, body = made.healthz()
        assert body == {"lot": LOT, "status": "ok", "bridge": "live", "store": "ok",
                        "push_keeper": "connected"}, body
        metrics = made.metrics()
        assert metrics["bridge"]["live"] == 1 and metrics["push_keeper"]["connected"] == 1
        assert made.server.poll() is None
    finally:
        made.stop()
    assert made.server.returncode == 0


def test_tables_from_the_central_server_flow_on_to_every_gate(tmp_path):
    central = CentralServer(str(tmp_path / "central.sqlite"), tokens={LOT: "lot-token"}).start()
    central.set_tariff(LOT, open(tariff_file(tmp_path, 4), encoding="utf-8").read())
    central.set_members(LOT, [{"p": "粤B12345", "name": "x"}])
    (tmp_path / "upstream.token").write_text("lot-token\n")
    made = Lot(tmp_path, upstream=central.url, token_file=str(tmp_path / "upstream.token"))
    try:
        made.start()
        for gate in made.gates.values():
            gate.wait_line(r"TARIFF installed version=4", WAIT_S)
            gate.wait_line(r"MEMBERS installed version=1 count=1", WAIT_S)
        for kind in ("tariff", "members"):
            assert "%s version %s from the central server signed for 2 gates" % (
                kind, 4 if kind == "tariff" else 1) in made.log()
    finally:
        made.stop()
        central.close()


def test_lot_run_waits_for_a_database_that_is_not_there_yet(tmp_path):
    database = PgServer()
    made = Lot(tmp_path, "--db", database.url())
    try:
        made.broker.start()
        made.run()
        wait_for(lambda: made.healthz()[1] is not None and
                 made.healthz()[1].get("waiting_for") == "database", WAIT_S, "waiting")
        wait_for(lambda: "attempt 2 failed, retrying in 2 s" in made.log(), WAIT_S, "a retry")
        assert "database postgresql://%s@/postgres?host=" % database.user in made.log()
        database.start()
        wait_for(lambda: made.healthz()[0] == 200, 40, "/healthz 200 once the database is up")
        database.stop()
        wait_for(lambda: made.healthz()[0] == 503, WAIT_S, "/healthz 503 without it")
        assert made.healthz()[1]["status"] == "failing" and made.healthz()[1]["store"] != "ok"
    finally:
        made.stop()
        database.stop()


# ---- the parts ----

def test_backoff_doubles_up_to_its_cap():
    backoff = Backoff(1, 30)
    assert [backoff.next() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.attempts == 7
    with pytest.raises(ValueError):
        Backoff(0, 30)


def test_retry_logs_each_failure_then_returns_the_result(caplog):
    calls = []

    def attempt():
        calls.append(1)
        if len(calls) < 3:
            raise OSError("connection refused")
        return "open"
    with caplog.at_level(logging.INFO, logger="parkgate.lot"):
        assert retry("database x", attempt, threading.Event(), Backoff(0.01, 0.02)) == "open"
    assert [r.getMessage() for r in caplog.records] == [
        "database x: connection refused; attempt 1 failed, retrying in 0.01 s",
        "database x: connection refused; attempt 2 failed, retrying in 0.02 s",
        "database x: reachable after 2 failed attempts"]
    stopped = threading.Event()
    stopped.set()
    assert retry("database x", attempt, stopped) is None and len(calls) == 3


def test_the_command_counter_only_moves_forward(tmp_path):
    lot_dir = str(tmp_path / "lot")
    assert parkgate(["lot", "init", lot_dir, "--lot", LOT, "--gate", "in-1",
                     "--gate", "out-1:out"]) == 0
    state = PushState(config.load(lot_dir))
    assert [state.next_command("in-1") for _ in range(3)] == [1, 2, 3]
    assert PushState(config.load(lot_dir)).next_command("in-1") == 4     # kept on disk
    assert state.next_command("out-1") == 1
    given = []
    threads = [threading.Thread(target=lambda: given.extend(
        state.next_command("out-1") for _ in range(25))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(given) == list(range(2, 102))          # none given twice
    path = os.path.join(state.config.state_dir, "commands.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # A table's record never goes back to an older version; a command's is the last sent.
    assert state.record("in-1", "tariff", 3, [{"v": 3}])
    assert not state.record("in-1", "tariff", 2, [{"v": 2}])
    assert state.newest("in-1", "tariff")["envelopes"] == [{"v": 3}]
    assert state.record("in-1", "open", 5, []) and state.record("in-1", "open", 4, [])
    assert state.newest("in-1", "open")["v"] == 4


def test_lot_run_keeps_the_lots_maximum_stay_in_its_store(tmp_path):
    lot_dir = str(tmp_path / "lot")
    assert parkgate(["lot", "init", lot_dir, "--lot", LOT, "--gate", "in-1"]) == 0
    with open(os.path.join(lot_dir, "lot.toml"), "a") as f:
        f.write("\n[policy]\nmax_stay_hours = 5\n")
    bridge = LotServer(config.load(lot_dir))._bridge()
    try:
        assert bridge.store.max_stay() == 5 * 3600
    finally:
        bridge.store.close()
