"""The lot bridge's answers to its gates, worked out from the store on the
writer thread (firmware/docs/mqtt.md): the acks of a stored batch, the fee
of an exit (with what the plate still owes: store/debts.py) and a page of
lane catch-up."""
import json
import logging

from parkgate import record, tariff
from parkgate.downlink import FEE_MAX
from parkgate_tools.lot.gate_messages import BadMessage

log = logging.getLogger("parkgate.bridge")

# Lane catch-up (down/catchup): a page holds at most CATCHUP_PAGE entries
# (store.schema) and its JSON at most this many bytes, so that the gate can
# take it in one piece of heap: 8 entries with 16-byte plates, the largest
# seqs and times and 16-character gate ids come to about 990 bytes.
CATCHUP_MAX_BYTES = 1000


def compact(obj):
    """The payload bytes of a JSON answer."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def ack_runs(seqs):
    """Contiguous [first, last] runs of a collection of ints, ascending: a
    batch with a hole gets one ack per run, so that an ack never covers an
    event not stored."""
    runs = []
    for seq in sorted(set(seqs)):
        if runs and seq == runs[-1][1] + 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    return runs


def debt_for(store, plate, exit_time, fee):
    """(debt in fen, the owed exits it covers [(gate, jid, seq, fee)]) to
    add to a fee of that many fen for plate's exit at exit_time: its
    unsettled owed exits (store.debts_of), oldest first, as many as keep
    the sum within the gate's FEE_MAX (parkgate.downlink); (0, []) when it
    owes nothing."""
    covered, debt = [], 0
    for owed in store.debts_of(plate, exit_time):
        if fee + debt + owed[3] > FEE_MAX:
            break
        covered.append(owed)
        debt += owed[3]
    return debt, covered


def fee_answer(store, table, gate, request, plate, colour, exit_time, gate_entry):
    """The down/fee answer (a dict) to gate's query: the fee from table for
    the stay of plate ending at exit_time, plus what the plate still owes
    (debt_for) with "debt" saying how much of the fee that is, kept as an
    offer (store.offer_debt) before the answer goes out. BadMessage if the
    tariff gives none."""
    # The later of the stored entry and the one the gate knows: a later
    # entry the gate heard from a peer lane that the bridge has not
    # stored yet means the stored one belongs to an earlier stay.
    # An entry the gate knows that is past the maximum stay or was closed
    # by hand is a ghost's: no fee is computed from it.
    entry = store.open_entry(plate, exit_time)
    if gate_entry is not None and store.ended(plate, gate_entry, exit_time):
        gate_entry = None
    known = [t for t in (entry.time if entry else None, gate_entry) if t is not None]
    entry_time = max(known) if known else None
    try:
        if entry_time is None:
            quote = tariff.quote_no_entry(table, exit_time, colour)
        else:
            member = store.is_member(plate, exit_time)
            quote = tariff.quote(table, entry_time, exit_time, colour, member=member)
    except tariff.TariffError as exc:
        raise BadMessage("no fee: %s" % exc)
    answer = {"r": request, "p": plate, "fee": quote.fee, "tv": table.version, "et": entry_time}
    debt, covered = debt_for(store, plate, exit_time, quote.fee)
    if debt:
        answer["fee"] += debt
        answer["debt"] = debt
        store.offer_debt(plate, exit_time, answer["fee"], covered)
    log.debug("fee gate=%s r=%r plate=%s et=%s (stored %s, gate %s) t=%d: %d (debt %d)", gate,
              request, plate, entry_time, entry.time if entry else None, gate_entry,
              exit_time, quote.fee, debt)
    return answer


def catchup_page(store, gate, request, since, cursor):
    """The down/catchup payload (bytes) answering gate's request: the open
    sessions after cursor, as many as fit in CATCHUP_MAX_BYTES, and the
    cursor of the next page. BadMessage if cursor is not a stored row id."""
    try:
        entries, next_cursor = store.open_entries_page(since, cursor)
    except ValueError as exc:
        raise BadMessage(str(exc))
    wires = []
    for row_id, entry_gate, event in entries:
        wire = record.to_wire(event)
        wire["g"] = entry_gate
        wires.append(wire)
    payload = compact({"r": request, "e": wires, "c": next_cursor})
    while len(payload) > CATCHUP_MAX_BYTES and len(wires) > 1:
        # Long gate ids: fewer entries, the next page goes on after them.
        wires.pop()
        entries.pop()
        next_cursor = entries[-1][0]
        payload = compact({"r": request, "e": wires, "c": next_cursor})
    log.debug("catch-up gate=%s r=%d s=%d c=%d: %d entries, next %s", gate, request, since,
              cursor, len(wires), next_cursor)
    return payload
