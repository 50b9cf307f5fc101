"""A TCP forwarder on 127.0.0.1 between one gate and the broker, that a test
can cut and restore: the gate losing its network while the broker and the
bridge stay up. cut() drops every connection (the gate sees it at once);
blackhole() keeps them open but delivers nothing either way, as a dead
route does (the gate notices only through its keepalive)."""
import socket
import threading


class NetProxy:
    """Forwards 127.0.0.1:port to target (host, port) until cut()."""

    def __init__(self, target_host, target_port):
        self.target = (target_host, target_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs = []
        self._open = True
        self._blackhole = False
        self._running = True
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while self._running:
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                if not self._open:
                    client.close()
                    continue
                try:
                    upstream = socket.create_connection(self.target, timeout=2)
                    upstream.settimeout(None)
                    client.settimeout(None)
                except OSError:
                    client.close()
                    continue
                self._pairs.append((client, upstream))
                self.connections += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not self._blackhole:
                    dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        """Drop every connection and refuse new ones (they are accepted and
        closed at once, as a dead route would look to a TCP client)."""
        with self._lock:
            self._open = False
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def blackhole(self):
        """Swallow everything from now on, in both directions."""
        self._blackhole = True

    def restore(self):
        with self._lock:
            self._open = True
            self._blackhole = False

    def close(self):
        self.cut()
        self._running = False
        self._listener.close()
        self._thread.join(2)
