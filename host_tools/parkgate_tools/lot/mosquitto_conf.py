"""mosquitto.conf for a lot broker, from the one template (mosquitto.conf
beside this module): a lot directory's (lot/provision.py) and the test
harness's (sim/broker.py) are rendered by the same function."""
import getpass
import os
import string

from parkgate_tools.lot.security import MAX_MESSAGE_BYTES, PACKET_OVERHEAD_BYTES

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mosquitto.conf")


def listener(port, host, cafile="", certfile="", keyfile=""):
    """A listener block; with certfile and keyfile it speaks TLS (1.2 and up)."""
    lines = ["listener %d %s" % (port, host)]
    if certfile:
        if cafile:
            lines.append("cafile " + cafile)
        lines += ["certfile " + certfile, "keyfile " + keyfile, "tls_version tlsv1.2"]
    return "\n".join(lines)


def secured(password_path, acl_path, clientid_from_user=True):
    """The auth block: no anonymous clients, a password file and an ACL;
    clientid_from_user: a client's id is its user name (one connection a user)."""
    lines = ["allow_anonymous false", "password_file " + password_path, "acl_file " + acl_path]
    if clientid_from_user:
        lines.append("use_username_as_clientid true")
    return "\n".join(lines)


ANONYMOUS = "allow_anonymous true"


def render(listeners, auth, state_dir, log_dest, message_size_limit=MAX_MESSAGE_BYTES,
           user=None):
    """The configuration text. listeners: blocks from listener(); auth:
    secured() or ANONYMOUS; state_dir: where mosquitto.db goes; log_dest:
    "stderr" (a service: the journal) or a file path."""
    if type(message_size_limit) is not int or message_size_limit < 1:
        raise ValueError("message_size_limit: %r is not a byte count" % (message_size_limit,))
    with open(TEMPLATE) as f:
        template = string.Template(f.read())
    return template.substitute(
        user=user or getpass.getuser(), listeners="\n\n".join(listeners), auth=auth,
        state_dir=state_dir.rstrip("/"),
        log_dest="log_dest " + (log_dest if log_dest == "stderr" else "file " + log_dest),
        message_size_limit=message_size_limit,
        max_packet_size=message_size_limit + PACKET_OVERHEAD_BYTES)
