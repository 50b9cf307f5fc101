"""The `parkgate board` commands other than deploy (field.deploy): each takes
a transport.Device, does its checks on the host, runs its on-board program
and returns what the board said (a dict, or for journal a stream)."""
import json
import time

from parkgate.clock import EARLIEST_VALID
from parkgate_tools.field.errors import FieldToolError, Refused
from parkgate_tools.field.validate import (SITE_REQUIRED, check_members, check_site_value,
                                           check_tariff, load_json, members_file)


def status(device, events=5):
    """Versions, clock, backlog, journal identity, memory and the last
    events, read from the board's flash by its own modules. Returns a dict."""
    return device.call("status", {"events": events})


def journal(device):
    """Yields the journal: first {"journal": {...} or None}, then every record
    decoded on the board (wire keys of parkgate.record.to_wire plus "acked";
    "error" and "raw" for one that does not decode), then {"end": count}."""
    return device.stream("journal", timeout=max(device.timeout, 3600))


def push_tariff(device, path):
    """Validate a tariff table with parkgate.tariff.loads, then put it on the
    board as tariff.json atomically. Returns version, digest and SHA-256."""
    with open(path, "rb") as f:
        data = f.read()
    table = check_tariff(data)
    digest = device.push_file(data, "tariff.json")
    return {"version": table.version, "digest": table.digest, "sha256": digest}


def push_members(device, path):
    """Validate a JSON member list (check_members), build the gate's binary
    list from it and put it on the board as members.bin atomically."""
    doc = load_json(path, "members")[1]
    count = check_members(doc)
    digest = device.push_file(members_file(doc), "members.bin")
    return {"version": doc["version"], "members": count, "sha256": digest}


def set_clock(device, when="now"):
    """Set the board's clock to when (unix seconds, or "now": this host's
    clock) through board.ClockSource().set_seconds, and read it back."""
    if when in (None, "now"):
        seconds = int(round(time.time()))
    else:
        try:
            seconds = int(when)
        except (TypeError, ValueError):
            raise Refused("clock", "--time", "%r is not unix seconds or \"now\"" % (when,)) from None
    if not EARLIEST_VALID <= seconds < 2 ** 32:
        raise Refused("clock", "--time", "%d is before 2024-01-01 or past 2106" % seconds)
    sent = time.time()
    answer = device.call("set_clock", {"time": seconds})
    elapsed = time.time() - sent
    return {"set": seconds, "read_back": answer["time"],
            "difference": answer["time"] - seconds, "round_trip_s": round(elapsed, 3)}


def test_relay(device, ms=500):
    """Pulse the barrier relay through board.Relay() for ms milliseconds."""
    if type(ms) is not int or not 0 < ms <= 10000:
        raise Refused("relay", "--ms", "%r is not 1..10000" % (ms,))
    return device.call("relay", {"ms": ms}, timeout=device.timeout + ms / 1000)


def config_get(device, key=None):
    """The board's site.json (or one key of it)."""
    site = device.call("site_get")["site"]
    if site is None:
        raise FieldToolError("device: no site.json on the flash: deploy with --site FILE "
                             "or use `parkgate board config set`")
    if key is None:
        return site
    if key not in site:
        raise FieldToolError("site.json on the board has no %r" % key)
    return site[key]


def config_set(device, key, value):
    """Set one key of the board's site.json (value: a JSON value, see
    validate.parse_value) after checking it; written atomically. Returns warnings."""
    answer = device.call("site_get")
    site = answer["site"] or {}
    warning = check_site_value(key, value)
    site[key] = value
    device.push_file(json.dumps(site, ensure_ascii=False, indent=1).encode(), "site.json",
                     answer["root"])
    warnings = [warning] if warning else []
    warnings += ["site: %s: missing (required)" % k for k in SITE_REQUIRED if k not in site]
    return {"key": key, "value": value, "warnings": warnings}
