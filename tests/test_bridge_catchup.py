"""Lane catch-up through the lot bridge (up/catchup, down/catchup;
firmware/docs/mqtt.md): pages of the open sessions of every gate, a full
page within the gate's heap, and junk requests left unanswered. On SQLite
and on PostgreSQL (fixture db_path, from conftest)."""
import json
import logging

from fixtures_mqtt import entry, exit_
from parkgate import record
from parkgate_tools.lot.bridge import CATCHUP_MAX_BYTES
from parkgate_tools.lot.store import CATCHUP_PAGE
from test_bridge import PLATE_A, T0, batch


# ---- lane catch-up: up/catchup, down/catchup ----

def catchup_pages(gate, since, first_request=1):
    """Ask page after page as a gate does; returns the decoded answers."""
    answers, cursor, request = [], 0, first_request
    while True:
        before = len(gate.received("down/catchup"))
        gate.publish("up/catchup", {"r": request, "s": since, "c": cursor})
        payload = gate.expect("down/catchup", before + 1)[before]
        assert len(payload) <= CATCHUP_MAX_BYTES
        answer = json.loads(payload)
        assert answer["r"] == request
        answers.append(answer)
        cursor, request = answer["c"], request + 1
        if cursor is None:
            return answers
        assert len(answers) < 50


def test_catchup_pages_the_open_sessions_of_every_gate(bridge, gates):
    in1, in2, out = gates("in-1"), gates("in-2"), gates("out-1")
    # 13 entries in one second from in-1, 6 in the same second from in-2,
    # in interleaved batches; one voided, two closed by exits
    # (each ack awaited: the store's order is the order of arrival)
    in1.publish("up/events", batch("in-1", 1, [entry(s, "A%02d" % s, T0) for s in range(1, 8)]))
    in1.expect("down/ack")
    in2.publish("up/events", batch("in-2", 1, [entry(s, "B%02d" % s, T0) for s in range(1, 7)]))
    in2.expect("down/ack")
    in1.publish("up/events", batch("in-1", 1, [entry(s, "A%02d" % s, T0) for s in range(8, 14)]
                                   + [dict(entry(14, "A03", T0), fl=record.FLAG_NO_PASSAGE)]))
    in1.expect("down/ack", 2)
    out.publish("up/events", batch("out-1", 1, [exit_(1, "A05", T0 + 60, 100),
                                                exit_(2, "B02", T0 + 60, 100)]))
    out.expect("down/ack")
    in2.publish("up/events", batch("in-2", 1, [entry(7, "B07", T0 + 90)]))
    in2.expect("down/ack", 2)
    expected = ([("in-1", "A%02d" % s, s) for s in range(1, 8) if s not in (3, 5)]
                + [("in-2", "B%02d" % s, s) for s in range(1, 7) if s != 2]
                + [("in-1", "A%02d" % s, s) for s in range(8, 14)]
                + [("in-2", "B07", 7)])
    answers = catchup_pages(out, T0 - 3600)
    assert [len(a["e"]) for a in answers] == [CATCHUP_PAGE, CATCHUP_PAGE, 1]
    assert all(type(a["c"]) is int for a in answers[:-1]) and answers[-1]["c"] is None
    got = [(e["g"], e["p"], e["s"]) for a in answers for e in a["e"]]
    assert got == expected
    # each entry in the wire form of record.to_wire, with its gate
    first = answers[0]["e"][0]
    assert first == dict(entry(1, "A01", T0), g="in-1")
    assert record.from_wire(first).plate == "A01"
    # the asker's own entries come too; s filters by entry time
    assert [(e["g"], e["p"]) for a in catchup_pages(in2, T0 + 1, 100) for e in a["e"]] == [
        ("in-2", "B07")]
    assert catchup_pages(out, T0 + 91, 200) == [{"r": 200, "e": [], "c": None}]
    assert in1.received("down/catchup") == []      # answers go to the asker only


def test_a_full_catchup_page_fits_the_gates_heap(bridge, gates):
    """The largest entries (16-byte plates, seqs and times near 2^32, every
    flag, 16-character gate ids) still make a page under 1 KB; longer gate
    ids make shorter pages, and the cursor goes on exactly."""
    plates = ["京A%s" % ("%012d" % i) for i in range(12)]
    assert all(len(p.encode()) == record.MAX_PLATE_BYTES for p in plates)
    big = 0xFFFFFFF0

    def big_entry(seq, plate):
        return dict(entry(seq, plate, big, colour=255), cf=100, q=6, fl=0xFF & ~64)
    short_gate = gates("g" * 16)
    short_gate.publish("up/events", batch("g" * 16, 1, [big_entry(big + i, p)
                                                         for i, p in enumerate(plates[:10])]))
    short_gate.expect("down/ack")
    answers = catchup_pages(short_gate, big)
    assert [len(a["e"]) for a in answers] == [CATCHUP_PAGE, 2]
    full = short_gate.received("down/catchup")[0]
    assert len(full) < 1024, len(full)
    long_gate = gates("g" * 40)
    long_gate.publish("up/events", batch("g" * 40, 1, [big_entry(big + i, p)
                                                        for i, p in enumerate(plates[10:])]))
    long_gate.publish("up/events", batch("g" * 40, 2, [big_entry(big + i, "L%d" % i)
                                                        for i in range(CATCHUP_PAGE)]))
    long_gate.expect("down/ack", 2)
    answers = catchup_pages(long_gate, big, 10)
    sizes = [len(payload) for payload in long_gate.received("down/catchup")]
    assert max(sizes) <= CATCHUP_MAX_BYTES
    # 40-character ids: a page of 8 would be about 1,180 bytes
    assert [len(a["e"]) for a in answers] == [CATCHUP_PAGE, 7, 5]
    assert [e["p"] for a in answers for e in a["e"]] == plates + ["L%d" % i
                                                                  for i in range(CATCHUP_PAGE)]


def test_junk_catchup_requests_get_no_answer(bridge, gates, caplog):
    caplog.set_level(logging.WARNING, logger="parkgate.bridge")
    gate = gates("out-1")
    gate.publish("up/events", batch("out-1", 1, [entry(1, PLATE_A, T0)]))
    gate.expect("down/ack")
    junk = [
        (b"[1]", "not a JSON object"),
        ({"s": T0, "c": 0}, "r: None is not an integer in 0..65535"),
        ({"r": 65536, "s": T0, "c": 0}, "r: 65536"),
        ({"r": -1, "s": T0, "c": 0}, "r: -1"),
        ({"r": "1", "s": T0, "c": 0}, "r: '1'"),
        ({"r": True, "s": T0, "c": 0}, "r: True"),
        ({"r": 1, "s": 1.5, "c": 0}, "s: 1.5"),
        ({"r": 1, "s": 2 ** 32, "c": 0}, "s: 4294967296"),
        ({"r": 1, "s": T0}, "c: None"),
        ({"r": 1, "s": T0, "c": -3}, "c: -3"),
        ({"r": 1, "s": T0, "c": 2 ** 63}, "c: 9223372036854775808"),
        ({"r": 1, "s": T0, "c": 987654321}, "c: 987654321 is not a stored row id"),
    ]
    for payload, _ in junk:
        gate.publish("up/catchup", payload)
    gate.publish("up/catchup", {"r": 65535, "s": 0, "c": 0})
    answer = json.loads(gate.expect("down/catchup")[0])
    assert answer["r"] == 65535 and [e["p"] for e in answer["e"]] == [PLATE_A]
    assert len(gate.received("down/catchup")) == 1
    assert bridge.refused == len(junk)
    for _, reason in junk:
        assert reason in caplog.text, reason
