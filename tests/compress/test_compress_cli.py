import argparse
import json
import os

import numpy as np
import pytest

from layerwise.cli.compress import add_parser
from layerwise.compress import load_run, load_sparse_weights, sparsity
from layerwise.train.run import make_config, start_run


def _cli(argv):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    add_parser(sub)
    args = p.parse_args(argv)
    return args.handler(args)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir, _ = start_run(make_config("tiny", seed=0), out_dir=tmp_path_factory.mktemp("runs"),
                           progress=False, verbose=False)
    return run_dir


def test_compress_writes_a_smaller_run_and_a_table(tiny_run, tmp_path, capsys):
    out = tmp_path / "small"
    rc = _cli(["compress", tiny_run, "--prune", "0.8", "--finetune-epochs", "1",
               "--quantize", "int8", "--out", str(out), "--no-card"])
    assert rc == 0
    table = capsys.readouterr().out
    for label in ("size on disk", "latency b=1", "latency b=64", "test accuracy", "agreement"):
        assert label in table
    metrics = json.loads((out / "metrics.json").read_text())
    before, after = metrics["before"], metrics["after"]
    assert after["size_bytes"] < 0.3 * before["size_bytes"]  # int8: ~1/4
    assert after["nonzero"] < 0.3 * before["nonzero"]  # 80% of the weights pruned
    assert after["agreement"] >= 0.8 and before["agreement"] == 1.0
    # the float (pruned) model is a run: load_run rebuilds it; the sparse file matches it
    model, config, _ = load_run(out)
    assert sparsity(model) == pytest.approx(0.8, abs=1e-3)
    assert config["compressed_from"] == os.path.abspath(tiny_run)
    dense = load_sparse_weights(out / "model.sparse.safetensors")
    np.testing.assert_array_equal(dense["1.weight"].data, model[1].weight.data)


def test_compress_with_distillation(tiny_run, tmp_path, capsys):
    out = tmp_path / "student"
    assert _cli(["compress", tiny_run, "--distill-into", "tiny", "--distill-epochs", "1",
                 "--out", str(out), "--no-card"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"] == "tiny" and config["compression"][0]["step"] == "distill"


def test_compress_user_errors(tiny_run, tmp_path, capsys):
    assert _cli(["compress", tiny_run, "--out", str(tmp_path / "x")]) == 2
    assert "nothing to do" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    assert _cli(["compress", tiny_run, "--prune", "0.5", "--out", str(tmp_path / "full")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "not empty" in err and err.count("\n") == 1
    assert _cli(["compress", tiny_run, "--distill-into", "gpt", "--out", str(tmp_path / "g")]) == 1
    assert "image recipe" in capsys.readouterr().err and not (tmp_path / "g").exists()
    with pytest.raises(SystemExit):
        _cli(["compress", tiny_run, "--prune", "1.2", "--out", str(tmp_path / "y")])


def test_compressed_run_gets_a_card_that_names_what_it_audits(tiny_run, tmp_path, capsys):
    out = tmp_path / "q"
    assert _cli(["compress", tiny_run, "--prune", "0.5", "--quantize", "int8",
                 "--out", str(out)]) == 0
    card = json.loads((out / "card.json").read_text())
    assert (out / "card.html").is_file()
    details = card["model_details"]
    assert details["compressed_from"] == os.path.abspath(tiny_run)
    assert [step["step"] for step in details["compression"]] == ["prune", "quantize"]
    # the card evaluates the float pruned weights; the int8 figures live in metrics.json
    model, _, data = load_run(out)
    from layerwise.compress import predict
    preds, labels = predict(model, data.splits["test"])
    assert card["metrics"]["accuracy"] == pytest.approx(float((preds == labels).mean()))
    assert any("model.int8.safetensors is measured only in metrics.json" in c
               for c in card["caveats"])
