"""The car park simulator: runs the gate firmware as it ships, frozen into the
32-bit MicroPython image of board ``unix-sim`` (runtime.gate_image) in a
64 KiB heap, with a camera on a pseudo-terminal, a relay whose every change is
logged with a timestamp, and an emulated flash in a host file."""
import json
import os
import re
import signal
import subprocess
import threading
import time

from parkgate_host import camera_frames
from parkgate_tools import runtime
from parkgate_tools.sim import boot_selector

# The image's boot module; with PARKGATE_SIM_MAIN=1 it runs the image's main.
BOOT = ["-m", "simboot"]
DEFAULT_TARIFF = os.path.join(runtime.FIRMWARE, "tariffs", "default.json")


class SimClock:
    """A clock shared by every simulated gate: board time = base + (host time -
    host_t0) * rate, so a demo can pass hours of parking in a minute."""

    def __init__(self, base, rate=1.0, host_t0=None):
        self.base = base
        self.rate = rate
        self.host_t0 = time.time() if host_t0 is None else host_t0

    def now(self, host_time=None):
        host_time = time.time() if host_time is None else host_time
        return self.base + (host_time - self.host_t0) * self.rate

    def spec(self):
        return "%r,%r,%r" % (self.base, self.host_t0, self.rate)


class SimGate:
    """One simulated gate: its folder, its camera line, its process."""

    def __init__(self, workdir, gate, lot, direction, broker_port, clock=None,
                 tariff_path=DEFAULT_TARIFF, broker_host="127.0.0.1", site_extra=None,
                 heap=None, attendant=True, board_env=None, slots=False):
        self.dir = os.path.join(workdir, gate)
        self.gate = gate
        self.lot = lot
        self.direction = direction
        self.clock = clock
        self.heap = heap or runtime.GATE_HEAP
        # An attendant who presses the confirm button as soon as the lane
        # asks for payment (False: the test presses it with press_confirm()).
        self.attendant = attendant
        self.site = {"lot": lot, "gate": gate, "direction": direction,
                     "broker": broker_host, "port": broker_port}
        self.site.update(site_extra or {})
        # PARKGATE_SIM_* settings of the board model (boards/unix-sim/board.py):
        # ticks to the wrap, flash stall times, UART ring, watchdog timeout,
        # clock drift (PARKGATE_SIM_CLOCK_DRIFT_PPM), a passage input
        # (PARKGATE_SIM_PASSAGE=1, driven by pass_car()).
        self.board_env = dict(board_env or {})
        self.tariff_path = tariff_path
        # Two image slots (True, or the path of the image for ota_0): each
        # start runs what sim/boot_selector.py chooses; a crash exit restarts.
        self.slots = slots
        self.image = None       # the executable the last start ran
        self.proc = None
        self._socat = None
        self._camera_fd = None
        self._holder_fd = None
        self._lines = []
        self._lines_lock = threading.Condition()
        self._reader = None
        self._seq = 0
        self.boots = 0
        self.watchdog_resets = 0
        self._powered = False
        self._power_lock = threading.RLock()
        self._watcher = None
        os.makedirs(self.dir, exist_ok=True)

    # --- set-up --------------------------------------------------------
    def env(self):
        env = runtime.micropython_env(host_side=False)
        env["PARKGATE_SIM_DIR"] = self.dir
        env["PARKGATE_SIM_MAIN"] = "1"
        env.update(self.board_env)
        if self.clock is not None:
            env["PARKGATE_SIM_CLOCK"] = self.clock.spec()
        else:
            env.pop("PARKGATE_SIM_CLOCK", None)
        return env

    def provision(self, extra_files=None):
        """Write site.json, the tariff and extra_files ({name on flash: host
        path}) onto the gate's flash."""
        site_path = os.path.join(self.dir, "site.json")
        with open(site_path, "w") as f:
            json.dump(self.site, f)
        files = ["site.json=" + site_path]
        if self.tariff_path:
            files.append("tariff.json=" + self.tariff_path)
        for name, path in sorted((extra_files or {}).items()):
            files.append("%s=%s" % (name, path))
        env = self.env()
        del env["PARKGATE_SIM_MAIN"]
        subprocess.run(runtime.micropython_argv(["-m", "provision"], *files), env=env,
                       check=True, capture_output=True, timeout=60)

    def _start_camera_line(self):
        uart = os.path.join(self.dir, "uart")
        camera = os.path.join(self.dir, "camera")
        for path in (uart, camera):
            if os.path.lexists(path):
                os.unlink(path)
        self._socat = subprocess.Popen(
            ["socat", "pty,raw,echo=0,link=" + camera, "pty,raw,echo=0,link=" + uart],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while not (os.path.exists(camera) and os.path.exists(uart)):
            if time.time() > deadline:
                raise RuntimeError("socat did not create the camera line")
            time.sleep(0.02)
        self._camera_fd = os.open(camera, os.O_RDWR | os.O_NOCTTY)
        # Holding the gate's end open too keeps the line up while the gate
        # process is down (a closed pty end would end socat).
        self._holder_fd = os.open(uart, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)

    # --- process -------------------------------------------------------
    def start(self):
        """Power on (or reboot) the gate; returns once it has booted."""
        if self._socat is None:
            self._start_camera_line()
        with self._lines_lock:
            boots_before = self.boots
        self._power_on()
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, daemon=True)
            self._watcher.start()
        self.wait_for(lambda: self.boots > boots_before, 20, "gate %s boot" % self.gate)
        return self

    def _power_on(self, cause="power-on"):
        """Start the gate's process. cause: what the board's reset cause
        says (boards/unix-sim/board.py, reset.cause): "power-on" drops the
        RTC and its memory; "watchdog" or "reset" keep them, as on an ESP32."""
        with self._power_lock:
            watchdog = os.path.join(self.dir, "watchdog")
            if os.path.exists(watchdog):
                os.unlink(watchdog)     # disarmed until this boot arms it
            with open(os.path.join(self.dir, "reset.cause"), "w") as f:
                f.write(cause + "\n")
            argv = runtime.micropython_argv(BOOT, heap=self.heap)
            if self.slots:
                argv[0] = self._select_image()
            self.image = argv[0]
            self.proc = subprocess.Popen(
                argv, env=self.env(),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.dir)
            self._powered = True
            self._reader = threading.Thread(target=self._read_output, args=(self.proc,),
                                            daemon=True)
            self._reader.start()

    def _select_image(self):
        """The boot selector's choice (a slot's image) for this start."""
        path, notes = boot_selector.boot(self.dir, self.slots)
        with self._lines_lock, open(os.path.join(self.dir, "gate.log"), "a") as log:
            self._lines.extend("SIM BOOTSEL " + note for note in notes)
            log.write("".join("SIM BOOTSEL %s\n" % note for note in notes))
            self._lines_lock.notify_all()
        if path is None:
            raise boot_selector.NoBootableSlot(notes[-1])
        return path

    def run_script(self, script, *args, timeout=120):
        """Run a MicroPython script on the image the gate last started, beside
        it, in its folder (as onboard programs do); a CompletedProcess."""
        env = dict(self.env(), PARKGATE_SIM_MAIN="")
        argv = runtime.micropython_argv(script, *args, heap=self.heap)
        return subprocess.run([self.image or argv[0]] + argv[1:], env=env, capture_output=True,
                              text=True, timeout=timeout, cwd=self.dir)

    # --- the watchdog ----------------------------------------------------
    def _watch(self):
        """The board's hardware watchdog: once the gate has armed it (the
        board adapter writes `watchdog` with its timeout, then a byte per
        feed mark), a gate that stops feeding it for longer than the timeout
        (hung, or exited on an error) is reset: killed and started again."""
        path = os.path.join(self.dir, "watchdog")
        size, changed, timeout = -1, time.time(), None
        while self._socat is not None or self._powered:
            time.sleep(0.1)
            with self._power_lock:
                if not self._powered:
                    size, timeout = -1, None
                    continue
                if self.slots and self.proc is not None and self.proc.poll() is not None:
                    self._reset("exited with %d" % self.proc.returncode, cause="reset")
                    size, timeout = -1, None
                    continue
                try:
                    if timeout is None:
                        with open(path) as f:
                            timeout = int(f.readline()) / 1000.0
                    now_size = os.stat(path).st_size
                except (OSError, ValueError):
                    size, changed, timeout = -1, time.time(), None
                    continue
                if now_size != size:
                    size, changed = now_size, time.time()
                elif time.time() - changed > timeout + 0.4:
                    # 0.4 s: the adapter writes a feed mark every 250 ms at most
                    self._reset("watchdog not fed for %.1f s" % (time.time() - changed))
                    size, timeout = -1, None

    def _reset(self, why, cause="watchdog"):
        with self._lines_lock:
            self._lines.append("SIM RESET %s" % why)
            self._lines_lock.notify_all()
        if cause == "watchdog":
            self.watchdog_resets += 1
        self._kill_process()
        self._power_on(cause)

    def reset(self, timeout=20):
        """Reset the gate without cutting its power (machine.reset() on an
        ESP32): its RTC and RTC memory keep what they held. Returns once it
        has booted again."""
        with self._lines_lock:
            boots_before = self.boots
        with self._power_lock:
            self._reset("by the host", cause="reset")
        self.wait_for(lambda: self.boots > boots_before, timeout, "gate %s boot" % self.gate)
        return self

    def _read_output(self, proc):
        log_path = os.path.join(self.dir, "gate.log")
        with open(log_path, "a") as log:
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                log.write(line + "\n")
                log.flush()
                if self.attendant and " AWAIT payment " in line:
                    self.press_confirm()
                with self._lines_lock:
                    self._lines.append(line)
                    if " BOOT " in line:
                        self.boots += 1
                    self._lines_lock.notify_all()

    def kill(self):
        """Cut the power: SIGKILL, nothing is flushed."""
        with self._power_lock:
            self._powered = False
            self._kill_process()

    def _kill_process(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        if self._reader:
            self._reader.join(5)

    def stop(self):
        self.kill()
        for fd in (self._camera_fd, self._holder_fd):
            if fd is not None:
                os.close(fd)
        self._camera_fd = self._holder_fd = None
        if self._socat:
            self._socat.terminate()
            self._socat.wait(10)
            self._socat = None
        if self._watcher is not None:
            self._watcher.join(5)
            self._watcher = None

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    # --- camera --------------------------------------------------------
    def send_plate(self, plate, colour=0, confidence=95, camera_time=0):
        """Write one camera frame; returns the host time it was written."""
        self._seq = (self._seq + 1) & 0xFF
        return self.write_raw(camera_frames.pg_frame(self._seq, plate, colour, confidence,
                                                     camera_time))

    def read_until_journaled(self, plates, timeout=60, every=1.0, colours=None, front=4):
        """The camera reading cars that stand in front of it: the first
        `front` plates not yet journaled at this gate, in order, are read
        again each `every` seconds, as a real camera reads the cars waiting
        at the lane (an exit lane holds only exit_lane.QUEUE_MAX cars
        behind the one at the barrier and drops the reads of others).
        Raises TimeoutError naming the cars still waiting."""
        deadline = time.time() + timeout
        while True:
            done = {e["plate"] for e in self.events()}
            waiting = [p for p in plates if p not in done]
            if not waiting:
                return
            if time.time() > deadline:
                raise TimeoutError("%s: %d cars never journaled: %s" % (
                    self.gate, len(waiting), " ".join(waiting[:8])))
            for plate in waiting[:front]:
                self.send_plate(plate, (colours or {}).get(plate, 0))
            time.sleep(every)

    def pass_car(self):
        """A car goes through the lane's passage input (a loop detector or
        the barrier's contact; the gate needs PARKGATE_SIM_PASSAGE=1)."""
        with open(os.path.join(self.dir, "passage.in"), "ab") as f:
            f.write(b"P")

    def press_confirm(self):
        """The attendant presses the lane's confirm button once."""
        with open(os.path.join(self.dir, "confirm.in"), "ab") as f:
            f.write(b"C")

    def display_lines(self):
        """What the lane display showed, oldest first."""
        path = os.path.join(self.dir, "display.log")
        if not os.path.exists(path):
            return []
        with open(path, encoding="utf-8") as f:
            return [line.rstrip("\n").split(" ", 1)[1] for line in f]

    def write_raw(self, data):
        sent_at = time.time()
        os.write(self._camera_fd, data)
        return sent_at

    # --- observation ---------------------------------------------------
    def lines(self, pattern=None):
        with self._lines_lock:
            lines = list(self._lines)
        if pattern is None:
            return lines
        regex = re.compile(pattern)
        return [line for line in lines if regex.search(line)]

    def wait_for(self, predicate, timeout, what="condition"):
        deadline = time.time() + timeout
        with self._lines_lock:
            while not predicate():
                left = deadline - time.time()
                if left <= 0:
                    raise TimeoutError("%s: timed out after %.1f s; last lines:\n%s" % (
                        what, timeout, "\n".join(self._lines[-20:])))
                if self._exited():
                    raise RuntimeError("gate %s exited with %s; last lines:\n%s" % (
                        self.gate, self.proc.returncode, "\n".join(self._lines[-20:])))
                self._lines_lock.wait(min(left, 0.2))

    def _exited(self):
        """True if the gate's process has ended and no watchdog reset is
        bringing it back (one in progress holds the power lock)."""
        if self.slots and self._powered:
            return False        # the watcher restarts it
        if not self._power_lock.acquire(blocking=False):
            return False
        try:
            return self.proc is not None and self.proc.poll() is not None and \
                not self._reader.is_alive()
        finally:
            self._power_lock.release()

    def wait_line(self, pattern, timeout=10, count=1):
        regex = re.compile(pattern)
        self.wait_for(lambda: sum(1 for line in self._lines if regex.search(line)) >= count,
                      timeout, "%s: %d x /%s/" % (self.gate, count, pattern))

    def events(self):
        """The EVENT lines the gate logged, parsed into dicts."""
        out = []
        for line in self.lines(r" EVENT "):
            fields = line.split(" EVENT ", 1)[1].split()
            event = {"k": fields[0]}
            for item in fields[1:]:
                key, _, value = item.partition("=")
                event[key] = int(value) if re.fullmatch(r"-?\d+", value) else value
            out.append(event)
        return out

    def relay_edges(self):
        """[(host time, level)] of every relay change, from gpio.log."""
        edges = []
        path = os.path.join(self.dir, "gpio.log")
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    stamp, pin, level = line.split()
                    if pin == "relay":
                        edges.append((float(stamp), int(level)))
        return edges

    def relay_openings(self):
        return sum(1 for _, level in self.relay_edges() if level == 1)
