# A physical exit lane around the gate's ExitLane, for property tests that
# run on CPython and on the gate's MicroPython: cars queue in front of the
# barrier in order, the camera reads the car at the barrier and those
# behind it (with misreads and repeats), the lot server answers fee queries
# (right, for another plate, late or malformed), payments and the
# attendant's button come and go, the link and the lot server's presence
# drop, the ticks wrap and the gate reboots. Every move is checked against
# the lane's promises; World.run() raises AssertionError naming the first
# one broken.
import json

from parkgate import downlink, exit_lane, lane, members, record
from parkgate import tariff as tariff_engine
from parkgate.compat import ticks_add

TARIFF = tariff_engine.loads(open("firmware/tariffs/default.json").read())
_SERIAL = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"
_CONFUSE = {"0": "D", "D": "0", "8": "B", "B": "8", "2": "Z", "Z": "2", "5": "S", "S": "5",
            "6": "G", "G": "6", "1": "T", "T": "1", "4": "A", "A": "4"}
_PROVINCES = "京津沪粤鄂苏浙"


def _distance(a, b):
    return len([i for i in range(len(a)) if a[i] != b[i]])


class Read:
    colour = 0
    confidence = 90
    camera_time = 0
    seq = 1

    def __init__(self, plate, car):
        self.plate = plate
        self.car = car   # which car the camera really saw


class Car:
    def __init__(self, number, plate, entered, member):
        self.number = number
        self.plate = plate
        self.entered = entered   # unix entry time the lane knows, or None
        self.member = member
        self.left = False
        self.left_at = 0


class World:
    """One random run. rnd: an object with getrandbits(n) (the random
    module, or a random.Random instance)."""

    def __init__(self, rnd, steps=150):
        self.rnd = rnd
        self.steps = steps
        self.policy = exit_lane.POLICY_OWED if self.pick(4) == 0 else exit_lane.POLICY_CONFIRM
        self.passage_ms = 5000 if self.pick(3) == 0 else 0
        self.tariff = None if self.pick(10) == 0 else TARIFF
        self.now = ticks_add(0, -self.pick(60000))    # ticks a minute or less before the wrap
        self.time = 1750000000
        self._ms = 0            # milliseconds not yet a whole second of self.time
        self.cars = []
        plates = []
        for number in range(2 + self.pick(9)):
            plate = self._new_plate(plates)
            plates.append(plate)
            entered = self.time - 60 * (1 + self.pick(600)) if self.pick(4) else None
            self.cars.append(Car(number, plate, entered, self.pick(6) == 0))
        self.front = 0          # index of the car at the barrier
        self.journal = []       # (event, number of the car that drove out under it)
        self.marks = []
        self.logs = []
        self.queries = []       # fee queries the lot server has not answered
        self.paid_by = None     # the car a payment was just taken from
        self.net_up = False
        self.server = None
        self.boot()

    def pick(self, n):
        return self.rnd.getrandbits(16) % n

    def _new_plate(self, taken):
        # Plates five characters apart: a misread of one car (one glyph
        # changed) is then never within plate.similar of another's.
        while True:
            text = _PROVINCES[self.pick(len(_PROVINCES))] + "B" + \
                "".join(_SERIAL[self.pick(len(_SERIAL))] for _ in range(5))
            if not [t for t in taken if _distance(t, text) < 5]:
                return text

    # --- the gate's side ---------------------------------------------------
    def boot(self):
        """A (re)boot: the cars inside from the entries and the journal, as
        the gate replays them, and a fresh machine with the link down."""
        self.lane = lane.Lane("out", 30000, 64)
        for car in self.cars:
            if car.entered is not None:
                self.lane.note(record.Event(record.KIND_ENTRY, car.entered, 5, car.plate))
        for event, _ in self.journal:
            self.lane.note(event)
        self.machine = exit_lane.ExitLane(self.lane, self, self.policy, 1500, 800,
                                          self.passage_ms)
        self.machine.tariff = self.tariff
        if self.net_up:
            self.machine.link(True, self.now)
        if self.server is not None:
            self.machine.presence(self.server, self.now)

    def release(self, event):
        machine = self.machine
        if self.front >= len(self.cars):
            raise AssertionError("the barrier opened with no car at it: %r" % (event,))
        car = self.cars[self.front]
        if machine.car.read.car != car.number:
            raise AssertionError("car %d drove out under car %d's exit %r" % (
                car.number, machine.car.read.car, event))
        if event.fee and not event.flags & record.FLAG_OWED and self.paid_by != car.number:
            raise AssertionError("car %d left unpaid: %r" % (car.number, event))
        if event.flags & record.FLAG_OWED and self.policy != exit_lane.POLICY_OWED and \
                (event.fee_source != record.FEE_NONE or self.paid_by != car.number):
            raise AssertionError("owed under the confirm policy: %r" % (event,))
        if car.member and machine.car.read.plate == car.plate and \
                not event.flags & record.FLAG_MEMBER:
            raise AssertionError("a member was charged: %r" % (event,))
        self.journal.append((event, car.number))
        self.lane.note(event)
        car.left = True
        car.left_at = self.time
        self.front += 1

    def mark(self, event):
        if not event.flags & record.FLAG_NO_PASSAGE:
            raise AssertionError("an unflagged record with no barrier: %r" % (event,))
        self.marks.append(event)

    def ask_fee(self, query):
        if not self.net_up:
            return False
        self.queries.append(query)
        return True

    def next_request(self):
        return len(self.journal) + 1

    def member_status(self, read, time, quality):
        for car in self.cars:
            if car.plate == read.plate and car.member:
                return members.MEMBER
        return members.UNKNOWN

    def show(self, text):
        pass

    def log(self, line):
        self.logs.append(line)

    # --- the world's moves ---------------------------------------------------
    def _misread(self, text):
        at = self.pick(len(text))
        if at == 0:
            return _PROVINCES[(_PROVINCES.index(text[0]) + 1) % len(_PROVINCES)] + text[1:]
        other = _CONFUSE.get(text[at])
        return text if other is None else text[:at] + other + text[at + 1:]

    def _known(self):
        """How many cars from the front the machine holds (at the barrier
        or queued): the camera sees a car only after those ahead of it."""
        machine = self.machine
        held = [entry[0].car for entry in machine.queue]
        if machine.car is not None:
            held.append(machine.car.read.car)
        n = 0
        while self.front + n < len(self.cars) and self.front + n in held:
            n += 1
        return n

    def read(self):
        """The camera reads the car at the barrier, one behind it (only once
        those ahead were read), or the car that just left."""
        if self.front and self.pick(5) == 0:
            car = self.cars[self.front - 1]    # still under the barrier
            if self.time - car.left_at > 20:
                return                         # long gone
        else:
            at = self.front + min(self.pick(4), self._known())
            if at >= len(self.cars):
                return
            car = self.cars[at]
        text = car.plate if self.pick(3) else self._misread(car.plate)
        quality = 5
        logged = len(self.logs)
        gone = car.left
        outcome = self.machine.read(Read(text, car.number), self.time, quality, self.now)
        if gone:
            if outcome in (exit_lane.READ_STARTED, exit_lane.READ_QUEUED):
                raise AssertionError("car %d, gone, read again as a new car (%s)" % (
                    car.number, text))
            return
        if outcome != exit_lane.READ_STARTED and len(self.logs) == logged:
            raise AssertionError("a read of %s was dropped without a log line" % text)

    def answer(self):
        if not self.queries:
            return
        query = self.queries.pop(self.pick(len(self.queries)))
        how = self.pick(6)
        if how == 0:
            payload = b'{"r": "x", "fee": -1}'
        elif how == 1:
            payload = json.dumps({"r": query["r"], "p": "沪A00000", "fee": 100}).encode()
        elif how == 2:
            payload = b"[1, 2]"
        else:
            fee = (0, 500, 2000, 12345)[self.pick(4)]
            payload = json.dumps({"r": query["r"], "p": query["p"], "fee": fee, "tv": 3,
                                  "et": query["et"]}).encode()
        try:
            message = downlink.decode(downlink.FEE, payload)
            downlink.check(downlink.FEE, message)
        except downlink.Refused:
            return
        self.machine.fee_answer(message["r"], message["p"], message["fee"],
                                message.get("tv") or 0, message.get("et"), self.now)

    def pay(self):
        machine = self.machine
        if machine.state == exit_lane.PAYING and self.pick(3):
            self.paid_by = machine.car.read.car
            machine.paid(machine.event.plate, machine.event.fee, "lot server", self.now)
        else:   # a payment for some car (it paid, if it is the one at the barrier)
            car = self.cars[self.pick(len(self.cars))]
            self.paid_by = car.number
            machine.paid(car.plate, 2000, "lot server", self.now)
        self.paid_by = None

    def press(self):
        if self.front < len(self.cars):
            self.paid_by = self.cars[self.front].number   # the attendant took the money
        self.machine.confirm(self.now)
        self.paid_by = None

    def wait(self, ms):
        self.now = ticks_add(self.now, ms)
        self._ms += ms
        self.time += self._ms // 1000
        self._ms %= 1000
        self.machine.tick(self.now)

    def move(self):
        roll = self.pick(100)
        if roll < 30:
            self.read()
        elif roll < 45:
            self.answer()
        elif roll < 53:
            self.pay()
        elif roll < 58:
            self.press()
        elif roll < 62:
            if self.machine.state == exit_lane.OPENING:
                self.machine.passage(self.now)
        elif roll < 66:
            self.net_up = not self.net_up
            if not self.net_up:
                self.queries = []
            self.machine.link(self.net_up, self.now)
        elif roll < 69:
            self.server = (True, False, None)[self.pick(3)]
            if self.server is not None:
                self.machine.presence(self.server, self.now)
        elif roll < 70:
            self.boot()
        elif roll < 72:
            self.wait(1000 + self.pick(2000))
        else:
            self.wait(1 + self.pick(300))

    def run(self):
        for _ in range(self.steps):
            self.move()
        # Then the network comes back and everyone pays: every car must get
        # out, each under exactly one journaled exit.
        self.tariff = self.machine.tariff = TARIFF
        self.net_up = True
        self.server = True
        self.machine.link(True, self.now)
        self.machine.presence(True, self.now)
        for _ in range(40 * len(self.cars)):
            if self.front >= len(self.cars):
                break
            self.wait(31000)   # past the repeat window: the camera's read counts again
            self.read()
            self.answer()
            self.press()
            self.wait(6000)
        self.check()

    def check(self):
        if self.front != len(self.cars):
            raise AssertionError("car %d never got out: %s" % (
                self.front, " | ".join(self.logs[-8:])))
        exits = {}
        for event, number in self.journal:
            if event.kind != record.KIND_EXIT:
                raise AssertionError("an exit lane journaled %r" % (event,))
            exits[number] = exits.get(number, 0) + 1
        for car in self.cars:
            if exits.get(car.number) != 1:
                raise AssertionError("car %d has %r journaled exits" % (
                    car.number, exits.get(car.number)))


def run_cases(first_seed, count, random_module):
    """count seeded runs; returns the number run (raises on the first
    broken promise, naming its seed)."""
    for seed in range(first_seed, first_seed + count):
        random_module.seed(seed)
        try:
            World(random_module).run()
        except AssertionError as exc:
            raise AssertionError("seed %d: %s" % (seed, exc))
    return count
