# MicroPython, run on the board inside wrapper.py (field/transport.py).
# `parkgate board journal`: every record, decoded on the board by the code
# that wrote it, one line each, so a long journal needs no memory here.
# args: none. Prints {"journal": header or None}, then each record (the wire
# keys of parkgate.record.to_wire plus "acked"; "error" and "raw" for one that
# does not decode), then {"end": count}.
import binascii
stage[0] = "board"
import board
stage[0] = "journal"
dev = board.journal_device()
if not has_journal(dev):
    out({"journal": None})
else:
    from parkgate.journal import Journal
    from parkgate import record
    j = Journal(dev)
    j.mount()
    st = j.stats()
    out({"journal": {"id": j.journal_id, "next_seq": j.next_seq, "acked": j.acked,
                     "pending": st["pending"]}})
    n = 0
    for seq, kind, body in j.records():
        try:
            w = record.to_wire(record.decode_body(kind, seq, body))
        except Exception as exc:
            w = {"s": seq, "kind": kind, "error": str(exc),
                 "raw": binascii.hexlify(body).decode()}
        w["acked"] = seq <= j.acked
        out(w)
        n += 1
    out({"end": n})
