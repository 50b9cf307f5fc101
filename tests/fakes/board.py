# A fake board for tests, built from the board interface (boards/interface.py):
# every name parkgate.app.Gate takes from a board, each piece a small object
# in memory that a test can look into or replace before it builds the Gate:
#   board = FakeBoard(site, fs_path)
#   board.uart.feed(frame_bytes); gate = app.Gate(board); gate.step()
#   board.relay.changes, board.broker.published, board.lines
# The filesystem is a folder (fs_path, a temporary one); the journal a RAM
# flash (boards/unix-sim/flashdev.py, path None). Runs on CPython and on
# MicroPython (tests/fakes/run_gate.py on the simulator's image).
from flashdev import FlashDevice, Partition


class FakeTicks:
    """ticks_ms() that moves only when told (advance), or as the UART waits."""

    def __init__(self, start=0):
        self.now = start

    def advance(self, ms):
        self.now += ms

    def __call__(self):
        return self.now


class FakeUart:
    """The camera line: feed() bytes, the gate reads them."""

    def __init__(self, ticks):
        self._ticks = ticks
        self.waiting = bytearray()

    def feed(self, data):
        self.waiting += data

    def readinto(self, buf):
        n = min(len(buf), len(self.waiting))
        buf[:n] = self.waiting[:n]
        self.waiting = self.waiting[n:]
        return n

    def wait(self, ms):
        self._ticks.advance(ms)


class FakeRelay:
    """Records every change as (ticks, on)."""

    def __init__(self, ticks):
        self._ticks = ticks
        self.on = False
        self.changes = []

    def set(self, on):
        self.on = on
        self.changes.append((self._ticks(), on))


class FakeInput:
    """A button or passage input: press() (or car()) once per event."""

    def __init__(self):
        self.events = 0

    def press(self):
        self.events += 1

    car = press

    def _take(self):
        if self.events:
            self.events -= 1
            return True
        return False

    def pressed(self):
        return self._take()

    def passed(self):
        return self._take()


class FakeDisplay:
    def __init__(self):
        self.shown = []

    def show(self, text):
        self.shown.append(text)


class FakeWatchdog:
    def __init__(self):
        self.feeds = 0

    def feed(self):
        self.feeds += 1


class FakeClockSource:
    """The board's clock: seconds in the port's epoch, set by the gate."""

    def __init__(self, seconds=0):
        self.now = seconds

    def seconds(self):
        return self.now

    def set_seconds(self, seconds):
        self.now = seconds


class FakeClockMemory:
    def __init__(self):
        self.data = b""

    def read(self):
        return self.data

    def write(self, data):
        self.data = bytes(data)


class FakeMqttClient:
    """umqtt.simple's MQTTClient as parkgate.link.Link uses it, on a FakeBroker."""

    def __init__(self, broker, client_id, host, port, user=None, password=None, keepalive=0):
        self.broker = broker
        self.client_id = client_id
        self.callback = None
        self.will = None
        self.sock = self

    def set_callback(self, callback):
        self.callback = callback

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.will = (topic, msg, retain)

    def connect(self):
        if not self.broker.up:
            raise OSError("broker down")
        self.broker.clients.append(self)

    def subscribe(self, topic):
        self.broker.subscriptions.append(topic)

    def check_msg(self):
        if self.broker.inbox:
            topic, payload = self.broker.inbox.pop(0)
            self.callback(topic, payload)
        return None

    def ping(self):
        self.broker.pings += 1

    def publish(self, topic, msg, retain=False, qos=0):
        self.broker.published.append((topic, bytes(msg), retain))

    def close(self):
        pass


class FakeBroker:
    """What the gate published, and what to deliver to it (inbox)."""

    def __init__(self):
        self.up = True
        self.clients = []
        self.subscriptions = []
        self.published = []
        self.inbox = []
        self.pings = 0

    def make_client(self, client_id, host, port, user=None, password=None, keepalive=0):
        return FakeMqttClient(self, client_id, host, port, user, password, keepalive)

    def topics(self):
        return [topic for topic, _, _ in self.published]


class FakeBoard:
    """A board module's names (boards/interface.py PassageBoard) on one object."""

    NAME = "fake"

    def __init__(self, site, fs_path, journal_blocks=8, seconds=0):
        self.site = site
        self.fs_path = fs_path
        self.ticks = FakeTicks()
        self.flash = FlashDevice(None, 4096, journal_blocks)
        self.uart = FakeUart(self.ticks)
        self.relay = FakeRelay(self.ticks)
        self.confirm = FakeInput()
        self.passage = FakeInput()
        self.display = FakeDisplay()
        self.watchdog = FakeWatchdog()
        self.clock = FakeClockSource(seconds)
        self.clock_memory = FakeClockMemory()
        self.broker = FakeBroker()
        self.network = True
        self.kept = False
        self.heap = 64 * 1024
        self.flash_free = 1 << 20
        self.lines = []
        self.PASSAGE = False
        self.BOOT_CLOCK_QUALITY = 0
        self.slots = None        # what ota_slots() gives (a test's fake slots)
        self.resets = 0

    def load_site(self):
        return dict(self.site)

    def mount_flash(self):
        return self.fs_path

    def journal_device(self):
        return Partition(self.flash, 0, self.flash.ioctl(4, 0))

    def kept_counting(self):
        return self.kept

    def ClockSource(self):
        return self.clock

    def ClockMemory(self):
        return self.clock_memory

    def Uart(self):
        return self.uart

    def Relay(self):
        return self.relay

    def ConfirmButton(self):
        return self.confirm

    def PassageSensor(self):
        return self.passage

    def Display(self):
        return self.display

    def Watchdog(self):
        return self.watchdog

    def start_network(self, site):
        pass

    def network_up(self):
        return self.network

    def udp_socket(self):
        return None

    def ntp_server(self, site):
        return None

    def mqtt(self, socket_timeout_ms):
        return self.broker.make_client, None

    def ticks_ms(self):
        return self.ticks.now

    def free_heap(self):
        return self.heap

    def ota_slots(self):
        return self.slots

    def reset(self):
        # a board does not come back from this; the test sees it counted
        self.resets += 1

    def free_flash(self, path):
        return self.flash_free

    def log(self, line):
        self.lines.append(line)

    def logged(self, start):
        """The log lines that start with start."""
        return [line for line in self.lines if line.startswith(start)]


def gate_a_car(board, frame, steps=5000):
    """A Gate (parkgate.app) on board, fed one car's camera frame and run as
    Gate.run() does (a pass, the UART's wait when idle) until the relay has
    opened and closed again, at most steps passes; returns the gate."""
    from parkgate import app
    gate = app.Gate(board)
    board.uart.feed(frame)
    for _ in range(steps):
        if not gate.step():
            board.uart.wait(5)
        if len(board.relay.changes) >= 2:
            break
    return gate
