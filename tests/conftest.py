"""Each test process's BLAS runs on one thread.

`pytest -n 2` runs two workers on the two cores; with two OpenBLAS threads each (and
layerwise's two-core paths on top) the four compete for two cores: the suite took 135 s here
against 80 s with one thread each. Tests of the two-core paths ask for two threads with the
``two_blas_threads`` fixture.
"""

import os
import sys

import pytest
from threadpoolctl import threadpool_limits

from layerwise.backend import threads

# Python's bytecode cache on, in this process and in those the tests start (the xdist workers,
# the CLI and mpiexec jobs): where the environment turns it off (PYTHONDONTWRITEBYTECODE),
# every process compiled numpy, scipy, matplotlib and layerwise from source again (46 places
# in tests/ start one); `import layerwise.cli.main` took 1.49 s uncached, 0.80 s cached.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


@pytest.fixture(autouse=True, scope="session")
def one_blas_thread_per_test_process():
    with threadpool_limits(1, user_api="blas"):
        yield


@pytest.fixture
def two_blas_threads():
    with threadpool_limits(2, user_api="blas"):
        if not threads.available():
            pytest.skip("NumPy's BLAS is not a multi-threaded pthreads OpenBLAS here")
        yield


def pytest_collection_modifyitems(items):
    """The end-to-end runs marked slow first: xdist hands tests out in this order, so the
    longest start at once on both workers and the short ones fill in around them, rather than
    one long run starting last and keeping the suite waiting for it."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: order kept
