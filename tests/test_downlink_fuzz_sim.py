"""Downlink fuzz against a simulated gate (the frozen 32-bit image in a 64 KiB
heap): thousands of malformed, oversize and wrong-type messages on every
down/ topic of an exit lane, and on the lot server's presence, while cars
go through. Every message is refused with a reason on up/refused, the link
never drops for it, and every car is journaled and stored."""
import json
import random

from fixtures_mqtt import FakeGate, wait_for

MESSAGES = 2400
BURST = 40
CARS = 24
# The down/ leaves and the fields each checks (firmware/parkgate/downlink.py).
FIELDS = {
    "ack": ("j", "f", "l"),
    "fee": ("r", "p", "fee", "tv", "et"),
    "paid": ("p", "fee"),
    "clock": ("r", "t"),
    "tariff": ("k", "g", "v", "x", "b", "s"),
    "members": ("k", "g", "v", "x", "b", "s"),
    "open": ("k", "g", "v", "x", "b", "s"),
    "catchup": ("r", "e", "c"),
    "nonsense": ("a",),
}
CAPS = {"ack": 128, "fee": 256, "paid": 128, "clock": 128, "tariff": 4096, "members": 1024,
        "open": 512, "catchup": 1536, "nonsense": 64}
WRONG = ["x", "", -1, 2 ** 40, 1.5, None, True, [], {}, [1, 2], {"a": 1}, "\u00e9" * 40]


def malformed(rnd, leaf):
    """One payload the gate must refuse on down/<leaf>."""
    how = rnd.randrange(8)
    fields = FIELDS[leaf]
    if how == 0:
        return bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 200)))
    if how == 1:
        return rnd.choice([b"1", b"[]", b'"x"', b"null", b"true", b"", b"{", b"{}}", b"[{}]"])
    if how == 2:   # nesting deeper than a parser's recursion
        depth = rnd.randrange(50, 400)
        return b"[" * depth + b"]" * depth
    if how == 3:   # oversize for its kind, under the broker's cap
        pad = CAPS[leaf] + rnd.randrange(1, 3000 if CAPS[leaf] < 1000 else 500)
        return json.dumps({fields[0]: 1, "pad": "x" * min(pad, 3900)}).encode()
    if how == 4:   # invalid UTF-8 inside a JSON string
        return b'{"' + fields[0].encode() + b'": "\xff\xfe\xc3"}'
    message = {name: rnd.randrange(1000, 5000) for name in fields}   # no id the gate used
    if leaf in ("fee", "paid"):
        message["p"] = "\u7ca4B00077"
    if how == 5:   # one field of a wrong type or out of range
        message[rnd.choice(fields)] = rnd.choice(WRONG)
    elif how == 6:   # a field missing
        del message[rnd.choice(fields)]
    else:            # every field well typed: refused for what it says
        if leaf in ("tariff", "members", "open"):
            message.update(k=leaf, g="fz-out", b="{}", s="0" * 64)
        if leaf == "catchup":
            message["e"] = []
    return json.dumps(message).encode()


def test_malformed_downlinks_are_refused_without_dropping_the_link_or_a_car(downlink_lane):
    lane = downlink_lane("fz", "fz-out", "out", bridge=True, rate=1,
                         site={"backoff_max_ms": 1000}, site_extra={"exit_policy": "owed"})
    lot, gate, refusals = lane.lot, lane.gate, lane.operator
    entry = lot.gate("fz-in", "in")
    gate.wait_line(r"LINK up connects=1", 10)
    sender = FakeGate(lot.broker, lot.lot, "fz-out")
    presence = FakeGate(lot.broker, lot.lot, "server")
    rnd = random.Random(1201)
    leaves = sorted(FIELDS)
    sent = 0
    cars = 0
    try:
        while sent < MESSAGES:
            for _ in range(BURST):
                if rnd.randrange(30) == 0:   # the lot server's presence, malformed
                    presence.publish("status", rnd.choice(
                        [b"{}", b'{"on": 2}', b'{"on": "1"}', b"[1]", b"\xff"]))
                else:
                    leaf = rnd.choice(leaves)
                    sender.publish("down/" + leaf, malformed(rnd, leaf))
                sent += 1
            if cars < CARS and sent % (MESSAGES // CARS) < BURST:
                plate = "\u82cfF%05d" % (11111 * (cars % 9) + cars // 9)
                entry.send_plate(plate)
                entry.wait_line(r"EVENT in seq=\d+ plate=%s " % plate, 10)
                gate.send_plate(plate)
                cars += 1
                # Through the flood, the fee answer may come late: the exit
                # is then charged offline; either way the car goes out.
                gate.wait_line(r"EVENT out seq=\d+ plate=%s " % plate, 20)
            wait_for(lambda: refusals.count >= sent - BURST, 60, "the gate to keep up")
        wait_for(lambda: refusals.count >= sent, 60, "every refusal")
        wait_for(lambda: len(gate.lines(r" EVENT out ")) == cars, 30, "every exit")
        wait_for(lambda: lot.stored("fz-out") == cars and lot.stored("fz-in") == cars, 60,
                   "every car stored")
    finally:
        sender.close()
        presence.close()
    assert refusals.count == sent and all(refusals.reasons)
    assert len(gate.lines(r" REFUSED ")) == sent
    assert not gate.lines(r"LINK down") and not gate.lines(r" ERROR ")
    assert len(gate.lines(r"LINK up")) == 1
    assert gate.relay_openings() == cars
