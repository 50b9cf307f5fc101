"""What `parkgate board` prints: the status as lines for a person, the
journal as CSV or JSON (firmware/docs/field-tools.md)."""
import csv
import datetime
import io
import json

# The CSV's columns: the journal record's fields (parkgate.record.Event),
# read from the wire keys parkgate.record.to_wire gives them (CSV_KEYS), plus
# time_utc and, for a record that does not decode, error and raw.
CSV_COLUMNS = ("seq", "kind", "time", "time_utc", "plate", "colour", "confidence", "quality",
               "flags", "fee", "fee_source", "tariff_version", "entry_time", "acked", "error",
               "raw")
CSV_KEYS = {"seq": "s", "kind": "k", "time": "t", "plate": "p", "colour": "c",
            "confidence": "cf", "quality": "q", "flags": "fl", "fee": "fee",
            "fee_source": "fs", "tariff_version": "tv", "entry_time": "et", "acked": "acked",
            "error": "error", "raw": "raw"}


def utc(seconds):
    """Unix seconds as "YYYY-MM-DDTHH:MM:SSZ" ("" for anything else)."""
    if not isinstance(seconds, int):
        return ""
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def csv_row(rec):
    """One journal record (as journal() yields it) as a CSV row dict."""
    row = {column: rec.get(key) for column, key in CSV_KEYS.items()}
    if row["kind"] is None and "kind" in rec:
        row["kind"] = rec["kind"]
    row["time_utc"] = utc(rec.get("t"))
    row["acked"] = 1 if rec.get("acked") else 0
    return {k: ("" if v is None else v) for k, v in row.items()}


def write_journal(records, out, fmt="csv"):
    """Write journal() output to the text stream out as CSV or JSON;
    returns (journal header, record count)."""
    header = None
    rows = []
    writer = None
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
    count = 0
    for rec in records:
        if "journal" in rec:
            header = rec["journal"]
        elif "end" in rec:
            continue
        else:
            count += 1
            if writer:
                writer.writerow(csv_row(rec))
            else:
                rows.append(rec)
    if not writer:
        json.dump({"journal": header, "records": rows}, out, ensure_ascii=False, indent=1)
        out.write("\n")
    return header, count


def format_status(st):
    """status() as lines of text for a person."""
    out = io.StringIO()
    w = out.write
    site = st.get("site") or {}
    w("board     %s%s\n" % (st["board"], "  (MicroPython %s)" % st["micropython"]
                            if st.get("micropython") else ""))
    origin = st.get("code") or {}
    if origin:
        w("code      %s\n" % ("frozen in the image" if set(origin.values()) == {"image"} else
                             ", ".join("%s from the %s" % item for item in sorted(origin.items()))))
    if site:
        w("gate      %s of lot %s, direction %s, broker %s\n" % (
            site.get("gate"), site.get("lot"), site.get("direction"), site.get("broker")))
    else:
        w("gate      no site.json\n")
    fw = st.get("firmware")
    if fw and fw.get("code") == "image":
        w("firmware  %s build %s, deployed for the image's code\n" % (fw["version"], fw["build"]))
    elif fw:
        w("firmware  %s build %s, %d code files on the flash%s\n" % (
            fw["version"], fw["build"], fw["files"],
            ", all as deployed" if not fw["changed"] else
            ", CHANGED since deploy: " + " ".join(fw["changed"])))
    else:
        w("firmware  no deploy.json: not deployed with parkgate board deploy\n")
    clock = st["clock"]
    w("clock     %s (%d), quality %s%s\n" % (utc(clock["time"]), clock["time"],
                                             clock["quality"],
                                             "" if clock["valid"] else ", NOT SET"))
    tf = st.get("tariff")
    w("tariff    %s\n" % ("none: exits are charged only online" if tf is None else
                         "version %s %s" % (tf.get("version"), tf.get("name") or "")
                         if "error" not in tf else tf["error"]))
    members = st.get("members")
    if members is not None:
        w("members   %s\n" % ("version %s, %s plates" % (members.get("version"),
                                                          members.get("count"))
                              if "error" not in members else members["error"]))
    j = st.get("journal")
    if j is None:
        w("journal   none yet (the gate formats one at its first boot)\n")
    else:
        w("journal   id %08x, next seq %d, acked %d, backlog %d, %d of %d blocks free%s\n" % (
            j["id"], j["next_seq"], j["acked"], j["pending"], j["free_blocks"], j["blocks"],
            ", FULL" if j["full"] else ""))
    w("memory    heap %d B free, flash %d B free\n" % (st["heap_free"], st["flash_free"]))
    if st.get("events"):
        w("last %d events:\n" % len(st["events"]))
        for ev in st["events"]:
            if "error" in ev:
                w("  %6d  unreadable: %s\n" % (ev["s"], ev["error"]))
                continue
            w("  %6d  %-3s %s  %-10s%s%s\n" % (
                ev["s"], ev["k"], utc(ev["t"]), ev["p"],
                "  fee %d (%s)" % (ev["fee"], ev["fs"]) if ev["k"] == "out" else "",
                "" if ev["acked"] else "  not acked"))
    return out.getvalue()
