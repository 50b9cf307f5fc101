"""An HTTP service in a background thread (stdlib ThreadingHTTPServer), the
way the lot's operator page and the central server both serve."""
import threading
from http.server import ThreadingHTTPServer


def serve_in_thread(handler_class, host, port, name):
    """(server, thread): handler_class served on host:port (0: a free port,
    then in server.server_address[1]) by a daemon thread, which notices
    shutdown() within 0.1 s; each request has a daemon thread of its own."""
    server = ThreadingHTTPServer((host, port), handler_class)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True, name=name)
    thread.start()
    return server, thread


def stop_serving(server, thread, timeout=5):
    """Stop a server from serve_in_thread and close its socket."""
    server.shutdown()
    server.server_close()
    thread.join(timeout)
