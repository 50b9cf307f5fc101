"""The lot server's firmware images (issue #16, firmware/docs/ota.md): a
folder (the lot's state/images/) of `<version>.bin` and `<version>.json`
({size, sha256, added, note}), each written atomically, the metadata
last, so an image is listed only once its bytes are whole."""
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass

from parkgate import ota
from parkgate_tools.files import write_atomic

VERSION_MAX = ota.VERSION_MAX       # the gate's own bound (a small int on the board)
# The largest app slot of any board: unix-sim's 512 blocks of 4 KiB
# (boards/unix-sim/ota_slots.py SLOT_SIZE); the ESP32 boards' board.json
# "ota" slot_size are 1572864 and 2031616. A gate refuses an offer larger
# than its own slot (parkgate.ota.parse_offer).
MAX_IMAGE_BYTES = 2 * 1024 * 1024
_NAME = re.compile(r"^([1-9][0-9]{0,9})\.json$")


class ImageError(ValueError):
    """An image the store refuses, and why."""


@dataclass(frozen=True)
class Image:
    """One stored image: version, size (bytes), sha256 (hex), added (unix s), note."""
    version: int
    size: int
    sha256: str
    added: int
    note: str = ""


def check_version(version):
    """version if it is an int 1..2**30-1, else ImageError."""
    if type(version) is not int or not 1 <= version <= VERSION_MAX:
        raise ImageError("version %r: an integer 1..%d" % (version, VERSION_MAX))
    return version


class ImageStore:
    """The images in folder (made on the first add)."""

    def __init__(self, folder, max_bytes=MAX_IMAGE_BYTES):
        self.folder = folder
        self.max_bytes = max_bytes

    def _path(self, version, ext):
        return os.path.join(self.folder, "%d.%s" % (version, ext))

    def add(self, data, version, note="", clock=time.time):
        """Keep data as image version; returns its Image. ImageError for a
        version not 1..2**30-1, an empty image, one over max_bytes, or a
        version already stored with other bytes (the same bytes again:
        the stored Image)."""
        check_version(version)
        data = bytes(data)
        if not data:
            raise ImageError("version %d: an empty image" % version)
        if len(data) > self.max_bytes:
            raise ImageError("version %d: %d bytes, more than the largest slot's %d" % (
                version, len(data), self.max_bytes))
        if not isinstance(note, str) or len(note) > 200:
            raise ImageError("note: a text of at most 200 characters")
        sha = hashlib.sha256(data).hexdigest()
        known = self.get(version)
        if known is not None:
            if known.sha256 == sha:
                return known
            raise ImageError("version %d is stored already with other bytes (sha256 %s)" % (
                version, known.sha256))
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        with write_atomic(self._path(version, "bin"), "wb") as f:
            f.write(data)
        image = Image(version, len(data), sha, int(clock()), note)
        with write_atomic(self._path(version, "json"), encoding="utf-8") as f:
            json.dump({"size": image.size, "sha256": sha, "added": image.added,
                       "note": note}, f)
        return image

    def get(self, version):
        """The Image of version, or None."""
        try:
            with open(self._path(version, "json"), encoding="utf-8") as f:
                doc = json.load(f)
            return Image(version, int(doc["size"]), str(doc["sha256"]), int(doc["added"]),
                         str(doc.get("note", "")))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def list(self):
        """Every stored Image, newest version first."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        found = [self.get(int(m.group(1))) for m in map(_NAME.match, names) if m]
        return sorted((i for i in found if i is not None), key=lambda i: -i.version)

    def read(self, version):
        """The bytes of image version; ImageError if not stored or if they
        are not what was stored (size, SHA-256)."""
        image = self.get(version)
        if image is None:
            raise ImageError("no image of version %r" % (version,))
        with open(self._path(version, "bin"), "rb") as f:
            data = f.read()
        if len(data) != image.size or hashlib.sha256(data).hexdigest() != image.sha256:
            raise ImageError("image %d: its file is not the bytes stored" % version)
        return data
