"""A lot directory, read: ``load(dir) -> LotConfig``.

The directory (written by ``parkgate lot init``, lot/provision.py) holds
lot.toml (configuration, no secrets), secrets.json (MQTT users and
passwords, 0600), keys/<gate>.key (downlink keys, hex, 0600),
gates/<gate>/site.json, mosquitto/ (the broker's files), tariff.json and
state/ (what the lot server keeps). Secrets are never in LotConfig: its
getters read them from their files when asked. Every error is a
ConfigError naming the file and the key."""
import binascii
import json
import os
import tomllib
from dataclasses import dataclass

from parkgate_tools.ids import is_id, ID_RULE
from parkgate_tools.lot.security import (BRIDGE_ROLE, MAX_MESSAGE_BYTES, OPS_ROLE, OTA_ROLE,
                                         PRESENCE_LEVEL, PUSH_ROLE, SECRETS_NAME)

CONFIG_NAME = "lot.toml"
TARIFF_NAME = "tariff.json"
KEY_BYTES = 32
DIRECTIONS = ("in", "out")
SERVER_ROLES = (BRIDGE_ROLE, PUSH_ROLE, OPS_ROLE, OTA_ROLE)   # the lot server's users: <lot>.<role>


class ConfigError(ValueError):
    """A lot directory that cannot be used: the message names the file and key."""


@dataclass(frozen=True)
class Gate:
    """One gate of the lot."""
    id: str
    direction: str      # "in" or "out"


@dataclass(frozen=True)
class Broker:
    """Where the lot's mosquitto listens; tls_port 0: no TLS listener."""
    host: str
    port: int
    tls_port: int
    tls_cert: str       # absolute path, or "" (no TLS)
    tls_key: str
    tls_ca: str         # absolute path, or "" (none)
    message_size_limit: int


@dataclass(frozen=True)
class Database:
    """The event store: an absolute SQLite path or a postgresql:// URL;
    password_file an absolute path or "" (none)."""
    url: str
    password_file: str


@dataclass(frozen=True)
class Http:
    """Where the operator page, /healthz and metrics are served: host
    (127.0.0.1 by default: a reverse proxy in front, firmware/docs/
    lot-server.md), port; tls_cert and tls_key (absolute paths, or "" for
    none): uvicorn serves HTTPS itself; secure_cookies: the session cookie
    is sent over HTTPS only (browsers count http://127.0.0.1 as secure)."""
    host: str
    port: int
    tls_cert: str = ""
    tls_key: str = ""
    secure_cookies: bool = True


@dataclass(frozen=True)
class Upstream:
    """The central server events are forwarded to; url "": none."""
    url: str
    token_file: str


MAX_STAY_HOURS = 72      # [policy] max_stay_hours: an entry older is a ghost, not inside


@dataclass(frozen=True)
class Policy:
    """The lot's rules: max_stay_hours, after which an entry with no exit
    is a stale session (not inside, not billed from); 0: no maximum."""
    max_stay_hours: float

    @property
    def max_stay_s(self):
        """The maximum stay in whole seconds, or None (no maximum)."""
        return int(self.max_stay_hours * 3600) or None


@dataclass(frozen=True)
class LotConfig:
    """A lot directory's lot.toml, with every path made absolute."""
    dir: str
    lot: str
    broker: Broker
    database: Database
    http: Http
    upstream: Upstream
    gates: tuple        # of Gate, in lot.toml order
    policy: Policy = Policy(MAX_STAY_HOURS)

    # ---- paths ----
    def path(self, *parts):
        """A path inside the lot directory."""
        return os.path.join(self.dir, *parts)

    @property
    def config_path(self):
        return self.path(CONFIG_NAME)

    @property
    def secrets_path(self):
        return self.path(SECRETS_NAME)

    @property
    def tariff_path(self):
        return self.path(TARIFF_NAME)

    @property
    def state_dir(self):
        return self.path("state")

    @property
    def pushes_dir(self):
        """state/pushes: the newest signed envelope per gate and kind."""
        return self.path("state", "pushes")

    @property
    def session_key_path(self):
        """state/session.key: the secret the web application's session
        cookies are signed with (made at the first start, 0600)."""
        return self.path("state", "session.key")

    @property
    def mosquitto_dir(self):
        return self.path("mosquitto")

    def key_path(self, gate):
        return self.path("keys", gate + ".key")

    def site_path(self, gate):
        return self.path("gates", gate, "site.json")

    # ---- gates and users ----
    def gate(self, gate_id):
        """The Gate named gate_id; ConfigError if the lot has none."""
        for gate in self.gates:
            if gate.id == gate_id:
                return gate
        raise ConfigError("%s: no [[gate]] with id = %r (gates: %s)" % (
            self.config_path, gate_id, ", ".join(g.id for g in self.gates) or "none"))

    def user(self, name):
        """The MQTT user of a gate id or a server role (_bridge, _push, _ops)."""
        return "%s.%s" % (self.lot, name)

    # ---- secrets, read from their files when asked ----
    def mqtt_password(self, user):
        """The password of an MQTT user (a full name, e.g. lot1._bridge)."""
        data = _read_json(self.secrets_path)
        entry = data.get("users", {}).get(user) if isinstance(data, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("password"), str):
            raise ConfigError("%s: users.%s: no password (provision it with `parkgate lot "
                              "add-gate` or `rotate-key`)" % (self.secrets_path, user))
        return entry["password"]

    def mqtt_login(self, name):
        """(user, password) of a gate id or server role."""
        user = self.user(name)
        return user, self.mqtt_password(user)

    def gate_key(self, gate):
        """The gate's downlink signing key (32 bytes)."""
        path = self.key_path(gate)
        text = _read_text(path).strip()
        try:
            key = binascii.unhexlify(text)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != KEY_BYTES:
            raise ConfigError("%s: not %d hex digits" % (path, 2 * KEY_BYTES))
        return key

    def database_password(self):
        """The PostgreSQL password from database.password_file, or None."""
        if not self.database.password_file:
            return None
        return _read_text(self.database.password_file).strip()

    def upstream_token(self):
        """The central server's bearer token from upstream.token_file, or None."""
        if not self.upstream.token_file:
            return None
        return _read_text(self.upstream.token_file).strip()


def _read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as exc:
        raise ConfigError("%s: cannot read: %s" % (path, exc.strerror or exc)) from None


def _read_json(path):
    text = _read_text(path)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError("%s: not JSON: %s" % (path, exc)) from None


class _Table:
    """One table of lot.toml, whose getters name file and key in errors."""

    def __init__(self, path, name, table):
        self.path, self.name, self.data = path, name, table
        if not isinstance(table, dict):
            raise self.error(None, "is not a table")

    def error(self, key, problem):
        where = "%s.%s" % (self.name, key) if key else "[%s]" % self.name
        return ConfigError("%s: %s: %s" % (self.path, where, problem))

    def get(self, key, kind, default):
        value = self.data.get(key, default)
        if value is None:
            raise self.error(key, "missing")
        if type(value) is not kind:
            raise self.error(key, "%r is not a%s %s" % (
                value, "n" if kind is int else "", kind.__name__))
        return value

    def port(self, key, default, zero=False):
        value = self.get(key, int, default)
        if not (0 if zero else 1) <= value < 65536:
            raise self.error(key, "%r is not a TCP port" % value)
        return value

    def file(self, lot_dir, key):
        """An optional path (relative to the lot directory), absolute or ""."""
        value = self.get(key, str, "")
        return os.path.join(lot_dir, value) if value else ""


def _gates(path, data):
    entries = data.get("gate", [])
    if not isinstance(entries, list):
        raise ConfigError("%s: gate: expected [[gate]] tables" % path)
    gates, seen = [], set()
    for index, entry in enumerate(entries):
        table = _Table(path, "gate[%d]" % index, entry)
        gate_id = table.get("id", str, None)
        if not is_id(gate_id) or gate_id == PRESENCE_LEVEL:
            raise table.error("id", "%r is not %s (and not %r)" % (
                gate_id, ID_RULE, PRESENCE_LEVEL))
        if gate_id in seen:
            raise table.error("id", "%r is listed twice" % gate_id)
        direction = table.get("direction", str, None)
        if direction not in DIRECTIONS:
            raise table.error("direction", "%r is not \"in\" or \"out\"" % direction)
        seen.add(gate_id)
        gates.append(Gate(gate_id, direction))
    return tuple(gates)


def parse(lot_dir, data, path=None):
    """LotConfig from lot.toml's parsed data (path: for the messages)."""
    lot_dir = os.path.abspath(lot_dir)
    path = path or os.path.join(lot_dir, CONFIG_NAME)
    lot, broker, db, http, upstream, policy = (_Table(path, name, data.get(name, {}))
                                               for name in ("lot", "broker", "database", "http",
                                                            "upstream", "policy"))
    lot_id = lot.get("id", str, None)
    if not is_id(lot_id):
        raise lot.error("id", "%r is not %s" % (lot_id, ID_RULE))
    url = db.get("url", str, "state/lot.sqlite")
    if not url:
        raise db.error("url", "is empty")
    if "://" not in url:
        url = os.path.join(lot_dir, url)
    tls = (broker.port("tls_port", 0, zero=True), broker.file(lot_dir, "tls_cert"),
           broker.file(lot_dir, "tls_key"))
    if tls[0] and not (tls[1] and tls[2]):
        raise broker.error("tls_port", "a TLS listener needs tls_cert and tls_key")
    size = broker.get("message_size_limit", int, MAX_MESSAGE_BYTES)
    if size < 1:
        raise broker.error("message_size_limit", "%r is not a byte count" % size)
    return LotConfig(
        dir=lot_dir, lot=lot_id,
        broker=Broker(broker.get("host", str, "127.0.0.1"), broker.port("port", 1883),
                      tls[0], tls[1], tls[2], broker.file(lot_dir, "tls_ca"), size),
        database=Database(url, db.file(lot_dir, "password_file")),
        http=_http(lot_dir, http),
        upstream=Upstream(upstream.get("url", str, ""), upstream.file(lot_dir, "token_file")),
        gates=_gates(path, data), policy=_policy(policy))


def _http(lot_dir, table):
    """Http from lot.toml's [http] table."""
    cert, key = table.file(lot_dir, "tls_cert"), table.file(lot_dir, "tls_key")
    if bool(cert) != bool(key):
        raise table.error("tls_cert" if key else "tls_key", "tls_cert and tls_key go together")
    return Http(table.get("host", str, "127.0.0.1"), table.port("port", 8080, zero=True),
                cert, key, table.get("secure_cookies", bool, True))


def _policy(table):
    """Policy from lot.toml's [policy] table."""
    hours = table.data.get("max_stay_hours", MAX_STAY_HOURS)
    if type(hours) not in (int, float) or not 0 <= hours < 24 * 3650:
        raise table.error("max_stay_hours", "%r is not a number of hours >= 0" % (hours,))
    return Policy(float(hours))


def load(lot_dir):
    """Read lot_dir/lot.toml: a LotConfig, or ConfigError naming file and key."""
    path = os.path.join(os.path.abspath(lot_dir), CONFIG_NAME)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError("%s: cannot read: %s (is %s a lot directory? `parkgate lot init` "
                          "makes one)" % (path, exc.strerror or exc, lot_dir)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("%s: not TOML: %s" % (path, exc)) from None
    return parse(lot_dir, data, path)
