"""run_pair (backend/threads.py): both results, errors from either half, the BLAS's thread
count restored, and the serial fallback where the BLAS may use one thread only."""

import threading

import numpy as np
import pytest

from layerwise.backend import threads

two_cores = pytest.mark.usefixtures("two_blas_threads")


def _thread_names():
    return (lambda: threading.current_thread().name), (lambda: threading.current_thread().name)


def test_returns_both_results_in_order():
    a = np.arange(12.0).reshape(3, 4)
    assert threads.run_pair(lambda: a.sum(), lambda: (a @ a.T).trace()) == (66.0, (a * a).sum())


@two_cores
def test_second_half_runs_on_another_thread_and_blas_threads_come_back():
    before = threads.blas_threads()
    first, second = threads.run_pair(*_thread_names())
    assert first == threading.current_thread().name
    assert second == "layerwise-half"
    assert threads.blas_threads() == before
    # the parked OpenBLAS workers restart: a product after the pair still multiplies right
    a = np.random.default_rng(0).standard_normal((300, 300))
    np.testing.assert_allclose(a @ a.T, np.einsum("ik,jk->ij", a, a), rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("failing", ["first", "second"])
def test_an_error_in_either_half_reaches_the_caller_and_the_pair_still_works(failing):
    def boom():
        raise ValueError(f"{failing} failed")

    halves = (boom, lambda: 2) if failing == "first" else (lambda: 1, boom)
    before = threads.blas_threads()
    with pytest.raises(ValueError, match=f"{failing} failed"):
        threads.run_pair(*halves)
    assert threads.blas_threads() == before
    assert threads.run_pair(lambda: 1, lambda: 2) == (1, 2)


def test_one_blas_thread_means_one_thread_here_too():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        assert not threads.available()
        first, second = threads.run_pair(*_thread_names())
    me = threading.current_thread().name
    assert first == second == me


@two_cores
def test_a_pair_inside_a_half_runs_serially_instead_of_waiting_for_itself():
    inner = threads.run_pair(lambda: threads.run_pair(*_thread_names()), lambda: None)[0]
    assert inner[0] == inner[1] == threading.current_thread().name
