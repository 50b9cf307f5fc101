"""The central management server an operator with many lots runs: every
lot bridge forwards its events and corrections here, and takes its tariff
and member list from here. A Starlette application (central/app.py) under
uvicorn, on a PostgreSQL or SQLite store (central/store.py); storing is
idempotent, keyed by (lot, gate, jid, seq) for events and (lot, id) for
corrections, so a bridge may send a batch again as often as it likes.
Each lot has its own token, the admin another. The protocol:
firmware/docs/upstream.md."""
import json
import logging
import os
import signal
import threading

from parkgate import tariff
from parkgate_tools.asgi_service import ASGIService
from parkgate_tools.central.app import MAX_BODY, BadRequest, build_app, parse_corrections
from parkgate_tools.central.app import parse_events
from parkgate_tools.central.store import CentralStore
from parkgate_tools.ids import is_id
from parkgate_tools.lot.web.auth import SECRET_BYTES, load_or_create_secret

__all__ = ["MAX_BODY", "BadRequest", "CentralServer", "CentralStore", "TokenError",
           "load_tokens", "parse_corrections", "parse_events"]

log = logging.getLogger("parkgate.central")


class TokenError(ValueError):
    """The tokens file is missing, malformed or configures no token."""


def load_tokens(path):
    """({lot: token}, admin token or None) from a JSON file
    {"admin": "...", "lots": {"lot1": "..."}}; TokenError naming the file if
    it cannot be read, is malformed, or holds no token at all."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as exc:
        raise TokenError("tokens file %s: %s" % (path, exc))
    lots = doc.get("lots", {}) if isinstance(doc, dict) else None
    admin = doc.get("admin") if isinstance(doc, dict) else None
    if not isinstance(lots, dict) or not all(
            is_id(lot) and isinstance(t, str) and t for lot, t in lots.items()):
        raise TokenError('tokens file %s: "lots" is not {lot id: token}' % path)
    if admin is not None and not (isinstance(admin, str) and admin):
        raise TokenError('tokens file %s: "admin" is not a token' % path)
    if not lots and not admin:
        raise TokenError("tokens file %s: no token configured; the server would refuse every "
                         "request" % path)
    return lots, admin


class CentralServer:
    """The central service on host:port (port 0: a free one, kept across
    stop/start so that bridges find it again) with its store at db_path (a
    SQLite path or a ``postgresql://`` URL).

    tokens: {lot: bearer token}; admin_token: the admin's; tokens_file: a
    file to read both from (load_tokens; the service's way, tokens never on
    a command line). With no token at all every request is answered 401.
    Both attributes may be changed while serving.

    secret: the bytes signing the admin session cookie (central/admin_login.py);
    secret_file: a file to keep it in, made (mode 0600) if absent
    (auth.load_or_create_secret); neither: a random one, so that a restart
    logs the admin out. https_only: the cookie is Secure (browsers send it
    over https, and over http to 127.0.0.1 / localhost only)."""

    def __init__(self, db_path, host="127.0.0.1", port=0, tokens=None, admin_token=None,
                 tokens_file=None, secret=None, secret_file=None, https_only=True):
        if tokens_file is not None:
            tokens, admin_token = load_tokens(tokens_file)
        if secret_file is not None:
            secret = load_or_create_secret(secret_file)
        self.secret = os.urandom(SECRET_BYTES) if secret is None else secret
        self.https_only = https_only
        self.db_path = db_path
        self.tokens = tokens
        self.admin_token = admin_token
        self.host, self.port = host, port
        self.store = CentralStore(db_path)
        self.requests = 0          # POSTs of events answered 200
        self.duplicates = 0        # events received that were already stored
        self.app = build_app(self)
        self._service = ASGIService(self.app, host, port, "central-http")
        if not tokens and not admin_token:
            log.warning("central server: no token configured: every request is refused (401)")

    @property
    def url(self):
        """Base URL, e.g. http://127.0.0.1:8123"""
        return "http://%s:%d" % (self.host, self.port)

    @property
    def alive(self):
        """True while serving."""
        return self._service.running

    def start(self, timeout=10):
        """Serve in a background thread (uvicorn, its own event loop); returns self."""
        self._service.port = self.port
        self._service.start(timeout)
        self.port = self._service.port
        log.info("central server on %s", self.url)
        return self

    def stop(self, timeout=10):
        """Stop serving (the link "goes down"); start() again to come back."""
        self._service.stop(timeout)

    def close(self):
        """Stop and close the store."""
        self.stop()
        self.store.close()

    def set_tariff(self, lot, text):
        """Publish a tariff table (JSON text) for the lot; validated with the
        gates' own tariff engine (raises tariff.TariffError)."""
        table = tariff.loads(text)
        self.store.put_document(lot, "tariff", text if isinstance(text, str) else text.decode(),
                                table.version)

    def set_members(self, lot, members):
        """Publish the lot's member list [{"p": plate, "name", "from", "until"}];
        its version goes up by one each time."""
        current = self.store.document(lot, "members")
        version = (current[1] if current else 0) + 1
        self.store.put_document(lot, "members", json.dumps(
            {"version": version, "members": members}, ensure_ascii=False), version)
        return version


def add_parser(subparsers):
    """Register `parkgate central`."""
    parser = subparsers.add_parser("central", help="run the central management server",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, metavar="PATH_OR_URL",
                        help="SQLite database path or postgresql:// URL")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--tokens", required=True, metavar="FILE",
                        help='JSON file {"admin": TOKEN, "lots": {LOT: TOKEN}} (mode 0600)')
    parser.add_argument("--secret-file", metavar="FILE",
                        help="the admin session cookie's signing secret, made (mode 0600) if "
                             "absent (default: a new one at each start)")
    parser.set_defaults(run=run)


def run(args):
    """Serve until SIGTERM or SIGINT; 0 after a clean stop, 2 on a bad
    tokens or secret file."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        server = CentralServer(args.db, args.host, args.port, tokens_file=args.tokens,
                               secret_file=args.secret_file).start()
    except (TokenError, ValueError, OSError) as exc:
        log.error("parkgate central: %s", exc)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    while not stop.wait(1):
        pass
    server.close()
    return 0
