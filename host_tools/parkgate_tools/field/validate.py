"""Checks on the host, before anything is sent to a board: site.json keys,
tariff tables (with the firmware's own parkgate.tariff) and member lists.

Each refusal is a Refused naming the field ("site refused: gate: ...",
"members refused: members[1].plate: ...")."""
import json
import os
import re

from parkgate import plate, record, tariff
from parkgate_host.member_lists import build as build_member_list
from parkgate_tools.field.errors import Refused
from parkgate_tools.ids import ID_RULE, is_id

MAX_MEMBERS = 50000     # members.bin: 16 bytes a member, looked up on flash
MAX_ID = 32             # the field tool's cap on a lot or gate id, on top of the id rule
_SITE_INTS = ("relay_pulse_ms", "fee_timeout_ms", "repeat_window_ms", "keepalive_s",
              "socket_timeout_ms", "backoff_max_ms", "inside_max", "uplink_batch",
              "uplink_window", "command_max_s", "passage_ms", "clock_resync_s")
# Keys with a fixed set of values (firmware/parkgate/app.py DEFAULTS, the boards).
_SITE_CHOICES = {"camera": ("pg", "vz"), "exit_policy": ("confirm", "owed"),
                 "passage": (True, False), "rtc": (None, "ds3231")}
_SITE_STRS = ("broker", "mqtt_user", "mqtt_password", "wifi_ssid", "wifi_password")
SITE_REQUIRED = ("lot", "gate", "direction", "broker")


def _site_problem(key, value):
    # What is wrong with value for key (None: nothing); KeyError: not a key.
    if key in ("lot", "gate"):
        if not is_id(value) or len(value) > MAX_ID:
            return "%r is not 1-%d %s (it goes into MQTT topics)" % (value, MAX_ID, ID_RULE)
    elif key == "direction":
        if value not in ("in", "out"):
            return "%r is not \"in\" or \"out\"" % (value,)
    elif key in _SITE_STRS:
        if not isinstance(value, str) or not value:
            return "%r is not a non-empty string" % (value,)
    elif key == "port":
        if type(value) is not int or not 0 < value < 65536:
            return "%r is not a TCP port" % (value,)
    elif key in _SITE_INTS:
        if type(value) is not int or value < 0:
            return "%r is not a non-negative integer" % (value,)
    elif key in _SITE_CHOICES:
        if value not in _SITE_CHOICES[key] or type(value) is int:
            return "%r is not one of %s" % (value, ", ".join(
                json.dumps(c) for c in _SITE_CHOICES[key]))
    elif key == "utc_offset_minutes":
        if type(value) is not int or not -720 <= value <= 840:
            return "%r is not minutes in -720..840" % (value,)
    elif key == "ntp":
        if value is not None and (not isinstance(value, str) or not re.fullmatch(
                r"(\d{1,3}\.){3}\d{1,3}(:\d{1,5})?", value)):
            return ("%r is not an IP address with an optional :port (the gate does no "
                    "DNS on the lane)" % (value,))
    elif key == "key":
        if value is not None and (not isinstance(value, str) or not value or len(value) % 2
                                  or not re.fullmatch(r"[0-9a-fA-F]+", value)):
            return "the gate key must be hex digits (an even number of them)"
    elif key == "ip":
        if value is not None and (not isinstance(value, list) or len(value) != 4
                                  or not all(isinstance(v, str) for v in value)):
            return "expected null (DHCP) or [address, netmask, gateway, dns]"
    else:
        raise KeyError(key)
    return None


def check_site_value(key, value):
    """Refused("site", key, ...) unless value is right for the site key.
    Returns a warning string for an unknown key, else None."""
    try:
        problem = _site_problem(key, value)
    except KeyError:
        return "site: %s: not a key the firmware knows (kept)" % key
    if problem:
        raise Refused("site", key, problem)
    return None


def check_site(doc, board=None):
    """Validate a whole site.json document; returns warnings, raises Refused."""
    if not isinstance(doc, dict):
        raise Refused("site", "site.json", "expected a JSON object")
    required = list(SITE_REQUIRED) + (board.site_required if board else [])
    for key in required:
        if key not in doc:
            raise Refused("site", key, "missing (required%s)" % (
                " on %s" % board.name if board and key in board.site_required else ""))
    warnings = []
    for key, value in doc.items():
        warning = check_site_value(key, value)
        if warning:
            warnings.append(warning)
    return warnings


def check_tariff(data):
    """Validate tariff JSON (bytes) with the firmware's own parkgate.tariff;
    returns the Tariff, raises Refused naming the field."""
    try:
        return tariff.loads(data)
    except tariff.TariffError as exc:
        raise Refused("tariff", exc.field, exc.message) from None


def _member_problem(member, seen):
    # (field under the entry, what is wrong) of one member, or None.
    if not isinstance(member, dict):
        return "", "expected an object"
    for key in member:
        if key not in ("plate", "from", "until", "window", "blacklist"):
            return "." + key, "unknown field"
    text = member.get("plate")
    if not isinstance(text, str) or not 0 < len(text.encode()) <= record.MAX_PLATE_BYTES:
        return ".plate", "%r is not a plate (1-%d UTF-8 bytes)" % (text, record.MAX_PLATE_BYTES)
    if text in seen:
        return ".plate", "%s is listed twice" % text
    seen.add(text)
    if "until" not in member:
        return ".until", "missing (unix seconds, or null for no end)"
    for key in ("from", "until"):
        value = member.get(key)
        if value is not None and (type(value) is not int or not 0 <= value < 2 ** 32):
            return "." + key, "%r is not unix seconds or null" % (value,)
    window = member.get("window")
    if window is not None and not (
            isinstance(window, list) and len(window) == 2
            and all(type(m) is int and 0 <= m < 1440 for m in window)):
        return ".window", "%r is not [start, end] minutes of the day" % (window,)
    if type(member.get("blacklist", False)) is not bool:
        return ".blacklist", "expected true or false"
    return None


def check_members(doc):
    """Validate a member list: {"version": N, "members": [{"plate": str,
    "until": unix seconds or null, optional "from": unix seconds or null,
    "window": [start, end] minutes of the local day or null, "blacklist":
    bool}, ...]}. Returns the member count."""
    def refuse(field, message):
        raise Refused("members", field, message)
    if not isinstance(doc, dict):
        refuse("members.json", "expected a JSON object")
    for key in doc:
        if key not in ("version", "members"):
            refuse(key, "unknown field")
    version = doc.get("version")
    if type(version) is not int or not 0 < version < 2 ** 31:
        refuse("version", "%r is not a positive integer" % (version,))
    members = doc.get("members")
    if not isinstance(members, list):
        refuse("members", "expected a list")
    if len(members) > MAX_MEMBERS:
        refuse("members", "%d members, at most %d fit a board" % (len(members), MAX_MEMBERS))
    seen = set()
    for i, member in enumerate(members):
        problem = _member_problem(member, seen)
        if problem:
            refuse("members[%d]%s" % (i, problem[0]), problem[1])
    return len(members)


def members_file(doc):
    """The gate's binary member list (parkgate.members) for a checked doc."""
    entries = [{"plate": plate.normalise(m["plate"]), "from": m.get("from"),
                "until": m["until"], "window": m.get("window"),
                "blacklist": m.get("blacklist", False)} for m in doc["members"]]
    try:
        return build_member_list(entries, doc["version"])
    except ValueError as exc:
        raise Refused("members", "members", str(exc)) from None


def load_json(path, what):
    """(bytes, document) of a JSON file; Refused(what, its name, ...) if it
    does not parse."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data, json.loads(data)
    except ValueError as exc:
        raise Refused(what, os.path.basename(path), "not valid JSON (%s)" % exc) from None


def parse_value(text):
    """A config value from the command line: JSON if it parses, else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text
