"""The glibc tuning of allocator.py: on by default on Linux, off with LAYERWISE_SYSTEM_MALLOC=1.

Checked in fresh interpreters, because the settings are applied once, at import.
"""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="glibc mallopt is Linux-only")

PROBE = "import layerwise.backend.allocator as a, layerwise; print(a.applied)"


def _applied(**env):
    out = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **env},
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_settings_take_effect_on_import():
    assert _applied(LAYERWISE_SYSTEM_MALLOC="0") == "True"


def test_environment_variable_keeps_the_system_defaults():
    assert _applied(LAYERWISE_SYSTEM_MALLOC="1") == "False"


CHURN = """
import resource, numpy as np, layerwise

def churn():  # the shape of a training step: a few MiB-sized arrays made and freed
    for _ in range(20):
        a = np.ones(6 * 2**20 // 8); b = a * 2; c = b + a; del a, b; d = c * 3; del c, d

churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(system_malloc):
    out = subprocess.run([sys.executable, "-c", CHURN], capture_output=True, text=True, check=True,
                         env={**os.environ, "LAYERWISE_SYSTEM_MALLOC": system_malloc})
    return int(out.stdout)


def test_freed_memory_is_reused_without_page_faults():
    """Once warm, the churn runs without faulting fresh pages in; glibc's defaults trim the
    heap between steps and fault ~20k pages back (measured: 0 against 19,920)."""
    assert _page_faults("0") < 500
    assert _page_faults("1") > 5000  # the control: the default really does fault
