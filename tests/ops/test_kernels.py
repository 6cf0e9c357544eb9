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
from layerwise.ops import activation, kernels, norm

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
@pytest.mark.parametrize("affine", ["none", "weight", "weight_bias"])
def test_layer_norm_kernels_match_numpy(monkeypatch, dtype, affine):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((5, 7, 19)) * 3 + 1).astype(dtype)
    params = [rng.standard_normal(19).astype(dtype) for _ in range(("none", "weight",
                                                                      "weight_bias").index(affine))]
    probe = rng.standard_normal(x.shape).astype(dtype)
    fn = lambda a, *p: lw.nn.functional.layer_norm(a, (19,), *p)  # noqa: E731
    compiled, plain = _both_paths(monkeypatch, norm, fn, [x, *params], probe)
    for a, b in zip(compiled, plain):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype])


def test_layer_norm_kernel_sums_in_float32_stay_accurate():
    """The kernel sums float32 rows in float32: rows far from zero (mean 1000, std 0.1) and a
    constant row (variance 0, so 1/std = 1/sqrt(eps)) against float64."""
    rng = np.random.default_rng(9)
    x = (1000 + 0.1 * rng.standard_normal((4, 256))).astype(np.float32)
    x[2] = 7.5
    out = lw.nn.functional.layer_norm(lw.tensor(x), (256,), eps=1e-5).numpy()
    x64 = x.astype(np.float64)
    want = (x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + 1e-5)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, want, atol=2e-3)  # float32 inputs near 1000: ulp 6e-5
    np.testing.assert_array_equal(out[2], 0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gelu_tanh_backward_kernel_matches_numpy(monkeypatch, dtype):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((300, 41)) * 4).astype(dtype).T  # not contiguous
    probe = rng.standard_normal(x.shape).astype(dtype)
    fn = lambda a: lw.gelu(a, approximate="tanh")  # noqa: E731
    compiled, plain = _both_paths(monkeypatch, activation, fn, [x], probe)
    for a, b in zip(compiled, plain):
        np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype])


def test_environment_variable_turns_the_kernels_off():
    probe = "from layerwise.ops.kernels import kernel; print(kernel('gelu_tanh_backward'))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**os.environ, "LAYERWISE_NO_NUMBA": "1"})
    assert out.stdout.strip() == "None"


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


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kwargs", POOL_CASES)
def test_max_pool_kernels_match_numpy_with_ties_and_nan(monkeypatch, dtype, kwargs):
    from layerwise.ops import pool

    rng = np.random.default_rng(3)
    x = rng.integers(-3, 4, (8, 3, 9, 10)).astype(dtype)  # 8: the kernel's smallest batch
    x[0, 1, 2, 3] = x[1, 2, 5, 5] = np.nan
    probe = None
    results = []
    for patched in (False, True):
        if patched:
            monkeypatch.setattr(pool, "compiled", lambda name: None)
        t = lw.tensor(x, requires_grad=True)
        out = lw.nn.functional.max_pool2d(t, **kwargs)
        if probe is None:
            probe = rng.standard_normal(out.shape).astype(dtype)
        (out * lw.tensor(probe)).sum().backward()
        results.append((out.detach().numpy(), t.grad.numpy()))
    (out_a, grad_a), (out_b, grad_b) = results
    np.testing.assert_array_equal(out_a, out_b)  # the same maxima, NaN included
    # overlapping windows add their gradients in a different order: rounding only
    np.testing.assert_allclose(grad_a, grad_b, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kwargs", POOL_CASES)
def test_batch_one_inference_pool_kernel_matches_numpy_with_nan(monkeypatch, dtype, kwargs):
    from layerwise.ops import pool

    rng = np.random.default_rng(7)
    x = rng.integers(-3, 4, (1, 3, 9, 10)).astype(dtype)
    x[0, 1, 2, 3] = x[0, 2, 5, 5] = x[0, 0, 3, 4] = np.nan  # the last inside stride-3 windows
    x[0, 0, 4, :] = -np.inf
    outs = []
    for patched in (False, True):
        if patched:
            monkeypatch.setattr(pool, "compiled", lambda name: None)
        with lw.no_grad():
            outs.append(lw.nn.functional.max_pool2d(lw.tensor(x), **kwargs).numpy())
    assert outs[0].shape == outs[1].shape
    assert np.isnan(outs[0]).any()  # a NaN reached the output, so its rule was exercised
    np.testing.assert_array_equal(outs[0], outs[1])  # NaN in the same places


def test_batch_one_pool_takes_the_2x2_kernel_only_for_2x2_windows_at_stride_2(monkeypatch):
    from layerwise.ops import pool

    used = []
    real = pool.compiled
    monkeypatch.setattr(pool, "compiled", lambda name: used.append(name) or real(name))
    x = lw.tensor(np.random.default_rng(8).standard_normal((1, 2, 6, 7)))
    with lw.no_grad():
        for kwargs in (dict(kernel_size=2), dict(kernel_size=2, stride=1),
                       dict(kernel_size=2, dilation=2), dict(kernel_size=3, stride=2)):
            used.clear()
            lw.nn.functional.max_pool2d(x, **kwargs)
            assert ("max_pool_plane_2x2" in used) == (kwargs == dict(kernel_size=2)), kwargs


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_embedding_backward_kernel_matches_numpy(monkeypatch, dtype):
    from layerwise.ops import embedding

    rng = np.random.default_rng(4)
    idx = lw.tensor(rng.integers(0, 9, (6, 11)))  # repeats, and rows never drawn
    weight = rng.standard_normal((9, 5)).astype(dtype)
    probe = rng.standard_normal((6, 11, 5)).astype(dtype)
    fn = lambda w: lw.nn.functional.embedding(idx, w)  # noqa: E731
    compiled, plain = _both_paths(monkeypatch, embedding, fn, [weight], probe)
    for a, b in zip(compiled, plain):
        np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype])


def test_preload_compiles_every_kernel_for_a_dtype():
    assert kernels.preload("float64")
    assert all(kernels.kernel(name) is not None for name in kernels._KERNELS)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kwargs", [
    dict(padding=1),
    dict(stride=2, dilation=2, padding=2, groups=2),
    dict(padding=(2, 0), stride=(3, 1)),  # the last row's windows run past the bottom edge
    dict(padding="same", dilation=(1, 2)),
])
@pytest.mark.parametrize("memory", ["NCHW", "batch-last"])
def test_conv_im2col_col2im_kernels_match_numpy(monkeypatch, dtype, kwargs, memory):
    """The compiled columns against NumPy's strided view. A batch-last input (as a conv's or
    pool's output is laid out) has its padding read as zeros by the kernels, never stored."""
    from layerwise.ops import conv

    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 4, 9, 8)).astype(dtype)  # 8: the kernels' smallest batch
    if memory == "batch-last":
        x = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    w = rng.standard_normal((6, 4 // kwargs.get("groups", 1), 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    fn = lambda a, w_, b_: conv.conv2d(a, w_, b_, **kwargs)  # noqa: E731
    probe = rng.standard_normal(tuple(fn(*map(lw.tensor, (x, w, b))).shape)).astype(dtype)
    compiled, plain = _both_paths(monkeypatch, conv, fn, [x, w, b], probe)
    for a, b_ in zip(compiled, plain):
        np.testing.assert_allclose(a, b_, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("layout", ["C", "transposed", "strided", "reversed"])
def test_relu_kernel_matches_numpy_in_any_layout(monkeypatch, layout):
    rng = np.random.default_rng(6)
    base = rng.standard_normal((16, 20, 30))
    base[0, 0, :3] = [np.nan, 0.0, -0.0]
    x = {"C": base, "transposed": base.transpose(2, 0, 1), "strided": base[:, ::2, 1::3],
         "reversed": base[::-1, :, ::-1]}[layout]
    x = np.concatenate([x] * 2) if x.size < 4096 else x  # at least the kernel's minimum size
    probe = rng.standard_normal(x.shape)
    compiled, plain = _both_paths(monkeypatch, activation, lw.relu, [x], probe)
    for a, b in zip(compiled, plain):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cls, options", [
    (lw.optim.Adam, {}),
    (lw.optim.Adam, {"weight_decay": 0.1, "maximize": True}),
    (lw.optim.AdamW, {"betas": (0.8, 0.95), "eps": 1e-6}),
], ids=["adam", "adam_l2_maximize", "adamw"])
def test_adam_kernel_matches_numpy_to_the_bit(monkeypatch, dtype, cls, options):
    """The compiled update does the NumPy form's operations in the same order, so three steps
    of both give identical parameters and moments (not just close ones)."""
    from layerwise.optim import adam

    rng = np.random.default_rng(7)
    p0 = rng.standard_normal((37, 29)).astype(dtype)
    grads = [rng.standard_normal(p0.shape).astype(dtype) for _ in range(3)]

    def three_steps():
        p = lw.nn.Parameter(lw.tensor(p0.copy()))
        opt = cls([p], lr=0.01, **options)
        for g in grads:
            p.grad = lw.tensor(g.copy())
            opt.step()
        state = opt.state[p]
        return [p.data, state["exp_avg"].data, state["exp_avg_sq"].data]

    compiled = three_steps()
    monkeypatch.setattr(adam, "kernel", lambda name: None)
    plain = three_steps()
    for a, b in zip(compiled, plain):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(compiled[0], p0)  # the steps did move the parameters


def test_exp_f32_is_within_two_ulp_of_exp_and_keeps_ieee_edges():
    from layerwise.ops import kernels_vecmath as vm

    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(-87, 88, 20_000), np.linspace(-1, 1, 2_001)]).astype(np.float32)
    got = np.array([vm.exp_f32(v) for v in x], dtype=np.float32)  # scalars come back as floats
    exact = np.exp(x.astype(np.float64))
    ulp = np.abs(got - exact) / (np.spacing(exact.astype(np.float32)).astype(np.float64))
    assert ulp.max() <= 2.0, ulp.max()
    edges = np.array([-np.inf, -100.0, 0.0, 100.0, np.inf], np.float32)
    assert [vm.exp_f32(v) for v in edges] == [0.0, 0.0, 1.0, np.inf, np.inf]
    assert np.isnan(vm.exp_f32(np.float32(np.nan)))


def test_row_max_in_eight_lanes_is_the_running_maximum():
    """_row_max against one running maximum written out in Python, on every length from 1
    to 40 (the eight-column body and the tail), with the maximum at every position, and
    with NaN and -inf: a NaN wins only in column 0."""
    from layerwise.ops import kernels_vecmath as vm

    def running_max(row):
        best = row[0]
        for v in row[1:]:
            best = v if v > best else best
        return best

    rng = np.random.default_rng(9)
    rows = []
    for n in range(1, 41):
        for peak in range(n):
            row = rng.standard_normal(n).astype(np.float32)
            row[peak] = 10
            rows.append(row)
        rows.append(np.full(n, -np.inf, np.float32))
        rows.append(np.r_[np.nan, rng.standard_normal(n - 1)].astype(np.float32))
        if n > 1:
            rows.append(np.r_[rng.standard_normal(n - 1), np.nan].astype(np.float32))
    for row in rows:
        got, want = vm._row_max(row[None, :], 0, row.size), running_max(row)
        assert got == want or (np.isnan(got) and np.isnan(want)), (row, got, want)


def test_softmax_kernels_match_float64_with_masked_and_nan_rows(monkeypatch):
    from layerwise.ops import attention

    rng = np.random.default_rng(4)
    s = (rng.standard_normal((6, 50)) * 8).astype(np.float32)
    s[1, 30:] = -np.inf  # a causally masked row
    s[2] = -np.inf  # nothing to attend: zeros
    s[3, 7] = np.nan  # NaN spreads over its row, as in NumPy
    s[4, 3] = np.inf
    compiled = attention._softmax_rows_(s.copy())
    monkeypatch.setattr(attention, "kernel", lambda name: None)
    with np.errstate(invalid="ignore"):  # the inf row: inf * 0 in NumPy's form
        plain = attention._softmax_rows_(s.copy())
    np.testing.assert_array_equal(np.isnan(compiled), np.isnan(plain))
    ok = ~np.isnan(plain)
    np.testing.assert_allclose(compiled[ok], plain[ok], rtol=2e-6, atol=1e-7)
    x = s[[0, 1, 5]].astype(np.float64)
    exact = np.exp(x - x.max(1, keepdims=True))
    exact /= exact.sum(1, keepdims=True)
    np.testing.assert_allclose(compiled[[0, 1, 5]], exact, rtol=2e-6, atol=1e-9)
    assert not compiled[2].any()

    dp = rng.standard_normal(s.shape).astype(np.float32)
    p = plain.copy()
    p[3:5] = 0.1
    monkeypatch.undo()
    got = attention._softmax_backward_(dp.copy(), p)
    p64 = p.astype(np.float64)
    exact = p64 * (dp - (dp * p64).sum(1, keepdims=True))
    np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("is_causal", [True, False])
def test_attention_with_compiled_softmax_matches_numpy(monkeypatch, is_causal):
    from layerwise.ops import attention

    rng = np.random.default_rng(5)
    qkv = rng.standard_normal((2, 70, 3 * 16)).astype(np.float32)  # T=70 takes the causal split
    probe = rng.standard_normal((2, 70, 16)).astype(np.float32)
    fn = lambda a: attention.packed_self_attention(a, 2, is_causal=is_causal)  # noqa: E731
    compiled, plain = _both_paths(monkeypatch, attention, fn, [qkv], probe)
    for a, b in zip(compiled, plain):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_gelu_tanh_f32_kernels_match_float64_formula_far_into_the_tails():
    x = np.concatenate([np.linspace(-30, 30, 6001), [np.nan, np.inf, -np.inf]]).astype(np.float32)
    g = np.linspace(-2, 2, x.size).astype(np.float32)
    t = lw.tensor(x, requires_grad=True)
    out = lw.gelu(t, approximate="tanh")
    (out * lw.tensor(g)).sum().backward()
    x64 = x[:-3].astype(np.float64)
    c = np.sqrt(2 / np.pi)
    th = np.tanh(c * (x64 + 0.044715 * x64 ** 3))
    want = 0.5 * x64 * (1 + th)
    dinner = c * (1 + 3 * 0.044715 * x64 ** 2)
    dwant = g[:-3] * (0.5 * (1 + th) + 0.5 * x64 * (1 - th ** 2) * dinner)
    got, dgot = out.detach().numpy(), t.grad.numpy()
    np.testing.assert_allclose(got[:-3], want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dgot[:-3], dwant, rtol=1e-5, atol=1e-6)
    # as the NumPy form and PyTorch: -inf * (1 + tanh) = -inf * 0 is NaN
    assert np.isnan(got[-3]) and got[-2] == np.inf and np.isnan(got[-1])


def test_large_gelu_in_two_halves_gives_the_bits_of_one_pass(monkeypatch):
    """From MIN_VALUES_IN_HALVES values the float32 GELU kernels run over two halves of the
    flat arrays (on two cores where the BLAS may use two threads): an odd size, so the halves
    differ, against one pass over the whole."""
    from layerwise.backend import threads

    rng = np.random.default_rng(10)
    x = (rng.standard_normal(activation.MIN_VALUES_IN_HALVES + 4001) * 3).astype(np.float32)
    g = rng.standard_normal(x.size).astype(np.float32)
    runs = []
    for available in (True, False):
        monkeypatch.setattr(threads, "available", lambda available=available: available)
        t = lw.tensor(x.reshape(-1, 1), requires_grad=True)  # (N, 1): any shape is flattened
        out = lw.gelu(t, approximate="tanh")
        (out * lw.tensor(g.reshape(-1, 1))).sum().backward()
        runs.append((out.detach().numpy(), t.grad.numpy()))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_kernels_match_numpy_and_float64(monkeypatch, reduction):
    from layerwise.ops import loss

    rng = np.random.default_rng(6)
    x = (rng.standard_normal((300, 17)) * 6).astype(np.float32)
    t = rng.integers(0, 17, 300)
    t[::7] = -100  # ignored rows
    weights = np.linspace(0.5, 1.5, 300).astype(np.float32)

    def run():
        xt = lw.tensor(x, requires_grad=True)
        out = lw.nn.functional.cross_entropy(xt, lw.tensor(t), reduction=reduction)
        (out * lw.tensor(weights) if reduction == "none" else out).sum().backward()
        return out.detach().numpy(), xt.grad.numpy()

    compiled = run()
    monkeypatch.setattr(loss, "kernel", lambda name: None)
    plain = run()
    for a, b in zip(compiled, plain):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-7)
    # and against float64: -log softmax at the target, gradient softmax - one_hot
    x64 = x.astype(np.float64)
    lse = np.log(np.exp(x64 - x64.max(1, keepdims=True)).sum(1)) + x64.max(1)
    keep = t != -100
    rows = np.where(keep, lse - x64[np.arange(300), np.where(keep, t, 0)], 0)
    grad = np.exp(x64 - lse[:, None])
    grad[np.arange(300)[keep], t[keep]] -= 1
    grad[~keep] = 0
    if reduction == "mean":
        want, grad = rows.sum() / keep.sum(), grad / keep.sum()
    elif reduction == "sum":
        want = rows.sum()
    else:
        want, grad = rows, grad * weights[:, None]
    np.testing.assert_allclose(compiled[0], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(compiled[1], grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("shape", [(1024, 32), (37, 5), (16, 3), (5, 16), (0, 4), (4, 0)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_transpose_kernel_matches_numpy(shape, dtype):
    """The tiled transposition (the LSTM's hidden product) on whole tiles of sixteen rows, a
    remainder, only a remainder, and empty arrays."""
    src = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    dst = np.full(shape[::-1], np.nan, dtype)
    kernels.kernel("transpose_into")(src, dst)
    np.testing.assert_array_equal(dst, src.T)
