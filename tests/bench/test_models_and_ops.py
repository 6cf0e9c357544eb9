"""bench/models.py and bench/ops.py still build and run in layerwise: the suite and the op
sweep are run by hand against PyTorch, so an entry that no longer builds would otherwise go
unnoticed until the next measurement. No torch needed; one run of each entry."""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

import layerwise as lw

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


models = _load("models")
ops = _load("ops")


@pytest.mark.parametrize("name", list(models.SUITE))
def test_each_suite_model_trains_and_infers_in_layerwise(name):
    spec = models.SUITE[name]
    step = models.training_step(name, "layerwise")
    loss = step().item()
    # an untrained classifier's loss starts near log(classes); far off means a broken model
    assert math.isfinite(loss) and abs(loss - math.log(spec.classes)) < 2.0, (name, loss)
    out = models.inference(name, "layerwise")()
    assert out.shape[0] == 1 and out.shape[-1] == spec.classes, (name, out.shape)
    assert out.dtype == lw.float32 and out.grad_fn is None and np.isfinite(out.numpy()).all()


def test_the_models_script_rejects_an_unknown_model(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["models.py", "gpt", "resnet50"])
    with pytest.raises(SystemExit) as exit_:
        models.main()
    assert exit_.value.code == 2
    assert "resnet50" in capsys.readouterr().err


def test_the_table_without_torch_prints_layerwise_alone(capsys):
    models.print_table({"mlp": ({"layerwise": 0.004}, {"layerwise": 0.0005})}, 2, aa=False,
                       quick=True)
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| mlp"))
    assert row == "| mlp | 4.00 | n/a | n/a | 0.50 | n/a | n/a |"


@pytest.mark.parametrize("op", ops.OPS, ids=[op.name for op in ops.OPS])
def test_each_op_sweep_entry_runs_forward_and_backward_in_layerwise(op):
    label = next(iter(op.sizes))
    forward, forward_backward = ops.runs(op, label, "layerwise")
    assert forward().grad_fn is None
    forward_backward()


def test_every_layer_and_functional_is_swept_or_excused():
    covered = {op.name for op in ops.OPS} | {name for op in ops.OPS for name in op.covers}
    containers = {"Module", "Sequential", "ModuleList", "ModuleDict", "Parameter",
                  "IncompatibleKeys"}
    layers = {n for n in lw.nn.__all__ if n[0].isupper() and n not in containers}
    public = layers | set(lw.nn.functional.__all__)
    missing = sorted(public - covered - set(ops.NOT_SWEPT))
    assert not missing, f"add these to bench/ops.py's OPS, or to NOT_SWEPT with a reason: {missing}"


def test_the_aa_table_sets_each_contender_beside_its_twin(capsys):
    seconds = {"layerwise": 0.010, "layerwise'": 0.011}
    models.print_table({"gru": (seconds, {"layerwise": 0.002, "layerwise'": 0.001})}, 2,
                       aa=True, quick=False)
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| gru"))
    assert row == "| gru | layerwise | 10.00 | 11.00 | 1.10x | 2.00 | 1.00 | 0.50x |"


def test_the_op_table_puts_the_worst_first_and_takes_the_median(capsys):
    rows = [("add", "mlp", "forward", {"layerwise": 2e-6, "pytorch": 1e-6}),  # 0.50x
            ("exp", "mlp", "forward", {"layerwise": 1e-6, "pytorch": 4e-6}),  # 4.00x
            ("exp", "mlp", "fwd+bwd", {"layerwise": 4e-6, "pytorch": 1e-6})]  # 0.25x
    ops.print_table(rows, 2, quick=True)
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith(("| add", "| exp"))]
    assert [line.split(" | ")[-1] for line in table] == ["0.25x |", "0.50x |", "4.00x |"]
    assert "median speed, forward: 2.25x over 2 rows" in out  # (0.5 + 4) / 2
    assert "median speed, all: 0.50x" in out
    assert "QUICK SMOKE RUN" in out
    ops.print_table([(n, s, p, {"layerwise": t["layerwise"]}) for n, s, p, t in rows], 2, False)
    alone = capsys.readouterr().out
    assert "PyTorch" not in alone and "| exp | mlp | fwd+bwd | 4.0 |" in alone
