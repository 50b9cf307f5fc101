"""A simulated lot that updates its gates' firmware over the air: SimLot (a
real mosquitto, the bridge on SQLite, gates on the gate's own 32-bit image)
plus the lot's image server (lot/image_server.py) with its image store and
update plan in the lot's folder, and gates started with two image slots
(SimGate(..., slots=True): sim/boot_selector.py picks the image each boot).

Images are real unix-sim builds (host_tools/build_firmware.py): image(N) is
the gate's firmware as version N, image(N, "crash") one whose main crashes
at boot, image(N, "nolink") one that never brings its link up. The tests of
must-shows 1-3 of issue #16 (tests/test_ota_e2e_sim.py, test_ota_cuts_sim.py)
and `make bench`'s ota round use it."""
import binascii
import hashlib
import os
import re

from parkgate_tools import runtime
from parkgate_tools.lot.image_server import ImageServer
from parkgate_tools.lot.images import ImageStore
from parkgate_tools.lot.ota_plan import OtaPlan
from parkgate_tools.sim import boot_selector
from parkgate_tools.sim.lot import SimLot

build_firmware = runtime.build_firmware
KEY = bytes(range(32))                 # every simulated gate's downlink key
BOOT_IMAGE = re.compile(r"SIM BOOTSEL boot (ota_\d) (\S+) size=(\d+) sha256=([0-9a-f]+)")


def image(version=None, variant=None):
    """The path of a unix-sim image of version (None: the gate's own, as
    every simulated gate runs), built once and cached under build/firmware."""
    if version is None:
        return runtime.gate_image()
    out = os.path.join(runtime.ROOT, "build", "firmware",
                       "unix-sim-v%d%s" % (version, "-" + variant if variant else ""))
    return build_firmware.build_unix("unix-sim", version, variant, out)


def sha256_of(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class UpdateLot:
    """SimLot in workdir with the image server beside its bridge.

    site: what every gate's site.json gets (the downlink key is added);
    options go to SimLot (rate, start, ...)."""

    def __init__(self, workdir, lot="t", site=None, **options):
        self.workdir = workdir
        site = dict(site or {})
        site["key"] = binascii.hexlify(KEY).decode()
        self.sim = SimLot(workdir, lot, site=site, **options)
        self.images = ImageStore(os.path.join(workdir, "state", "images"))
        self.plan = OtaPlan(os.path.join(workdir, "state", "ota"))
        self.server = None
        try:
            self.server = ImageServer(lot, self.sim.broker.host, self.sim.broker.port,
                                      lambda gate: KEY, self.images, self.plan,
                                      clock=self.sim.clock.now)
            self.server.start()
        except BaseException:
            self.stop()
            raise

    def gate(self, name, direction, **options):
        """A gate with two image slots (ota_0 holds the gate's own image)."""
        options.setdefault("slots", True)
        return self.sim.gate(name, direction, **options)

    def add(self, path, version):
        """Put the image file at path into the lot's store as version."""
        with open(path, "rb") as f:
            return self.images.add(f.read(), version)

    def stop(self):
        if self.server is not None:
            self.server.stop()
            self.server = None
        self.sim.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def booted_images(gate):
    """[(slot label, its state, image size, SHA-256 prefix of 16 hex)] of
    every start the boot selector made for gate, in order."""
    return [(m.group(1), m.group(2), int(m.group(3)), m.group(4))
            for m in map(BOOT_IMAGE.search, gate.lines(r"SIM BOOTSEL boot ")) if m]


def slot_states(gate):
    """([state of ota_0, state of ota_1], boot slot, running slot)."""
    return boot_selector.states(gate.dir)
