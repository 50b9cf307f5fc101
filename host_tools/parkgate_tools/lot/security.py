"""Per-gate MQTT credentials and the broker's password file and ACL.

Every gate of a lot gets a user ``<lot>.<gate>`` and a random password, and
so do the lot server's ``<lot>._bridge`` (the bridge), ``<lot>._push`` (the
push keeper), ``<lot>._ops`` (the push commands) and ``<lot>._ota`` (the
image server); ``.`` and ``_`` never
occur in a lot or gate id, so no gate can be named like another user. They are kept in the
lot's secrets file ``<lot_dir>/secrets.json``, mode 0600, from which the
mosquitto password file (PBKDF2-SHA512 hashes in mosquitto's ``$7$``
format, no plaintext) and the ACL are generated. There are no default
passwords. The ACL lets a gate publish only on its own topics and read its
own downlink plus the lot's entry events (lane sharing); see
firmware/docs/lot-server.md."""
import base64
import hashlib
import json
import os
import secrets as random_source

from parkgate_tools.files import locked, write_atomic
from parkgate_tools.ids import check_id

SECRETS_NAME = "secrets.json"
BRIDGE_ROLE = "_bridge"     # the lot server's bridge
PUSH_ROLE = "_push"         # the lot server's push keeper
OPS_ROLE = "_ops"           # the `parkgate lot push-*` commands
OTA_ROLE = "_ota"           # the image server of `parkgate lot run` (lot/image_server.py)
# What the push keeper and the push commands may send to any gate of the lot
# (pg/<lot>/+/down/<kind>): signed downlink messages (firmware/docs/mqtt.md).
PUSH_KINDS = ("tariff", "members", "open", "setclock")
# What the image server of `parkgate lot run` (lot/image_server.py, user
# _ota: the broker takes one connection per user) sends: the offer, the chunk frames, the reboot command; it
# reads the gates' asks on up/image (firmware/docs/ota.md).
IMAGE_KINDS = ("image", "chunk", "reboot")
PRESENCE_LEVEL = "server"   # pg/<lot>/server/status: the lot server's presence, not a gate
# The largest payload of any message on a lot's broker, in bytes: mosquitto
# drops a larger publish (message_size_limit) and the bridge refuses one
# before parsing it (lot/bridge.py). Gates send batches of at most 1 KB; the
# largest downlink, a signed tariff or member list, stays under 4 KB.
MAX_MESSAGE_BYTES = 4096
# A whole MQTT packet may add its fixed header, topic, packet id and MQTT 5
# properties to that; a client sending a larger packet is disconnected
# (max_packet_size) before mosquitto reads it into memory.
PACKET_OVERHEAD_BYTES = 512
_PBKDF2_ITERATIONS = 101    # mosquitto_passwd's own default for $7$
_SALT_BYTES = 12


def gate_user(lot, gate):
    """The MQTT user name of a gate."""
    return "%s.%s" % (lot, gate)


def bridge_user(lot):
    """The MQTT user name of the lot bridge (all of its workers)."""
    return "%s.%s" % (lot, BRIDGE_ROLE)


def secrets_path(lot_dir):
    """Where the lot's secrets file is."""
    return os.path.join(lot_dir, SECRETS_NAME)


def _check_id(what, value):
    check_id(what, value)
    if what == "gate" and value == PRESENCE_LEVEL:
        raise ValueError("gate: %r is the lot server's own topic level" % value)


def _locked(lot_dir):
    return locked(lot_dir, ".secrets.lock")


def load_secrets(lot_dir):
    """The secrets file as a dict {"lot", "users": {user: {"password",
    "role", "gate"}}}, or an empty one if there is none yet."""
    try:
        with open(secrets_path(lot_dir)) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"lot": None, "users": {}}


def _save_secrets(lot_dir, data):
    path = secrets_path(lot_dir)
    with write_atomic(path, private=True) as f:
        json.dump(data, f, indent=1, sort_keys=True)


def _provision(lot_dir, lot, user, role, gate, rotate):
    _check_id("lot", lot)
    with _locked(lot_dir):
        data = load_secrets(lot_dir)
        if data.get("lot") not in (None, lot):
            raise ValueError("%s holds the secrets of lot %r, not %r" % (
                secrets_path(lot_dir), data["lot"], lot))
        data["lot"] = lot
        known = data["users"].get(user)
        if known is None or rotate:
            known = {"password": random_source.token_urlsafe(18), "role": role, "gate": gate}
            data["users"][user] = known
            _save_secrets(lot_dir, data)
    return user, known["password"]


def provision_gate_credentials(lot_dir, lot, gate, rotate=False):
    """The (user, password) of a gate of the lot, made up (random) and kept
    in the lot's secrets file the first time, the same ones afterwards
    (rotate=True: a new password). The field tools put them in the gate's
    site config as mqtt_user / mqtt_password; regenerate the broker's files
    with write_broker_auth (Broker.reload_auth does) for them to work."""
    _check_id("gate", gate)
    return _provision(lot_dir, lot, gate_user(lot, gate), "gate", gate, rotate)


def provision_bridge_credentials(lot_dir, lot, rotate=False):
    """The (user, password) of the lot bridge, as for a gate."""
    return _provision(lot_dir, lot, bridge_user(lot), "bridge", None, rotate)


def provision_server_credentials(lot_dir, lot, role, rotate=False):
    """The (user, password) of one of the lot server's users <lot>.<role>
    (BRIDGE_ROLE, PUSH_ROLE, OPS_ROLE, OTA_ROLE), as for a gate."""
    if role not in (BRIDGE_ROLE, PUSH_ROLE, OPS_ROLE, OTA_ROLE):
        raise ValueError("role: %r is not one of the lot server's users" % (role,))
    return _provision(lot_dir, lot, "%s.%s" % (lot, role), role.lstrip("_"), None, rotate)


def remove_gate_credentials(lot_dir, lot, gate):
    """Forget a gate's user and password; True if it had them."""
    _check_id("gate", gate)
    with _locked(lot_dir):
        data = load_secrets(lot_dir)
        found = data["users"].pop(gate_user(lot, gate), None) is not None
        if found:
            _save_secrets(lot_dir, data)
    return found


def password_hash(password, salt=None):
    """mosquitto's $7$ hash of password: PBKDF2-HMAC-SHA512, base64 salt and digest."""
    salt = salt or os.urandom(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ITERATIONS)
    return "$7$%d$%s$%s" % (_PBKDF2_ITERATIONS, base64.b64encode(salt).decode(),
                            base64.b64encode(digest).decode())


def acl_text(lot, gates):
    """The mosquitto ACL for the lot's bridge, push users and gates."""
    prefix = "pg/%s/" % lot
    lines = ["# parkgate lot %s: generated by parkgate_tools.lot.security, do not edit" % lot,
             "", "user " + bridge_user(lot),
             "topic read %s+/up/#" % prefix,
             "topic read %s+/status" % prefix,
             "topic write %s+/down/#" % prefix,
             "topic readwrite %s%s/status" % (prefix, PRESENCE_LEVEL),   # its presence, will
             "topic readwrite %s%s/#" % (prefix, BRIDGE_ROLE)]
    for role in (PUSH_ROLE, OPS_ROLE):     # the push keeper and the push commands
        lines += ["", "user %s.%s" % (lot, role)]
        lines += ["topic write %s+/down/%s" % (prefix, kind) for kind in PUSH_KINDS]
        lines += ["topic read %s+/status" % prefix, "topic read %s+/up/refused" % prefix]
    lines += ["", "user %s.%s" % (lot, OTA_ROLE)]
    lines += ["topic write %s+/down/%s" % (prefix, kind) for kind in IMAGE_KINDS]
    lines += ["topic read %s+/up/image" % prefix, "topic read %s+/status" % prefix]
    for gate in sorted(gates):
        mine = prefix + gate + "/"
        lines += ["", "user " + gate_user(lot, gate),
                  "topic write %sup/#" % mine,
                  "topic write %sstatus" % mine,
                  "topic read %sdown/#" % mine,
                  "topic read %s+/up/events" % prefix,
                  "topic read %s%s/status" % (prefix, PRESENCE_LEVEL)]
    return "\n".join(lines) + "\n"


def _write_private(path, text):
    with write_atomic(path, private=True) as f:
        f.write(text)


def write_broker_auth(lot_dir, password_path, acl_path, owner=None):
    """Write mosquitto's password file and ACL for every user in the lot's
    secrets file. owner: (uid, gid) to give the files to (the user
    mosquitto drops to), else they stay the caller's. Returns the number of
    users."""
    data = load_secrets(lot_dir)
    lot = data.get("lot")
    if lot is None:
        raise ValueError("%s: no credentials provisioned" % secrets_path(lot_dir))
    users = data["users"]
    _write_private(password_path, "".join(
        "%s:%s\n" % (user, password_hash(entry["password"]))
        for user, entry in sorted(users.items())))
    gates = [entry["gate"] for entry in users.values() if entry["role"] == "gate"]
    _write_private(acl_path, acl_text(lot, gates))
    if owner is not None:
        for path in (password_path, acl_path):
            os.chown(path, *owner)
    return len(users)
