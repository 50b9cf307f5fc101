"""`parkgate board`: install and service a gate board over USB with mpremote.

    parkgate board deploy --board NAME [--site FILE] [--tariff FILE] [--members FILE]
                          [--code] [--no-reset]
    parkgate board status [--events N] [--json]
    parkgate board journal [--format csv|json] [--out FILE]
    parkgate board push-tariff FILE
    parkgate board push-members FILE
    parkgate board set-clock [--time UNIX|now]
    parkgate board test-relay [--ms N]
    parkgate board config get [KEY]
    parkgate board config set KEY VALUE

Every command takes --port DEVICE (default $PARKGATE_PORT), --resume (no
soft reset on connect: needed for the simulator, see
parkgate_tools.sim.repl) and -v (print each mpremote command). The work is
done by parkgate_tools.field.fieldtool; formats in firmware/docs/field-tools.md.
"""
import argparse
import json
import os
import sys

from parkgate_tools.field import fieldtool
from parkgate_tools.files import write_atomic


def _common():
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--port", default=os.environ.get("PARKGATE_PORT"),
                        help="serial device of the board, e.g. /dev/ttyUSB0, or the "
                             "simulator's pty (default $PARKGATE_PORT)")
    parent.add_argument("--resume", action="store_true",
                        help="pass mpremote's `resume`: no soft reset on connect "
                             "(required for the unix-port simulator)")
    parent.add_argument("-v", "--verbose", action="store_true",
                        help="print each mpremote command as it runs")
    parent.add_argument("--timeout", type=float, default=120,
                        help="seconds one mpremote run may take (default 120)")
    return parent


def add_parser(subparsers):
    """Register `parkgate board` and its commands with the top-level parser."""
    parser = subparsers.add_parser("board", help="deploy to and service a gate board (mpremote)",
                                   description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="board_command", required=True)
    common = _common()

    p = sub.add_parser("deploy", parents=[common],
                       help="install the configuration (and with --code the code), verify, reset")
    p.add_argument("--board", required=True,
                   help="board folder under boards/ (%s)" % ", ".join(fieldtool.board_names()))
    p.add_argument("--site", help="site config to install as site.json (keep it out of git)")
    p.add_argument("--tariff", help="tariff table to install as tariff.json")
    p.add_argument("--members", help="JSON member list to install as members.bin")
    p.add_argument("--code", action="store_true",
                   help="development: also copy the code as .mpy files, which shadow the "
                        "image's frozen code (refused if the board's free heap is too small)")
    p.add_argument("--no-reset", action="store_true", help="do not reset the board afterwards")
    p.set_defaults(run=run_deploy)

    p = sub.add_parser("status", parents=[common], help="versions, clock, journal, memory")
    p.add_argument("--events", type=int, default=5, help="last N events (default 5)")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(run=run_status)

    p = sub.add_parser("journal", parents=[common], help="pull and decode the journal")
    p.add_argument("--format", choices=("csv", "json"), default="csv")
    p.add_argument("--out", help="write to FILE (default: standard output)")
    p.set_defaults(run=run_journal)

    p = sub.add_parser("push-tariff", parents=[common], help="validate and install a tariff")
    p.add_argument("file")
    p.set_defaults(run=run_push_tariff)

    p = sub.add_parser("push-members", parents=[common], help="validate and install a member list")
    p.add_argument("file")
    p.set_defaults(run=run_push_members)

    p = sub.add_parser("set-clock", parents=[common], help="set the board's clock")
    p.add_argument("--time", default="now", help="unix seconds, or now (this host's clock)")
    p.set_defaults(run=run_set_clock)

    p = sub.add_parser("test-relay", parents=[common], help="pulse the barrier relay")
    p.add_argument("--ms", type=int, default=500, help="pulse length (default 500 ms)")
    p.set_defaults(run=run_test_relay)

    p = sub.add_parser("config", help="read or change site.json on the board")
    config = p.add_subparsers(dest="config_command", required=True)
    g = config.add_parser("get", parents=[common], help="print site.json or one key")
    g.add_argument("key", nargs="?")
    g.set_defaults(run=run_config_get)
    s = config.add_parser("set", parents=[common], help="set one key (a JSON value)")
    s.add_argument("key")
    s.add_argument("value", help="JSON (500, true, null, \"x\"); anything else is a string")
    s.set_defaults(run=run_config_set)


def _device(args):
    if not args.port:
        raise fieldtool.FieldToolError("no port: give --port DEVICE or set PARKGATE_PORT")
    echo = (lambda line: print("$ " + line, file=sys.stderr)) if args.verbose else None
    return fieldtool.Device(args.port, resume=args.resume, timeout=args.timeout, echo=echo)


def _guarded(run):
    def wrapper(args):
        try:
            return run(args, _device(args))
        except fieldtool.FieldToolError as exc:
            print("error: %s" % exc, file=sys.stderr)
            return 1
        except OSError as exc:
            print("error: %s" % exc, file=sys.stderr)
            return 1
    wrapper.__doc__ = run.__doc__
    return wrapper


def _warn(warnings):
    for warning in warnings:
        print("warning: " + warning, file=sys.stderr)


@_guarded
def run_deploy(args, device):
    result = fieldtool.deploy(device, args.board, site=args.site, tariff_path=args.tariff,
                              members_path=args.members, code=args.code,
                              reset=not args.no_reset, progress=print)
    _warn(result["warnings"])
    print("deployed %s %s (build %s): %s; config %s; reset: %s" % (
        result["board"], result["version"], result["build"],
        "code frozen in the image" if result["code"] == "image" else
        "code from %d files on the flash" % result["files"],
        ", ".join(result["config"]) or "unchanged", result["reset"]))
    return 0


@_guarded
def run_status(args, device):
    status = fieldtool.status(device, args.events)
    if args.json:
        print(json.dumps(status, ensure_ascii=False, indent=1, sort_keys=True))
    else:
        sys.stdout.write(fieldtool.format_status(status))
    return 0


@_guarded
def run_journal(args, device):
    records = fieldtool.journal(device)
    if args.out:
        with write_atomic(args.out, encoding="utf-8", newline="") as out:
            header, count = fieldtool.write_journal(records, out, args.format)
    else:
        header, count = fieldtool.write_journal(records, sys.stdout, args.format)
    if header is None:
        print("no journal on the board yet", file=sys.stderr)
    else:
        print("journal %08x: %d records, next seq %d, acked %d, backlog %d" % (
            header["id"], count, header["next_seq"], header["acked"], header["pending"]),
            file=sys.stderr)
    return 0


@_guarded
def run_push_tariff(args, device):
    result = fieldtool.push_tariff(device, args.file)
    print("tariff.json: version %d digest %s installed (SHA-256 %s verified on the board)" % (
        result["version"], result["digest"], result["sha256"]))
    return 0


@_guarded
def run_push_members(args, device):
    result = fieldtool.push_members(device, args.file)
    print("members.json: version %d, %d plates installed (SHA-256 %s verified on the board)" % (
        result["version"], result["members"], result["sha256"]))
    return 0


@_guarded
def run_set_clock(args, device):
    result = fieldtool.set_clock(device, args.time)
    print("clock set to %d (%s); reads back %d (%+d s)" % (
        result["set"], fieldtool._utc(result["set"]), result["read_back"], result["difference"]))
    return 0 if abs(result["difference"]) <= 2 else 1


@_guarded
def run_test_relay(args, device):
    result = fieldtool.test_relay(device, args.ms)
    print("relay pulsed for %d ms" % result["ms"])
    return 0


@_guarded
def run_config_get(args, device):
    value = fieldtool.config_get(device, args.key)
    print(json.dumps(value, ensure_ascii=False, indent=None if args.key else 1, sort_keys=True))
    return 0


@_guarded
def run_config_set(args, device):
    result = fieldtool.config_set(device, args.key, fieldtool.parse_value(args.value))
    _warn(result["warnings"])
    print("site.json: %s = %s" % (result["key"], json.dumps(result["value"], ensure_ascii=False)))
    return 0
