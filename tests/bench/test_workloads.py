"""bench/'s workloads build and train: the benchmark is run by hand, so a workload that no
longer builds would otherwise go unnoticed until the next measurement."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import layerwise as lw


def _workloads():
    path = Path(__file__).resolve().parents[2] / "bench" / "workloads.py"
    spec = importlib.util.spec_from_file_location("bench_workloads", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


workloads = _workloads()


@pytest.mark.parametrize("name", list(workloads.WORKLOADS))
def test_each_layerwise_workload_trains(name):
    _, build_lw, _ = workloads.WORKLOADS[name]
    lw.manual_seed(0)
    params = []
    real_adam, real_adamw = lw.optim.Adam, lw.optim.AdamW

    def spy(cls):
        def make(parameters, *args, **kwargs):
            parameters = list(parameters)
            params.extend(parameters)
            return cls(parameters, *args, **kwargs)
        return make
    lw.optim.Adam, lw.optim.AdamW = spy(real_adam), spy(real_adamw)
    try:
        step = build_lw()
    finally:
        lw.optim.Adam, lw.optim.AdamW = real_adam, real_adamw
    assert params, f"{name}: no optimizer was built"
    before = [p.data.copy() for p in params]
    step()
    step()
    changed = [not np.array_equal(b, p.data) for b, p in zip(before, params)]
    assert all(np.isfinite(p.data).all() for p in params)
    assert sum(changed) == len(params), f"{name}: {changed.count(False)} parameters never moved"
    assert all(p.data.dtype == np.float32 for p in params)


@pytest.mark.parametrize("name", list(workloads.INFERENCE))
def test_inference_eager_and_compiled_agree(name):
    _, make_model, shape = workloads.INFERENCE[name]
    eager = workloads.infer_layerwise(make_model, shape)
    compiled = workloads.infer_layerwise(make_model, shape, compiled=True)
    first = eager().numpy()
    assert first.shape == (1, 10)
    for _ in range(2):  # the compiled form records on the first call and replays after
        np.testing.assert_array_equal(compiled().numpy(), first)
