# The OTA record on the gate's filesystem and the probation of a new image
# (parkgate.ota downloads and stages it). One small file at the path given,
# one ASCII line, written to <path>.new and renamed over <path> (littlefs
# renames are atomic: a power cut leaves the old record or the new one):
#   "dl <version> <size> <sha256 hex> <chunk> <blocks done>\n"
#       an image being downloaded into the update slot; blocks 0 .. done-1
#       are written whole (saved once per block)
#   "pending <version>\n"
#       staged by Download.stage() (saved just before set_boot) and kept
#       until the new image proved itself or the rollback was reported
# No record: nothing under way. See firmware/docs/ota.md "Probation".
import os

DOWNLOADING = "dl"
PENDING = "pending"
TRIAL = "trial"                 # running the pending version, on probation
ROLLED_BACK = "rolled back"     # the bootloader went back to the old image
NONE = "none"


class OtaError(ValueError):
    pass


def _int(word):
    n = int(word)
    if n < 0:
        raise ValueError(word)
    return n


class Progress:
    """The OTA record at path (see above)."""

    def __init__(self, path):
        self.path = path
        self._new = path + ".new"
        self.saves = 0                  # records written since made (tests, figures)

    def read(self):
        """(DOWNLOADING, version, size, sha hex, chunk, blocks done),
        (PENDING, version) or None (no record, or one unreadable)."""
        try:
            with open(self.path) as f:
                line = f.read(200)
        except OSError:
            return None
        words = line.split()
        try:
            if len(words) == 6 and words[0] == DOWNLOADING and len(words[3]) == 64:
                return (DOWNLOADING, _int(words[1]), _int(words[2]), words[3],
                        _int(words[4]), _int(words[5]))
            if len(words) == 2 and words[0] == PENDING:
                return (PENDING, _int(words[1]))
        except ValueError:
            pass
        return None

    def _write(self, line):
        with open(self._new, "w") as f:
            f.write(line)
        os.rename(self._new, self.path)
        self.saves += 1

    def save_download(self, offer, done):
        self._write("%s %d %d %s %d %d\n" % (DOWNLOADING, offer.version, offer.size,
                                             offer.sha_hex, offer.chunk, done))

    def save_pending(self, version):
        self._write("%s %d\n" % (PENDING, version))

    def clear(self):
        for path in (self.path, self._new):
            try:
                os.remove(path)
            except OSError:
                pass


class Probation:
    """What this boot is, from the record and the running version:
    state TRIAL (the pending image runs: call proven() once the journal is
    mounted and replayed, the link is up and one status was published),
    ROLLED_BACK (a pending version that is not the one running: the
    bootloader went back; report it, then call reported()) or NONE.
    version: the pending version (None with NONE)."""

    def __init__(self, progress, running_version):
        self.progress = progress
        self.running = running_version
        rec = progress.read()
        self.version = None
        self.state = NONE
        if rec is not None and rec[0] == PENDING:
            self.version = rec[1]
            self.state = TRIAL if rec[1] == running_version else ROLLED_BACK

    def proven(self, slots):
        """On trial: mark the running image valid (slots'
        mark_app_valid_cancel_rollback) and clear the record; True then.
        False (nothing done) in any other state or the second time."""
        if self.state != TRIAL:
            return False
        # marked first: a cut before the record is cleared only proves it again
        slots.mark_app_valid_cancel_rollback()
        self.progress.clear()
        self.state = NONE
        return True

    def reported(self):
        """After a rollback was reported: clear the record (so it is
        reported once); True then, False in any other state."""
        if self.state != ROLLED_BACK:
            return False
        self.progress.clear()
        self.state = NONE
        return True
