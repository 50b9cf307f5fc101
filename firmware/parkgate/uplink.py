# Store and forward: sends the journal's unacknowledged records to the lot
# bridge in batches, oldest first, with up to `window` batches awaiting their
# acknowledgement, and lets the journal forget records only when the bridge
# acknowledges them after its commit (see firmware/docs/mqtt.md).
import json

from parkgate import record
from parkgate.compat import const, ticks_diff

_BATCH = const(16)
_PAYLOAD_MAX = const(1024)   # one preallocated buffer; small messages are easy for
                             # the receiving gates to allocate in a fragmented heap


class Uplink:
    def __init__(self, journal, link, gate_id, topic, batch=_BATCH,
                 ack_timeout_ms=3000, ack_timeout_max_ms=30000, log=print, window=2):
        self._journal = journal
        self._link = link
        self._gate_id = gate_id
        self._topic = topic
        self._batch = batch
        self._ack_timeout_min_ms = ack_timeout_ms
        self._ack_timeout_max_ms = ack_timeout_max_ms
        self._ack_timeout_ms = ack_timeout_ms
        self._log = log
        self._window = window
        self._in_flight = []     # [(first seq, last seq, ticks sent)], oldest first
        self._buf = bytearray(_PAYLOAD_MAX)
        self._mv = memoryview(self._buf)
        self.batches_sent = 0
        self.retransmits = 0

    def reset(self):
        """The session changed: whatever was in flight may be lost, send again."""
        self._in_flight = []

    def payload(self, records):
        """Write the batch message {"g", "j", "e": [...]} into the
        preallocated buffer, as many records as fit; returns (memoryview of
        the message, number of records in it)."""
        mv = self._mv
        head = ('{"g":%s,"j":%d,"e":[' % (json.dumps(self._gate_id),
                                          self._journal.journal_id)).encode()
        end = len(head)
        mv[:end] = head
        count = 0
        for seq, kind, body in records:
            item = json.dumps(record.to_wire(record.decode_body(kind, seq, body))).encode()
            size = len(item) + (1 if count else 0)
            if end + size + 2 > _PAYLOAD_MAX:
                break
            if count:
                mv[end] = 0x2C   # ,
                end += 1
            mv[end:end + len(item)] = item
            end += len(item)
            count += 1
        mv[end:end + 2] = b"]}"
        return mv[:end + 2], count

    def service(self, now):
        """Send the next batch if none is waiting for its ack or if the wait
        timed out. Returns True if it published."""
        if not self._link.up:
            return False
        in_flight = self._in_flight
        if in_flight and ticks_diff(now, in_flight[0][2]) >= self._ack_timeout_ms:
            # No acknowledgement in time: send again from the oldest.
            self.retransmits += 1
            self._ack_timeout_ms = min(self._ack_timeout_ms * 2, self._ack_timeout_max_ms)
            in_flight = self._in_flight = []
        if len(in_flight) >= self._window:
            return False
        records = self._journal.pending(self._batch, in_flight[-1][1] if in_flight else None)
        if not records:
            return False
        message, count = self.payload(records)
        if not self._link.publish(self._topic, message):
            self._in_flight = []
            return False
        in_flight.append((records[0][0], records[count - 1][0], now))
        self.batches_sent += 1
        return True

    def on_ack(self, message):
        """message: the decoded ack {"j", "f", "l"}. Advances the journal's
        acknowledged watermark when the range covers its next unacked seq."""
        journal = self._journal
        if message.get("j") != journal.journal_id:
            return False
        first = message.get("f")
        last = message.get("l")
        if type(first) is not int or type(last) is not int:
            return False
        if not first <= journal.acked + 1 <= last or last >= journal.next_seq:
            return False
        journal.ack(last)
        self._ack_timeout_ms = self._ack_timeout_min_ms
        while self._in_flight and self._in_flight[0][1] <= last:
            self._in_flight.pop(0)
        return True
