"""Running real MPI jobs from the tests: ``mpiexec -n N python SCRIPT RESULTS_DIR`` whose
ranks each write ``RESULTS_DIR/rank-R.json`` (a file each: mpiexec may interleave long lines
of the ranks' stdout); skipped, with the reason, where MPI is not installed."""

import json
import os
import subprocess
import sys
import tempfile

import pytest

from layerwise.distributed import DistributedError
from layerwise.distributed.launch import find_mpiexec

JOB_TIMEOUT = 90  # seconds: a job here takes 2-8 s; a hung one must not stall the suite
# Each rank compiling numba's kernels would double a small job's time; the NumPy forms run.
# A short collective timeout, so that a rank that hangs fails the test quickly.
JOB_ENV = {**os.environ, "LAYERWISE_NO_NUMBA": "1", "LAYERWISE_DIST_TIMEOUT": "30"}


def mpiexec_or_skip():
    try:
        return find_mpiexec()
    except DistributedError as err:
        pytest.skip(f"MPI is not installed here: {err}")


def run_job(nproc, script):
    """[what each rank wrote], by rank; fails with the job's stderr."""
    mpiexec = mpiexec_or_skip()
    with tempfile.TemporaryDirectory() as results:
        job = subprocess.run([mpiexec, "-n", str(nproc), sys.executable, str(script), results],
                             capture_output=True, text=True, timeout=JOB_TIMEOUT, env=JOB_ENV,
                             check=False)
        assert job.returncode == 0, f"the job failed ({job.returncode}): {job.stderr[-3000:]}"
        written = sorted(os.listdir(results))
        assert written == [f"rank-{r}.json" for r in range(nproc)], (written, job.stderr[-2000:])
        return [_read_json(os.path.join(results, name)) for name in written]


def _read_json(path):
    with open(path) as f:
        return json.load(f)
