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
    parkgate board flash --board NAME IMAGE [--erase] [--baud N] [--layout factory|ota]
                         [--dry-run]

Every command takes --port DEVICE (default $PARKGATE_PORT), --resume (no
soft reset on connect: needed for the simulator, see
parkgate_tools.sim.repl) and -v (print each mpremote command). The table
at the end of this file (command_table) lists the commands; the work is
done by field.deploy and field.commands over field.transport; formats in
firmware/docs/field-tools.md. `flash` runs esptool, not mpremote (field.flash,
firmware/docs/ota.md): of the common options it uses --port only.
"""
import argparse
import json
import os
import sys

from parkgate_tools.field import commands, flash, output
from parkgate_tools.field.boards import board_names
from parkgate_tools.field.deploy import deploy
from parkgate_tools.field.errors import FieldToolError
from parkgate_tools.field.transport import Device
from parkgate_tools.field.validate import parse_value
from parkgate_tools.files import write_atomic


def _device(args):
    if not args.port:
        raise FieldToolError("no port: give --port DEVICE or set PARKGATE_PORT")
    echo = (lambda line: print("$ " + line, file=sys.stderr)) if args.verbose else None
    return Device(args.port, resume=args.resume, timeout=args.timeout, echo=echo)


def _guarded(run):
    # run(args, device), with the device made from the common options and
    # any failure printed as one "error: ..." line (exit status 1).
    def wrapper(args):
        try:
            return run(args, _device(args))
        except (FieldToolError, OSError) as exc:
            print("error: %s" % exc, file=sys.stderr)
            return 1
    wrapper.__doc__ = run.__doc__
    return wrapper


def _warn(warnings):
    for warning in warnings:
        print("warning: " + warning, file=sys.stderr)


@_guarded
def run_deploy(args, device):
    result = deploy(device, args.board, site=args.site, tariff_path=args.tariff,
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
    status = commands.status(device, args.events)
    if args.json:
        print(json.dumps(status, ensure_ascii=False, indent=1, sort_keys=True))
    else:
        sys.stdout.write(output.format_status(status))
    return 0


@_guarded
def run_journal(args, device):
    records = commands.journal(device)
    if args.out:
        with write_atomic(args.out, encoding="utf-8", newline="") as out:
            header, count = output.write_journal(records, out, args.format)
    else:
        header, count = output.write_journal(records, sys.stdout, args.format)
    if header is None:
        print("no journal on the board yet", file=sys.stderr)
    else:
        print("journal %08x: %d records, next seq %d, acked %d, backlog %d" % (
            header["id"], count, header["next_seq"], header["acked"], header["pending"]),
            file=sys.stderr)
    return 0


@_guarded
def run_push_tariff(args, device):
    result = commands.push_tariff(device, args.file)
    print("tariff.json: version %d digest %s installed (SHA-256 %s verified on the board)" % (
        result["version"], result["digest"], result["sha256"]))
    return 0


@_guarded
def run_push_members(args, device):
    result = commands.push_members(device, args.file)
    print("members.json: version %d, %d plates installed (SHA-256 %s verified on the board)" % (
        result["version"], result["members"], result["sha256"]))
    return 0


@_guarded
def run_set_clock(args, device):
    result = commands.set_clock(device, args.time)
    print("clock set to %d (%s); reads back %d (%+d s)" % (
        result["set"], output.utc(result["set"]), result["read_back"], result["difference"]))
    return 0 if abs(result["difference"]) <= 2 else 1


@_guarded
def run_test_relay(args, device):
    result = commands.test_relay(device, args.ms)
    print("relay pulsed for %d ms" % result["ms"])
    return 0


@_guarded
def run_config_get(args, device):
    value = commands.config_get(device, args.key)
    print(json.dumps(value, ensure_ascii=False, indent=None if args.key else 1, sort_keys=True))
    return 0


@_guarded
def run_config_set(args, device):
    result = commands.config_set(device, args.key, parse_value(args.value))
    _warn(result["warnings"])
    print("site.json: %s = %s" % (result["key"], json.dumps(result["value"], ensure_ascii=False)))
    return 0


def run_flash(args):
    """parkgate board flash: esptool, not mpremote (field.flash)."""
    echo = lambda line: print("$ " + line, file=sys.stderr)  # noqa: E731
    try:
        done = flash.flash(args.board, args.port, args.image, erase=args.erase, baud=args.baud,
                           layout=args.layout, echo=echo, dry_run=args.dry_run)
    except (FieldToolError, OSError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    slot = done["slot"]
    print("%s %s: %s layout, %d bytes into %s (0x%x, %d bytes free in the slot)%s" % (
        "would flash" if args.dry_run else "flashed", done["board"], done["layout"],
        done["image_size"], slot.name, slot.offset, slot.size - done["image_size"],
        "; everything else erased" if args.erase else ""))
    return 0


# Options every command takes: (flags, argparse keywords).
COMMON_OPTIONS = (
    (("--port",), dict(default=os.environ.get("PARKGATE_PORT"),
                       help="serial device of the board, e.g. /dev/ttyUSB0, or the "
                            "simulator's pty (default $PARKGATE_PORT)")),
    (("--resume",), dict(action="store_true",
                         help="pass mpremote's `resume`: no soft reset on connect "
                              "(required for the unix-port simulator)")),
    (("-v", "--verbose"), dict(action="store_true",
                               help="print each mpremote command as it runs")),
    (("--timeout",), dict(type=float, default=120,
                          help="seconds one mpremote run may take (default 120)")),
)
# Commands grouped under a word ("config get"): the group's help.
GROUPS = {"config": "read or change site.json on the board"}


def command_table():
    """The `parkgate board` commands: (name, help, [(flags, argparse
    keywords)], run). A name of two words is a command of a group."""
    return (
        ("deploy", "install the configuration (and with --code the code), verify, reset", [
            (("--board",), dict(required=True, help="board folder under boards/ (%s)"
                                % ", ".join(board_names()))),
            (("--site",), dict(help="site config to install as site.json (keep it out of git)")),
            (("--tariff",), dict(help="tariff table to install as tariff.json")),
            (("--members",), dict(help="JSON member list to install as members.bin")),
            (("--code",), dict(action="store_true",
                               help="development: also copy the code as .mpy files, which "
                                    "shadow the image's frozen code (refused if the board's "
                                    "free heap is too small)")),
            (("--no-reset",), dict(action="store_true",
                                   help="do not reset the board afterwards"))], run_deploy),
        ("status", "versions, clock, journal, memory", [
            (("--events",), dict(type=int, default=5, help="last N events (default 5)")),
            (("--json",), dict(action="store_true", help="print the status as JSON"))],
         run_status),
        ("journal", "pull and decode the journal", [
            (("--format",), dict(choices=("csv", "json"), default="csv")),
            (("--out",), dict(help="write to FILE (default: standard output)"))], run_journal),
        ("push-tariff", "validate and install a tariff", [(("file",), {})], run_push_tariff),
        ("push-members", "validate and install a member list", [(("file",), {})],
         run_push_members),
        ("set-clock", "set the board's clock", [
            (("--time",), dict(default="now", help="unix seconds, or now (this host's clock)"))],
         run_set_clock),
        ("test-relay", "pulse the barrier relay", [
            (("--ms",), dict(type=int, default=500, help="pulse length (default 500 ms)"))],
         run_test_relay),
        ("config get", "print site.json or one key", [(("key",), dict(nargs="?"))],
         run_config_get),
        ("config set", "set one key (a JSON value)", [
            (("key",), {}),
            (("value",), dict(help="JSON (500, true, null, \"x\"); anything else is a string"))],
         run_config_set),
        ("flash", "write an image over USB with esptool (first install, recovery)", [
            (("image",), dict(help="the application, build/firmware/BOARD/micropython.bin "
                                   "(bootloader.bin, partition-table.bin beside it)")),
            (("--board",), dict(required=True, help="board folder under boards/")),
            (("--erase",), dict(action="store_true",
                                help="erase the whole flash first: filesystem and journal "
                                     "too (a first install, a change of layout)")),
            (("--baud",), dict(type=int, default=flash.DEFAULT_BAUD,
                               help="esptool's baud rate (default %d)" % flash.DEFAULT_BAUD)),
            (("--layout",), dict(choices=("factory", "ota"),
                                 help="expect this layout (default: the one "
                                      "partition-table.bin holds)")),
            (("--dry-run",), dict(action="store_true",
                                  help="print the esptool commands, run none"))], run_flash),
    )


def add_parser(subparsers):
    """Register `parkgate board` and its commands with the top-level parser."""
    parser = subparsers.add_parser("board", help="deploy to and service a gate board (mpremote)",
                                   description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="board_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    for flags, options in COMMON_OPTIONS:
        common.add_argument(*flags, **options)
    groups = {}
    for name, help, arguments, run in command_table():
        group, _, command = name.rpartition(" ")
        if group and group not in groups:
            groups[group] = sub.add_parser(group, help=GROUPS[group]).add_subparsers(
                dest=group + "_command", required=True)
        p = (groups[group] if group else sub).add_parser(command, parents=[common], help=help)
        for flags, options in arguments:
            p.add_argument(*flags, **options)
        p.set_defaults(run=run)
