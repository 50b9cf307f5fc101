"""The board interface: every name a board module (boards/<name>/board.py,
imported as `board` by firmware/main.py) gives the gate (parkgate.app.Gate)
and the field tools' board programs.

Typing protocols for CPython and mypy only: never frozen, never on a board.
tests/test_board_types.py has mypy check each ESP32 board module against
Board and PassageBoard (a module stands where a protocol is expected);
tests/test_board_interface.py checks every board, the simulator's included,
by calling each name (board_conformance.py, on CPython with fake machine
and network modules for the ESP32 boards, on the simulator's own 32-bit
image for unix-sim), and runs the gate on tests/fakes/board.py, a fake
built from these protocols.

The class-like names (Uart, Relay, ...) are what the board calls its
adapters; Gate calls each once, with no arguments, and keeps what it
returns. Optional: PASSAGE and PassageSensor (PassageBoard). Gate reads
getattr(board, "PASSAGE", False) after load_site(): without it, or False,
the lane has no passage input and PassageSensor is never called.
udp_socket() is called only when ntp_server() gives an address.
ota_slots() and reset() are called only for an update over the air
(parkgate.ota_lane); the conformance check does not call reset().
"""
from typing import Any, Callable, Dict, Protocol, Tuple

# Milliseconds that wrap (time.ticks_ms()): an int on a board; the
# MicroPython stubs make it an opaque type, so it is Any here.
Ticks = Any
Site = Dict[str, Any]      # site.json, as load_site() returns it


class CameraUart(Protocol):
    """The camera's serial line, read without blocking."""

    def readinto(self, buf: memoryview) -> int:
        """Bytes waiting, into buf; the count (0 when there are none)."""

    def wait(self, ms: int) -> None:
        """Sleep up to ms while the line is quiet (the gate loop's idle)."""


class BarrierRelay(Protocol):
    on: bool

    def set(self, on: bool) -> None:
        """Drive the barrier's relay (True: open)."""


class ConfirmInput(Protocol):
    def pressed(self) -> bool:
        """True once for each press of the attendant's button."""


class PassageInput(Protocol):
    def passed(self) -> bool:
        """True once for each car seen going through."""


class LaneDisplay(Protocol):
    def show(self, text: str) -> None:
        """What the lane shows the driver (a log line where there is no display)."""


class WatchdogTimer(Protocol):
    def feed(self) -> None:
        """Once a pass of the gate loop: not fed in time, the board resets."""


class TimeSource(Protocol):
    """The board's clock in the port's epoch (parkgate.clock.Clock's source)."""

    def seconds(self) -> int: ...

    def set_seconds(self, seconds: int) -> None: ...


class ClockStore(Protocol):
    """Where the last known time survives a reset (parkgate.clock.Clock.boot/save)."""

    def read(self) -> bytes: ...

    def write(self, data: bytes) -> None: ...


class BlockDevice(Protocol):
    """MicroPython's extended block device protocol (esp32.Partition,
    boards/unix-sim/flashdev.Partition): what parkgate.journal.Journal uses."""

    def readblocks(self, block: int, buf: bytearray, offset: int = 0) -> None: ...

    def writeblocks(self, block: int, buf: bytearray, offset: int = 0) -> None: ...

    def ioctl(self, op: int, arg: int) -> Any: ...


class Board(Protocol):
    """The names every board module provides."""

    NAME: str                   # the board folder's name
    BOOT_CLOCK_QUALITY: int     # the clock's quality at boot, after ClockSource()

    def load_site(self) -> Site:
        """site.json from the board's filesystem."""

    def mount_flash(self) -> str:
        """Mount the filesystem if need be; its path."""

    def journal_device(self) -> BlockDevice:
        """The raw flash region the journal lives in."""

    def kept_counting(self) -> bool:
        """True if the clock counted through the last reset (after ClockSource())."""

    def ClockSource(self) -> TimeSource: ...

    def ClockMemory(self) -> ClockStore: ...

    def Uart(self) -> CameraUart: ...

    def Relay(self) -> BarrierRelay: ...

    def ConfirmButton(self) -> ConfirmInput: ...

    def Display(self) -> LaneDisplay: ...

    def Watchdog(self) -> WatchdogTimer: ...

    def start_network(self, site: Site) -> None:
        """Start the network; must not block (the link waits for network_up())."""

    def network_up(self) -> bool: ...

    def udp_socket(self) -> Any:
        """A non-blocking UDP socket for SNTP, or None while the network is down."""

    def ntp_server(self, site: Site) -> Any:
        """The SNTP server's address as the board's sendto takes it, or None."""

    def mqtt(self, socket_timeout_ms: int) -> Tuple[Callable[..., Any], Any]:
        """(make_client, sockets) for parkgate.link.Link."""

    def ticks_ms(self) -> Ticks: ...

    def free_heap(self) -> int: ...

    def ota_slots(self) -> Any:
        """The two app slots of an update over the air (running(),
        next_update(), mark_app_valid_cancel_rollback(); each slot as
        esp32.Partition: readblocks/writeblocks with an offset, ioctl 4/5/6,
        set_boot()), or None on a board without an OTA partition table."""

    def reset(self) -> None:
        """Restart the board (machine.reset()); does not return on a board."""

    def free_flash(self, path: str) -> int:
        """Free bytes of the filesystem at path."""

    def log(self, line: str) -> None:
        """One line of the gate's log."""


class PassageBoard(Board, Protocol):
    """A board that can have a passage input (every board here can)."""

    PASSAGE: bool               # fitted, as load_site() found (site.json "passage")

    def PassageSensor(self) -> PassageInput: ...

