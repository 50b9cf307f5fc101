"""A mosquitto broker for the tests, the simulator and the demo, configured
by the lot's own template (lot/mosquitto_conf.py)."""
import os
import shutil
import signal
import socket
import subprocess
import time

from parkgate_tools.lot import mosquitto_conf, security
from parkgate_tools.lot.security import MAX_MESSAGE_BYTES


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
    """mosquitto did not start, or did not listen in time."""


def make_certificates(folder, host="127.0.0.1", days=30):
    """A throwaway CA (ca.crt) and a server certificate for host signed by
    it (server.crt, server.key) in folder, made with openssl unless there."""
    if os.path.exists(os.path.join(folder, "server.crt")):
        return
    os.makedirs(folder, exist_ok=True)

    def openssl(*args):
        subprocess.run(["openssl"] + list(args), cwd=folder, check=True, capture_output=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(days),
            "-subj", "/CN=parkgate test CA", "-keyout", "ca.key", "-out", "ca.crt")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=%s" % host,
            "-keyout", "server.key", "-out", "server.csr")
    with open(os.path.join(folder, "san.ext"), "w") as f:
        f.write("subjectAltName=%s:%s\n" % ("IP" if host[0].isdigit() else "DNS", host))
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", str(days), "-extfile", "san.ext", "-out", "server.crt")


class Broker:
    """A mosquitto process on 127.0.0.1 on a free port, with persistence in workdir.

    The port is chosen once (port=0) and kept across restarts, so clients
    reconnect to the same address. Usable as a context manager: stops on exit.

    Secured (gates is a list, possibly empty, and lot is given): no
    anonymous clients; each gate and the bridge log in with the random
    password kept in lot_dir's secrets file (default: workdir), and the ACL
    limits each gate to its own topics (parkgate_tools.lot.security).
    tls=True: the listener speaks TLS only, with a CA and server
    certificate made by openssl in workdir/tls (ca_path for clients).
    message_size_limit: the largest payload mosquitto passes on
    (MAX_MESSAGE_BYTES; tests raise it to reach the bridge's own check).
    conf_path: run this configuration as it is (a lot directory's
    mosquitto/mosquitto.conf, listening on port) instead of writing one;
    its log goes to stderr, kept in workdir.
    """

    host = "127.0.0.1"

    def __init__(self, workdir, port=0, lot=None, gates=None, lot_dir=None, tls=False,
                 message_size_limit=MAX_MESSAGE_BYTES, conf_path=None):
        self.message_size_limit = message_size_limit
        self.workdir = os.path.abspath(workdir)
        self.port = port or free_port(self.host)
        self.given_conf = conf_path is not None
        self.conf_path = os.path.abspath(conf_path or os.path.join(self.workdir, "mosquitto.conf"))
        self.stderr_path = os.path.join(self.workdir, "mosquitto.stderr")
        self.log_path = self.stderr_path if self.given_conf else os.path.join(
            self.workdir, "mosquitto.log")
        self.secured = gates is not None
        if self.secured and not lot:
            raise ValueError("a secured broker needs the lot")
        self.lot = lot
        self.lot_dir = os.path.abspath(lot_dir or self.workdir)
        self.gates = list(gates or ())
        self.password_path = os.path.join(self.workdir, "passwd")
        self.acl_path = os.path.join(self.workdir, "acl")
        self.tls = tls
        self.ca_path = os.path.join(self.workdir, "tls", "ca.crt")
        self._proc = None

    # ---- credentials ----

    def credentials(self, gate):
        """(user, password) of a gate of a secured broker's lot."""
        return security.provision_gate_credentials(self.lot_dir, self.lot, gate)

    def bridge_credentials(self):
        """(user, password) of the lot bridge of a secured broker."""
        return security.provision_bridge_credentials(self.lot_dir, self.lot)

    def add_gate(self, gate):
        """Give a gate credentials; a running broker reloads its password
        file and ACL (SIGHUP). Returns (user, password)."""
        if gate not in self.gates:
            self.gates.append(gate)
        found = self.credentials(gate)
        self.reload_auth()
        return found

    def reload_auth(self):
        """Regenerate the password file and ACL from the secrets file and
        make a running mosquitto read them again."""
        self._write_auth()
        self.reload()

    def reload(self):
        """SIGHUP: a running mosquitto reads its password file and ACL again."""
        if self.alive:
            self._proc.send_signal(signal.SIGHUP)

    def _write_auth(self):
        self.bridge_credentials()
        for gate in self.gates:
            self.credentials(gate)
        security.write_broker_auth(self.lot_dir, self.password_path, self.acl_path)

    @property
    def alive(self):
        """True while the mosquitto process runs."""
        return self._proc is not None and self._proc.poll() is None

    def write_conf(self):
        """Write workdir/mosquitto.conf from the template; returns its path."""
        os.makedirs(self.workdir, exist_ok=True)
        auth = mosquitto_conf.ANONYMOUS
        if self.secured:
            self._write_auth()
            auth = mosquitto_conf.secured(self.password_path, self.acl_path,
                                          clientid_from_user=False)
        tls = {}
        if self.tls:
            folder = os.path.dirname(self.ca_path)
            make_certificates(folder, self.host)
            tls = dict(cafile=self.ca_path, certfile=os.path.join(folder, "server.crt"),
                       keyfile=os.path.join(folder, "server.key"))
        text = mosquitto_conf.render([mosquitto_conf.listener(self.port, self.host, **tls)],
                                     auth, self.workdir, self.log_path, self.message_size_limit)
        with open(self.conf_path, "w") as f:
            f.write(text)
        return self.conf_path

    def start(self, timeout=10):
        """Start mosquitto and wait until its port accepts connections."""
        if self.alive:
            return
        if not self.given_conf:
            self.write_conf()
        os.makedirs(self.workdir, exist_ok=True)
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
