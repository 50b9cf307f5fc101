"""`make bench`: runs every benchmark module in BENCHES; each prints its
figures and its ratio against a baseline measured in the same run."""
import importlib
import sys

BENCHES = ("gate", "journal", "boot", "tariff", "bridge", "page_cost", "sync", "members",
           "central_ingest", "ota")


def main(names=None):
    for name in names or BENCHES:
        print("== %s" % name)
        sys.stdout.flush()
        importlib.import_module("parkgate_tools.bench." + name).main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
