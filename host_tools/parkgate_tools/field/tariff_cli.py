"""`parkgate tariff`: quote a stay from a tariff table, or check a table.

    parkgate tariff quote TABLE --entry TIME --exit TIME [--colour C] [--member]
                                [--json] [--runtime cpython|micropython]
    parkgate tariff check TABLE

TIME is a local time "YYYY-MM-DDTHH:MM[:SS]" in the table's UTC offset, or
integer unix seconds. Without --entry the quote is for an exit with no
matching entry. --runtime micropython computes the quote with the same
firmware code under the MicroPython unix port (host_tools/mp/quote.py).
"""
import json
import os
import subprocess

from parkgate import tariff
from parkgate.tariff_time import parse_time
from parkgate_host import tariffs
from parkgate_host.tariffs import format_time
from parkgate_tools import runtime

QUOTE_SCRIPT = os.path.join(runtime.ROOT, "host_tools", "mp", "quote.py")


def add_parser(subparsers):
    parser = subparsers.add_parser("tariff", help="quote a stay or check a tariff table",
                                   description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="tariff_command", required=True)
    q = sub.add_parser("quote", help="the fee of a stay, with its breakdown")
    q.add_argument("table", help="tariff table (JSON)")
    q.add_argument("--entry", help="entry: local YYYY-MM-DDTHH:MM[:SS] or unix seconds "
                                   "(omit for an exit without entry)")
    q.add_argument("--exit", required=True, help="exit: local time or unix seconds")
    q.add_argument("--colour", "--color", default="blue",
                   help="plate colour: 0-7 or %s (default blue)" % ", ".join(tariff.COLOURS))
    q.add_argument("--member", action="store_true", help="member or monthly pass")
    q.add_argument("--json", action="store_true",
                   help="print the quote (parkgate_host.tariffs.quote_dict) as JSON")
    q.add_argument("--runtime", choices=("cpython", "micropython"), default="cpython",
                   help="interpreter that runs the engine (default cpython)")
    q.set_defaults(run=run_quote)
    c = sub.add_parser("check", help="validate a table")
    c.add_argument("table", help="tariff table (JSON)")
    c.set_defaults(run=run_check)


def _load(path):
    with open(path, "rb") as f:
        return tariff.loads(f.read())


def run_check(args):
    try:
        tf = _load(args.table)
    except (OSError, tariff.TariffError) as exc:
        print("error: %s" % exc)
        return 1
    print("ok version %d digest %s" % (tf.version, tf.digest))
    return 0


def run_quote(args):
    try:
        tf = _load(args.table)
        off = tf.utc_offset_minutes
        entry = None if args.entry is None else parse_time(args.entry, off, "--entry")
        exit = parse_time(args.exit, off, "--exit")
        colour = tariff.colour_code(args.colour, "--colour")
        request = {"entry": entry, "exit": exit, "colour": colour, "member": args.member}
        if args.runtime == "micropython":
            result = quote_on_micropython(args.table, [request])[0]
        else:
            result = quote_dict(tf, request)
    except (OSError, RuntimeError, tariff.TariffError) as exc:
        print("error: %s" % exc)
        return 1
    if "error" in result:
        print("error: %s" % result["error"])
        return 1
    if args.json:
        print(json.dumps(result, ensure_ascii=False, sort_keys=True, indent=1))
    else:
        print(describe(result, tf))
    return 0


def quote_dict(tf, request):
    """The quote's dict (parkgate_host.tariffs.quote_dict) for a request as
    quote.py takes it, on CPython."""
    if request.get("entry") is None:
        return tariffs.quote_dict(tariff.quote_no_entry(tf, request["exit"],
                                                        request.get("colour", 0)))
    return tariffs.quote_dict(tariff.quote(tf, request["entry"], request["exit"],
                                           request.get("colour", 0), request.get("member", False)))


def quote_on_micropython(table_path, requests, heap=runtime.GATE_HEAP):
    """Replies of host_tools/mp/quote.py to the requests (one per request),
    after loading table_path (None: the requests load their own tables)."""
    args = [table_path] if table_path else []
    # UTF-8, not \u escapes: MicroPython's json does not join surrogate pairs
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in requests)
    proc = subprocess.run(runtime.micropython_argv(QUOTE_SCRIPT, *args, heap=heap),
                          env=runtime.micropython_env(), input=lines,
                          capture_output=True, text=True, encoding="utf-8", timeout=600)
    if proc.returncode != 0:
        raise RuntimeError("micropython quote.py failed:\n" + proc.stdout[-2000:] + proc.stderr)
    replies = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    if table_path:
        head, replies = replies[0], replies[1:]
        if "error" in head:
            raise RuntimeError("micropython could not load the table: " + head["error"])
    if len(replies) != len(requests):
        raise RuntimeError("micropython replied %d times to %d requests" % (len(replies), len(requests)))
    return replies


def _yuan(fen):
    sign = "-" if fen < 0 else ""
    return "%s%d.%02d" % (sign, abs(fen) // 100, abs(fen) % 100)


def describe(result, tf):
    """The human-readable quote: stay, breakdown lines, fee."""
    off = tf.utc_offset_minutes
    name = tariff.COLOURS[result["colour"]]
    lines = ["table %s version %d digest %s" % (tf.name or "-", result["version"], result["digest"])]
    if result["entry"] is None:
        lines.append("exit %s, no matching entry" % format_time(result["exit"], off))
    else:
        stay = result["exit"] - result["entry"]
        lines.append("stay %s -> %s (%dd %02dh %02dm %02ds)" % (
            format_time(result["entry"], off), format_time(result["exit"], off),
            stay // 86400, stay // 3600 % 24, stay // 60 % 60, stay % 60))
    lines.append("plate colour %d %s, class %s%s" % (
        result["colour"], name, result["class"], ", member" if result["member"] else ""))
    for item in result["items"]:
        if item["kind"] == "units":
            what = "%d x %s" % (item["quantity"], _yuan(item["unit_price"]))
        elif item["kind"] == "cap":
            what = "%d period(s) at %s" % (item["quantity"], _yuan(item["unit_price"]))
        else:
            what = ""
        lines.append("  %-10s %-44s %-22s %10s" % (item["kind"], item["label"], what,
                                                 _yuan(item["amount"])))
    lines.append("fee %s yuan (%d fen)" % (_yuan(result["fee"]), result["fee"]))
    return "\n".join(lines)
