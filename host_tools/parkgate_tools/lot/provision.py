"""`parkgate lot init / add-gate / remove-gate / rotate-key`: write a lot
directory (lot/config.py reads it) and regenerate its broker files.

Every secret is made here at random and kept in a file readable by its
owner only (0600, the directory 0700): secrets.json (MQTT passwords),
keys/<gate>.key (downlink keys), gates/<gate>/site.json (what a gate's
board gets), mosquitto/passwd and mosquitto/acl, state/session.key (the
web application's cookie secret). lot.toml holds none."""
import binascii
import contextlib
import fcntl
import json
import os
import shutil
import tomllib

import tomli_w

from parkgate_tools import runtime
from parkgate_tools.field.errors import Refused
from parkgate_tools.field.validate import MAX_ID, check_site, check_tariff
from parkgate_tools.files import write_atomic
from parkgate_tools.ids import check_id
from parkgate_tools.lot import config, mosquitto_conf, security
from parkgate_tools.lot.config import CONFIG_NAME, KEY_BYTES, SERVER_ROLES, ConfigError
from parkgate_tools.lot.web.auth import load_or_create_secret

DEFAULT_TARIFF = os.path.join(runtime.FIRMWARE, "tariffs", "default.json")
_HEADER = ("# parkgate lot: written by `parkgate lot init`; add-gate and remove-gate rewrite\n"
           "# it (comments are not kept). No secrets here: see secrets.json, keys/.\n")
LOCK_NAME = ".lot.lock"
_FOLDERS = ("state", "keys", "gates", "mosquitto")   # each 0700
RELOAD_HINT = ("reload mosquitto to apply: systemctl reload parkgate-mosquitto@%s "
               "(or kill -HUP its pid)")


def _check_id(what, value):
    # The id rule, and the field tools' length cap (a site.json they refuse is no use).
    check_id(what, value, ConfigError)
    if len(value) > MAX_ID:
        raise ConfigError("%s: %r is longer than %d characters" % (what, value, MAX_ID))


def gate_spec(text):
    """(id, direction) of "NAME" or "NAME:in|out" (default in)."""
    name, _, direction = text.partition(":")
    _check_id("gate", name)
    if name == security.PRESENCE_LEVEL:
        raise ConfigError("gate: %r is the lot server's own topic level" % name)
    direction = direction or "in"
    if direction not in config.DIRECTIONS:
        raise ConfigError("gate %s: direction %r is not in or out" % (name, direction))
    return name, direction


@contextlib.contextmanager
def _changing(lot_dir):
    # One change of a lot directory at a time (secrets.json has its own lock).
    config.load(lot_dir)    # a clear error if lot_dir is no lot directory
    with open(os.path.join(lot_dir, LOCK_NAME), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _write(path, text, private=True):
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with write_atomic(path, private=private) as f:
        f.write(text)


def _write_toml(lot_dir, data):
    config.parse(lot_dir, data)      # refuse what load() would refuse
    tables = {key: value for key, value in data.items() if key != "gate"}
    text = _HEADER + tomli_w.dumps(tables) + "".join(
        "\n[[gate]]\n" + tomli_w.dumps(entry) for entry in data.get("gate", []))
    _write(os.path.join(lot_dir, CONFIG_NAME), text, private=False)


def _read_toml(lot_dir):
    config.load(lot_dir)
    with open(os.path.join(lot_dir, CONFIG_NAME), "rb") as f:
        return tomllib.load(f)


def write_site(cfg, gate_id):
    """Write gates/<gate>/site.json (0600) for `parkgate board deploy --site`."""
    gate = cfg.gate(gate_id)
    user, password = cfg.mqtt_login(gate.id)
    site = {"lot": cfg.lot, "gate": gate.id, "direction": gate.direction,
            "broker": cfg.broker.host, "port": cfg.broker.port,
            "mqtt_user": user, "mqtt_password": password,
            "key": binascii.hexlify(cfg.gate_key(gate.id)).decode()}
    check_site(site)     # what `parkgate board deploy --site` checks
    _write(cfg.site_path(gate.id), json_text(site))


def json_text(data):
    """Indented JSON text with a final newline."""
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def _new_key(cfg, gate_id):
    _write(cfg.key_path(gate_id), binascii.hexlify(os.urandom(KEY_BYTES)).decode() + "\n")


def mosquitto_text(cfg):
    """The lot's mosquitto.conf: its listeners, the password file and ACL in
    mosquitto/, one connection a user, the size limits, persistence in state/."""
    folder = cfg.mosquitto_dir
    listeners = [mosquitto_conf.listener(cfg.broker.port, cfg.broker.host)]
    if cfg.broker.tls_port:
        listeners.append(mosquitto_conf.listener(
            cfg.broker.tls_port, cfg.broker.host, cafile=cfg.broker.tls_ca,
            certfile=cfg.broker.tls_cert, keyfile=cfg.broker.tls_key))
    auth = mosquitto_conf.secured(os.path.join(folder, "passwd"), os.path.join(folder, "acl"))
    return mosquitto_conf.render(listeners, auth, cfg.state_dir, "stderr",
                                 cfg.broker.message_size_limit)


def write_broker_files(cfg):
    """Regenerate mosquitto/{mosquitto.conf, passwd, acl} from lot.toml and
    secrets.json; returns the path of mosquitto.conf."""
    folder = cfg.mosquitto_dir
    os.makedirs(folder, mode=0o700, exist_ok=True)
    security.write_broker_auth(cfg.dir, os.path.join(folder, "passwd"),
                               os.path.join(folder, "acl"))
    path = os.path.join(folder, "mosquitto.conf")
    _write(path, mosquitto_text(cfg), private=False)
    return path


def _provision_gate(cfg, gate_id, rotate_password=False):
    security.provision_gate_credentials(cfg.dir, cfg.lot, gate_id, rotate=rotate_password)
    _new_key(cfg, gate_id)
    write_site(cfg, gate_id)


def init(lot_dir, lot, gates, broker_host="127.0.0.1", broker_port=1883, tls_port=8883,
         tls_cert="", tls_key="", tls_ca="", db="state/lot.sqlite", tariff=None,
         http_port=8080):
    """Write a new lot directory; gates: [(id, direction)]. Refuses a
    directory that exists and is not empty. Returns its LotConfig."""
    lot_dir = os.path.abspath(lot_dir)
    if os.path.exists(lot_dir) and (not os.path.isdir(lot_dir) or os.listdir(lot_dir)):
        raise ConfigError("%s: exists and is not empty; a lot directory is never "
                          "overwritten (add-gate, remove-gate, rotate-key change one)" % lot_dir)
    _check_id("lot", lot)
    ids = [gate for gate, _ in gates]
    if not ids or len(set(ids)) != len(ids):
        raise ConfigError("--gate: give each gate once (%s)" % ", ".join(ids))
    if bool(tls_cert) != bool(tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    for path in (tls_cert, tls_key, tls_ca):
        if path and not os.path.isfile(path):
            raise ConfigError("%s: no such file" % path)
    tariff = tariff or DEFAULT_TARIFF
    try:
        with open(tariff, "rb") as f:
            tariff_bytes = f.read()
        check_tariff(tariff_bytes)
    except (OSError, Refused) as exc:
        raise ConfigError("%s: %s" % (tariff, exc)) from None
    broker = {"host": broker_host, "port": broker_port,
              "tls_port": tls_port if tls_cert else 0,
              "message_size_limit": security.MAX_MESSAGE_BYTES}
    broker.update({key: os.path.abspath(path) for key, path in (
        ("tls_cert", tls_cert), ("tls_key", tls_key), ("tls_ca", tls_ca)) if path})
    data = {"lot": {"id": lot}, "broker": broker,
            "database": {"url": db, "password_file": ""},
            "http": {"host": "127.0.0.1", "port": http_port, "secure_cookies": True},
            "upstream": {"url": "", "token_file": ""},
            "gate": [{"id": gate, "direction": direction} for gate, direction in gates]}
    config.parse(lot_dir, data)
    os.makedirs(lot_dir, mode=0o700, exist_ok=True)
    os.chmod(lot_dir, 0o700)
    for folder in _FOLDERS:
        os.makedirs(os.path.join(lot_dir, folder), mode=0o700, exist_ok=True)
    open(os.path.join(lot_dir, LOCK_NAME), "a").close()
    _write_toml(lot_dir, data)
    cfg = config.load(lot_dir)
    with write_atomic(cfg.tariff_path, "wb") as f:
        f.write(tariff_bytes)
    for role in SERVER_ROLES:
        security.provision_server_credentials(lot_dir, lot, role)
    load_or_create_secret(cfg.session_key_path)     # the web application's cookies
    for gate, _ in gates:
        _provision_gate(cfg, gate)
    write_broker_files(cfg)
    return cfg


def add_gate(lot_dir, gate, direction="in"):
    """Add a gate to a lot directory; returns the new LotConfig."""
    with _changing(lot_dir):
        gate, direction = gate_spec("%s:%s" % (gate, direction))
        data = _read_toml(lot_dir)
        if any(entry.get("id") == gate for entry in data.get("gate", [])):
            raise ConfigError("%s: gate %r is there already (rotate-key gives it a new key)" % (
                os.path.join(lot_dir, CONFIG_NAME), gate))
        data.setdefault("gate", []).append({"id": gate, "direction": direction})
        _write_toml(lot_dir, data)
        cfg = config.load(lot_dir)
        _provision_gate(cfg, gate)
        write_broker_files(cfg)
        return cfg


def remove_gate(lot_dir, gate):
    """Remove a gate: its lot.toml entry, credentials, key, site.json and
    the pushes kept for it (state/pushes/<gate>/)."""
    with _changing(lot_dir):
        cfg = config.load(lot_dir)
        cfg.gate(gate)
        data = _read_toml(lot_dir)
        data["gate"] = [entry for entry in data["gate"] if entry.get("id") != gate]
        _write_toml(lot_dir, data)
        security.remove_gate_credentials(cfg.dir, cfg.lot, gate)
        for path in (cfg.key_path(gate), cfg.site_path(gate)):
            if os.path.exists(path):
                os.remove(path)
        site_dir = os.path.dirname(cfg.site_path(gate))
        if os.path.isdir(site_dir) and not os.listdir(site_dir):
            os.rmdir(site_dir)
        _forget_pushes(cfg, gate)
        cfg = config.load(lot_dir)
        write_broker_files(cfg)
        return cfg


def _forget_pushes(cfg, gate):
    # What the push keeper kept for the gate is signed with its old key: a
    # gate deployed with the new one would refuse it when sent again. The
    # next push is signed with the new key.
    shutil.rmtree(os.path.join(cfg.pushes_dir, gate), ignore_errors=True)


def rotate_key(lot_dir, gate, password=False):
    """A new downlink key for a gate (password=True: a new MQTT password too).
    The pushes kept for it (signed with the old key) are forgotten."""
    with _changing(lot_dir):
        cfg = config.load(lot_dir)
        cfg.gate(gate)
        _provision_gate(cfg, gate, rotate_password=password)
        _forget_pushes(cfg, gate)
        write_broker_files(cfg)
        return cfg


# ---- the commands (lot/lot_cli.py) ----

def _done(cfg, what, gates_changed=True):
    print(what)
    print("broker files: %s" % cfg.mosquitto_dir)
    print(RELOAD_HINT % cfg.lot)
    if gates_changed:
        print("then restart the lot server for the new list of gates: "
              "systemctl restart parkgate-lot@%s" % cfg.lot)
    return 0


def run_init(args):
    """`parkgate lot init`."""
    cfg = init(args.dir, args.lot, [gate_spec(g) for g in args.gates], args.broker_host,
               args.broker_port, args.tls_port, args.tls_cert or "", args.tls_key or "",
               args.tls_ca or "", args.db, args.tariff, args.http_port)
    print("lot %s written to %s" % (cfg.lot, cfg.dir))
    for gate in cfg.gates:
        print("  gate %s (%s): deploy with `parkgate board deploy --site %s`" % (
            gate.id, gate.direction, cfg.site_path(gate.id)))
    print("start mosquitto: mosquitto -c %s (or systemctl start parkgate-mosquitto@%s)" % (
        os.path.join(cfg.mosquitto_dir, "mosquitto.conf"), cfg.lot))
    if os.geteuid() == 0:
        print("note: the files are root's; the services run as parkgate: "
              "chown -R parkgate:parkgate %s" % cfg.dir)
    return 0


def run_add_gate(args):
    """`parkgate lot add-gate`."""
    gate, direction = gate_spec(args.gate)
    cfg = add_gate(args.dir, gate, direction)
    return _done(cfg, "gate %s (%s) added: deploy %s to its board" % (
        gate, direction, cfg.site_path(gate)))


def run_remove_gate(args):
    """`parkgate lot remove-gate`."""
    cfg = remove_gate(args.dir, args.gate)
    return _done(cfg, "gate %s removed: its credentials and key no longer work" % args.gate)


def run_rotate_key(args):
    """`parkgate lot rotate-key`."""
    cfg = rotate_key(args.dir, args.gate, args.password)
    return _done(cfg, "gate %s: new key%s; deploy %s to its board" % (
        args.gate, " and MQTT password" if args.password else "", cfg.site_path(args.gate)),
        gates_changed=False)
