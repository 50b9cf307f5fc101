"""`parkgate bridge`: run a lot bridge until SIGTERM or SIGINT."""
import argparse
import logging
import signal
import threading

from parkgate import tariff
from parkgate_tools.bridge import Bridge


def add_parser(subparsers):
    """Register `parkgate bridge`."""
    parser = subparsers.add_parser(
        "bridge", help="store a lot's gate events and answer fee queries",
        description=__doc__.splitlines()[0])
    parser.add_argument("--lot", required=True, help="lot id (letters, digits, -)")
    parser.add_argument("--broker", required=True, type=_host_port, metavar="HOST:PORT")
    parser.add_argument("--db", required=True, metavar="PATH", help="SQLite database")
    parser.add_argument("--tariff", required=True, metavar="PATH", help="tariff JSON")
    parser.add_argument("--client-id", help="MQTT client id (default parkgate-bridge-<lot>)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every batch")
    parser.set_defaults(run=run)


def _host_port(text):
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError("expected HOST:PORT, got %r" % text)
    return host, int(port)


def run(args):
    """Run the bridge in the foreground; 0 after a clean stop."""
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        bridge = Bridge(args.lot, args.broker[0], args.broker[1], args.db, args.tariff,
                        client_id=args.client_id)
    except (OSError, ValueError, tariff.TariffError) as exc:
        logging.getLogger("parkgate.bridge").error("cannot start: %s", exc)
        return 2
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.set())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        bridge.start()
        while not stop.wait(1):
            pass
    finally:
        bridge.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
