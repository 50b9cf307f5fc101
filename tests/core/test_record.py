from check import raises

from parkgate import record
from parkgate.record import Event, RecordError


def _exit_event():
    return Event(record.KIND_EXIT, 1767225600, 5, "粤B12345", colour=4, confidence=97,
                 flags=record.FLAG_NO_ENTRY, fee=2000, fee_source=record.FEE_OFFLINE,
                 tariff_version=3, entry_time=0, seq=42)


def test_body_round_trip_keeps_every_field():
    event = _exit_event()
    body = record.encode_body(event)
    assert len(body) == 22 + len("粤B12345".encode())
    back = record.decode_body(record.KIND_EXIT, 42, body)
    assert back == event
    assert back.plate == "粤B12345" and back.fee == 2000 and back.colour == 4


def test_body_rejects_bad_plate_and_length():
    event = _exit_event()
    event.plate = ""
    raises(RecordError, record.encode_body, event)
    event.plate = "X" * 17
    raises(RecordError, record.encode_body, event)
    body = record.encode_body(_exit_event())
    raises(RecordError, record.decode_body, record.KIND_EXIT, 1, body[:-1])
    raises(RecordError, record.decode_body, record.KIND_EXIT, 1, body[:10])
    raises(RecordError, record.decode_body, 99, 1, body)


def test_wire_round_trip_entry_and_exit():
    entry = Event(record.KIND_ENTRY, 1767225600, 6, "京A12345", seq=1)
    wire = record.to_wire(entry)
    assert wire == {"s": 1, "k": "in", "t": 1767225600, "q": 6, "p": "京A12345", "c": 0, "cf": 0}
    assert record.from_wire(wire) == entry
    exit_event = _exit_event()
    wire = record.to_wire(exit_event)
    assert wire["fs"] == "off" and wire["et"] is None and wire["fl"] == 1
    assert record.from_wire(wire) == exit_event


def test_wire_errors_name_the_field():
    good = record.to_wire(_exit_event())
    for key, value in (("k", "sideways"), ("p", ""), ("t", -1), ("t", "noon"), ("s", 0),
                       ("fee", -5), ("fs", "maybe"), ("et", "x")):
        bad = dict(good)
        bad[key] = value
        err = raises(RecordError, record.from_wire, bad)
        assert str(err).startswith(key + ":"), str(err)
    raises(RecordError, record.from_wire, [1, 2])
