"""The Firmware page's model (web/firmware.py serves it): per gate its
running version, download progress and rollbacks, read from the gate's
last status as the bridge stored it (PageNumbers.gates(): "fw", "ota",
"rb", firmware/docs/ota.md) and its update plan (page.ota_plan, an
lot/ota_plan.OtaPlan); the images of the lot's store (page.images, an
lot/images.ImageStore); and the operator's forms checked and written to
the plan: offer an image, reboot, cancel. Every change is written to the
audit log with the user's name ("ota-offer", "ota-reboot", "ota-cancel").

Anything refused raises ValueError (forms.BadRequest for a field) with the
text the page shows, and changes nothing."""
import json
import re

from parkgate_tools.lot.images import VERSION_MAX
from parkgate_tools.lot.ota_plan import FINISHED, HHMM
from parkgate_tools.lot.web import forms

# The status's "ota": [version, blocks_done, blocks_total, state]
OTA_STATES = {"dl": "downloading", "ck": "reading back",
              "staged": "staged, waiting for the reboot", "trial": "on trial"}
SHA_SHOWN = 12                  # hex digits of an image's SHA-256 shown
NO_STORE = "this lot server keeps no firmware images (no image store or update plan)"
_NUMBER = re.compile(r"\A[0-9]{1,10}\Z")
OFFER_FIELDS = ("target", "gate", "version", "reboot", "at", "force")
REBOOT_FIELDS = ("target", "gate", "when", "at")
CANCEL_FIELDS = ("target", "gate")


def _is_version(value):
    return type(value) is int and 0 <= value <= VERSION_MAX


def progress_text(ota):
    """"v7: 120/150 blocks (80 %), downloading" of a status's "ota"; None
    when it is null (nothing under way)."""
    if ota is None:
        return None
    if (not isinstance(ota, list) or len(ota) != 4 or not all(_is_version(x) for x in ota[:3])
            or ota[3] not in OTA_STATES):
        return "unreadable progress: %s" % json.dumps(ota)[:80]
    version, done, total, state = ota
    if state == "trial":                        # the gate sends no blocks then
        return "v%d: %s" % (version, OTA_STATES[state])
    percent = done * 100 // total if total else 0
    return "v%d: %d/%d blocks (%d %%), %s" % (version, done, total, percent, OTA_STATES[state])


def reboot_text(reboot):
    """How a plan's reboot choice reads on the page."""
    if reboot == "now":
        return "reboot as soon as staged"
    if reboot == "manual":
        return "reboot when the operator says"
    return "reboot at %s (lot time)" % reboot


def _plans(page):
    return page.ota_plan.plans() if page.ota_plan is not None else {}


def lot_gates(page, statuses=None, plans=None):
    """The ids of the lot's gates, sorted: page.gate_ids, else the gates
    that sent a status or have a plan."""
    if page.gate_ids is not None:
        return sorted(page.gate_ids)
    statuses = {g["gate"] for g in page.gates()} if statuses is None else statuses
    return sorted(set(statuses) | set(_plans(page) if plans is None else plans))


def view(page):
    """Everything the page shows, as a JSON-able dict: "gates" (one row a
    gate), "rollbacks" (one line a rolled-back version of a gate), "images"
    (newest first) and "store" (False when there is no image store)."""
    statuses = {g["gate"]: g for g in page.gates()}
    plans = _plans(page)
    rows, rollbacks = [], []
    for gate in lot_gates(page, statuses, plans):
        status, plan = statuses.get(gate, {}), plans.get(gate)
        fw, rb = status.get("fw"), status.get("rb")
        rows.append({
            "gate": gate, "state": status.get("state", "never seen"),
            "fw": fw if _is_version(fw) else None,
            "progress": progress_text(status.get("ota")),
            "trial": isinstance(status.get("ota"), list) and status["ota"][-1:] == ["trial"],
            "rb": rb if _is_version(rb) else None,
            "plan": None if plan is None else dict(
                plan, reboot_text=reboot_text(plan.get("reboot")),
                offered_local=page._local(int(plan["offered_at"]))
                if plan.get("offered_at") else None,
                finished=plan.get("state") in FINISHED),
        })
        if _is_version(rb):
            rollbacks.append({"gate": gate, "version": rb, "running": rows[-1]["fw"],
                              "source": "status"})
        for version in (plan or {}).get("rolled_back") or ():
            if version != rb:
                rollbacks.append({"gate": gate, "version": version, "running": rows[-1]["fw"],
                                  "source": "plan"})
    images = [] if page.images is None else [{
        "version": i.version, "size": i.size, "sha256": i.sha256[:SHA_SHOWN],
        "added_local": page._local(int(i.added)), "note": i.note} for i in page.images.list()]
    return {"gates": rows, "rollbacks": rollbacks, "images": images,
            "store": page.images is not None and page.ota_plan is not None}


# ---- the forms ----

def _checked(data, allowed):
    unknown = set(data) - set(allowed)
    if unknown:
        raise forms.BadRequest("unexpected field %s" % ", ".join(
            sorted(repr(n[:40]) for n in unknown)))
    return {name: data[name].strip() for name in allowed if name in data}


def _time(given, name, choices):
    """The plan's reboot value from field name: "now", "manual" or, when it
    is "at", the "HH:MM" of field at."""
    choice = given.get(name, "")
    if choice not in choices:
        raise forms.BadRequest("%s: %r is not one of %s" % (name, choice[:20], ", ".join(choices)))
    if choice != "at":
        return choice
    at = given.get("at", "")
    if not HHMM.match(at):
        raise forms.BadRequest("at: %r is not a time of day HH:MM (00:00 to 23:59, lot time)"
                               % at[:20])
    return at


def _targets(page, given, unfinished=False):
    """The gates a form names: field target "all" (every gate of the lot;
    unfinished: those whose plan is under way) or "gate" with field gate."""
    plans = _plans(page)
    target = given.get("target", "gate")
    if target == "all":
        gates = lot_gates(page, plans=plans)
        if unfinished:
            gates = [g for g in gates if g in plans and plans[g].get("state") not in FINISHED]
            if not gates:
                raise ValueError("no gate of lot %s has an update under way" % page.lot)
        if not gates:
            raise ValueError("lot %s has no gates yet" % page.lot)
        return gates
    if target != "gate":
        raise forms.BadRequest("target: %r is not gate or all" % target[:20])
    gate = forms.gate(given.get("gate", ""))
    if gate not in lot_gates(page, plans=plans):
        raise ValueError("gate %s is not a gate of lot %s" % (gate, page.lot))
    if unfinished and (gate not in plans or plans[gate].get("state") in FINISHED):
        raise ValueError("gate %s has no update under way" % gate)
    return [gate]


def _need_store(page):
    if page.images is None or page.ota_plan is None:
        raise ValueError(NO_STORE)


def offer(page, data, who):
    """Offer an image (field version) to one gate or all with the reboot
    choice (reboot: now, at with field at HH:MM, manual); field force=1
    offers it to a gate that rolled it back. Returns (gates, version, reboot)."""
    _need_store(page)
    given = _checked(data, OFFER_FIELDS)
    text = given.get("version", "")
    if not _NUMBER.match(text) or not 1 <= int(text) <= VERSION_MAX:
        raise forms.BadRequest("version: %r is not an image version (1 to %d)" % (
            text[:20], VERSION_MAX))
    version = int(text)
    reboot = _time(given, "reboot", ("now", "at", "manual"))
    if page.images.get(version) is None:
        raise ValueError("image version %d is not in the lot's image store (parkgate lot image "
                         "add FILE --version %d adds it)" % (version, version))
    gates = _targets(page, given)
    force = given.get("force", "") not in ("", "0")
    plans = _plans(page)
    for gate in gates if not force else ():     # all checked before any is written
        if version in ((plans.get(gate) or {}).get("rolled_back") or ()):
            raise ValueError("gate %s rolled version %d back: not offered to any gate (offer "
                             "it \"even if rolled back\" if the cause was not the image)"
                             % (gate, version))
    page.ota_plan.offer(gates, version, reboot, force=force)
    page.store.audit(who, "ota-offer", {"gates": gates, "version": version, "reboot": reboot,
                                        "force": force})
    return gates, version, reboot


def reboot(page, data, who):
    """Set when the gates named reboot into their staged image (when: now,
    or at with field at HH:MM). Returns (gates, at)."""
    _need_store(page)
    given = _checked(data, REBOOT_FIELDS)
    at = _time(given, "when", ("now", "at"))
    gates = _targets(page, given, unfinished=True)
    page.ota_plan.reboot(gates, at)
    page.store.audit(who, "ota-reboot", {"gates": gates, "at": at})
    return gates, at


def cancel(page, data, who):
    """Cancel the update of the gates named. Returns the gates."""
    _need_store(page)
    gates = _targets(page, _checked(data, CANCEL_FIELDS), unfinished=True)
    page.ota_plan.cancel(gates)
    page.store.audit(who, "ota-cancel", {"gates": gates})
    return gates
