"""`parkgate lot`: provision and run a lot server from its lot directory.

The commands are a table; each names the function that runs it as
"module:function" under parkgate_tools.lot, imported only when that command
runs (so `parkgate lot init` needs neither paho nor psycopg), or a table of
its own subcommands (`parkgate lot user add`). A ValueError
(lot/config.ConfigError, a refused id) or OSError is printed, exit code 2."""
import importlib
import sys

_DIR = (("dir",), dict(metavar="DIR", help="the lot directory"))
_GATE_SPEC = dict(metavar="NAME[:in|out]", help="a gate id and its direction (default in)")
_SOME_GATES = (("--gate",), dict(action="append", dest="gates", metavar="G",
                                 help="push to gate G only (repeatable; default every gate)"))
_WAIT = (("--wait",), dict(type=float, default=30.0, metavar="S",
                           help="wait up to S s for the gates' answers (default %(default)s)"))
_NAME = (("name",), dict(metavar="NAME", help="user name (letters, digits, -)"))
_PASSWORD_STDIN = (("--password-stdin",), dict(action="store_true",
                                               help="read the password as one line from "
                                                    "standard input (default: ask twice)"))
_USER_COMMANDS = (
    ("add", "add a user of the web application (its password asked twice)",
     [_DIR, _NAME, (("--role",), dict(required=True, metavar="attendant|manager")),
      _PASSWORD_STDIN], "users_cli:add"),
    ("list", "list the users, their roles and whether disabled", [_DIR],
     "users_cli:list_users"),
    ("passwd", "give a user a new password (its sessions end)", [_DIR, _NAME, _PASSWORD_STDIN],
     "users_cli:passwd"),
    ("disable", "disable a user: no more logins, its sessions end", [_DIR, _NAME],
     "users_cli:disable"),
)
_VERSION = (("--version",), dict(type=int, required=True, metavar="N",
                                 help="the image's version, 1..2**30-1"))
_IMAGE_GATES = [(("--gate",), dict(action="append", dest="gates", metavar="G",
                                   help="gate G (repeatable)")),
                (("--all",), dict(action="store_true", help="every gate of the lot"))]
_IMAGE_COMMANDS = (
    ("add", "keep a firmware image under its version (state/images)",
     [_DIR, (("file",), dict(metavar="FILE")), _VERSION,
      (("--note",), dict(metavar="T", help="a note shown in the list"))], "ota_cli:add"),
    ("list", "list the images, newest first", [_DIR], "ota_cli:list_images"),
    ("offer", "plan version N for gates; the lot server offers it and reboots them when "
              "told", [_DIR, (("version",), dict(type=int, metavar="N"))] + _IMAGE_GATES + [
         (("--reboot",), dict(default="manual", metavar="now|HH:MM|manual",
                              help="when to reboot into it once staged (HH:MM lot local "
                                   "time; default %(default)s)")),
         (("--force",), dict(action="store_true",
                             help="offer a version a gate rolled back"))], "ota_cli:offer"),
    ("reboot", "reboot gates into their staged image now or at HH:MM",
     [_DIR] + _IMAGE_GATES + [(("--at",), dict(default="now", metavar="now|HH:MM"))],
     "ota_cli:reboot"),
    ("cancel", "cancel gates' plans (a staged image is then never rebooted into)",
     [_DIR] + _IMAGE_GATES, "ota_cli:cancel"),
    ("status", "per gate: running version, plan, progress, rollbacks", [_DIR],
     "ota_cli:status"),
)


def command_table():
    """The `parkgate lot` commands: (name, help, [(flags, argparse keywords)],
    "module:function" under parkgate_tools.lot; function(args) -> exit code)."""
    return (
        # ---- provisioning (lot/provision.py) ----
        ("init", "write a new lot directory: lot.toml, credentials, keys, site.json files, "
                 "mosquitto configuration", [
            _DIR,
            (("--lot",), dict(required=True, help="lot id (letters, digits, -)")),
            (("--gate",), dict(action="append", required=True, dest="gates", **_GATE_SPEC)),
            (("--broker-host",), dict(default="127.0.0.1",
                                      help="address mosquitto listens on and gates connect "
                                           "to (default %(default)s)")),
            (("--broker-port",), dict(type=int, default=1883, help="default %(default)s")),
            (("--tls-port",), dict(type=int, default=8883,
                                   help="TLS listener port with --tls-cert (default "
                                        "%(default)s)")),
            (("--tls-cert",), dict(metavar="PATH", help="server certificate: adds a TLS "
                                                        "listener")),
            (("--tls-key",), dict(metavar="PATH", help="its private key")),
            (("--tls-ca",), dict(metavar="PATH", help="CA file for the TLS listener")),
            (("--db",), dict(metavar="URL", default="state/lot.sqlite",
                             help="SQLite path (relative to DIR) or postgresql:// URL "
                                  "(default %(default)s)")),
            (("--tariff",), dict(metavar="PATH", help="tariff JSON (default: the default "
                                                      "tariff)")),
            (("--http-port",), dict(type=int, default=8080, help="operator page, /healthz "
                                                                 "(default %(default)s)"))],
         "provision:run_init"),
        ("add-gate", "add a gate: credentials, key, site.json; regenerate the broker's files",
         [_DIR, (("gate",), _GATE_SPEC)], "provision:run_add_gate"),
        ("remove-gate", "remove a gate, its credentials, key, site.json and kept pushes; "
                        "regenerate the broker's files",
         [_DIR, (("gate",), dict(metavar="NAME"))], "provision:run_remove_gate"),
        ("rotate-key", "give a gate a new downlink key (and with --password a new MQTT "
                       "password); rewrite its site.json",
         [_DIR, (("gate",), dict(metavar="NAME")),
          (("--password",), dict(action="store_true", help="also a new MQTT password"))],
         "provision:run_rotate_key"),
        # ---- running and pushes (H8: lot/run.py, lot/pushes.py) ----
        ("run", "run the lot server: bridge, operator page, /healthz and /metrics, push "
                "keeper", [_DIR, (("-v", "--verbose"), dict(action="store_true",
                                                             help="log every batch"))],
         "run:main"),
        ("push-tariff", "sign a tariff for each gate, push it and show each gate's answer",
         [_DIR, (("file",), dict(metavar="FILE", help="tariff JSON")), _SOME_GATES, _WAIT],
         "push_cli:push_tariff"),
        ("push-members", "sign a member list (whole, or a delta) for each gate, push it and "
                         "show each gate's answer",
         [_DIR, (("file",), dict(metavar="FILE", help="member list (members.json form)")),
          (("--delta-from",), dict(metavar="OLD_FILE",
                                   help="gates at OLD_FILE's version get the delta from it, "
                                        "the others the whole list")), _SOME_GATES, _WAIT],
         "push_cli:push_members"),
        ("open", "open a gate's barrier (a signed remote open) and show its answer",
         [_DIR, (("gate",), dict(metavar="GATE")),
          (("--within",), dict(type=int, required=True, metavar="S",
                               help="the gate must open within S s, or not at all (at most "
                                    "its command_max_s, 60 s by default)")), _WAIT],
         "push_cli:open_gate"),
        ("set-clock", "make gates take the lot server's time now (their round-trip-checked "
                      "clock ask)",
         [_DIR, (("gates",), dict(nargs="*", metavar="GATE", help="default every gate")),
          _WAIT], "push_cli:set_clock"),
        # ---- the web application's accounts (lot/users_cli.py) ----
        ("user", "the accounts of the lot's web application", [], _USER_COMMANDS),
        # ---- firmware over the air (lot/ota_cli.py, issue #16) ----
        ("image", "firmware images and their delivery to the gates", [], _IMAGE_COMMANDS),
    )


def _runner(target, command):
    module, function = target.split(":")

    def run(args):
        try:
            return getattr(importlib.import_module("parkgate_tools.lot." + module),
                           function)(args)
        except (ValueError, OSError) as exc:     # ConfigError, a refused id, a file
            print("parkgate lot %s: %s" % (command, exc), file=sys.stderr)
            return 2
    return run


def _add_commands(parser, table, dest, prefix=""):
    sub = parser.add_subparsers(dest=dest, required=True)
    for name, help, arguments, target in table:
        p = sub.add_parser(name, help=help, description=help)
        for flags, options in arguments:
            p.add_argument(*flags, **options)
        if isinstance(target, str):
            p.set_defaults(run=_runner(target, prefix + name))
        else:
            _add_commands(p, target, name + "_command", prefix + name + " ")


def add_parser(subparsers):
    """Register `parkgate lot` and its commands with the top-level parser."""
    parser = subparsers.add_parser("lot", help="provision and run a lot server",
                                   description=__doc__.splitlines()[0])
    _add_commands(parser, command_table(), "lot_command")
