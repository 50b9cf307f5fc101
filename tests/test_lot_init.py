"""`parkgate lot init` to a running lot (must-show 1): the generated
mosquitto configuration run by the real mosquitto, the lot server, and two
simulated gates provisioned from the generated site.json files. Cars go
through; a gate's credentials cannot speak for another gate or take the
bridge's session. And the provisioning commands' files, modes and refusals."""
import io
import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
import time
import urllib.request

import paho.mqtt.client as mqtt
import pytest

from fixtures_mqtt import FakeGate, entry, wait_for
from parkgate_tools.cli import main as parkgate
from parkgate_tools.lot import config, provision
from parkgate_tools.lot.config import ConfigError
from parkgate_tools.lot.web.client import WebClient
from parkgate_tools.sim.broker import Broker, free_port, make_certificates
from parkgate_tools.sim.gate import SimClock, SimGate

LOT = "lot1"
GATES = ("in-1", "out-1:out")
WAIT_S = 20


def init(lot_dir, *extra):
    """Run `parkgate lot init` as an operator would; its exit code."""
    argv = ["lot", "init", str(lot_dir), "--lot", LOT]
    for gate in GATES:
        argv += ["--gate", gate]
    return parkgate(argv + list(extra))


def files_of(lot_dir):
    """{relative path: bytes} of every file in the lot directory."""
    found = {}
    for folder, _, names in os.walk(lot_dir):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, lot_dir)] = f.read()
    return found


# ---- the lot directory ----

def test_init_writes_a_lot_directory_with_its_secrets_private(tmp_path):
    lot_dir = tmp_path / "lot"
    assert init(lot_dir, "--broker-port", "18831") == 0
    cfg = config.load(lot_dir)
    assert cfg.lot == LOT and [(g.id, g.direction) for g in cfg.gates] == [
        ("in-1", "in"), ("out-1", "out")]
    assert stat.S_IMODE(os.stat(lot_dir).st_mode) == 0o700
    private = ["secrets.json", "keys/in-1.key", "keys/out-1.key", "gates/in-1/site.json",
               "gates/out-1/site.json", "mosquitto/passwd", "mosquitto/acl", "state/session.key"]
    for name in private:
        assert stat.S_IMODE(os.stat(lot_dir / name).st_mode) == 0o600, name
    secrets = json.loads((lot_dir / "secrets.json").read_text())
    assert sorted(secrets["users"]) == ["lot1._bridge", "lot1._ops", "lot1._ota", "lot1._push",
                                        "lot1.in-1", "lot1.out-1"]
    public = files_of(lot_dir)["lot.toml"] + files_of(lot_dir)["mosquitto/mosquitto.conf"]
    for user in secrets["users"].values():
        assert user["password"].encode() not in public
    for gate in cfg.gates:
        site = json.loads(open(cfg.site_path(gate.id)).read())
        assert site == {"lot": LOT, "gate": gate.id, "direction": gate.direction,
                        "broker": "127.0.0.1", "port": 18831,
                        "mqtt_user": "lot1." + gate.id,
                        "mqtt_password": cfg.mqtt_password("lot1." + gate.id),
                        "key": cfg.gate_key(gate.id).hex()}
        assert site["key"].encode() not in public
    conf = (lot_dir / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    for line in ("listener 18831 127.0.0.1", "allow_anonymous false",
                 "use_username_as_clientid true", "message_size_limit 4096",
                 "max_packet_size 4608", "persistence_location %s/" % cfg.state_dir,
                 "password_file %s/passwd" % cfg.mosquitto_dir,
                 "acl_file %s/acl" % cfg.mosquitto_dir):
        assert line in conf, line
    assert not any(line.startswith("cafile") for line in conf)


def test_init_with_a_certificate_adds_a_tls_listener(tmp_path):
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    cert.write_text("x")
    key.write_text("x")
    assert init(tmp_path / "lot", "--tls-cert", str(cert), "--tls-key", str(key),
                "--tls-port", "18883") == 0
    conf = (tmp_path / "lot" / "mosquitto" / "mosquitto.conf").read_text()
    assert "listener 18883 127.0.0.1\ncertfile %s\nkeyfile %s\n" % (cert, key) in conf
    assert config.load(tmp_path / "lot").broker.tls_port == 18883


@pytest.mark.parametrize("argv, problem", [
    (["--lot", "lot.1", "--gate", "in-1"], "lot: 'lot.1' is not letters"),
    (["--lot", LOT, "--gate", "in_1"], "gate: 'in_1' is not letters"),
    (["--lot", LOT, "--gate", "server"], "lot server's own topic level"),
    (["--lot", "L" * 33, "--gate", "in-1"], "longer than 32 characters"),
    (["--lot", LOT, "--gate", "in-1:up"], "direction 'up' is not in or out"),
    (["--lot", LOT, "--gate", "in-1", "--gate", "in-1:out"], "give each gate once"),
])
def test_init_refuses_a_bad_id_and_writes_nothing(tmp_path, capsys, argv, problem):
    assert parkgate(["lot", "init", str(tmp_path / "lot")] + argv) == 2
    assert problem in capsys.readouterr().err
    assert not (tmp_path / "lot").exists()


def test_init_never_overwrites_a_lot_directory(tmp_path, capsys):
    lot_dir = tmp_path / "lot"
    assert init(lot_dir) == 0
    before = files_of(lot_dir)
    assert init(lot_dir) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert files_of(lot_dir) == before


def changed(before, after):
    """(added, removed, changed) relative paths between two files_of()."""
    return (sorted(set(after) - set(before)), sorted(set(before) - set(after)),
            sorted(p for p in set(before) & set(after) if before[p] != after[p]))


def passwords(lot_dir):
    return {user: entry["password"] for user, entry in
            json.loads((lot_dir / "secrets.json").read_text())["users"].items()}


# What every command regenerates: the password file is rehashed (new salts).
BROKER_FILES = ["mosquitto/passwd"]


def test_add_remove_and_rotate_change_exactly_what_they_should(tmp_path, capsys):
    lot_dir = tmp_path / "lot"
    assert init(lot_dir) == 0
    before, users = files_of(lot_dir), passwords(lot_dir)
    assert parkgate(["lot", "add-gate", str(lot_dir), "out-2:out"]) == 0
    assert "systemctl reload parkgate-mosquitto@lot1" in capsys.readouterr().out
    after = files_of(lot_dir)
    assert changed(before, after) == (
        ["gates/out-2/site.json", "keys/out-2.key"], [],
        ["lot.toml", "mosquitto/acl", "mosquitto/passwd", "secrets.json"])
    assert {u: p for u, p in passwords(lot_dir).items() if u != "lot1.out-2"} == users
    assert "user lot1.out-2\ntopic write pg/lot1/out-2/up/#" in after["mosquitto/acl"].decode()
    assert config.load(lot_dir).gate("out-2").direction == "out"

    before = after
    assert parkgate(["lot", "rotate-key", str(lot_dir), "in-1"]) == 0
    after = files_of(lot_dir)
    assert changed(before, after) == ([], [], ["gates/in-1/site.json", "keys/in-1.key"]
                                      + BROKER_FILES)
    assert json.loads(after["gates/in-1/site.json"])["key"] == after["keys/in-1.key"].decode(
        ).strip()

    before, users = after, passwords(lot_dir)
    assert parkgate(["lot", "rotate-key", str(lot_dir), "in-1", "--password"]) == 0
    after = files_of(lot_dir)
    assert changed(before, after) == ([], [], ["gates/in-1/site.json", "keys/in-1.key"]
                                      + BROKER_FILES + ["secrets.json"])
    rotated = passwords(lot_dir)
    assert rotated.pop("lot1.in-1") != users.pop("lot1.in-1") and rotated == users

    kept = lot_dir / "state" / "pushes" / "out-1" / "tariff.json"
    kept.parent.mkdir(parents=True)
    kept.write_text("{}")
    before, users = files_of(lot_dir), passwords(lot_dir)
    assert parkgate(["lot", "remove-gate", str(lot_dir), "out-1"]) == 0
    after = files_of(lot_dir)
    assert changed(before, after) == (
        [], ["gates/out-1/site.json", "keys/out-1.key", "state/pushes/out-1/tariff.json"],
        ["lot.toml", "mosquitto/acl", "mosquitto/passwd", "secrets.json"])
    del users["lot1.out-1"]
    assert passwords(lot_dir) == users
    assert "out-1" not in after["mosquitto/acl"].decode()
    assert "lot1.out-1:" not in after["mosquitto/passwd"].decode()
    assert [g.id for g in config.load(lot_dir).gates] == ["in-1", "out-2"]
    with pytest.raises(ConfigError, match="no \\[\\[gate\\]\\] with id = 'out-1'"):
        provision.rotate_key(lot_dir, "out-1")
    with pytest.raises(ConfigError, match="gate 'in-1' is there already"):
        provision.add_gate(lot_dir, "in-1")


def test_rotate_key_forgets_the_pushes_signed_with_the_old_key(tmp_path):
    lot_dir = tmp_path / "lot"
    assert init(lot_dir) == 0
    kept = {gate: lot_dir / "state" / "pushes" / gate / "tariff.json" for gate in ("in-1", "out-1")}
    for path in kept.values():
        path.parent.mkdir(parents=True)
        path.write_text("{}")
    provision.rotate_key(lot_dir, "in-1")
    assert not kept["in-1"].parent.exists() and kept["out-1"].exists()


def test_a_broken_lot_toml_is_named_by_file_and_key(tmp_path):
    lot_dir = tmp_path / "lot"
    assert init(lot_dir) == 0
    toml = lot_dir / "lot.toml"
    toml.write_text(toml.read_text().replace("port = 1883", 'port = "1883"'))
    with pytest.raises(ConfigError, match=r"lot\.toml: broker\.port: '1883' is not an int"):
        config.load(lot_dir)


# ---- from init to a running lot ----

class LotServer:
    """`parkgate lot run DIR` in its own process, as systemd runs it."""

    def __init__(self, cfg, log_path):
        self.argv = [sys.executable, "-m", "parkgate_tools.cli", "lot", "run", cfg.dir]
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        self.healthz = "http://%s:%d/healthz" % (cfg.http.host, cfg.http.port)

    def healthy(self):
        """True once /healthz answers 200 (the bridge live, the database there)."""
        try:
            with urllib.request.urlopen(self.healthz, timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def stored(cfg):
    """[(gate, jid, plate)] of every event in the lot's database."""
    if not os.path.exists(cfg.database.url):
        return []
    con = sqlite3.connect("file:%s?mode=ro" % cfg.database.url, uri=True, timeout=5)
    try:
        return con.execute("SELECT gate, jid, plate FROM events ORDER BY id").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def provisioned_gate(cfg, workdir, gate_id):
    """A simulated gate whose site.json is the lot directory's, as deployed."""
    with open(cfg.site_path(gate_id)) as f:
        site = json.load(f)
    site.update(backoff_max_ms=1000, exit_policy="owed")
    gate = SimGate(workdir, gate_id, site["lot"], site["direction"], site["port"],
                   SimClock(time.time()), broker_host=site["broker"], site_extra=site)
    gate.provision()
    return gate.start()


def connect(cfg, user, client_id):
    """A paho client logged in as user (a full name), connected; its
    on_message collects (topic, payload) in client.got."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    client.username_pw_set(user, cfg.mqtt_password(user))
    client.got = []
    client.on_message = lambda c, u, m: client.got.append((m.topic, m.payload))
    client.connect(cfg.broker.host, cfg.broker.port)
    client.loop_start()
    wait_for(client.is_connected, WAIT_S, "%s to connect" % user)
    return client


@pytest.fixture
def running_lot(tmp_path):
    """A lot from `parkgate lot init`: mosquitto on its generated
    configuration, the lot server and gates in-1 and out-1, all provisioned
    from the lot directory."""
    lot_dir, work = tmp_path / "lot", str(tmp_path / "run")
    assert init(lot_dir, "--broker-port", str(free_port()), "--http-port", str(free_port())) == 0
    cfg = config.load(lot_dir)
    broker = Broker(work, cfg.broker.port, conf_path=os.path.join(cfg.mosquitto_dir,
                                                                  "mosquitto.conf"))
    broker.start()
    running = [broker.stop]
    try:
        server = LotServer(cfg, os.path.join(work, "lot-server.log"))
        running.append(server.stop)
        wait_for(server.healthy, WAIT_S, "the lot server's /healthz to say 200")
        gates = {}
        for gate in cfg.gates:
            gates[gate.id] = provisioned_gate(cfg, work, gate.id)
            running.append(gates[gate.id].stop)
        yield cfg, broker, gates
    finally:
        for stop in reversed(running):
            stop()


def test_from_lot_init_to_a_running_lot(running_lot):
    cfg, broker, gates = running_lot
    presence = connect(cfg, cfg.user("_ops"), "watcher")
    presence.subscribe("pg/%s/server/status" % LOT, 0)
    gates["in-1"].send_plate("京A12345")
    gates["in-1"].wait_line(r"EVENT in seq=1 plate=京A12345 ", WAIT_S)
    gates["out-1"].send_plate("京A12345")
    gates["out-1"].wait_line(r"EVENT out seq=1 plate=京A12345 .* src=on", WAIT_S)
    wait_for(lambda: {g for g, _, _ in stored(cfg)} == {"in-1", "out-1"}, WAIT_S,
             "the entry and the exit to be stored")

    # A board with in-1's site.json tries to speak for out-1: the broker
    # drops it (ACL); its own batch after it is stored, so the spoofed one
    # would have been before it.
    gates["in-1"].stop()
    intruder = FakeGate(broker, LOT, "in-1", credentials=cfg.mqtt_login("in-1"))
    intruder.client.publish("pg/%s/out-1/up/events" % LOT, json.dumps(
        {"g": "out-1", "j": 66, "e": [entry(1, "假A00001", int(time.time()))]}), qos=0)
    intruder.send_until_answered("up/events", {"g": "in-1", "j": 7, "e": [
        entry(1, "京A00007", int(time.time()))]}, "down/ack")
    assert ("in-1", 7, "京A00007") in stored(cfg)
    assert not [row for row in stored(cfg) if row[1] == 66 or row[2] == "假A00001"]
    intruder.close()

    # in-1's credentials with the bridge's client id: the broker names the
    # client after its user (lot1.in-1), and the bridge keeps its session.
    for client_id in ("parkgate-bridge-" + LOT, cfg.user("_bridge")):
        hijack = connect(cfg, cfg.user("in-1"), client_id)
        time.sleep(1.0)
        hijack.disconnect()
        hijack.loop_stop()
    log = broker.log_text()
    assert log.count("as %s (" % cfg.user("in-1")) >= 3, log
    assert "Client %s already connected" % cfg.user("_bridge") not in log, log
    assert b'{"on":0}' not in [payload for _, payload in presence.got], presence.got
    gates["out-1"].send_plate("沪B54321")
    gates["out-1"].wait_line(r"EVENT out seq=2 plate=沪B54321 .* src=on", WAIT_S)
    wait_for(lambda: [row for row in stored(cfg) if row[0] == "out-1" and row[2] == "沪B54321"],
             WAIT_S, "the bridge to store the next exit")
    presence.loop_stop()


def test_the_lot_servers_page_pushes_a_tariff_and_opens_a_gate(running_lot, monkeypatch):
    """Through `parkgate lot run`'s own page: a manager made with `parkgate
    lot user add` logs in, pushes a newer tariff (both gates take it, signed
    with their keys and published as _ops) and opens a gate; the audit log
    says who."""
    cfg, broker, gates = running_lot
    password = "a manager's long password"
    monkeypatch.setattr(sys, "stdin", io.StringIO(password + "\n"))
    assert parkgate(["lot", "user", "add", cfg.dir, "boss", "--role", "manager",
                     "--password-stdin"]) == 0
    client = WebClient("http://%s:%d/" % (cfg.http.host, cfg.http.port))
    assert client.login("boss", password) == 200
    assert 'id="bridge-health"' in client.get("")[2]
    # A push goes to the gates that are on the link (one sent before a gate
    # has subscribed is the push keeper's to send again at its next connect)
    for gate in gates.values():
        gate.wait_line(r"LINK up", WAIT_S)
    wait_for(lambda: sorted(g["gate"] for g in client.get_json("api/summary")["gates"]
                            if g["state"] == "online") == ["in-1", "out-1"],
             WAIT_S, "both gates online on the page")
    with open(cfg.tariff_path, encoding="utf-8") as f:
        table = json.load(f)
    table["version"] += 1
    # Without its worked examples, as test_lot_pushes pushes it: the whole
    # file signed (about 1.9 KB) is refused by a gate whose heap has no block
    # that large ("do not fit the heap"), and the page then says "no answer".
    table.pop("examples", None)
    # the page waits up to gate_pusher.ANSWER_WAIT_S for the gates' answers
    status, _, html = client.post("push-tariff", {"tariff": json.dumps(table)}, timeout=30)
    assert status == 200, html
    for gate in ("in-1", "out-1"):
        assert re.search(r'data-gate="%s"><td>%s</td><td>accepted: v%d' % (
            gate, gate, table["version"]), html), html
    assert os.path.exists(os.path.join(cfg.pushes_dir, "in-1", "tariff.json"))
    status, _, html = client.post("gates/open", {"gate": "in-1"}, timeout=30)
    assert status == 200 and re.search(r'data-gate="in-1"><td>in-1</td><td>accepted', html), html
    gates["in-1"].wait_line(r"OPEN remote command", WAIT_S)
    gates["in-1"].wait_line(r"TARIFF installed version=%d" % table["version"], WAIT_S)
    audit = client.get("audit")[2]
    for action in ("push-tariff", "open", "login"):
        assert re.search(r"<td>boss</td><td>%s</td>" % action, audit), action


def connack(cfg, user, password, tls_ca=None):
    """The CONNACK reason code a client logging in as user gets (with
    tls_ca: on the TLS listener)."""
    got = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="probe")
    client.username_pw_set(user, password)
    client.on_connect = lambda c, u, f, rc, p: got.append(rc)
    if tls_ca:
        client.tls_set(ca_certs=tls_ca)
    client.connect_async(cfg.broker.host, cfg.broker.tls_port if tls_ca else cfg.broker.port)
    client.loop_start()
    try:
        wait_for(lambda: got, WAIT_S, "a CONNACK for %s" % user)
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0]


def test_a_gate_added_or_removed_while_the_lot_runs(running_lot, capsys):
    cfg, broker, _ = running_lot
    assert parkgate(["lot", "add-gate", cfg.dir, "out-2:out"]) == 0
    assert "reload mosquitto" in capsys.readouterr().out
    user, password = config.load(cfg.dir).mqtt_login("out-2")
    broker.reload()
    wait_for(lambda: not connack(cfg, user, password).is_failure, WAIT_S,
             "the new gate to be let in after the reload")
    assert parkgate(["lot", "remove-gate", cfg.dir, "out-2"]) == 0
    broker.reload()
    wait_for(lambda: connack(cfg, user, password).is_failure, WAIT_S,
             "the removed gate to be refused after the reload")


def test_the_tls_listener_takes_the_lots_users(tmp_path):
    tls = tmp_path / "tls"
    make_certificates(str(tls))
    assert init(tmp_path / "lot", "--broker-port", str(free_port()), "--tls-port",
                str(free_port()), "--tls-cert", str(tls / "server.crt"), "--tls-key",
                str(tls / "server.key")) == 0
    cfg = config.load(tmp_path / "lot")
    with Broker(str(tmp_path / "run"), cfg.broker.port,
                conf_path=os.path.join(cfg.mosquitto_dir, "mosquitto.conf")):
        user, password = cfg.mqtt_login("_bridge")
        assert not connack(cfg, user, password, tls_ca=str(tls / "ca.crt")).is_failure
        assert connack(cfg, user, password + "x", tls_ca=str(tls / "ca.crt")).is_failure
