import json

from parkgate import record
from parkgate.uplink import Uplink


class FakeJournal:
    def __init__(self, events):
        self.journal_id = 0xABCD
        self.acked = 0
        self.records = []
        for i, event in enumerate(events):
            event.seq = i + 1
            self.records.append((i + 1, event.kind, record.encode_body(event)))
        self.next_seq = len(self.records) + 1

    def pending(self, limit, after=None):
        after = max(self.acked, after or 0)
        return [r for r in self.records if r[0] > after][:limit]

    def ack(self, upto):
        self.acked = max(self.acked, upto)


class FakeLink:
    def __init__(self):
        self.up = True
        self.sent = []
        self.sizes = []
        self.fail = False

    def publish(self, topic, payload, retain=False):
        if self.fail:
            self.up = False
            return False
        self.sizes.append(len(payload))
        self.sent.append((topic, json.loads(bytes(payload))))
        return True


def _setup(n=40, window=1):
    events = [record.Event(record.KIND_ENTRY, 1000 + i, 5, "P%d" % i) for i in range(n)]
    journal = FakeJournal(events)
    link = FakeLink()
    return journal, link, Uplink(journal, link, "g1", "pg/l/g1/up/events", batch=8,
                                 ack_timeout_ms=100, ack_timeout_max_ms=400, window=window)


def test_sends_oldest_first_in_batches_and_waits_for_ack():
    journal, link, uplink = _setup()
    assert uplink.service(0)
    topic, message = link.sent[0]
    assert topic == "pg/l/g1/up/events"
    assert message["g"] == "g1" and message["j"] == 0xABCD
    assert [e["s"] for e in message["e"]] == list(range(1, 9))
    assert message["e"][0] == {"s": 1, "k": "in", "t": 1000, "q": 5, "p": "P0", "c": 0, "cf": 0}
    assert not uplink.service(50)           # waiting for the ack
    assert uplink.on_ack({"j": 0xABCD, "f": 1, "l": 8})
    assert journal.acked == 8
    assert uplink.service(51)
    assert [e["s"] for e in link.sent[1][1]["e"]] == list(range(9, 17))


def test_retransmits_after_timeout_with_backoff():
    journal, link, uplink = _setup()
    uplink.service(0)
    assert not uplink.service(99)
    assert uplink.service(100)              # timeout 100 ms: resend the same batch
    assert link.sent[1][1] == link.sent[0][1]
    assert not uplink.service(299)          # next timeout doubled to 200 ms
    assert uplink.service(300)
    assert uplink.retransmits == 2


def test_acks_that_do_not_fit_are_ignored():
    journal, link, uplink = _setup()
    uplink.service(0)
    assert not uplink.on_ack({"j": 1, "f": 1, "l": 8})           # other journal
    assert not uplink.on_ack({"j": 0xABCD, "f": 2, "l": 8})      # gap before 2
    assert not uplink.on_ack({"j": 0xABCD, "f": 1, "l": 99})     # beyond what exists
    assert not uplink.on_ack({"j": 0xABCD, "f": "1", "l": 8})
    assert journal.acked == 0
    assert uplink.on_ack({"j": 0xABCD, "f": 1, "l": 8})
    assert not uplink.on_ack({"j": 0xABCD, "f": 1, "l": 8})      # duplicate ack
    assert journal.acked == 8


def test_nothing_sent_while_link_is_down_and_resent_after_reset():
    journal, link, uplink = _setup(3)
    link.up = False
    assert not uplink.service(0)
    link.up = True
    link.fail = True
    assert not uplink.service(1)
    link.fail = False
    link.up = True
    assert uplink.service(2)
    uplink.reset()                          # reconnected: the ack may never come
    assert uplink.service(3)
    assert len(link.sent) == 2 and link.sent[0][1] == link.sent[1][1]
    uplink.on_ack({"j": 0xABCD, "f": 1, "l": 3})
    assert not uplink.service(4)            # backlog empty


def test_a_batch_is_cut_to_what_fits_the_buffer():
    events = [record.Event(record.KIND_ENTRY, 1000 + i, 5, "粤B%05d" % i) for i in range(80)]
    journal = FakeJournal(events)
    link = FakeLink()
    uplink = Uplink(journal, link, "g1", "t", batch=80, ack_timeout_ms=100, window=1)
    uplink.service(0)
    seqs = [e["s"] for e in link.sent[0][1]["e"]]
    assert 4 < len(seqs) < 80 and seqs == list(range(1, len(seqs) + 1))
    assert link.sizes[0] <= 1024
    assert uplink.on_ack({"j": 0xABCD, "f": 1, "l": len(seqs)})
    assert uplink.service(1)                  # the rest follows at once
    assert link.sent[1][1]["e"][0]["s"] == len(seqs) + 1


def test_two_batches_in_flight_then_a_retransmit_starts_from_the_oldest():
    journal, link, uplink = _setup(window=2)
    assert uplink.service(0) and uplink.service(1)
    assert not uplink.service(2)                 # window full
    assert [e["s"] for e in link.sent[1][1]["e"]] == list(range(9, 17))
    assert uplink.on_ack({"j": 0xABCD, "f": 1, "l": 8})
    assert uplink.service(3)                     # a slot is free again
    assert [e["s"] for e in link.sent[2][1]["e"]] == list(range(17, 25))
    assert not uplink.service(100)               # oldest in flight was sent at 1
    assert uplink.service(101)                   # timed out: resend from 9
    assert [e["s"] for e in link.sent[3][1]["e"]] == list(range(9, 17))
    assert uplink.retransmits == 1
    assert uplink.on_ack({"j": 0xABCD, "f": 9, "l": 24})   # the bridge had them all
    assert journal.acked == 24
