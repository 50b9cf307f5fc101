"""Signed downlink to a gate in the simulator: tariff tables that are
tampered with, unsigned, replayed, stale, for another gate or invalid are
refused and the gate keeps charging with its previous table; a good one is
applied atomically and survives a reboot. Member updates in parts, as the
lot server builds them (downlink.members_parts): each part's envelope fits
the gate's message cap and heap, and they install through
parkgate.member_update."""
import base64
import hashlib
import json

import pytest

from parkgate import member_update, sign
from parkgate_host import member_lists, signing
from parkgate_tools.lot import downlink
from parkgate_tools.sim.gate import DEFAULT_TARIFF

LOT = "dl"
KEY = bytes(range(32))


@pytest.fixture
def lane(downlink_lane):
    made = downlink_lane(LOT, "g1", "out", key=KEY, site_extra={"backoff_max_ms": 1000})
    return made.gate, made.operator


def table(version, unit_price, **changes):
    doc = json.load(open(DEFAULT_TARIFF, encoding="utf-8"))
    doc["version"] = version
    doc["plans"]["all"]["bands"][0]["tiers"][0]["unit_price"] = unit_price
    doc.pop("examples", None)
    doc.update(changes)
    return json.dumps(doc, ensure_ascii=False)


def test_bad_downlinks_are_refused_and_the_old_tariff_kept(lane):
    gate, operator = lane
    good = downlink.tariff_envelope(KEY, "g1", table(2, 300))
    tampered = dict(good, b=table(2, 1))
    unsigned = {k: v for k, v in good.items() if k != "s"}
    other_key = signing.sign(b"not the gate key", "tariff", "g1", 2, table(2, 300))
    other_gate = downlink.tariff_envelope(KEY, "g2", table(2, 300))
    stale = downlink.tariff_envelope(KEY, "g1", table(1, 300))
    invalid = signing.sign(KEY, "tariff", "g1", 3, table(3, -5))
    cases = [(tampered, "bad signature"), (unsigned, "unsigned"), (other_key, "bad signature"),
             (other_gate, "for tariff/g2"), (stale, "stale"), (invalid, "negative amount")]
    for envelope, _ in cases:
        operator.push("g1", "tariff", envelope)
    operator.wait(lambda: len(operator.refused) == len(cases), "the refusals")
    for (_, why), refusal in zip(cases, operator.refused):
        assert refusal["k"] == "tariff" and why in refusal["why"], refusal
    assert len(gate.lines(r" REFUSED tariff ")) == len(cases)
    assert gate.lines(r"TARIFF installed") == []
    # still charging with version 1: 1 yuan per started 30 min after 15 free
    gate.send_plate("浙A00001")
    gate.wait_line(r"EVENT out seq=1", 5)
    assert gate.events()[0]["fee"] == 2000 and gate.events()[0]["src"] == "off"  # no entry

    operator.push("g1", "tariff", good)
    gate.wait_line(r"TARIFF installed version=2", 5)
    operator.wait(lambda: operator.status.get("tv") == 2, "status with tariff 2")
    operator.push("g1", "tariff", good)                      # replayed
    operator.wait(lambda: len(operator.refused) == len(cases) + 1, "the replay refusal")
    assert operator.refused[-1]["why"].startswith("stale")
    gate.kill()                                               # power cut, then boot
    gate.start()
    assert "tariff=2" in gate.lines(r" BOOT ")[-1]


def test_a_gate_without_a_key_refuses_every_downlink(downlink_lane):
    made = downlink_lane(LOT, "g1", "in")
    gate, operator = made.gate, made.operator
    operator.push("g1", "tariff", downlink.tariff_envelope(KEY, "g1", table(2, 300)))
    operator.wait(lambda: operator.refused, "the refusal")
    assert operator.refused[0]["why"] == "no downlink key configured"
    assert operator.status["tv"] == 1 and gate.lines(r"TARIFF installed") == []


def test_member_lists_come_signed_whole_or_as_deltas(downlink_lane):
    first = member_lists.build([{"plate": "粤B12345", "from": None, "until": None,
                                 "window": None, "blacklist": False}], version=1)
    removal = member_lists.make_delta(first, [{"plate": "粤B12345", "remove": True},
                                              {"plate": "粤B99999", "from": None, "until": None,
                                               "window": None, "blacklist": True}], 2)
    made = downlink_lane(LOT, "g1", "in", key=KEY)
    gate, operator = made.gate, made.operator
    whole = downlink.members_envelope(KEY, "g1", first)
    operator.push("g1", "members", dict(whole, b=whole["b"][:-4] + "AAA="))   # tampered
    operator.push("g1", "members", whole)
    gate.wait_line(r"MEMBERS installed version=1 count=1", 5)
    operator.wait(lambda: operator.status.get("mv") == 1, "status with members 1")
    gate.send_plate("粤B12345")
    gate.wait_line(r"EVENT in seq=1 plate=粤B12345 .* fl=4$", 5)
    operator.push("g1", "members", whole)                  # replayed
    operator.push("g1", "members", downlink.members_envelope(KEY, "g1", removal))
    gate.wait_line(r"MEMBERS installed version=2 count=1", 5)
    gate.send_plate("粤B99999")
    gate.wait_line(r"DENIED plate=粤B99999 blacklisted", 5)
    operator.wait(lambda: len(operator.refused) == 2, "two refusals")
    assert operator.refused[0]["why"] == "bad signature"
    assert operator.refused[1]["why"].startswith("stale")
    gate.kill()
    gate.start()
    gate.wait_line(r"LINK up", 10)
    operator.wait(lambda: operator.status.get("mv") == 2, "members 2 after a reboot")


def test_remote_open_runs_once_and_never_late(downlink_lane):
    # real time: expiries are seconds
    made = downlink_lane(LOT, "g1", "out", key=KEY, rate=1)
    gate, operator = made.gate, made.operator
    now = int(made.clock.now())
    late = signing.sign(KEY, "open", "g1", 1, "{}", expiry=now - 5)
    far = signing.sign(KEY, "open", "g1", 2, "{}", expiry=now + 3600)
    forever = signing.sign(KEY, "open", "g1", 3, "{}")
    good = signing.sign(KEY, "open", "g1", 4, "{}", expiry=now + 30)
    for envelope in (late, far, forever):
        operator.push("g1", "open", envelope)
    operator.wait(lambda: len(operator.refused) == 3, "three refusals")
    assert operator.refused[0]["why"].startswith("expired")
    assert "at most 60 allowed" in operator.refused[1]["why"]
    assert operator.refused[2]["why"] == "a command must carry an expiry"
    assert gate.relay_openings() == 0
    operator.push("g1", "open", good)
    gate.wait_line(r"OPEN remote command v=4", 5)
    operator.push("g1", "open", good)                      # replayed
    operator.wait(lambda: len(operator.refused) == 4, "the replay refusal")
    assert operator.refused[3]["why"].startswith("stale")
    assert gate.relay_openings() == 1


def test_the_lot_server_confirms_a_payment(downlink_lane):
    made = downlink_lane(LOT, "g1", "out", site_extra={"fee_timeout_ms": 300}, attendant=False)
    gate, operator = made.gate, made.operator
    gate.send_plate("鄂A00042")                  # no bridge: charged offline, 20 yuan
    gate.wait_line(r"AWAIT payment plate=鄂A00042 fee=2000 src=off", 5)
    paid = "pg/%s/g1/down/paid" % LOT
    operator.client.publish(paid, json.dumps({"p": "鄂A00042", "fee": 1000}), qos=1)
    operator.client.publish(paid, json.dumps({"p": "鄂A00043", "fee": 2000}), qos=1)
    operator.client.publish(paid, json.dumps({"p": "鄂A00042", "fee": 2000}),
                            qos=1).wait_for_publish(5)
    gate.wait_line(r"PAID plate=鄂A00042 fee=2000 by lot server", 5)
    gate.wait_line(r"EVENT out seq=1 plate=鄂A00042 .* fee=2000 src=off", 5)
    assert len(gate.lines(r" PAID ")) == 1 and gate.relay_openings() == 1


def roster(n, prefix="粤B"):
    return [{"plate": "%s%05d" % (prefix, i), "from": None, "until": None, "window": None,
             "blacklist": False} for i in range(n)]


def test_member_parts_carry_the_payload_each_signed_and_small():
    boundary = pytest.importorskip("parkgate.downlink")     # the gate's message checks
    data = member_lists.build(roster(3000), 0xFFFFFFFF)          # every number at its widest
    digest = hashlib.sha256(data).hexdigest()
    for gate in ("g1", "g" * 32):
        parts = downlink.members_parts(KEY, gate, data)
        n = len(parts)
        assert n == -(-len(data) // downlink.PART_BYTES) == 101
        assert b"".join(base64.b64decode(p["b"]) for p in parts) == data
        for i, part in enumerate(parts):
            assert (part["k"], part["v"], part["i"], part["n"], part["z"], part["h"]) == (
                "members", 0xFFFFFFFF, i, n, len(data), digest)
            payload = downlink.encode(part)
            assert len(payload) <= downlink.ENVELOPE_MAX, (gate, i, len(payload))
            assert sign.verify(KEY, part, "members", gate, -1, part=True) == part["b"]
            boundary.check("members", boundary.decode("members", payload))
        with pytest.raises(sign.SignatureError, match="bad signature"):
            sign.verify(KEY, dict(parts[1], i=2), "members", gate, -1, part=True)
    with pytest.raises(ValueError, match="more than 900"):
        downlink.members_parts(KEY, "g" * 100, data)
    # 50,000 members: 1,667 parts, the widest numbers still under the cap
    whole = member_lists.build(roster(50000), 7)
    parts = downlink.members_parts(KEY, "g" * 32, whole)
    assert len(parts) == 1667
    assert max(len(downlink.encode(p)) for p in parts) <= downlink.ENVELOPE_MAX


def test_member_parts_from_the_host_install_through_the_gates_store(tmp_path):
    lines = []
    store = member_update.MemberStore(str(tmp_path), lambda path: 10 ** 7, lines.append)
    first = member_lists.build(roster(500), 1)
    for part in downlink.members_parts(KEY, "g1", first):
        store.offer(part, KEY, "g1")
    while store.step():
        pass
    assert (store.current.version, store.current.count) == (1, 500)
    delta = member_lists.make_delta(first, [{"plate": "粤B00001", "remove": True}]
                                    + roster(20, "沪C"), 2)
    parts = downlink.members_parts(KEY, "g1", delta)
    for part in parts + parts:                       # the lot server sends them twice
        store.offer(part, KEY, "g1")
    while store.step():
        pass
    assert (store.current.version, store.current.count) == (2, 519)
    assert [line for line in lines if "installed" in line] == [
        "MEMBERS installed version=1 count=500", "MEMBERS installed version=2 count=519"]
    # the single-message form still installs a small update
    small = member_lists.make_delta(member_lists.apply_delta_bytes(first, delta),
                                    [{"plate": "粤B00002", "remove": True}], 3)
    store.offer(downlink.members_envelope(KEY, "g1", small), KEY, "g1")
    while store.step():
        pass
    assert (store.current.version, store.current.count) == (3, 518)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["members.bin"]
