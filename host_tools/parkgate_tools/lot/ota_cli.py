"""`parkgate lot image add|list|offer|reboot|cancel|status`: the lot's firmware
images (state/images, lot/images.py) and the plan of which gate takes
which and when it reboots into it (state/ota, lot/ota_plan.py). The image
server of `parkgate lot run` does the sending; these commands only write
the files it reads."""
import time

from parkgate_tools.lot.config import load
from parkgate_tools.lot.ota_plan import FINISHED, lot_stores

BLOCK = 4096


def _gates(config, args):
    if args.all == bool(args.gates):
        raise ValueError("name gates with --gate G (repeatable) or --all")
    return [g.id for g in config.gates] if args.all else [config.gate(g).id for g in args.gates]


def _planned(config, args, plan):
    # the gates named, or with --all those whose plan is under way
    gates = _gates(config, args)
    if args.all:
        plans = plan.plans()
        gates = [g for g in gates if g in plans and plans[g]["state"] not in FINISHED]
        if not gates:
            raise ValueError("no gate has a plan under way")
    return gates


def add(args):
    """`parkgate lot image add DIR FILE --version N [--note T]`."""
    images, _ = lot_stores(load(args.dir))
    with open(args.file, "rb") as f:
        image = images.add(f.read(), args.version, args.note or "")
    print("image %d: %d bytes, sha256 %s" % (image.version, image.size, image.sha256))
    return 0


def list_images(args):
    """`parkgate lot image list DIR`: newest first."""
    images, _ = lot_stores(load(args.dir))
    for image in images.list():
        print("%d\t%d bytes\t%s\t%s\t%s" % (
            image.version, image.size, image.sha256[:16],
            time.strftime("%Y-%m-%d %H:%M", time.gmtime(image.added)), image.note))
    return 0


def offer(args):
    """`parkgate lot image offer DIR N (--gate G ... | --all) [--reboot now|HH:MM|manual]
    [--force]`."""
    config = load(args.dir)
    images, plan = lot_stores(config)
    if images.get(args.version) is None:
        raise ValueError("no image of version %d: `parkgate lot image add` it first" %
                         args.version)
    gates = _gates(config, args)
    for gate in plan.offer(gates, args.version, args.reboot, force=args.force):
        print("%s: version %d offered, reboot %s" % (gate, args.version, args.reboot))
    return 0


def reboot(args):
    """`parkgate lot image reboot DIR (--gate G ... | --all) [--at now|HH:MM]`:
    with --all, the gates whose plan is under way."""
    config = load(args.dir)
    _, plan = lot_stores(config)
    gates = _planned(config, args, plan)
    for gate in plan.reboot(gates, args.at):
        print("%s: reboot %s once staged" % (gate, args.at))
    return 0


def cancel(args):
    """`parkgate lot image cancel DIR (--gate G ... | --all)`: with --all,
    the gates whose plan is under way."""
    config = load(args.dir)
    _, plan = lot_stores(config)
    gates = _planned(config, args, plan)
    for gate in plan.cancel(gates):
        print("%s: plan cancelled" % gate)
    return 0


def status(args):
    """`parkgate lot image status DIR`: per gate its running version, plan,
    progress and rollbacks."""
    config = load(args.dir)
    _, plan = lot_stores(config)
    plans = plan.plans()
    for gate in (g.id for g in config.gates):
        p = plans.get(gate)
        if p is None:
            print("%s: no plan" % gate)
            continue
        running = p.get("running")
        progress = p.get("progress")
        done = ""
        if progress and progress[1]:
            done = ", %d/%d blocks (%d%%)" % (progress[0], progress[1],
                                               100 * progress[0] // progress[1])
        print("%s: running %s; version %d %s, reboot %s%s; rolled back: %s" % (
            gate, "?" if running is None else running, p["version"], p["state"], p["reboot"],
            done, ", ".join(str(v) for v in p.get("rolled_back", [])) or "none"))
    return 0
