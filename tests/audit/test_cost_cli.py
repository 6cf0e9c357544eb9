import argparse
import json

from layerwise.audit.cost import profile_model, run_cost_callback
from layerwise.cli.cost import add_parser
from layerwise.train.recipes import get_recipe
from layerwise.train.run import make_config


def _cli(argv):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    add_parser(sub)
    args = p.parse_args(argv)
    return args.handler(args)


def test_cost_table_for_a_recipe(capsys):
    assert _cli(["cost", "--model", "tiny", "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "one training step at batch size 8" in out and "total" in out
    # Linear(784, 64) on 8 rows: 2*8*784*64 + 8*64 forward FLOPs
    assert f"{2 * 8 * 784 * 64 + 8 * 64:,}" in out


def test_cost_json_matches_profile(capsys):
    import layerwise as lw
    assert _cli(["cost", "--model", "tiny", "--batch-size", "4", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    model = get_recipe("tiny").build(make_config("tiny")["hyperparameters"], 1, None).model
    model.train()
    x = lw.zeros(4, 1, 28, 28)
    y = lw.tensor([0, 1, 2, 3])
    import layerwise.nn.functional as F
    want = profile_model(model, x, lambda o, t: F.cross_entropy(o, t, label_smoothing=0.1), y)
    assert got["forward_flops"] == want.forward_flops
    assert got["params"] == model.num_parameters()


def test_cost_usage_errors(capsys, tmp_path):
    assert _cli(["cost"]) == 2
    assert _cli(["cost", str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err.startswith("error:")


def test_cost_of_a_run_recomputes_co2_for_another_grid(tmp_path, capsys):
    from layerwise.audit.cost import ConstantPower, CostCallback
    from layerwise.train.run import start_run

    run_dir, metrics = start_run(make_config("tiny", seed=0, epochs=1, train_subset=64),
                                 out_dir=tmp_path, progress=False, verbose=False,
                                 callbacks=[run_cost_callback])
    # what the lead's run.py patch does, with a fixed 100 W so the figures are known
    cb = CostCallback(sources=[ConstantPower(100.0)], intensity=400, pue=1.5, measure_peak=False)
    trainer = _FakeTrainer()
    cb.on_train_begin(trainer)
    cb.on_train_end(trainer)
    metrics.update(cb.metrics)
    with open(f"{run_dir}/metrics.json", "w", encoding="utf-8") as f:
        json.dump(metrics, f)
    assert _cli(["cost", run_dir, "--country", "FR", "--pue", "1.0", "--by-op"]) == 0
    out = capsys.readouterr().out
    assert "LinearFunction" in out and "recorded:" in out
    it_kwh = metrics["cost"]["energy"]["it_energy_kwh"]
    assert f"{it_kwh * 0.056:.6f} kg CO2e" in out.split("recomputed:")[1]


class _FakeTrainer:
    """What CostCallback reads from a Trainer, for a fit that ran no batch."""

    def __init__(self):
        from layerwise import nn
        self.model, self.forward, self.loss_fn = nn.Linear(2, 2), None, None
        self.global_step, self.train_loader = 0, None


def test_recomputing_co2_from_metrics_without_an_energy_record_is_one_line(capsys, tmp_path):
    from layerwise.cli.main import main

    assert main(["train", "--model", "tiny", "--epochs", "1", "--no-progress", "--no-card",
                 "--out", str(tmp_path), "--name", "r"]) == 0
    metrics_path = tmp_path / "r" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    del metrics["cost"]["energy"]
    metrics_path.write_text(json.dumps(metrics))
    capsys.readouterr()
    assert main(["cost", str(tmp_path / "r"), "--country", "FR"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "metrics.json holds no usable energy record" in err[0], err
