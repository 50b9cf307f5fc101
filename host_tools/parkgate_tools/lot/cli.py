"""`parkgate bridge`: run a lot bridge until SIGTERM or SIGINT."""
import argparse
import logging
import math
import signal
import threading

from parkgate_tools.lot import health, security
from parkgate_tools.lot.config import MAX_STAY_HOURS
from parkgate_tools.lot.bridge import Bridge
from parkgate_tools.lot.group_commit import GROUP_BATCHES
from parkgate_tools.lot.operator_page import OperatorPage
from parkgate_tools.lot.store import LOCK_WAIT_S


def add_parser(subparsers):
    """Register `parkgate bridge`."""
    parser = subparsers.add_parser(
        "bridge", help="store a lot's gate events and answer fee queries",
        description=__doc__.splitlines()[0])
    parser.add_argument("--lot", required=True, help="lot id (letters, digits, -)")
    parser.add_argument("--broker", required=True, type=_host_port, metavar="HOST:PORT")
    parser.add_argument("--db", required=True, metavar="PATH|URL",
                        help="SQLite database file, or a postgresql:// URL")
    parser.add_argument("--tariff", required=True, metavar="PATH", help="tariff JSON")
    parser.add_argument("--client-id", help="MQTT client id (default parkgate-bridge-<lot>)")
    parser.add_argument("--secrets", metavar="LOT_DIR",
                        help="log in to the broker as the lot bridge, with the password in "
                             "LOT_DIR/secrets.json (parkgate_tools.lot.security)")
    parser.add_argument("--tls-ca", metavar="PATH", help="connect with TLS, trusting this CA")
    parser.add_argument("--share", metavar="GROUP",
                        help="be one of several workers: MQTT 5 shared subscription $share/GROUP")
    parser.add_argument("--upstream", metavar="URL", help="central server to forward events to")
    parser.add_argument("--upstream-token", metavar="TOKEN", help="bearer token for --upstream")
    parser.add_argument("--http", type=int, metavar="PORT",
                        help="serve the operator page on 127.0.0.1:PORT (0: a free port)")
    parser.add_argument("--http-host", default="127.0.0.1", metavar="ADDRESS")
    parser.add_argument("--group-batches", type=int, default=GROUP_BATCHES, metavar="N",
                        help="at most N batches per transaction (default %(default)s)")
    parser.add_argument("--lock-wait", type=_seconds, default=LOCK_WAIT_S, metavar="SECONDS",
                        help="wait up to SECONDS for a SQLite database another worker holds "
                             "locked, at start and at each commit, logging each retry "
                             "(default %(default)s)")
    parser.add_argument("--max-stay-hours", type=float, default=MAX_STAY_HOURS, metavar="HOURS",
                        help="an entry older than this with no exit is a stale session: not "
                        "inside, not billed from (default %(default)g; 0: no maximum)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every batch")
    parser.set_defaults(run=run)


def _host_port(text):
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError("expected HOST:PORT, got %r" % text)
    return host, int(port)


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError("expected seconds >= 0, got %r" % text)
    return value


def run(args):
    """Run the bridge in the foreground; 0 after a clean stop."""
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log = logging.getLogger("parkgate.bridge")
    credentials = {}
    try:
        if args.secrets:
            user, password = security.provision_bridge_credentials(args.secrets, args.lot)
            credentials = {"username": user, "password": password}
        bridge = Bridge(args.lot, args.broker[0], args.broker[1], args.db, args.tariff,
                        client_id=args.client_id, tls_ca=args.tls_ca, share_group=args.share,
                        upstream=args.upstream, upstream_token=args.upstream_token,
                        group_batches=args.group_batches, lock_wait=args.lock_wait,
                        **credentials)
        bridge.store.set_max_stay(int(max(0.0, args.max_stay_hours) * 3600))
    except Exception as exc:   # OSError, ValueError, TariffError, a database refusing
        log.error("cannot start: %s", exc)
        return 2
    page = None
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.set())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        bridge.start()
        if args.http is not None:
            page = OperatorPage(bridge.store, args.lot, lambda: bridge.tariff,
                                host=args.http_host, port=args.http,
                                health=lambda: health.bridge_health(bridge)).start()
            log.info("operator page: %s", page.url)
        while not stop.wait(1):
            pass
    finally:
        if page is not None:
            page.stop()
        bridge.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
