"""An ASGI application (Starlette) served by uvicorn in a background thread
with its own event loop: the way the lot server's web application and the
central server serve. port 0: a free port, taken at the first start and
kept for the next ones (so that clients find a restarted service again)."""
import asyncio
import logging
import socket
import threading
import time

log = logging.getLogger("parkgate.http")


class ASGIService:
    """app served on host:port. ssl_certfile/ssl_keyfile: serve HTTPS
    directly (uvicorn's TLS); without them plain HTTP, for localhost or
    behind a reverse proxy that terminates TLS."""

    def __init__(self, app, host, port, name, ssl_certfile=None, ssl_keyfile=None):
        self.app, self.host, self.port, self.name = app, host, port, name
        self.ssl_certfile, self.ssl_keyfile = ssl_certfile, ssl_keyfile
        self._server = self._thread = self._socket = None

    @property
    def url(self):
        """Base URL, e.g. http://127.0.0.1:8123 (no trailing slash)."""
        scheme = "https" if self.ssl_certfile else "http"
        return "%s://%s:%d" % (scheme, self.host, self.port)

    @property
    def running(self):
        """True while serving."""
        return self._server is not None

    def start(self, timeout=10):
        """Serve (nothing more if serving already); returns self.
        RuntimeError if uvicorn did not start within timeout s."""
        if self._server is not None:
            return self
        import uvicorn
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off",
                                access_log=False, timeout_graceful_shutdown=2,
                                limit_concurrency=1000, backlog=256,
                                ssl_certfile=self.ssl_certfile, ssl_keyfile=self.ssl_keyfile)
        server = uvicorn.Server(config)
        self._thread = threading.Thread(target=lambda: asyncio.run(server.serve([sock])),
                                        daemon=True, name=self.name)
        self._server, self._socket = server, sock
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("%s on %s did not start" % (self.name, self.url))
            time.sleep(0.01)
        return self

    def stop(self, timeout=10):
        """Stop serving and close the socket; start() serves again."""
        if self._server is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        self._socket.close()
        self._server = self._thread = self._socket = None
