"""The central management server an operator with many lots runs: every
lot bridge forwards its events and corrections here, and takes its tariff
and member list from here. A small HTTP/JSON service (stdlib
ThreadingHTTPServer) with its own SQLite store; storing is idempotent, keyed
by (lot, gate, jid, seq) for events and (lot, id) for corrections, so a
bridge may send a batch again as often as it likes. The protocol:
firmware/docs/upstream.md."""
import json
import logging
import re
import signal
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler

from parkgate import record, tariff
from parkgate_tools.http_service import HTTPService
from parkgate_tools.ids import ID_PATTERN, is_id
from parkgate_tools.lot.store.schema import event_row

log = logging.getLogger("parkgate.central")

_PATH = re.compile(r"/v1/lots/(%s)/(events|corrections|tariff|members|summary)\Z" % ID_PATTERN)
MAX_BODY = 8 << 20

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        lot TEXT NOT NULL, gate TEXT NOT NULL, jid BIGINT NOT NULL, seq BIGINT NOT NULL,
        kind TEXT NOT NULL, time BIGINT NOT NULL, quality INTEGER NOT NULL,
        plate TEXT NOT NULL, colour INTEGER NOT NULL, confidence INTEGER NOT NULL,
        flags INTEGER NOT NULL, fee BIGINT, fee_source TEXT, tariff_version BIGINT,
        entry_time BIGINT, received_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (lot, gate, jid, seq))""",
    """CREATE TABLE IF NOT EXISTS corrections (
        lot TEXT NOT NULL, id TEXT NOT NULL, gate TEXT NOT NULL, jid BIGINT NOT NULL,
        seq BIGINT NOT NULL, action TEXT NOT NULL, amount BIGINT NOT NULL, note TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, received_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (lot, id))""",
    """CREATE TABLE IF NOT EXISTS documents (
        lot TEXT NOT NULL, name TEXT NOT NULL,  -- 'tariff' or 'members'
        body TEXT NOT NULL, version BIGINT NOT NULL,
        PRIMARY KEY (lot, name))""",
)
_INSERT_EVENT = """INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (lot, gate, jid, seq) DO NOTHING"""
_INSERT_CORRECTION = """INSERT INTO corrections VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (lot, id) DO NOTHING"""
_PUT_DOCUMENT = """INSERT INTO documents (lot, name, body, version) VALUES (?, ?, ?, ?)
    ON CONFLICT (lot, name) DO UPDATE SET body = excluded.body, version = excluded.version"""


class BadRequest(ValueError):
    """A request the server refuses with 400; the text says why."""


class CentralStore:
    """The central server's SQLite store (WAL, synchronous=FULL), one
    connection behind a lock."""

    def __init__(self, path):
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        with self._lock:
            for statement in SCHEMA:
                self._db.execute(statement)

    def close(self):
        """Close the connection."""
        with self._lock:
            self._db.close()

    def _write(self, statement, rows):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                new = 0
                for row in rows:
                    new += self._db.execute(statement, row).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.rollback()
                raise
        return new

    def add_events(self, lot, events):
        """Store [(gate, jid, record.Event)] of the lot once each; returns how many were new.
        A row is the lot store's events row (schema.event_row) with the lot in front."""
        now = time.time()
        return self._write(_INSERT_EVENT, [(lot,) + event_row(gate, jid, event, now)
                                           for gate, jid, event in events])

    def add_corrections(self, lot, corrections):
        """Store correction dicts of the lot once each (by id); returns how many were new."""
        now = time.time()
        return self._write(_INSERT_CORRECTION, [
            (lot, c["id"], c["g"], c["j"], c["s"], c["action"], c["amount"], c["note"],
             c["at"], now) for c in corrections])

    def put_document(self, lot, name, body, version):
        """Keep the lot's tariff or member list (JSON text) with its version."""
        self._write(_PUT_DOCUMENT, [(lot, name, body, version)])

    def document(self, lot, name):
        """(JSON text, version) of the lot's tariff or members, else None."""
        with self._lock:
            return self._db.execute("SELECT body, version FROM documents WHERE lot = ? AND "
                                    "name = ?", (lot, name)).fetchone()

    def events(self, lot):
        """The lot's stored events as (gate, jid, seq, kind, plate, fee), by identity."""
        with self._lock:
            return self._db.execute(
                "SELECT gate, jid, seq, kind, plate, fee FROM events WHERE lot = ? "
                "ORDER BY gate, jid, seq", (lot,)).fetchall()

    def corrections(self, lot):
        """Every stored correction of the lot as (id, gate, jid, seq, action, amount)."""
        with self._lock:
            return self._db.execute(
                "SELECT id, gate, jid, seq, action, amount FROM corrections WHERE lot = ? "
                "ORDER BY created_at, id", (lot,)).fetchall()

    def summary(self, lot):
        """{"events", "per_gate": {gate: {kind: n}}, "corrections"} of the lot."""
        with self._lock:
            counts = self._db.execute("SELECT gate, kind, COUNT(*) FROM events WHERE lot = ? "
                                      "GROUP BY gate, kind", (lot,)).fetchall()
            corrections = self._db.execute("SELECT COUNT(*) FROM corrections WHERE lot = ?",
                                           (lot,)).fetchone()[0]
        per_gate = {}
        for gate, kind, n in counts:
            per_gate.setdefault(gate, {"in": 0, "out": 0})[kind] = n
        return {"events": sum(n for _, _, n in counts), "per_gate": per_gate,
                "corrections": corrections}


def parse_events(body):
    """[(gate, jid, record.Event)] from a POST events body; BadRequest if malformed."""
    items = body.get("events") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise BadRequest("events: not a list")
    out = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest("events[%d]: not an object" % index)
        gate, jid = item.get("g"), item.get("j")
        if not is_id(gate):
            raise BadRequest("events[%d].g: %r is not a gate id" % (index, gate))
        if type(jid) is not int or not 0 <= jid <= 0xFFFFFFFF:
            raise BadRequest("events[%d].j: %r is not a journal id" % (index, jid))
        try:
            out.append((gate, jid, record.from_wire(item)))
        except record.RecordError as exc:
            raise BadRequest("events[%d]: %s" % (index, exc))
    return out


def parse_corrections(body):
    """Correction dicts from a POST corrections body; BadRequest if malformed."""
    items = body.get("corrections") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise BadRequest("corrections: not a list")
    for index, c in enumerate(items):
        ok = (isinstance(c, dict) and isinstance(c.get("id"), str) and c["id"]
              and isinstance(c.get("g"), str) and type(c.get("j")) is int
              and type(c.get("s")) is int and isinstance(c.get("action"), str)
              and type(c.get("amount")) is int and isinstance(c.get("note"), str)
              and isinstance(c.get("at"), (int, float)))
        if not ok:
            raise BadRequest("corrections[%d]: malformed" % index)
    return items


class CentralServer:
    """The central service on host:port (port 0: a free one, kept across
    stop/start so that bridges find it again). tokens: {lot: bearer token};
    when given, every request must carry its lot's token."""

    def __init__(self, db_path, host="127.0.0.1", port=0, tokens=None):
        self.db_path = db_path
        self.tokens = tokens
        self.store = CentralStore(db_path)
        self.requests = 0          # POSTs of events answered 200
        self.duplicates = 0        # events received that were already stored
        self._http = HTTPService(type("Handler", (_Handler,), {"central": self}), host, port,
                                 "central-http")

    @property
    def url(self):
        """Base URL, e.g. http://127.0.0.1:8123"""
        return "http://%s:%d" % (self._http.host, self._http.port)

    @property
    def alive(self):
        """True while serving."""
        return self._http.running

    def start(self):
        """Serve in a background thread; returns self."""
        if not self._http.running:
            self._http.start()
            log.info("central server on %s", self.url)
        return self

    def stop(self):
        """Stop serving (the link "goes down"); start() again to come back."""
        self._http.stop()

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


class _Handler(BaseHTTPRequestHandler):
    central = None
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        log.debug("%s " + fmt, self.address_string(), *args)

    def _reply(self, code, obj=None, text=None):
        body = (text if text is not None else json.dumps(obj or {}, ensure_ascii=False)).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self):
        match = _PATH.match(self.path.split("?")[0])
        if not match:
            self._reply(404, {"error": "no such resource"})
            return None
        lot, what = match.groups()
        tokens = self.central.tokens
        if tokens is not None and self.headers.get("Authorization") != "Bearer %s" % tokens.get(
                lot, object()):
            self._reply(401, {"error": "no or wrong token for lot %s" % lot})
            return None
        return lot, what

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            raise BadRequest("body: %d bytes" % length)
        try:
            return json.loads(self.rfile.read(length))
        except ValueError as exc:
            raise BadRequest("not JSON (%s)" % exc)

    def do_GET(self):
        route = self._route()
        if route is None:
            return
        lot, what = route
        central = self.central
        if what == "summary":
            summary = central.store.summary(lot)
            summary.update(requests=central.requests, duplicates=central.duplicates)
            self._reply(200, summary)
        elif what in ("tariff", "members"):
            found = central.store.document(lot, what)
            if found is None:
                self._reply(404, {"error": "no %s for lot %s" % (what, lot)})
            else:
                self._reply(200, text=found[0])
        else:
            self._reply(405, {"error": "POST only"})

    def do_POST(self):
        route = self._route()
        if route is None:
            return
        lot, what = route
        central = self.central
        try:
            body = self._body()
            if what == "events":
                events = parse_events(body)
                new = central.store.add_events(lot, events)
                central.requests += 1
                central.duplicates += len(events) - new
                self._reply(200, {"stored": new, "duplicates": len(events) - new})
            elif what == "corrections":
                items = parse_corrections(body)
                new = central.store.add_corrections(lot, items)
                self._reply(200, {"stored": new, "duplicates": len(items) - new})
            else:
                self._reply(405, {"error": "GET or PUT"})
        except BadRequest as exc:
            self._reply(400, {"error": str(exc)})

    def do_PUT(self):
        route = self._route()
        if route is None:
            return
        lot, what = route
        try:
            body = self._body()
            if what == "tariff":
                try:
                    self.central.set_tariff(lot, json.dumps(body, ensure_ascii=False))
                except tariff.TariffError as exc:
                    raise BadRequest(str(exc))
                self._reply(200, {"version": body.get("version")})
            elif what == "members":
                members = body.get("members") if isinstance(body, dict) else None
                if not isinstance(members, list) or not all(
                        isinstance(m, dict) and isinstance(m.get("p"), str) for m in members):
                    raise BadRequest("members: not a list of {p, ...}")
                self._reply(200, {"version": self.central.set_members(lot, members)})
            else:
                self._reply(405, {"error": "GET or POST"})
        except BadRequest as exc:
            self._reply(400, {"error": str(exc)})


def add_parser(subparsers):
    """Register `parkgate central`."""
    parser = subparsers.add_parser("central", help="run the central management server",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, metavar="PATH", help="SQLite database")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--token", action="append", default=[], metavar="LOT=TOKEN",
                        help="require this bearer token from the lot's bridge (repeatable)")
    parser.set_defaults(run=run)


def run(args):
    """Serve until SIGTERM or SIGINT; 0 after a clean stop."""
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    tokens = dict(item.split("=", 1) for item in args.token) or None
    server = CentralServer(args.db, args.host, args.port, tokens).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    while not stop.wait(1):
        pass
    server.close()
    return 0
