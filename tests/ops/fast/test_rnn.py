"""The numba kernels against the NumPy forms they replace (kernels.py), in float64 and float32.

The op harness already checks these ops against NumPy float64 and finite differences with
whichever path is active; here both paths run on the same inputs, so a kernel that drifts
from its NumPy form is caught even where the harness's tolerances would let it through.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import layerwise as lw
from layerwise.ops import activation, norm
from layerwise.ops.fast import kernels

pytestmark = pytest.mark.skipif(kernels.kernel("layer_norm_forward") is None,
                                reason="numba is not installed")

TOL = {np.float64: 1e-12, np.float32: 2e-5}


def _run(fn, arrays, probe):
    tensors = [lw.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    (out * lw.tensor(probe)).sum().backward()
    return [out.detach().numpy()] + [t.grad.numpy() for t in tensors]


def _both_paths(monkeypatch, module, fn, arrays, probe):
    compiled = _run(fn, arrays, probe)
    monkeypatch.setattr(module, "kernel", lambda name: None)
    plain = _run(fn, arrays, probe)
    monkeypatch.undo()
    return compiled, plain


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [True, False])
def test_lstm_cell_kernels_match_numpy(monkeypatch, dtype, bidirectional, batch_first):
    """The backward cell kernel (any dtype) and the float32 forward one (its own sigmoid and
    tanh on exp_f32) against the NumPy loop: outputs, the final states and every gradient,
    with initial states and inputs large enough to saturate some gates."""
    from layerwise.ops import rnn

    rng = np.random.default_rng(2)
    lw.manual_seed(0)
    lstm = lw.nn.LSTM(5, 6, num_layers=2, batch_first=batch_first, bidirectional=bidirectional)
    if dtype == np.float64:
        lstm = lstm.double()
    x = (rng.standard_normal((3, 7, 5)) * 4).astype(dtype)
    directions = 2 if bidirectional else 1
    h0, c0 = (rng.standard_normal((2 * directions, 3 if batch_first else 7, 6)).astype(dtype)
              for _ in range(2))
    probe = rng.standard_normal((3, 7, 6 * directions)).astype(dtype)
    results = []
    for patched in (False, True):
        if patched:
            monkeypatch.setattr(rnn, "kernel", lambda name: None)
        for p in lstm.parameters():
            p.grad = None
        tensors = [lw.tensor(a, requires_grad=True) for a in (x, h0, c0)]
        out, (h_n, c_n) = lstm(tensors[0], (tensors[1], tensors[2]))
        ((out * lw.tensor(probe)).sum() + c_n.sum()).backward()
        results.append([out.detach().numpy(), h_n.detach().numpy(), c_n.detach().numpy()]
                       + [t.grad.numpy() for t in tensors]
                       + [p.grad.numpy() for p in lstm.parameters()])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("batch_first", [True, False])
def test_lstm_reading_table_rows_matches_numpy_and_the_gathered_sequence(monkeypatch,
                                                                         batch_first):
    """float32, index=: the compiled loop reading each step's rows from the projected table,
    against the NumPy loop on the same call and against the layer run on the gathered rows
    (embedding, then the projection): outputs, final states and every gradient, the table's
    included (token ids repeat, and row 0 is never read)."""
    from layerwise.ops import rnn

    rng = np.random.default_rng(4)
    lw.manual_seed(0)
    lstm = lw.nn.LSTM(5, 6, num_layers=2, batch_first=batch_first, bidirectional=True)
    table = (rng.standard_normal((9, 5)) * 3).astype(np.float32)
    index = rng.integers(1, 9, (3, 7))  # (B, T) or (T, B): 21 draws from 8 rows
    h0, c0 = (rng.standard_normal((4, 7 if not batch_first else 3, 6)).astype(np.float32)
              for _ in range(2))
    probe = rng.standard_normal((3, 7, 12)).astype(np.float32)
    results = []
    for way in ("compiled", "numpy", "gathered"):
        monkeypatch.setattr(rnn, "kernel",
                            (lambda name: None) if way == "numpy" else kernels.kernel)
        for p in lstm.parameters():
            p.grad = None
        tensors = [lw.tensor(a, requires_grad=True) for a in (table, h0, c0)]
        if way == "gathered":
            x = lw.nn.functional.embedding(lw.tensor(index), tensors[0])
            out, (h_n, c_n) = lstm(x, (tensors[1], tensors[2]))
        else:
            out, (h_n, c_n) = lstm(lstm.project_input(tensors[0]), (tensors[1], tensors[2]),
                                   projected=True, index=index)
        ((out * lw.tensor(probe)).sum() + c_n.sum()).backward()
        results.append([out.detach().numpy(), h_n.detach().numpy(), c_n.detach().numpy()]
                       + [t.grad.numpy() for t in tensors]
                       + [p.grad.numpy() for p in lstm.parameters()])
    assert not results[0][3][0].any()  # the table row no step reads
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_allclose(a, b, rtol=TOL[np.float32], atol=TOL[np.float32])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("table", [False, True])
@pytest.mark.usefixtures("two_blas_threads")
def test_lstm_in_two_halves_of_the_batch_matches_one_loop(monkeypatch, dtype, batch_first,
                                                          table):
    """The compiled loops over two halves of an odd batch (2 and 3 rows) against one loop over
    all 5: outputs, final states and every gradient, both directions; float64 runs only the
    backward kernel in halves. A spy checks that the halves really ran."""
    from layerwise.backend import threads
    from layerwise.ops import rnn

    if table and dtype == np.float64:
        pytest.skip("the table path is the float32 model's")
    rng = np.random.default_rng(5)
    lw.manual_seed(0)
    lstm = lw.nn.LSTM(4, 6, num_layers=2, batch_first=batch_first, bidirectional=True)
    if dtype == np.float64:
        lstm = lstm.double()
    batch, steps = 5, 7
    shape = (batch, steps) if batch_first else (steps, batch)
    index = rng.integers(0, 9, shape)
    source = (rng.standard_normal((9, 4) if table else shape + (4,)) * 3).astype(dtype)
    h0, c0 = (rng.standard_normal((4, batch, 6)).astype(dtype) for _ in range(2))
    probe = rng.standard_normal(shape + (12,)).astype(dtype)
    pairs = []
    real_run_pair = threads.run_pair

    def spy(first, second):
        pairs.append(1)
        return real_run_pair(first, second)

    monkeypatch.setattr(threads, "run_pair", spy)
    results = []
    for halves in (False, True):
        monkeypatch.setattr(rnn, "MIN_BATCH_IN_HALVES", 2 if halves else 10**9)
        monkeypatch.setattr(rnn, "MIN_WORK_IN_HALVES", 0)
        for p in lstm.parameters():
            p.grad = None
        tensors = [lw.tensor(a, requires_grad=True) for a in (source, h0, c0)]
        state = (tensors[1], tensors[2])
        if table:
            out, (h_n, c_n) = lstm(lstm.project_input(tensors[0]), state, projected=True,
                                   index=index)
        else:
            out, (h_n, c_n) = lstm(tensors[0], state)
        ((out * lw.tensor(probe)).sum() + c_n.sum()).backward()
        results.append([out.detach().numpy(), h_n.detach().numpy(), c_n.detach().numpy()]
                       + [t.grad.numpy() for t in tensors]
                       + [p.grad.numpy() for p in lstm.parameters()])
    # two layers by two directions: each backward loop in halves, and in float32 each forward
    assert len(pairs) == (8 if dtype == np.float32 else 4)
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype])


def test_lstm_forward_kernel_gates_at_the_extremes():
    """The compiled gates on inf, -inf and NaN pre-activations: sigmoid 1, 0, NaN and tanh 1,
    -1, NaN, as NumPy's 0.5 tanh(0.5 a) + 0.5 and tanh give."""
    kernel = kernels.kernel("lstm_cell_forward_f32")
    h = 3
    extremes = np.array([np.inf, -np.inf, np.nan], np.float32)
    hw = np.zeros((1, 4 * h), np.float32)
    for gate in range(4):
        hw[0, gate * h:(gate + 1) * h] = extremes
    acts, c, tanh_c = np.empty((1, 4 * h), np.float32), *np.empty((2, 1, h), np.float32)
    out = np.empty((1, 1, h), np.float32)
    kernel(hw, 0, np.zeros((1, 4 * h), np.float32), np.zeros((1, 1), np.intp), 0, True,
           np.ones((1, h), np.float32), acts, c, tanh_c, out)
    sigmoid, tanh = [1, 0, np.nan], [1, -1, np.nan]
    np.testing.assert_array_equal(acts[0], sigmoid + sigmoid + tanh + sigmoid)
    np.testing.assert_array_equal(c[0], [1 + 1, 0 + 0, np.nan])  # f c_prev + i g
    np.testing.assert_allclose(out[0, 0], [np.tanh(2), 0, np.nan], rtol=0, atol=2e-7)


POOL_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=2, padding=1, ceil_mode=True),  # 2x2/2 windows over -inf padding
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(2, 3), stride=1, dilation=2, ceil_mode=True),
    dict(kernel_size=2, stride=3),  # disjoint windows with gaps between them
    dict(kernel_size=2, stride=4, dilation=2, padding=1),
]



@pytest.mark.parametrize("shape", [(1024, 32), (37, 5), (16, 3), (5, 16), (0, 4), (4, 0)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_transpose_kernel_matches_numpy(shape, dtype):
    """The tiled transposition (the LSTM's hidden product) on whole tiles of sixteen rows, a
    remainder, only a remainder, and empty arrays."""
    src = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    dst = np.full(shape[::-1], np.nan, dtype)
    kernels.kernel("transpose_into")(src, dst)
    np.testing.assert_array_equal(dst, src.T)
