# MicroPython, run on the board inside wrapper.py (field/transport.py).
# `parkgate board status`: versions, where the code comes from, deploy.json
# and its files' hashes, clock, site, tariff, members, journal, memory, the
# last events, read by the board's own modules.
# args: {"events": N}. Prints one object (firmware/docs/field-tools.md).
import gc
import os
stage[0] = "board"
import board
root = board.mount_flash()
res = {"board": board.NAME, "root": root}
try:
    res["micropython"] = "%d.%d.%d" % sys.implementation.version[:3]
    res["machine"] = os.uname().machine
except (AttributeError, OSError):
    pass
import parkgate.clock
res["code"] = {"board": origin(board), "parkgate": origin(parkgate.clock)}
stage[0] = "firmware"
try:
    with open(join(root, "deploy.json")) as f:
        man = json.load(f)
except OSError:
    man = None
if man is not None:
    changed = []
    for path in man["files"]:
        try:
            ok = sha(join(root, path)) == man["files"][path]
        except OSError:
            ok = False
        if not ok:
            changed.append(path)
    res["firmware"] = {"version": man.get("version"), "build": man.get("build"),
                       "board": man.get("board"), "deployed": man.get("time"),
                       "code": man.get("code", "flash"), "files": len(man["files"]),
                       "changed": changed}
else:
    res["firmware"] = None
stage[0] = "clock"
from parkgate.clock import Clock, EARLIEST_VALID, QUALITY_NAMES
clock = Clock(board.ClockSource(), board.BOOT_CLOCK_QUALITY)
now = clock.now()
res["clock"] = {"time": now, "valid": now >= EARLIEST_VALID,
                "quality": QUALITY_NAMES[clock.quality]}
stage[0] = "site"
try:
    site = board.load_site()
    res["site"] = {"lot": site.get("lot"), "gate": site.get("gate"),
                   "direction": site.get("direction"), "broker": site.get("broker")}
except OSError:
    res["site"] = None
stage[0] = "tariff"
try:
    with open(join(root, "tariff.json")) as f:
        doc = json.load(f)
    res["tariff"] = {"version": doc.get("version"), "name": doc.get("name")}
except OSError:
    res["tariff"] = None
except ValueError:
    res["tariff"] = {"error": "not valid JSON"}
doc = None
stage[0] = "members"
try:
    from parkgate import members
    listed = members.MemberList(join(root, "members.bin"))
    res["members"] = {"version": listed.version, "count": listed.count}
    listed.close()
except OSError:
    res["members"] = None
except ValueError as exc:
    res["members"] = {"error": str(exc)}
stage[0] = "journal"
dev = board.journal_device()
if has_journal(dev):
    from parkgate.journal import Journal
    from parkgate import record
    j = Journal(dev)
    j.mount()
    st = j.stats()
    last = []
    for seq, kind, body in j.records():
        last.append((seq, kind, body))
        if len(last) > args["events"]:
            last.pop(0)
    events = []
    for seq, kind, body in last:
        try:
            w = record.to_wire(record.decode_body(kind, seq, body))
        except Exception as exc:
            w = {"s": seq, "kind": kind, "error": str(exc)}
        w["acked"] = seq <= j.acked
        events.append(w)
    res["journal"] = {"id": j.journal_id, "next_seq": j.next_seq, "acked": j.acked,
                      "pending": st["pending"], "blocks": st["blocks"],
                      "free_blocks": st["free_blocks"], "full": st["full"]}
    res["events"] = events
    j = last = None
else:
    res["journal"] = None
    res["events"] = []
stage[0] = "memory"
gc.collect()
res["heap_free"] = board.free_heap()
res["flash_free"] = board.free_flash(root)
out(res)
