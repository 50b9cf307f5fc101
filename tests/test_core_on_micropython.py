"""Run every core test module (tests/core/test_*.py) again under the
MicroPython unix port, so the firmware's pure core is shown to behave the
same on both interpreters. Firmware and test modules run as .mpy compiled by
mpy-cross, as on a board, with the heap of a simulated gate: 64 KiB for data
plus what the firmware's code takes on this port (runtime.gate_heap)."""
import os
import subprocess

import pytest

from parkgate_tools import runtime

CORE = os.path.join(runtime.ROOT, "tests", "core")
CORE_MPY = os.path.join(runtime.BUILD_MPY, "tests")
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
                                 heap=runtime.gate_heap("unix-sim")),
        env=runtime.micropython_env(board="unix-sim", extra_paths=[compiled_core_tests()]),
        capture_output=True, text=True, timeout=600, cwd=runtime.ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0 failed" in proc.stdout.strip().splitlines()[-1]
