# Checks a board module against the board interface (boards/interface.py),
# by calling each name as the gate does: on CPython and on MicroPython (the
# simulator's own image), so it uses nothing either lacks.
# usage: <python> tests/board_conformance.py SPEC.json SITE.json [PRELUDE]
#   SPEC: what tests/test_board_interface.py reads from the protocols:
#     {"values": {name: kind}, "functions": {name: {"args": [...], "returns": kind}},
#      "adapters": {name: {"args": [...], "values": {attr: kind},
#                          "methods": {method: {"args": [...], "returns": kind}}}},
#      "optional": [names], "not_called": [function and method names]}
#   SITE: the site.json the board's load_site() may be compared with and
#     start_network(), ntp_server() get.
#   PRELUDE: a module imported first (the ESP32 boards' fake port on CPython).
# Prints "FAIL <name>: <why>" for each problem, then "conformance: N checked, M failed".
import json
import sys

KINDS = {"int": int, "str": str, "bool": bool, "dict": dict, "bytes": bytes, "tuple": tuple}


def _samples(site, fs):
    # An argument for each parameter name the interface uses.
    return {"site": site, "path": fs, "buf": memoryview(bytearray(16)), "ms": 1,
            "line": "conformance check", "text": "conformance", "socket_timeout_ms": 500,
            "seconds": 800000000, "on": False, "data": b"", "block": 0, "offset": 0,
            "op": 4, "arg": 0}


def _kind_ok(value, kind):
    if kind == "any" or kind == "none":
        return True
    if kind == "bool":
        return value is True or value is False
    if kind == "int":
        return isinstance(value, int) and not (value is True or value is False)
    return isinstance(value, KINDS[kind])


def _call(fn, args, samples):
    # TypeError from the call itself: the arity (or an argument) is not the interface's.
    return fn(*[samples[a] for a in args])


def check(board, spec, site):
    """[(name, why)] for every way board differs from spec."""
    failures = []
    optional = spec.get("optional", [])
    not_called = spec.get("not_called", [])
    samples = _samples(site, "/")

    def fail(name, why):
        failures.append((name, why))

    def present(name):
        if hasattr(board, name):
            return True
        if name not in optional:
            fail(name, "missing")
        return False

    def run(name, fn, entry):
        try:
            result = _call(fn, entry["args"], samples)
        except TypeError as exc:
            fail(name, "called with (%s): TypeError %s" % (", ".join(entry["args"]), exc))
            return None
        except Exception as exc:     # the environment's (no network, no file): arity is fine
            return exc
        if not _kind_ok(result, entry["returns"]):
            fail(name, "returned %r, not %s" % (result, entry["returns"]))
        return result

    functions = spec["functions"]
    for name in functions:
        if present(name):
            fn = getattr(board, name)
            if not callable(fn):
                fail(name, "not callable")
                continue
            if name in not_called:      # reset(): it would end the check
                continue
            result = run(name, fn, functions[name])
            if name == "mount_flash" and isinstance(result, str):
                samples["path"] = result
            if name == "mqtt" and isinstance(result, tuple) and len(result) != 2:
                fail(name, "returned %d items, not (make_client, sockets)" % len(result))
            if name == "udp_socket" and result is not None and hasattr(result, "close"):
                result.close()
    adapters = spec["adapters"]
    for name in adapters:
        if not present(name):
            continue
        entry = adapters[name]
        factory = getattr(board, name)
        if not callable(factory):
            fail(name, "not callable")
            continue
        try:
            adapter = _call(factory, entry["args"], samples)
        except TypeError as exc:
            fail(name, "called with (%s): TypeError %s" % (", ".join(entry["args"]), exc))
            continue
        except Exception as exc:
            fail(name, "raised %r" % (exc,))
            continue
        for attr in entry.get("values", {}):
            if not hasattr(adapter, attr):
                fail("%s().%s" % (name, attr), "missing")
            elif not _kind_ok(getattr(adapter, attr), entry["values"][attr]):
                fail("%s().%s" % (name, attr), "is %r" % (getattr(adapter, attr),))
        methods = entry["methods"]
        for method in methods:
            label = "%s().%s" % (name, method)
            if not hasattr(adapter, method):
                fail(label, "missing")
            elif not callable(getattr(adapter, method)):
                fail(label, "not callable")
            elif method not in not_called:
                run(label, getattr(adapter, method), methods[method])
    values = spec["values"]
    for name in values:        # after the calls: load_site() and ClockSource() set some
        if present(name) and not _kind_ok(getattr(board, name), values[name]):
            fail(name, "is %r, not %s" % (getattr(board, name), values[name]))
    return failures


def checked_names(spec):
    return len(spec["values"]) + len(spec["functions"]) + len(spec["adapters"])


def main(argv):
    with open(argv[1]) as f:
        spec = json.load(f)
    with open(argv[2]) as f:
        site = json.load(f)
    if len(argv) > 3:
        __import__(argv[3])
    import board
    failures = check(board, spec, site)
    for name, why in failures:
        print("FAIL %s: %s" % (name, why))
    print("conformance: %d checked, %d failed" % (checked_names(spec), len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
