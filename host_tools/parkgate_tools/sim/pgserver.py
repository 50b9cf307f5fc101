"""A throwaway PostgreSQL cluster for tests and benchmarks: initdb into a
temporary folder, pg_ctl start on a free port listening on a unix socket in
that folder only (no TCP), and stop/remove again. Uses the binaries of
Debian's postgresql package (/usr/lib/postgresql/<version>/bin). As root,
the cluster runs as the `postgres` user, which owns the folder."""
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time

from parkgate_tools.sim.broker import free_port


class PgServerError(RuntimeError):
    """The cluster could not be created or started; the text has its log."""


def pg_bin_dir():
    """The newest /usr/lib/postgresql/<version>/bin with initdb and pg_ctl."""
    found = [d for d in glob.glob("/usr/lib/postgresql/*/bin")
             if os.path.exists(os.path.join(d, "initdb"))]
    if not found:
        raise PgServerError("PostgreSQL not installed: run host_tools/setup_system.sh "
                            "(apt-get install postgresql)")
    return max(found, key=lambda d: int(d.split("/")[-2].split(".")[0]))


class PgServer:
    """One PostgreSQL cluster in a temporary folder. start() returns once it
    accepts connections; url() is a libpq URL for a database; stop() ends
    the server and removes the folder. A context manager."""

    def __init__(self, workdir=None, port=0):
        self._own_dir = workdir is None
        # /tmp rather than $TMPDIR: the postgres user must be able to reach it
        self.workdir = workdir or tempfile.mkdtemp(
            prefix="parkgate-pg-", dir="/tmp" if os.path.isdir("/tmp") else None)
        self.datadir = os.path.join(self.workdir, "data")
        self.socket_dir = self.workdir
        self.port = port or free_port()
        self.log_path = os.path.join(self.workdir, "postgres.log")
        self.bindir = pg_bin_dir()
        self._run_as = None
        if os.geteuid() == 0:
            self._run_as = pwd.getpwnam("postgres")
        self.user = self._run_as.pw_name if self._run_as else pwd.getpwuid(os.geteuid()).pw_name
        self._started = False

    def _run(self, argv, timeout=60):
        kwargs = {}
        if self._run_as is not None:
            kwargs = {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid,
                      "extra_groups": []}
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              cwd=self.workdir, **kwargs)
        if proc.returncode != 0:
            raise PgServerError("%s failed (%d):\n%s%s%s" % (
                os.path.basename(argv[0]), proc.returncode, proc.stdout, proc.stderr,
                self._log_tail()))
        return proc

    def start(self, timeout=60):
        """initdb (first time) and start; waits until it accepts connections."""
        os.makedirs(self.workdir, exist_ok=True)
        if self._run_as is not None:
            os.chown(self.workdir, self._run_as.pw_uid, self._run_as.pw_gid)
        if not os.path.exists(os.path.join(self.datadir, "PG_VERSION")):
            self._run([os.path.join(self.bindir, "initdb"), "-D", self.datadir, "-A", "trust",
                       "-U", self.user, "-E", "UTF8", "--no-locale", "--no-sync"])
        options = "-k %s -p %d -c listen_addresses='' -c fsync=on -c max_connections=50" % (
            self.socket_dir, self.port)
        self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-l", self.log_path,
                   "-o", options, "-w", "-t", str(int(timeout)), "start"], timeout=timeout + 10)
        self._started = True
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._run([os.path.join(self.bindir, "pg_isready"), "-h", self.socket_dir,
                           "-p", str(self.port)], timeout=10)
                return self
            except PgServerError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def url(self, dbname="postgres"):
        """libpq URL of dbname on this cluster (unix socket, trust auth)."""
        return "postgresql://%s@/%s?host=%s&port=%d" % (self.user, dbname, self.socket_dir,
                                                         self.port)

    def create_database(self, name):
        """CREATE DATABASE name; returns its URL."""
        import psycopg
        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute('CREATE DATABASE "%s"' % name.replace('"', ""))
        return self.url(name)

    def drop_database(self, name):
        """DROP DATABASE name, closing its connections."""
        import psycopg
        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name.replace('"', ""))

    def stop(self):
        """Stop the server (fast shutdown) and remove the folder it made."""
        if self._started:
            try:
                self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-m",
                           "fast", "-w", "stop"])
            except PgServerError:
                pass
            self._started = False
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _log_tail(self, lines=15):
        try:
            with open(self.log_path, errors="replace") as f:
                return "\n" + "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
