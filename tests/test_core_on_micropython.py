"""Run every core test module (tests/core/test_*.py) again on the gate's own
image (the 32-bit unix-sim build with the firmware frozen in), so the pure
core that ships is shown to behave as it does on CPython. The test modules
are compiled to .mpy by the same mpy-cross; the firmware is the image's."""
import os
import subprocess

import pytest

from parkgate_tools import runtime

CORE = os.path.join(runtime.ROOT, "tests", "core")
CORE_MPY = os.path.join(runtime.BUILD_MPY, "tests")
# The test modules and the data they build live in the heap too (the gate
# code does not: it is frozen), so they get more than a gate's 64 KiB.
CORE_TEST_HEAP = "256k"
MODULES = sorted(f[:-3] for f in os.listdir(CORE) if f.startswith("test_") and f.endswith(".py"))


def compiled_core_tests():
    for name in os.listdir(CORE):
        if name.endswith(".py"):
            source = os.path.join(CORE, name)
            target = os.path.join(CORE_MPY, name[:-3] + ".mpy")
            if not os.path.exists(target) or os.path.getmtime(target) < os.path.getmtime(source):
                runtime.compile_mpy(source, target)
    return CORE_MPY


@pytest.mark.parametrize("module", MODULES)
def test_core_module_under_micropython(module):
    proc = subprocess.run(
        runtime.micropython_argv(os.path.join(runtime.ROOT, "tests", "mprun.py"), module,
                                 heap=CORE_TEST_HEAP),
        env=runtime.micropython_env(extra_paths=[compiled_core_tests()]),
        capture_output=True, text=True, timeout=600, cwd=runtime.ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0 failed" in proc.stdout.strip().splitlines()[-1]


def test_the_gate_code_imports_nothing_of_the_host_side():
    # The runs above have the host side (parkgate_host, never frozen) on
    # MICROPYPATH beside the image: a gate module importing it would pass
    # here and fail on a board.
    folder = os.path.join(runtime.FIRMWARE, "parkgate")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                for line in f:
                    words = line.split()
                    assert not (words[:1] in (["import"], ["from"]) and len(words) > 1
                                and words[1].startswith("parkgate_host")), (name, line)
