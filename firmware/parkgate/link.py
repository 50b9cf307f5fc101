# The gate's MQTT link: umqtt.simple wrapped so that the gate loop can call
# service() on every pass and never wait on the network for longer than one
# socket timeout. Reconnects with bounded exponential backoff and jitter,
# keeps the connection alive with pings, and resubscribes after a reconnect.
import errno
import gc
import random
import select

from parkgate.compat import const, ticks_add, ticks_diff

_PINGS_PER_KEEPALIVE = const(3)
_IPPROTO_TCP = const(6)   # the same numbers on Linux and lwIP
_TCP_NODELAY = const(1)
_MESSAGES_PER_SERVICE = const(8)


class TimeoutSocket:
    """A socket that is never blocking without a bound. umqtt.simple switches
    its socket to plain blocking mode after every check_msg(); here
    setblocking(True) means "block for at most timeout_s". Also notes the
    time of the last byte received, for the keepalive watchdog."""

    def __init__(self, sock, timeout_s, ticks_ms, connected=False):
        self._sock = sock
        self._timeout_s = timeout_s
        self._ticks_ms = ticks_ms
        self._connected = connected
        self.last_read_ms = ticks_ms()
        self.dropped = 0   # bytes of the last read that did not fit the heap
        self._scratch = None
        sock.settimeout(timeout_s)

    def setblocking(self, flag):
        if flag:
            self._sock.settimeout(self._timeout_s)
        else:
            self._sock.setblocking(False)

    def settimeout(self, timeout_s):
        self._sock.settimeout(timeout_s)

    def connect(self, address):
        if not self._connected:   # the link may have connected it already
            self._sock.connect(address)

    def read(self, size):
        self.dropped = 0
        try:
            data = self._sock.read(size)
        except MemoryError:
            # A message larger than the heap's largest free block (umqtt
            # reads a whole payload at once): collect and try once more,
            # else read it off the socket in small pieces and return b"",
            # so the session stays in step and the gate refuses it.
            gc.collect()
            try:
                data = self._sock.read(size)
            except MemoryError:
                self._drain(size)
                data = b""
        if data or self.dropped:
            self.last_read_ms = self._ticks_ms()
        return data

    def _drain(self, size):
        if self._scratch is None:
            self._scratch = bytearray(64)
        scratch = self._scratch
        left = size
        while left:
            n = self._sock.readinto(scratch, min(left, 64))
            if not n:
                raise OSError(errno.ETIMEDOUT)   # the session is out of step: drop it
            left -= n
        self.dropped = size

    def write(self, data, size=None):
        if size is None:
            return self._sock.write(data)
        return self._sock.write(data, size)

    def close(self):
        self._sock.close()


class TimeoutSocketModule:
    """Stands in for the socket module inside umqtt.simple, which creates its
    socket itself: every socket it makes gets the link's timeout. The link
    first opens the TCP connection without blocking (start, then connected
    on later passes); umqtt then receives that connected socket."""

    def __init__(self, socket_module, timeout_s, ticks_ms):
        self._socket_module = socket_module
        self._timeout_s = timeout_s
        self._ticks_ms = ticks_ms
        self._opening = None
        self._poller = None
        self.last = None

    def start(self, host, port):
        """Begin a TCP connection; the host should be an IP address (a name
        is looked up by a blocking DNS query)."""
        self.abandon()
        address = self._socket_module.getaddrinfo(host, port)[0][-1]
        sock = self._socket_module.socket()
        # umqtt writes a packet in several small writes: without NODELAY,
        # Nagle and delayed ACKs hold each one back by tens of ms.
        try:
            sock.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass
        sock.setblocking(False)
        try:
            sock.connect(address)
        except OSError as exc:
            if exc.args[0] != errno.EINPROGRESS:
                sock.close()
                raise
        self._opening = sock
        self._poller = select.poll()
        self._poller.register(sock, select.POLLOUT)

    def connected(self):
        """True once the connection started by start() is up; raises OSError
        if it failed."""
        events = self._poller.poll(0)
        if not events:
            return False
        if events[0][1] & (select.POLLERR | select.POLLHUP):
            self.abandon()
            raise OSError(errno.ECONNREFUSED)
        return True

    def abandon(self):
        if self._opening is not None:
            self._opening.close()
        self._opening = None
        self._poller = None

    def socket(self, *args):
        opened = self._opening
        connected = opened is not None
        self._opening = None
        self._poller = None
        if not connected:
            opened = self._socket_module.socket(*args)
        self.last = TimeoutSocket(opened, self._timeout_s, self._ticks_ms, connected)
        return self.last

    def getaddrinfo(self, *args):
        return self._socket_module.getaddrinfo(*args)


def bind_umqtt(socket_module, timeout_s, ticks_ms):
    """Make umqtt.simple create bounded sockets; returns (MQTTClient, sockets)."""
    from umqtt import simple
    sockets = TimeoutSocketModule(socket_module, timeout_s, ticks_ms)
    simple.socket = sockets
    return simple.MQTTClient, sockets


class Link:
    """One MQTT session that comes and goes. make_client(client_id, host,
    port, user=, password=, keepalive=) returns an umqtt.simple-like client; sockets is the
    TimeoutSocketModule it uses (or None), for the keepalive watchdog."""

    def __init__(self, make_client, sockets, client_id, host, port, ticks_ms,
                 keepalive_s=30, backoff_min_ms=500, backoff_max_ms=30000, log=print,
                 network_up=None, connect_timeout_ms=5000, user=None, password=None):
        self._make_client = make_client
        self._sockets = sockets
        self._client_id = client_id
        self._host = host
        self._port = port
        self._ticks_ms = ticks_ms
        self._keepalive_ms = keepalive_s * 1000
        self._backoff_ms = self._backoff_min_ms = backoff_min_ms   # starts at the minimum
        self._backoff_max_ms = backoff_max_ms
        self._log = log
        self._network_up = network_up
        self._connect_timeout_ms = connect_timeout_ms
        self._user = user
        self._password = password
        self._opening_since = None
        self._client = None
        self._next_attempt = ticks_ms()
        self._last_ping = 0
        self._subscriptions = []
        self._will = None
        self.up = False
        self.on_message = None   # on_message(topic bytes, payload bytes)
        self.on_up = None        # called after each (re)connect and resubscribe
        self.on_down = None
        self.connects = 0

    def subscribe(self, topic):
        self._subscriptions.append(topic)

    def set_will(self, topic, payload):
        self._will = (topic, payload)

    def _deliver(self, topic, payload):
        """umqtt's callback. payload None: a message of that many bytes
        (sockets.last.dropped) came that the heap could not take."""
        if self.on_message:
            last = self._sockets.last if self._sockets is not None else None
            if not payload and last is not None and last.dropped:
                self.on_message(topic, None)
            else:
                self.on_message(topic, payload)

    def _open_tcp(self, now):
        """Open the TCP connection over several passes without blocking;
        True once it is up."""
        if self._opening_since is None:
            self._sockets.start(self._host, self._port)
            self._opening_since = now
            return False
        if self._sockets.connected():
            self._opening_since = None
            return True
        if ticks_diff(now, self._opening_since) > self._connect_timeout_ms:
            raise OSError(errno.ETIMEDOUT)
        return False

    def _connect(self, now):
        if self._sockets is not None and not self._open_tcp(now):
            return
        client = self._make_client(self._client_id, self._host, self._port,
                                   user=self._user, password=self._password,
                                   keepalive=self._keepalive_ms // 1000)
        client.set_callback(self._deliver)
        if self._will:
            client.set_last_will(self._will[0], self._will[1], retain=True)
        self._client = client
        client.connect()
        for topic in self._subscriptions:
            client.subscribe(topic)
        self.up = True
        self.connects += 1
        self._backoff_ms = self._backoff_min_ms
        self._last_ping = now
        self._log("LINK up connects=%d" % self.connects)
        if self.on_up:
            self.on_up()

    def _drop(self, now, reason):
        was_up = self.up
        self.up = False
        self._opening_since = None
        if self._sockets is not None:
            self._sockets.abandon()
        if self._client is not None:
            try:
                self._client.sock.close()
            except Exception:
                pass
        self._client = None
        # Full jitter over the upper half of the backoff keeps gates that
        # lost the same broker from reconnecting in step.
        wait = self._backoff_ms // 2 + random.getrandbits(16) % (self._backoff_ms // 2 + 1)
        self._next_attempt = ticks_add(now, wait)
        self._backoff_ms = min(self._backoff_ms * 2, self._backoff_max_ms)
        if was_up:
            self._log("LINK down %s" % reason)
            if self.on_down:
                self.on_down()

    def service(self, now):
        """Connect when due, read what has arrived, keep the session alive.
        Returns True if it did network work."""
        if not self.up:
            if ticks_diff(now, self._next_attempt) < 0:
                return False
            if self._network_up is not None and not self._network_up():
                self._next_attempt = ticks_add(now, self._backoff_min_ms)
                return False
            try:
                self._connect(now)
            except Exception as exc:
                self._drop(now, "connect: %r" % (exc,))
            return True
        try:
            for _ in range(_MESSAGES_PER_SERVICE):
                if self._client.check_msg() is None:
                    break
            if ticks_diff(now, self._last_ping) >= self._keepalive_ms // _PINGS_PER_KEEPALIVE:
                self._client.ping()
                self._last_ping = now
            if self._sockets is not None and self._sockets.last is not None and \
                    ticks_diff(now, self._sockets.last.last_read_ms) > self._keepalive_ms:
                raise OSError("no answer within keepalive")
        except Exception as exc:
            self._drop(now, "read: %r" % (exc,))
        return False

    def dropped_bytes(self):
        """The size of the last message that did not fit the heap."""
        last = self._sockets.last if self._sockets is not None else None
        return last.dropped if last is not None else 0

    def publish(self, topic, payload, retain=False):
        """QoS 0 publish; False (and the link goes down) if it failed.
        str payloads go out as UTF-8 (umqtt sizes packets with len())."""
        if not self.up:
            return False
        if isinstance(payload, str):
            payload = payload.encode()
        try:
            self._client.publish(topic, payload, retain)
            return True
        except Exception as exc:
            self._drop(self._ticks_ms(), "publish: %r" % (exc,))
            return False
