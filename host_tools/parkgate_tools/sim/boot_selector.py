"""The simulator's bootloader: which of a unix-sim gate's two image slots
starts, by the rollback rules of ESP-IDF's bootloader
(CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE), which the gate's board emulates in
boards/unix-sim/ota_slots.py (the slot files, otadata and its states).

SimGate(..., slots=True) calls install() at its first start and select()
before every start (a power-on, a reset, a watchdog reset, a restart after
a crash exit). select() applies the rules:
  - the boot slot NEW: it becomes PENDING_VERIFY and boots (on probation);
  - the boot slot PENDING_VERIFY: the image reset before it marked itself
    valid: it becomes ABORTED and the other slot, which must be VALID, boots
    and becomes the boot slot;
  - the boot slot VALID boots; ABORTED or EMPTY: the other one, if VALID.
A slot boots only if its bytes are a plausible image (an ELF header whose
length fits the slot) whose size and SHA-256 are those set_boot() recorded:
a half-written or overwritten slot never boots (a NEW one failing that is
ABORTED). The booted slot's image is copied to EXECUTABLE in the gate's folder
(only when its bytes changed) and that file is what the simulator runs: a
slot's bytes ARE a unix-sim MicroPython binary. The gate's flash (flash.img:
the filesystem and the journal) is not touched by any of it."""
import hashlib
import os
import sys

from parkgate_tools import runtime

sys.path.insert(0, os.path.join(runtime.BOARDS, runtime.SIM_BOARD))
import ota_slots  # noqa: E402  (boards/unix-sim/ota_slots.py, CPython and MicroPython alike)

sys.path.pop(0)

EXECUTABLE = "image.run"


class NoBootableSlot(RuntimeError):
    """Neither slot holds an image the rules allow to boot: a bricked gate."""


def _slot_bytes(image):
    if len(image) > ota_slots.SLOT_SIZE:
        raise ValueError("image of %d bytes does not fit a %d-byte slot" % (
            len(image), ota_slots.SLOT_SIZE))
    return image + b"\xff" * (ota_slots.SLOT_SIZE - len(image))


def install(folder, image_path):
    """First start of a gate with slots: image_path into ota_0 as VALID and
    the boot slot, ota_1 erased. Returns False (and changes nothing) if the
    folder has its otadata already."""
    if os.path.exists(os.path.join(folder, ota_slots.OTADATA)):
        return False
    with open(image_path, "rb") as f:
        image = f.read()
    if ota_slots.image_size(image[:64]) != len(image):
        raise ValueError("%s is not a unix-sim image (an ELF file)" % image_path)
    for index, data in ((0, _slot_bytes(image)), (1, _slot_bytes(b""))):
        with open(os.path.join(folder, ota_slots.SLOT_FILES[index]), "wb") as f:
            f.write(data)
    record = ota_slots.blank_record()
    record["s"][0] = [ota_slots.VALID, len(image), hashlib.sha256(image).hexdigest()]
    ota_slots.save_record(folder, record)
    return True


def states(folder):
    """[state of ota_0, state of ota_1], the boot slot and the running slot."""
    record = ota_slots.load_record(folder)
    return [entry[0] for entry in record["s"]], record["boot"], record["run"]


def _bootable(slots, record, index):
    # The slot's bytes are the image set_boot() recorded (size and SHA-256).
    state, size, sha = record["s"][index]
    if state == ota_slots.EMPTY or not size:
        return False
    return slots._slot[index].image() == (size, sha)


def select(folder):
    """Apply the rollback rules to the gate folder's otadata and install the
    image to run. Returns (slot index, path of the executable, notes: what
    was decided, one line each). Raises NoBootableSlot."""
    slots = ota_slots.Slots(folder)
    try:
        record = slots.record()
        boot = record["boot"]
        other = 1 - boot
        entry = record["s"][boot]
        label = ota_slots.LABELS
        notes = []
        chosen = None
        if entry[0] == ota_slots.PENDING_VERIFY:
            entry[0] = ota_slots.ABORTED
            notes.append("%s was PENDING_VERIFY at boot (reset before it was marked valid): "
                         "ABORTED, rollback" % label[boot])
        elif entry[0] in (ota_slots.NEW, ota_slots.VALID):
            if _bootable(slots, record, boot):
                chosen = boot
                if entry[0] == ota_slots.NEW:
                    entry[0] = ota_slots.PENDING_VERIFY
                    notes.append("%s NEW: boots on probation (PENDING_VERIFY)" % label[boot])
            else:
                notes.append("%s %s holds no image matching its record: not booted" % (
                    label[boot], entry[0]))
                if entry[0] == ota_slots.NEW:
                    entry[0] = ota_slots.ABORTED
        if chosen is None:
            if record["s"][other][0] != ota_slots.VALID or not _bootable(slots, record, other):
                ota_slots.save_record(folder, record)
                raise NoBootableSlot("no bootable slot: %s" % ", ".join(
                    "%s %s" % (label[i], record["s"][i][0]) for i in (0, 1)))
            chosen = record["boot"] = other
        record["run"] = chosen
        ota_slots.save_record(folder, record)
        size = record["s"][chosen][1]
        notes.append("boot %s %s size=%d sha256=%s" % (
            label[chosen], record["s"][chosen][0], size, record["s"][chosen][2][:16]))
        return chosen, _executable(folder, slots._slot[chosen], size), notes
    finally:
        slots.close()


def boot(folder, slots=True):
    """What SimGate(..., slots) runs at each start: install() (slots True:
    the gate's image, else the path of one) if it is the first, then
    select(). Returns (path of the executable or None if no slot may boot,
    notes)."""
    install(folder, runtime.gate_image() if slots is True else slots)
    try:
        _, path, notes = select(folder)
    except NoBootableSlot as exc:
        return None, [str(exc)]
    return path, notes


def _executable(folder, slot, size):
    """Copy the slot's image to EXECUTABLE if its bytes differ; its path."""
    image = bytearray(size)
    slot.readblocks(0, image, 0)
    path = os.path.join(folder, EXECUTABLE)
    if os.path.exists(path):
        with open(path, "rb") as f:
            if f.read() == image:
                return path
    part = path + ".part"
    with open(part, "wb") as f:
        f.write(image)
    os.chmod(part, 0o755)
    os.replace(part, path)      # a new file: a process still running the old one keeps it
    return path
