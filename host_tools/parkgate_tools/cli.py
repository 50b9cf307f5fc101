"""The `parkgate` command: a table of subcommands, one module each.

Each module in SUBCOMMANDS has ``add_parser(subparsers)`` which registers its
parser with ``set_defaults(run=function)``; ``run(args)`` returns the exit code.
"""
import argparse
import importlib
import sys

SUBCOMMANDS = ("field.tariff_cli", "sim.demo", "lot.cli", "lot.lot_cli", "field.board_cli",
               "central.server")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="parkgate", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module("parkgate_tools." + name).add_parser(subparsers)
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
