"""An HTTP service in a background thread (stdlib ThreadingHTTPServer), the
way the lot's operator page and the central server both serve."""
import threading
from http.server import ThreadingHTTPServer


class HTTPService:
    """handler_class served on host:port by a daemon thread, a daemon thread
    for each request. port 0: a free port, taken at the first start and kept
    for the next ones (so that clients find a restarted service again)."""

    def __init__(self, handler_class, host, port, name):
        self.handler_class, self.host, self.port, self.name = handler_class, host, port, name
        self._server = self._thread = None

    @property
    def running(self):
        """True while serving."""
        return self._server is not None

    def start(self):
        """Serve (nothing more if serving already)."""
        if self._server is None:
            self._server = ThreadingHTTPServer((self.host, self.port), self.handler_class)
            self._server.daemon_threads = True
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            kwargs={"poll_interval": 0.1}, daemon=True,
                                            name=self.name)
            self._thread.start()

    def stop(self, timeout=5):
        """Stop serving and close the socket; start() serves again."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout)
            self._server = None
