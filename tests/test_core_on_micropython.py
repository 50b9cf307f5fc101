"""Run every core test module (tests/core/test_*.py) again under the
MicroPython unix port with the heap an ESP32 leaves free, so the firmware's
pure core is shown to behave the same on both interpreters."""
import os
import subprocess

import pytest

from parkgate_tools import runtime

CORE = os.path.join(runtime.ROOT, "tests", "core")
MODULES = sorted(f[:-3] for f in os.listdir(CORE) if f.startswith("test_") and f.endswith(".py"))


@pytest.mark.parametrize("module", MODULES)
def test_core_module_under_micropython(module):
    proc = subprocess.run(
        runtime.micropython_argv(os.path.join(runtime.ROOT, "tests", "mprun.py"), module),
        env=runtime.micropython_env(extra_paths=[CORE]),
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0 failed" in proc.stdout.strip().splitlines()[-1]
