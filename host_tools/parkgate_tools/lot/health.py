"""/healthz and /metrics of `parkgate lot run` (lot/run.py), routes of the
lot's web application (lot/web/app.py) beside the operator page, and the
bridge's health the page shows (bridge_health).

/healthz: 200 {"status": "ok", ...} when the bridge is live and the
database answers a read within HEALTH_TIMEOUT_S, else 503 with what is
wrong ("starting" and what it waits for, "bridge": "not live", "store":
the error). A systemd watchdog, a load balancer or a person with curl reads
the same body.

/metrics: the lot server's counters as one JSON object, not the Prometheus
text format through prometheus_client. The counters already live as plain
ints on the bridge, forwarder and push keeper; a JSON snapshot of them costs
no dependency on the lot machine (the Debian install stays python3-paho
and psycopg) and no second copy of each counter in a registry, and it is
read by curl, by the operator page's own scripts and, for a Prometheus
site, by its json_exporter. The keys are stable: adding one is not a
breaking change, renaming one is."""
import threading
import time

HEALTH_TIMEOUT_S = 2.0
BRIDGE_COUNTERS = ("batches", "events", "commits", "refused", "oversize", "failed", "dropped",
                   "catchups")
FORWARDER_COUNTERS = ("forwarded", "failures", "linked")
KEEPER_COUNTERS = ("connected", "resent", "passed_on", "failures")


def store_problem(store, timeout=HEALTH_TIMEOUT_S):
    """None if store answers a read within timeout s, else what went wrong."""
    answer = {}

    def read():
        try:
            store.setting("members_version")
            answer["ok"] = True
        except Exception as exc:     # the database is gone, locked, refusing
            answer["error"] = "%s: %s" % (type(exc).__name__, exc)
    thread = threading.Thread(target=read, name="healthz-read", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return "no answer within %g s" % timeout
    return None if answer.get("ok") else answer.get("error")


def health(server):
    """(HTTP status, JSON body) of /healthz for a run.LotServer."""
    doc = {"lot": server.config.lot}
    if server.waiting_for is not None:
        doc.update(status="starting", waiting_for=server.waiting_for)
        return 503, doc
    live = server.bridge.live
    problem = store_problem(server.reader)
    keeper = server.keeper
    doc.update(bridge="live" if live else "not live", store=problem or "ok",
               push_keeper="connected" if keeper is not None and keeper.connected
               else "not connected")
    ok = live and problem is None
    doc["status"] = "ok" if ok else "failing"
    return (200 if ok else 503), doc


def bridge_health(bridge):
    """{"live", "refused", "failed"} of a Bridge: connected and past the
    broker's backlog, batches refused (malformed, another lot's) and
    commits that failed. None if there is no bridge (yet)."""
    if bridge is None:
        return None
    return {"live": bool(bridge.live), "refused": int(bridge.refused),
            "failed": int(bridge.failed)}


def _counters(thing, names):
    return {name: int(getattr(thing, name)) for name in names if hasattr(thing, name)}


def metrics(server):
    """The /metrics JSON for a run.LotServer."""
    doc = {"lot": server.config.lot, "time": int(time.time()),
           "up_s": round(time.monotonic() - server.started, 1),
           "waiting_for": server.waiting_for}
    bridge = server.bridge
    if bridge is not None:
        doc["bridge"] = dict(_counters(bridge, BRIDGE_COUNTERS), live=int(bridge.live),
                             tariff_version=bridge.tariff.version)
        held = getattr(bridge, "queue_held", None)
        if held is not None:
            doc["bridge"].update(queue_held=held[0], queue_peak=held[1], queue_max=held[2])
        if bridge.forwarder is not None:
            doc["forwarder"] = _counters(bridge.forwarder, FORWARDER_COUNTERS)
    if server.keeper is not None:
        doc["push_keeper"] = _counters(server.keeper, KEEPER_COUNTERS)
    images = getattr(server, "images", None)
    if images is not None:       # the image server (lot/image_server.py)
        doc["image_server"] = dict(_counters(images, ("served", "dropped")),
                                   connected=int(images.connected.is_set()))
    return doc
