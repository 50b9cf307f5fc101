"""The simulated gate as a board on a serial line.

``SimRepl`` starts the REPL of the unix-sim image (``micropython -X
heapsize=64k -i -m simboot``, boards/unix-sim/port/simboot.py frozen in the
image, runtime.gate_image) with its stdin and stdout on one end of a
socat pseudo-terminal pair; the other end, ``SimRepl.port``, is a serial
device that ``mpremote connect PORT resume ...`` and ``parkgate board ...
--port PORT --resume`` drive as they drive a USB-connected ESP32. Always
``resume``: mpremote's soft reset ends the unix port's process.

The boot module mounts the littlefs region of the gate's ``flash.img`` at
``/flash`` and makes it the current folder: sys.path is ``""`` (the flash),
``.frozen`` (the image), ``/flash/lib``, as on an ESP32. Code copied to the
flash therefore shadows the frozen code, as it would on a board.

``FlashGate`` is a ``SimGate`` that boots with what a field tool put on its
flash (site.json, tariff, members) instead of being provisioned by the
simulator. The folder layout is
SimGate's (``flash.img``, ``gpio.log``, ``uart``, ``camera``, ``gate.log``)
plus ``repl`` and ``repl-board`` (the pty pair), ``repl.log`` (the REPL
process's stderr) and ``repl.ready``. Never run a SimRepl and a gate on the
same folder at once: both would write the same flash.
"""
import os
import signal
import subprocess
import time

from parkgate_tools import runtime
from parkgate_tools.sim.gate import BOOT, SimGate


class SimRepl:
    """One simulated gate's REPL on a pseudo-terminal.

    workdir: the folder of the gate (or, with gate, its parent, as SimGate
    takes it). clock: a sim.SimClock for the board's clock (else it starts
    at the 2000 epoch, as an ESP32 after a power cut). heap: -X heapsize
    (default: the gate's, runtime.GATE_HEAP)."""

    def __init__(self, workdir, gate=None, clock=None, heap=None):
        self.dir = os.path.abspath(os.path.join(workdir, gate) if gate else workdir)
        self.port = os.path.join(self.dir, "repl")
        self.board_end = os.path.join(self.dir, "repl-board")
        self.ready_path = os.path.join(self.dir, "repl.ready")
        self.log_path = os.path.join(self.dir, "repl.log")
        self.clock = clock
        self.heap = heap
        self.proc = None
        self.boots = 0
        self._socat = None
        self._holder_fd = None
        os.makedirs(self.dir, exist_ok=True)

    def env(self):
        """The REPL process's environment."""
        env = runtime.micropython_env(host_side=False)
        env["PARKGATE_SIM_DIR"] = self.dir
        env.pop("PARKGATE_SIM_MAIN", None)
        if self.clock is not None:
            env["PARKGATE_SIM_CLOCK"] = self.clock.spec()
        else:
            env.pop("PARKGATE_SIM_CLOCK", None)
        return env

    def _start_line(self):
        for path in (self.port, self.board_end):
            if os.path.lexists(path):
                os.unlink(path)
        self._socat = subprocess.Popen(
            ["socat", "pty,raw,echo=0,link=" + self.port, "pty,raw,echo=0,link=" + self.board_end],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while not (os.path.exists(self.port) and os.path.exists(self.board_end)):
            if time.time() > deadline or self._socat.poll() is not None:
                raise RuntimeError("socat did not create the REPL line in %s" % self.dir)
            time.sleep(0.02)
        # Holding the board's end open keeps the line up while the REPL
        # process restarts (a pty end closed by everyone ends socat).
        self._holder_fd = os.open(self.board_end, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)

    @property
    def alive(self):
        """True while the REPL process runs."""
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=20):
        """Power the board on: start the REPL process (and the line, the first
        time); returns once the flash is mounted and the REPL is reading."""
        if self.alive:
            return self
        if self._socat is None:
            self._start_line()
        if os.path.exists(self.ready_path):
            os.unlink(self.ready_path)
        heap = self.heap or runtime.GATE_HEAP
        fd = os.open(self.board_end, os.O_RDWR | os.O_NOCTTY)
        try:
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [runtime.micropython_binary(), "-X", "heapsize=" + heap, "-i"] + BOOT,
                    stdin=fd, stdout=fd, stderr=log, cwd=self.dir, env=self.env())
        finally:
            os.close(fd)
        deadline = time.time() + timeout
        while not os.path.exists(self.ready_path):
            if self.proc.poll() is not None:
                raise RuntimeError("the simulated board's REPL exited with %s:\n%s" % (
                    self.proc.returncode, self._log_tail()))
            if time.time() > deadline:
                raise TimeoutError("the simulated board's REPL did not boot in %.0f s:\n%s" % (
                    timeout, self._log_tail()))
            time.sleep(0.02)
        self.boots += 1
        return self

    def _log_tail(self, lines=20):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def _kill(self):
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def restart(self, timeout=20):
        """Reboot: what machine.reset() is on a board. The process ends (the
        board's RAM, imported modules and clock are lost), the flash stays."""
        self._kill()
        return self.start(timeout)

    def stop(self):
        """Power off and take the line down."""
        self._kill()
        if self._holder_fd is not None:
            os.close(self._holder_fd)
            self._holder_fd = None
        if self._socat is not None:
            self._socat.terminate()
            self._socat.wait(10)
            self._socat = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class FlashGate(SimGate):
    """A simulated gate that boots with what a field tool deployed to its
    flash (site.json, tariff.json, members.bin, any code copied there), not
    provisioned by the simulator: SimGate's camera line, log and relay
    observation. provision() is not for it: deploy instead."""

    def __init__(self, workdir, gate, clock=None, heap=None):
        super().__init__(workdir, gate, lot=None, direction=None, broker_port=None,
                         clock=clock, tariff_path=None, heap=heap)

    def provision(self):
        raise RuntimeError("a FlashGate boots what was deployed to its flash: "
                           "use `parkgate board deploy` through a SimRepl")
