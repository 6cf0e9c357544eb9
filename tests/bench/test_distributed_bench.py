"""bench/distributed.py: its model of a ring allreduce against hand-computed figures, and one
quick run through mpiexec (the measurement itself is run by hand, never timed in tests)."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
spec = importlib.util.spec_from_file_location("bench_distributed", BENCH / "distributed.py")
distributed = importlib.util.module_from_spec(spec)
spec.loader.exec_module(distributed)


def test_the_fit_recovers_a_line_and_two_ranks_cost_what_was_measured():
    a, b = 50e-6, 1e-9  # 50 us and 1 GB/s
    sweep = {n: a + b * n for n in (4096, 65536, 1 << 20, 1 << 24)}
    fit_a, fit_b = distributed.fit_latency_bandwidth(sweep)
    assert fit_a == pytest.approx(a, rel=1e-9) and fit_b == pytest.approx(b, rel=1e-9)
    # two ranks: what the sweep measured; 8 ranks: 14 latencies of a/2, 14/8 of the bytes
    assert distributed.ring_allreduce_seconds(1 << 20, 2, a, b) == pytest.approx(sweep[1 << 20])
    assert distributed.ring_allreduce_seconds(1 << 20, 8, a, b) == pytest.approx(
        14 * a / 2 + 14 / 8 * (1 << 20) * b)


@pytest.mark.skipif(shutil.which("mpiexec", path=str(Path(sys.executable).parent)) is None,
                    reason="mpiexec (the mpi extra) is not installed")
def test_a_quick_run_prints_both_tables():
    done = subprocess.run([sys.executable, str(BENCH / "distributed.py"), "--quick", "mlp"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| mlp (2.6 MiB of gradients, 1 bucket(s)) |" in done.stdout
    assert "Allreduce on 2 ranks: t = " in done.stdout and "| mlp | " in done.stdout
