"""A mosquitto broker for the tests, the simulator and the demo, configured
from the shipped template (mosquitto.conf next to this module)."""
import getpass
import os
import shutil
import signal
import socket
import string
import subprocess
import time

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mosquitto.conf")


def mosquitto_binary():
    """Path of the mosquitto executable (PATH, else /usr/sbin)."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise RuntimeError("mosquitto not found: run `make setup`")
    return found


def free_port(host="127.0.0.1"):
    """A TCP port that was free on host a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class BrokerError(RuntimeError):
    pass


class Broker:
    """A mosquitto process on 127.0.0.1 on a free port, with persistence in workdir.

    The port is chosen once (port=0) and kept across restarts, so clients
    reconnect to the same address. Usable as a context manager: stops on exit.
    """

    host = "127.0.0.1"

    def __init__(self, workdir, port=0):
        self.workdir = os.path.abspath(workdir)
        self.port = port or free_port(self.host)
        self.conf_path = os.path.join(self.workdir, "mosquitto.conf")
        self.log_path = os.path.join(self.workdir, "mosquitto.log")
        self.stderr_path = os.path.join(self.workdir, "mosquitto.stderr")
        self._proc = None

    @property
    def alive(self):
        """True while the mosquitto process runs."""
        return self._proc is not None and self._proc.poll() is None

    def write_conf(self):
        """Write workdir/mosquitto.conf from the template; returns its path."""
        os.makedirs(self.workdir, exist_ok=True)
        with open(TEMPLATE) as f:
            template = string.Template(f.read())
        text = template.substitute(port=self.port, workdir=self.workdir, user=getpass.getuser())
        with open(self.conf_path, "w") as f:
            f.write(text)
        return self.conf_path

    def start(self, timeout=10):
        """Start mosquitto and wait until its port accepts connections."""
        if self.alive:
            return
        self.write_conf()
        with open(self.stderr_path, "ab") as stderr:
            self._proc = subprocess.Popen(
                [mosquitto_binary(), "-c", self.conf_path],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code, self._proc = self._proc.returncode, None
                raise BrokerError("mosquitto exited with %d:%s%s" % (
                    code, self._tail(self.stderr_path), self._tail(self.log_path)))
            if self._accepts():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise BrokerError("mosquitto did not listen on %s:%d within %ss%s" % (
                    self.host, self.port, timeout, self._tail(self.log_path)))
            time.sleep(0.02)

    def stop(self, timeout=10):
        """Graceful stop: SIGTERM (mosquitto saves its database), then wait."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def kill(self):
        """SIGKILL: a crash; whatever was not yet autosaved is lost."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def restart(self, timeout=10):
        """Graceful stop, then start on the same port."""
        self.stop()
        self.start(timeout)

    def log_text(self):
        """The broker's log so far ("" before the first start)."""
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def _accepts(self):
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    @staticmethod
    def _tail(path, lines=10):
        try:
            with open(path, errors="replace") as f:
                return "\n" + "".join(f.readlines()[-lines:])
        except OSError:
            return ""
