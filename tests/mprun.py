# Runs core test modules under the MicroPython unix port.
# usage: micropython tests/mprun.py test_frame [test_tariff ...]
# Prints one line per test and a closing "N passed, N failed" line.
import gc
import sys


def run(module_names):
    passed = 0
    failed = 0
    for name in module_names:
        module = __import__(name)
        for attr in sorted(dir(module)):
            if not attr.startswith("test_"):
                continue
            fn = getattr(module, attr)
            gc.collect()
            try:
                fn()
            except Exception as exc:
                failed += 1
                print("FAIL %s.%s: %s %s" % (name, attr, type(exc).__name__, exc))
                sys.print_exception(exc)
            else:
                passed += 1
                print("PASS %s.%s" % (name, attr))
    print("%d passed, %d failed" % (passed, failed))
    return failed


if __name__ == "__main__":
    sys.exit(1 if run(sys.argv[1:]) else 0)
