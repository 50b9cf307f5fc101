"""`parkgate lot run DIR`: the lot server of a lot directory, in the
foreground until SIGTERM or SIGINT (systemd runs it so).

It reads lot.toml (lot/config.py) and every secret from its file: the MQTT
passwords from secrets.json, the PostgreSQL password from
database.password_file (given to libpq as PGPASSWORD, never in argv or a
URL), the central server's token from upstream.token_file. Then:

1. it serves [http] host:port at once (HTTPS with [http] tls_cert and
   tls_key): /healthz, /metrics, and the operator page's web application
   (lot/web/app.py, login required) once the database is open (503 until
   then); its session cookies are signed with state/session.key;
2. it opens the database, and waits for the broker's port, each retried
   with a bounded backoff (Backoff: 1 s doubling to 30 s) and one log line
   per attempt, so a database or broker that starts later is waited for;
3. it runs the bridge (lot/bridge.py) as the lot's user _bridge and the push
   keeper (lot/push_keeper.py) as _push, and passes the tables the bridge
   takes from the central server on to the keeper; the image server
   (lot/image_server.py) logs in as _ota (if the lot has its credentials)
   and serves state/images to the gates as state/ota plans.

/healthz is 200 when the bridge is live (connected, past the broker's
backlog) and the database answers (a read on the page's own connection,
within HEALTH_TIMEOUT_S), else 503; the body is JSON either way. /metrics
is JSON too (lot/health.py says why)."""
import logging
import os
import signal
import socket
import threading
import time

from parkgate import tariff
from parkgate_tools.asgi_service import ASGIService
from parkgate_tools.lot import health
from parkgate_tools.lot.bridge import Bridge
from parkgate_tools.lot.config import ConfigError, load
from parkgate_tools.lot.gate_pusher import GatePusher
from parkgate_tools.lot.image_server import ImageServer
from parkgate_tools.lot.operator_page import OperatorPage
from parkgate_tools.lot.ota_plan import lot_stores
from parkgate_tools.lot.push_keeper import PushKeeper
from parkgate_tools.lot.push_state import PushState
from parkgate_tools.lot.security import BRIDGE_ROLE, OTA_ROLE
from parkgate_tools.lot.tariff_in_use import load_tariff
from parkgate_tools.lot.web import app as web_app
from parkgate_tools.lot.web.auth import load_or_create_secret

log = logging.getLogger("parkgate.lot")

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
BROKER_PROBE_S = 3.0


class Backoff:
    """Retry delays: first, doubling, never more than cap."""

    def __init__(self, first=BACKOFF_FIRST_S, cap=BACKOFF_MAX_S):
        if not 0 < first <= cap:
            raise ValueError("backoff: need 0 < first <= cap, got %r, %r" % (first, cap))
        self.first, self.cap = first, cap
        self.attempts = 0
        self._next = first

    def next(self):
        """The delay before the next attempt (counting this one)."""
        self.attempts += 1
        delay, self._next = self._next, min(self._next * 2, self.cap)
        return delay


def retry(what, attempt, stop, backoff=None):
    """attempt() until it returns without raising, logging each failure
    with what, the error and the wait; None if stop (an Event) is set first."""
    backoff = backoff or Backoff()
    while not stop.is_set():
        try:
            result = attempt()
        except Exception as exc:   # a database or broker that is not there (yet)
            delay = backoff.next()
            log.warning("%s: %s; attempt %d failed, retrying in %g s", what, exc,
                        backoff.attempts, delay)
            stop.wait(delay)
            continue
        if backoff.attempts:
            log.info("%s: reachable after %d failed attempts", what, backoff.attempts)
        return result
    return None


def _probe(host, port):
    with socket.create_connection((host, port), timeout=BROKER_PROBE_S):
        return True


def _redacted(url):
    """A database URL as logged: without a password, if it holds one."""
    head, sep, tail = url.partition("://")
    if sep and "@" in tail:
        login, _, rest = tail.rpartition("@")
        return "%s://%s@%s" % (head, login.split(":", 1)[0], rest)
    return url


class Served:
    """The ASGI application served on [http]: app, which may be replaced
    while serving (starting_app until the database is open, then the
    operator page's)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)


class LotServer:
    """The lot server of a LotConfig: run() until stop is set."""

    def __init__(self, config, stop=None, backoff=None):
        self.config = config
        self.stop = stop or threading.Event()
        self.backoff = backoff
        self.waiting_for = "start"        # what it waits for, None once running
        self.started = time.monotonic()
        self.bridge = self.keeper = self.page = self.reader = self.images = None
        self.served = Served(web_app.starting_app(self._healthz, self._metrics,
                                                  lambda: self.waiting_for))
        http = config.http
        self.http = ASGIService(self.served, http.host, http.port, "lot-http",
                                http.tls_cert or None, http.tls_key or None)

    def _healthz(self):
        return health.health(self)

    def _metrics(self):
        return health.metrics(self)

    def _bridge(self):
        config = self.config
        user, password = config.mqtt_login(BRIDGE_ROLE)
        bridge = Bridge(config.lot, config.broker.host, config.broker.port, config.database.url,
                        config.tariff_path, client_id=user, username=user, password=password,
                        upstream=config.upstream.url or None,
                        upstream_token=config.upstream_token())
        # lot.toml [policy] max_stay_hours, kept in the store for every reader
        bridge.store.set_max_stay(config.policy.max_stay_s)
        return bridge

    def run(self):
        """Serve HTTP, wait for the database and broker, run until stop."""
        config = self.config
        load_tariff(config.tariff_path)          # a bad file is no reason to wait
        config.mqtt_login(BRIDGE_ROLE)
        config.upstream_token()
        password = config.database_password()
        if password is not None:
            os.environ["PGPASSWORD"] = password
        secret = load_or_create_secret(config.session_key_path)
        self.http.start()
        log.info("lot %s: /healthz, /metrics and the operator page on %s/",
                 config.lot, self.http.url)
        try:
            self.waiting_for = "database"
            self.bridge = retry("database %s" % _redacted(config.database.url), self._bridge,
                                self.stop, self.backoff)
            if self.bridge is None:
                return
            self.reader = self.bridge.store.open_reader()
            images, ota_plan = lot_stores(config)
            self.page = OperatorPage(
                self.reader, config.lot, lambda: self.bridge.tariff, secret=secret,
                https_only=config.http.secure_cookies, pusher=GatePusher(config),
                health=lambda: health.bridge_health(self.bridge),
                images=images, ota_plan=ota_plan, gate_ids=[g.id for g in config.gates])
            self.served.app = web_app.build_app(self.page, self._healthz, self._metrics)
            self.waiting_for = "broker"
            broker = config.broker
            if not retry("broker %s:%d" % (broker.host, broker.port),
                         lambda: _probe(broker.host, broker.port), self.stop, self.backoff):
                return
            self.keeper = PushKeeper(config, on_tariff=self._use_tariff).start()
            try:
                # the quiet hour in the lot's local time: its tariff's offset
                offset = getattr(self.bridge.tariff, "utc_offset_minutes", None)
                self.images = image_server(config, 480 if offset is None else offset).start()
            except ConfigError as exc:
                log.warning("no image server (firmware over the air): %s", exc)
            if self.bridge.forwarder is not None:
                # Before the forwarder's first sync; and the table taken
                # before this start, in case the last run stopped between
                # storing it and signing it for the gates.
                self.bridge.forwarder.taken.append(self.keeper.taken)
                taken = self.bridge.store.setting("tariff")
                if taken:
                    self.keeper.taken("tariff", taken)
            self.bridge.start()
            self.waiting_for = None
            self._watch()
        finally:
            self.close()

    def _use_tariff(self, text):
        """Fees from a table (JSON text) a gate has taken, if newer than the
        one in use (after a restart the keeper finds it again in the gates'
        retained status and the push records)."""
        self.bridge._use_tariff(tariff.loads(text))   # the forwarder's hook: is_newer

    def _watch(self):
        live = False
        while not self.stop.wait(1):
            if self.bridge.live != live:
                live = self.bridge.live
                log.log(logging.INFO if live else logging.WARNING, "bridge %s",
                        "live" if live else "not live: waiting for the broker")

    def close(self):
        if self.images is not None:
            self.images.stop()
        if self.keeper is not None:
            self.keeper.stop()
        if self.bridge is not None:
            self.bridge.stop()
        if self.page is not None:
            self.page.stop()     # its snapshot process (lot/page_worker.py)
        if self.reader is not None:
            self.reader.close()
        self.http.stop()


def image_server(config, utc_offset_minutes=480):
    """The lot's ImageServer (not started): state/images, state/ota, logged
    in as _ota, reboot commands numbered by PushState.next_command;
    ConfigError if the lot has no _ota credentials."""
    images, ota_plan = lot_stores(config)
    return ImageServer(config.lot, config.broker.host, config.broker.port,
                       lambda gate: config.gate_key(config.gate(gate).id), images, ota_plan,
                       login=config.mqtt_login(OTA_ROLE),
                       utc_offset_minutes=utc_offset_minutes,
                       next_command=PushState(config).next_command)


def main(args):
    """`parkgate lot run DIR`; 0 after a clean stop."""
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = LotServer(load(args.dir))
    previous = {sig: signal.signal(sig, lambda signum, frame: server.stop.set())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
