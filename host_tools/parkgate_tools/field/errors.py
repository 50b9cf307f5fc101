"""What can go wrong in a field tool, worded for the person at the gate.

Every failure the field tools raise is a FieldToolError; `parkgate board`
prints it as one ``error: ...`` line. The transport (field.transport) turns
mpremote's failures and the board's ``PG!`` lines into these."""


class FieldToolError(Exception):
    """A field tool failure, worded for the person at the gate."""


class DeviceUnreachable(FieldToolError):
    """mpremote could not open the port or get a REPL on it."""


class DeviceError(FieldToolError):
    """The board ran the command and reported an error.

    stage: what the board was doing; kind: the MicroPython exception type;
    detail: its message."""

    def __init__(self, stage, kind, detail):
        self.stage = stage
        self.kind = kind
        self.detail = detail
        super().__init__("device: " + explain(stage, kind, detail))


class Refused(FieldToolError):
    """A file or value was refused on the host; nothing was sent.

    field names what is wrong ("plans.wk.bands[1].start", "members[3].plate")."""

    def __init__(self, what, field, message):
        self.what = what
        self.field = field
        super().__init__("%s refused: %s: %s" % (what, field, message))


class VerifyError(FieldToolError):
    """A file on the board does not have the SHA-256 it was sent with."""


def explain(stage, kind, detail):
    """The message of a DeviceError: what the board was doing and what to do."""
    if kind == "ImportError" and ("'board'" in detail or "parkgate" in detail):
        return ("no parkgate firmware on the board (%s): flash the image `make firmware "
                "BOARD=NAME` builds (firmware/docs/boards.md), or for development "
                "`parkgate board deploy --code`" % detail)
    if stage == "site" and kind == "OSError":
        return "no site.json on the flash: deploy with --site FILE or use `parkgate board config set`"
    if kind in ("OSError", "JournalError", "RuntimeError", "ValueError", "RecordError"):
        return "%s: %s" % (stage, detail)
    return "%s: %s: %s" % (stage, kind, detail)
