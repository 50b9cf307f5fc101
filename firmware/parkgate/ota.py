# Firmware over the air, the gate's side: a signed offer, the download of
# the image in signed chunks into the spare app slot (resumable after a power
# cut from the last written block), the read-back check of its SHA-256 and
# set_boot. The record on the filesystem and the probation after the switch:
# parkgate.ota_record. The app drives them through parkgate.ota_lane.
# The host side: parkgate_host.ota_signing. See firmware/docs/ota.md.
#
# Offer: a parkgate.sign envelope (JSON), kind "image", the gate's own key,
# "v" the image version. Body, ASCII, single spaces:
#   "<version> <size> <sha256 hex> <chunk>"
# Chunk frame, little-endian, FRAME_HEAD + n + 32 bytes:
#   0  4  magic b"PGI\x01"
#   4  4  version, u32
#   8  4  the whole image's SHA-256, its first 4 bytes
#  12  4  chunk index from 0, u32: image bytes index*chunk ..
#  16  2  n, data length, u16: chunk, or the rest for the last chunk
#  18  n  data
# 18+n 32 HMAC-SHA256 (gate key) over MAC_TAG + gate id + "\n", bytes 0..17,
#         the whole image's SHA-256 (32 bytes) and the data
#
# The slot: a partition of the contract (esp32.Partition or the simulator's):
# readblocks(block, buf, offset), writeblocks(block, buf, offset) (program,
# no erase), ioctl(4, 0) block count, ioctl(5, 0) block size, ioctl(6, b)
# erase, set_boot(). Heap: no buffer over 1 KiB; the frame is the caller's.
import binascii
import hashlib
import json
import struct

from parkgate import sign
from parkgate.compat import const
from parkgate.ota_record import DOWNLOADING, PENDING, OtaError, Probation, Progress  # noqa: F401

BLOCK = const(4096)             # slot erase block
CHUNK_MIN = const(64)
CHUNK_MAX = const(512)
FRAME_HEAD = const(18)
MAC_LEN = const(32)
FRAME_MAX = const(562)          # FRAME_HEAD + CHUNK_MAX + MAC_LEN
VERSION_MAX = const(0x3FFFFFFF)
_READ = const(512)              # read-back piece
MAGIC = b"PGI\x01"
MAC_TAG = b"image-chunk\n"      # no envelope's signed bytes start so (kind "image")
KIND = "image"


def frame_mac(key, gate_line, head, sha, data):
    """The chunk frame's HMAC: gate_line is MAC_TAG + gate id + b"\\n",
    head the frame's first FRAME_HEAD bytes, sha the image's 32-byte
    SHA-256. Hashed in place (parkgate.sign.hmac_sha256), nothing joined."""
    return sign.hmac_sha256(key, gate_line, head, sha, data)


def gate_line(gate):
    return MAC_TAG + gate.encode() + b"\n"


def _number(word):
    # a decimal without sign or leading zero (one spelling per value)
    if not word or len(word) > 10 or (word[0] == "0" and len(word) > 1):
        raise OtaError("malformed offer body")
    for ch in word:
        if ch not in "0123456789":
            raise OtaError("malformed offer body")
    return int(word)


class Offer:
    """An image offered to this gate, checked: version, size, sha (32
    bytes), sha_hex, chunk, count (chunks), and what checks its chunks."""

    def __init__(self, key, gate, version, size, sha_hex, chunk):
        self.key = key
        self.gate = gate
        self.version = version
        self.size = size
        self.sha_hex = sha_hex
        self.sha = binascii.unhexlify(sha_hex)
        self.sha_prefix = self.sha[0:4]
        self.chunk = chunk
        self.count = (size + chunk - 1) // chunk
        self.per_block = BLOCK // chunk
        self.blocks = (size + BLOCK - 1) // BLOCK
        self.gate_line = gate_line(gate)


def parse_offer(key, envelope_bytes, gate, running_version, slot_size):
    """The Offer in envelope_bytes (a signed JSON envelope of kind
    "image", as bytes or as the dict it decodes to), or OtaError naming
    what is wrong: a bad signature, another kind or gate, a version not
    newer than running_version, a size of 0 or over slot_size, a chunk size
    not 64..512 or not dividing 4096, a malformed SHA-256."""
    if not key:
        raise OtaError("no gate key")
    envelope = envelope_bytes         # decoded already (parkgate.downlink), or bytes
    try:
        if not isinstance(envelope, dict):
            if not isinstance(envelope, str):
                envelope = bytes(envelope).decode()
            envelope = json.loads(envelope)
    except (ValueError, TypeError):
        raise OtaError("not an envelope")
    try:
        body = sign.verify(key, envelope, KIND, gate, running_version)
    except sign.SignatureError as exc:
        why = str(exc)
        if why.startswith("stale"):
            why = "version %s not newer than the running %d" % (envelope.get("v"),
                                                               running_version)
        raise OtaError(why)
    words = body.split(" ")
    if len(words) != 4:
        raise OtaError("malformed offer body")
    version = _number(words[0])
    size = _number(words[1])
    sha_hex = words[2]
    chunk = _number(words[3])
    if version != envelope["v"]:
        raise OtaError("body names version %d, the envelope %d" % (version, envelope["v"]))
    if version > VERSION_MAX:
        raise OtaError("version %d too large" % version)
    if size < 1 or size > slot_size:
        raise OtaError("image of %d bytes, the slot holds %d" % (size, slot_size))
    if chunk < CHUNK_MIN or chunk > CHUNK_MAX or BLOCK % chunk:
        raise OtaError("chunk of %d bytes: 64..512 dividing 4096" % chunk)
    if not sign._is_hex64(sha_hex):
        raise OtaError("malformed SHA-256")
    return Offer(key, gate, version, size, sha_hex, chunk)


class Download:
    """The offer's image written chunk by chunk into slot (the update
    partition); progress (ota_record.Progress) keeps the blocks done, so a
    new Download of the same offer after a power cut resumes at the first
    chunk of the block after the last one recorded. OtaError for a frame
    refused (nothing written then) and for a record on probation."""

    def __init__(self, slot, offer, progress):
        self.slot = slot
        self.offer = offer
        self.progress = progress
        if slot.ioctl(5, 0) != BLOCK:
            raise OtaError("slot blocks of %d bytes, not %d" % (slot.ioctl(5, 0), BLOCK))
        if offer.size > slot.ioctl(4, 0) * BLOCK:
            raise OtaError("image of %d bytes, the slot holds %d" % (
                offer.size, slot.ioctl(4, 0) * BLOCK))
        rec = progress.read()
        if rec is not None and rec[0] == PENDING:
            # a staged image, or one on trial: the slot is the fallback's now
            raise OtaError("version %d is pending: no download until it is proven" % rec[1])
        done = 0
        if rec is not None and rec[1:5] == (offer.version, offer.size, offer.sha_hex,
                                            offer.chunk):
            done = min(rec[5], offer.blocks)
        else:
            progress.save_download(offer, 0)
        self._done = done                  # blocks written and recorded
        self._next = done * offer.per_block
        self._buf = None                   # read-back buffer, while verifying
        self._sha = None
        self._pos = 0
        self.verified = None               # None: not checked; True/False

    def next_index(self):
        """The index of the chunk to ask for next; None when all are written."""
        return self._next if self._next < self.offer.count else None

    def blocks_done(self):
        return self._done

    def _want(self, index):
        o = self.offer
        return o.chunk if index < o.count - 1 else o.size - (o.count - 1) * o.chunk

    def accept(self, frame):
        """Check one chunk frame and write its data; OtaError (nothing
        written, nothing erased) for another image, a chunk out of order or
        repeated, a wrong length or a bad HMAC. Returns the chunks left."""
        o = self.offer
        try:
            mv = memoryview(frame)     # bytes, or a view of the caller's receive buffer
        except TypeError:
            raise OtaError("not a chunk frame")
        nbytes = len(mv)
        if nbytes < FRAME_HEAD + MAC_LEN or nbytes > FRAME_MAX or bytes(mv[0:4]) != MAGIC:
            raise OtaError("not a chunk frame")
        version = struct.unpack_from("<I", mv, 4)[0]
        index, n = struct.unpack_from("<IH", mv, 12)
        if version != o.version or bytes(mv[8:12]) != o.sha_prefix:
            raise OtaError("chunk of version %d, another image than version %d's" % (
                version, o.version))
        want = self.next_index()
        if want is None:
            raise OtaError("chunk %d: all %d chunks written" % (index, o.count))
        if index != want:
            raise OtaError("chunk %d out of order: chunk %d is next" % (index, want))
        if n != self._want(index) or nbytes != FRAME_HEAD + n + MAC_LEN:
            raise OtaError("chunk %d: %d data bytes in %d, expected %d" % (
                index, n, nbytes, self._want(index)))
        end = FRAME_HEAD + n
        if not sign.equal(mv[end:], frame_mac(o.key, o.gate_line, mv[0:FRAME_HEAD], o.sha,
                                              mv[FRAME_HEAD:end])):
            raise OtaError("chunk %d: bad signature" % index)
        pos = index * o.chunk
        block = pos // BLOCK
        offset = pos % BLOCK
        try:
            if offset == 0:
                self.slot.ioctl(6, block)
            self.slot.writeblocks(block, mv[FRAME_HEAD:end], offset)
        except OSError:
            # the block again from its first chunk (and its erase)
            self._next = block * o.per_block
            raise
        self._next = index + 1
        if offset + n == BLOCK or self._next == o.count:
            self._done = block + 1
            self.progress.save_download(o, self._done)
        return o.count - self._next

    # --- the read-back check and the switch -----------------------------------
    def verify_step(self):
        """Read back one piece of at most 512 bytes of the slot; None while
        there is more, then True if the SHA-256 of the image's size bytes is
        the offer's, False otherwise (the record is cleared then: the next
        Download starts over)."""
        if self.verified is not None:
            return self.verified
        if self.next_index() is not None:
            raise OtaError("chunk %d of %d not written yet" % (self._next, self.offer.count))
        if self._buf is None:
            self._buf = bytearray(_READ)
            self._mv = memoryview(self._buf)
            self._sha = hashlib.sha256()
            self._pos = 0
        size = self.offer.size
        k = min(_READ, size - self._pos)
        piece = self._mv[0:k]
        self.slot.readblocks(self._pos // BLOCK, piece, self._pos % BLOCK)
        self._sha.update(piece)
        self._pos += k
        if self._pos < size:
            return None
        self.verified = sign.equal(self._sha.digest(), self.offer.sha)
        self._buf = self._mv = self._sha = None
        if not self.verified:
            self.progress.clear()
        return self.verified

    def verify(self):
        """The whole read-back check at once (verify_step until done)."""
        r = None
        while r is None:
            r = self.verify_step()
        return r

    def stage(self):
        """Make the checked image the next boot's: the pending record, then
        set_boot(). OtaError, and no set_boot, unless verify() passed."""
        if not self.verify():
            raise OtaError("version %d: the slot's SHA-256 is not the offer's" %
                           self.offer.version)
        # The record first: a cut before set_boot reads as a rollback at the
        # next boot, never an image running with nobody to prove it.
        self.progress.save_pending(self.offer.version)
        try:
            self.slot.set_boot()
        except OSError:
            self.progress.clear()
            raise
