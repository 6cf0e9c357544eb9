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


def test_environment_variable_turns_the_kernels_off():
    probe = "from layerwise.ops.fast.kernels import kernel; print(kernel('relu_forward'))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**os.environ, "LAYERWISE_NO_NUMBA": "1"})
    assert out.stdout.strip() == "None"



def test_preload_compiles_every_kernel_for_a_dtype():
    """After preload, every kernel has a compiled signature: none is left to compile inside a
    step (kernel(name) alone only wraps the function; it compiles on the first call). In a
    fresh process, so that no other test has compiled them first."""
    probe = (
        "from layerwise.ops.fast import kernels, vecmath\n"
        "for dtype, names in (('float64', kernels._KERNELS), ('float32', vecmath.KERNELS)):\n"
        "    assert kernels.preload(dtype)\n"
        "    print(dtype, [n for n in names if not kernels.kernel(n).signatures])\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[:2] == ["float64 []", "float32 []"], out



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
    from layerwise.ops.fast import vecmath as vm

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
    from layerwise.ops.fast import vecmath as vm

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


