"""The batched product in two halves (layerwise/ops/fast/matmul.py) against the reference, on
two cores, and where dispatch chooses it."""

import numpy as np
import pytest

import layerwise as lw
from layerwise.autograd import dispatch
from layerwise.backend import threads
from layerwise.ops.fast import matmul as fast
from layerwise.ops.matmul import MatMul
from tests.ops.fast.common import assert_close, path_and_reference


@pytest.mark.usefixtures("two_blas_threads")
@pytest.mark.parametrize("shapes", [((5, 2, 6, 3), (5, 2, 3, 4)), ((64, 16, 8), (64, 8, 16))])
def test_halves_on_two_cores_match_the_reference(monkeypatch, shapes):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    probe = rng.standard_normal(shapes[0][:-1] + shapes[1][-1:]).astype(np.float32)
    pairs = []
    real = threads.run_pair
    monkeypatch.setattr(threads, "run_pair", lambda *f: pairs.append(1) or real(*f))
    got, reference = path_and_reference(fast.MatMulInHalves, lambda a, b: a @ b, arrays, probe)
    assert len(pairs) == 2  # the forward and the backward, each split
    assert_close(got, reference, np.float32)


def _chosen(a, b):
    with dispatch.traced() as calls:
        lw.tensor(a, requires_grad=True) @ lw.tensor(b)
    (reference, arrays, params, graph), = calls
    return dispatch.choose(reference, arrays, params, graph)


@pytest.mark.usefixtures("two_blas_threads")
def test_chosen_for_batched_products_of_enough_work_only():
    big = np.ones((64, 128, 32), np.float32), np.ones((64, 32, 128), np.float32)
    assert _chosen(*big) is fast.MatMulInHalves
    assert _chosen(np.ones((4, 128, 32)), np.ones((4, 32, 128))) is MatMul  # 2 M multiply-adds
    assert _chosen(np.ones((64, 128, 32)), np.ones((32, 128))) is MatMul  # broadcast right side
    assert _chosen(np.ones((1, 2048, 32)), np.ones((1, 32, 2048))) is MatMul  # one matrix


def test_not_chosen_where_the_blas_may_use_one_thread_only():
    big = np.ones((64, 128, 32), np.float32), np.ones((64, 32, 128), np.float32)
    assert _chosen(*big) is MatMul  # the suite pins the BLAS to one thread per process
