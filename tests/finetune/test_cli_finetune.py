"""`layerwise finetune RUN ...` on a hand-made source run."""

import argparse
import json
import os

import numpy as np
import pytest

import layerwise as lw
from layerwise.cli.finetune import add_parser, parse_classes
from layerwise.finetune.label_efficiency import Classifier
from layerwise.serialization import load, save


def _source_run(tmp_path):
    lw.manual_seed(0)
    model = Classifier("mlp", num_classes=5, width=16)
    run = tmp_path / "source"
    run.mkdir()
    save(model.state_dict(), run / "model.safetensors")
    (run / "config.json").write_text(json.dumps(
        {"model": {"arch": "mlp", "width": 16, "num_classes": 5},
         "data": {"pretrain_classes": [0, 1, 2, 3, 4]}}))
    return run, model


def _args(argv):
    p = argparse.ArgumentParser()
    add_parser(p.add_subparsers())
    return p.parse_args(argv)


def test_finetune_writes_a_run_with_frozen_features_and_a_table(tmp_path, capsys):
    run, source = _source_run(tmp_path)
    args = _args(["finetune", str(run), "--data", "digits:5-9", "--labels-per-class", "2",
                  "--freeze", "features.*", "--compare-scratch", "--epochs", "1",
                  "--min-steps", "5", "--out", str(tmp_path / "runs"), "--name", "ft"])
    assert args.handler(args) == 0
    out = tmp_path / "runs" / "ft"
    assert sorted(os.listdir(out)) == ["config.json", "metrics.json", "model.safetensors",
                                       "report"]
    tuned = load(out / "model.safetensors")
    np.testing.assert_array_equal(tuned["features.1.weight"].numpy(),
                                  source.features[1].weight.detach().numpy())
    assert tuned["head.weight"].shape == (5, 16)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["table"]["2"]) == {"fine-tuned", "scratch"}
    config = json.loads((out / "config.json").read_text())
    assert config["classes"] == [5, 6, 7, 8, 9] and config["head"] == "head"
    assert "| 2 |" in capsys.readouterr().out


def test_user_errors_are_one_line(tmp_path, capsys):
    run, _ = _source_run(tmp_path)
    args = _args(["finetune", str(run), "--freeze", "encoder.*", "--out", str(tmp_path)])
    assert args.handler(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "encoder.*" in err and err.count("\n") == 1
    args = _args(["finetune", str(tmp_path / "nope")])
    assert args.handler(args) == 1 and "not a directory" in capsys.readouterr().err


def test_parse_classes():
    assert parse_classes("digits") == list(range(10))
    assert parse_classes("digits:5-9") == [5, 6, 7, 8, 9]
    assert parse_classes("digits:1,7") == [1, 7]
    for bad in ("cifar", "digits:3", "digits:x-9", "digits:8-12"):
        try:
            parse_classes(bad)
        except ValueError as err:
            assert repr(bad) in str(err)
        else:
            raise AssertionError(f"{bad} accepted")


def test_finetune_a_layerwise_train_run_replaces_its_last_linear(tmp_path):
    from layerwise.train.run import make_config, start_run

    config = make_config("tiny", seed=0, epochs=1, train_subset=200)
    source, _ = start_run(config, out_dir=tmp_path, progress=False, verbose=False)
    args = _args(["finetune", source, "--data", "digits:0,1,2", "--labels-per-class", "2",
                  "--freeze", "1.*", "--epochs", "1", "--min-steps", "3",
                  "--out", str(tmp_path), "--name", "ft"])
    assert args.handler(args) == 0
    tuned = load(tmp_path / "ft" / "model.safetensors")
    assert tuned["4.weight"].shape == (3, 64)  # the new head (after Dropout): 3 classes
    before = load(os.path.join(source, "model.safetensors"))
    np.testing.assert_array_equal(tuned["1.weight"].numpy(), before["1.weight"].numpy())


@pytest.mark.parametrize("model, quoted", [
    ({"arch": "mlp", "num_classes": 5}, "width is missing"),
    ({"arch": "mlp", "num_classes": 5, "width": 10**12}, "1000000000000"),
    ({"arch": "resnet", "num_classes": 5, "width": 16}, "'resnet'"),
    ({"arch": "mlp", "num_classes": "5", "width": 16}, '"5"'),
])
def test_a_crafted_label_efficiency_config_is_one_line_before_building(tmp_path, capsys, model,
                                                                       quoted):
    run, _ = _source_run(tmp_path)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "model": model}))
    args = _args(["finetune", str(run), "--out", str(tmp_path / "runs")])
    assert args.handler(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.json model" in err and quoted in err, err


def test_a_taken_name_is_refused_before_any_training(tmp_path, capsys, monkeypatch):
    run, _ = _source_run(tmp_path)
    (tmp_path / "runs" / "taken").mkdir(parents=True)
    from layerwise.finetune import label_efficiency

    def no_training(*args, **kwargs):
        raise AssertionError("trained before the name was checked")

    monkeypatch.setattr(label_efficiency, "adapt", no_training)
    args = _args(["finetune", str(run), "--out", str(tmp_path / "runs"), "--name", "taken"])
    assert args.handler(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err
    assert os.listdir(tmp_path / "runs" / "taken") == []


def test_a_failed_fine_tune_leaves_no_run_directory(tmp_path, monkeypatch):
    run, _ = _source_run(tmp_path)
    from layerwise.finetune import label_efficiency

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(label_efficiency, "adapt", interrupted)
    args = _args(["finetune", str(run), "--out", str(tmp_path / "runs"), "--name", "ft"])
    with pytest.raises(KeyboardInterrupt):
        args.handler(args)
    assert not (tmp_path / "runs" / "ft").exists()
