from parkgate.link import Link, TimeoutSocket, TimeoutSocketModule


class FakeClient:
    """Stands in for umqtt.simple.MQTTClient; the test scripts its failures."""
    world = None

    def __init__(self, client_id, host, port, user=None, password=None, keepalive=0):
        self.args = (client_id, host, port, user, password, keepalive)
        self.subscribed = []
        self.published = []
        self.pings = 0
        self.will = None
        self.cb = None
        self.sock = self
        self.closed = False
        FakeClient.world.clients.append(self)

    def set_callback(self, cb):
        self.cb = cb

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.will = (topic, msg, retain)

    def connect(self):
        if FakeClient.world.refuse:
            raise OSError(111)

    def subscribe(self, topic):
        self.subscribed.append(topic)

    def check_msg(self):
        world = FakeClient.world
        if world.broken:
            raise OSError(-1)
        if world.inbox:
            topic, payload = world.inbox.pop(0)
            self.cb(topic, payload)
            return 0x30
        return None

    def ping(self):
        self.pings += 1

    def publish(self, topic, msg, retain=False):
        if FakeClient.world.broken:
            raise OSError(32)
        self.published.append((topic, msg, retain))

    def close(self):
        self.closed = True


class World:
    def __init__(self):
        self.clients = []
        self.refuse = False
        self.broken = False
        self.inbox = []


def _link(network=None):
    FakeClient.world = World()
    logs = []
    link = Link(FakeClient, None, "pg-l-g", "10.0.0.2", 1883, lambda: 0, keepalive_s=30,
                backoff_min_ms=500, backoff_max_ms=4000, log=logs.append, network_up=network)
    link.subscribe("pg/l/g/down/#")
    link.set_will("pg/l/g/status", '{"on":0}')
    return link, FakeClient.world, logs


def test_connects_subscribes_and_sets_retained_will():
    link, world, logs = _link()
    ups = []
    link.on_up = lambda: ups.append(1)
    link.service(0)
    assert link.up and ups == [1]
    client = world.clients[0]
    assert client.args == ("pg-l-g", "10.0.0.2", 1883, None, None, 30)
    assert client.subscribed == ["pg/l/g/down/#"]
    assert client.will == ("pg/l/g/status", '{"on":0}', True)
    assert logs == ["LINK up connects=1"]


def test_backoff_doubles_with_jitter_and_is_bounded():
    link, world, logs = _link()
    world.refuse = True
    now = 0
    waits = []
    for _ in range(8):
        link.service(now)
        assert not link.up
        wait = link._next_attempt - now
        waits.append(wait)
        attempts = len(world.clients)
        assert not link.service(now + wait - 1)   # too early: no attempt
        assert len(world.clients) == attempts
        now += wait
    bounds = [500, 1000, 2000, 4000, 4000, 4000, 4000, 4000]
    for wait, bound in zip(waits, bounds):
        assert bound // 2 <= wait <= bound, (waits, bounds)
    world.refuse = False
    link.service(now)
    assert link.up
    assert link._backoff_ms == 500


def test_read_failure_drops_and_reconnect_resubscribes():
    link, world, logs = _link()
    downs = []
    link.on_down = lambda: downs.append(1)
    link.service(0)
    world.broken = True
    link.service(10)
    assert not link.up and downs == [1]
    assert world.clients[0].closed
    assert logs[-1].startswith("LINK down read:")
    world.broken = False
    link.service(10 + 500)
    assert link.up and len(world.clients) == 2
    assert world.clients[1].subscribed == ["pg/l/g/down/#"]


def test_messages_are_delivered_and_publish_failure_reports_false():
    link, world, logs = _link()
    got = []
    link.on_message = lambda t, p: got.append((t, p))
    assert not link.publish("t", "x")          # not connected yet
    link.service(0)
    world.inbox = [(b"pg/l/g/down/ack", b"{}")] * 10
    link.service(1)
    assert len(got) == 8                       # bounded work per pass
    link.service(2)
    assert len(got) == 10
    assert link.publish("t", "x", True)
    assert world.clients[0].published == [("t", b"x", True)]
    assert link.publish("t", "粤B")
    assert world.clients[0].published[1] == ("t", "粤B".encode(), False)
    world.broken = True
    assert not link.publish("t", "y")
    assert not link.up


def test_pings_every_third_of_keepalive():
    link, world, logs = _link()
    link.service(0)
    link.service(9999)
    assert world.clients[0].pings == 0
    link.service(10000)
    assert world.clients[0].pings == 1


def test_waits_for_the_network():
    state = {"up": False}
    link, world, logs = _link(network=lambda: state["up"])
    link.service(0)
    assert not link.up and world.clients == []
    state["up"] = True
    link.service(500)
    assert link.up


class FakeSocket:
    def __init__(self):
        self.calls = []
        self.data = [b"\x20", None, b""]

    def settimeout(self, t):
        self.calls.append(("timeout", t))

    def setblocking(self, flag):
        self.calls.append(("blocking", flag))

    def read(self, n):
        return self.data.pop(0)


class FakeSocketModule:
    def __init__(self):
        self.made = []

    def socket(self, *args):
        sock = FakeSocket()
        self.made.append(sock)
        return sock

    def getaddrinfo(self, host, port):
        return [(2, 1, 0, "", (host, port))]


def test_timeout_socket_never_blocks_without_a_bound():
    clock = {"now": 5}
    module = TimeoutSocketModule(FakeSocketModule(), 0.5, lambda: clock["now"])
    sock = module.socket()
    raw = module._socket_module.made[0]
    assert raw.calls == [("timeout", 0.5)]     # bounded before connect
    sock.setblocking(False)
    sock.setblocking(True)                      # what umqtt does after check_msg
    assert raw.calls[1:] == [("blocking", False), ("timeout", 0.5)]
    clock["now"] = 9
    assert sock.read(1) == b"\x20" and sock.last_read_ms == 9
    clock["now"] = 12
    sock.read(1)
    sock.read(1)
    assert sock.last_read_ms == 9               # nothing arrived
    assert module.last is sock
    assert module.getaddrinfo("h", 1)[0][-1] == ("h", 1)


def _listener():
    """A listening loopback socket and its port (the unix port has no
    getsockname(), so try ports until one binds)."""
    import random
    import socket
    for _ in range(50):
        port = 20000 + random.getrandbits(14)
        server = socket.socket()
        try:
            server.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        except OSError:
            server.close()
            continue
        server.listen(1)
        return server, port
    raise OSError("no free port")


def test_tcp_connect_does_not_block_and_reports_refusal():
    import socket
    import time
    module = TimeoutSocketModule(socket, 0.5, lambda: 0)
    server, port = _listener()
    module.start("127.0.0.1", port)
    deadline = time.time() + 2
    while not module.connected():
        assert time.time() < deadline
    sock = module.socket()
    assert sock._connected
    sock.connect(("127.0.0.1", port))    # what umqtt does next: a no-op now
    sock.close()
    server.close()
    module.start("127.0.0.1", port)       # nobody listens any more
    refused = False
    deadline = time.time() + 2
    while time.time() < deadline:
        try:
            if module.connected():
                break
        except OSError:
            refused = True
            break
    assert refused


class HeapShortSocket:
    """Holds one 300-byte payload and a trailing byte; a read of more than
    100 bytes at once fails as a fragmented heap would."""

    def __init__(self):
        self.data = bytearray(b"x" * 300 + b"\x30")

    def settimeout(self, t):
        pass

    def read(self, n):
        if n > 100:
            raise MemoryError("memory allocation failed")
        out = bytes(self.data[:n])
        self.data = self.data[n:]
        return out

    def readinto(self, buf, n):
        n = min(n, len(self.data), len(buf))
        buf[:n] = self.data[:n]
        self.data = self.data[n:]
        return n


def test_a_payload_the_heap_cannot_take_is_drained_and_flagged():
    from parkgate.link import TimeoutSocket
    sock = TimeoutSocket(HeapShortSocket(), 0.5, lambda: 7)
    assert sock.read(300) == b"" and sock.dropped == 300
    assert sock.read(1) == b"\x30" and sock.dropped == 0   # still in step with the stream
