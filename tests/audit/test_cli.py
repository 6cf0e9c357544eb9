"""The audit subcommands: audit, audit-data, explain, report."""

import argparse
import json
import os
import shutil

import pytest

from layerwise.audit.cost import run_cost_callback
from layerwise.cli import audit, audit_data, explain, report


def _run(module, argv):
    parser = argparse.ArgumentParser()
    module.add_parser(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.handler(args)


@pytest.fixture()
def run_copy(tiny_run, tmp_path):
    dst = str(tmp_path / "run")
    shutil.copytree(tiny_run, dst)
    return dst


def test_report_writes_the_card(run_copy, capsys):
    assert _run(report, ["report", run_copy]) == 0
    assert os.path.isfile(os.path.join(run_copy, "card.html"))
    assert "card.html" in capsys.readouterr().out


def test_run_found_by_name_under_out(run_copy):
    out, name = os.path.split(run_copy)
    assert audit.resolve_run(name, out) == run_copy
    assert audit.resolve_run(run_copy, "elsewhere") == run_copy


def test_report_missing_run_is_one_line_error(tmp_path, capsys):
    assert _run(report, ["report", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_audit_with_a_groups_csv(run_copy, tmp_path, capsys):
    path = tmp_path / "groups.csv"
    rows = ["writer,site"] + [f"w{i % 3},s{i % 2}" for i in range(500)]
    path.write_text("\n".join(rows) + "\n")
    assert _run(audit, ["audit", run_copy, "--groups", str(path), "--group-column", "site"]) == 0
    out = capsys.readouterr().out
    assert "accuracy by site" in out and "s0" in out and "ECE" in out
    with open(os.path.join(run_copy, "card.json")) as f:
        card = json.load(f)
    assert card["disaggregated"]["by_site"]["groups"]["s1"]["n"] == 250


def test_audit_group_errors(run_copy, tmp_path, capsys):
    path = tmp_path / "g.csv"
    path.write_text("a,b\n1,2\n")
    assert _run(audit, ["audit", run_copy, "--groups", str(path), "--group-column", "c"]) == 1
    assert "'c' is not a column" in capsys.readouterr().err
    plain = tmp_path / "plain.txt"
    plain.write_text("x\ny\n")
    assert _run(audit, ["audit", run_copy, "--groups", str(plain)]) == 1
    assert "one group per test example" in capsys.readouterr().err


def test_explain_writes_images(run_copy, capsys):
    assert _run(explain, ["explain", run_copy, "--index", "3", "--steps", "16"]) == 0
    out = capsys.readouterr().out
    files = sorted(os.listdir(os.path.join(run_copy, "explain")))
    assert files == ["3_integrated_gradients.png", "3_saliency.png"]
    with open(os.path.join(run_copy, "explain", files[0]), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "completeness delta" in out


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    from layerwise.train.run import make_config, start_run

    config = make_config("cnn", seed=0, epochs=1, train_subset=64)  # a conv model, in seconds
    run_dir, _ = start_run(config, out_dir=str(tmp_path_factory.mktemp("cnn")), name="c",
                           progress=False, verbose=False, callbacks=[run_cost_callback])
    return run_dir


def test_explain_grad_cam_of_a_chosen_conv_layer(cnn_run, tmp_path, capsys):
    maps = {}
    for layer in ("0", "3", None):
        save = tmp_path / str(layer)
        argv = ["explain", cnn_run, "--index", "2", "--steps", "4", "--save-dir", str(save)]
        assert _run(explain, argv + (["--layer", layer] if layer else [])) == 0
        out = capsys.readouterr().out
        assert f"Grad-CAM of conv layer {layer or '3'!r}" in out  # default: the last conv
        assert sorted(os.listdir(save)) == ["2_grad_cam.png", "2_integrated_gradients.png",
                                            "2_saliency.png"]
        maps[layer] = (save / "2_grad_cam.png").read_bytes()
    assert maps["0"] != maps["3"] and maps["3"] == maps[None]
    assert _run(explain, ["explain", cnn_run, "--index", "2", "--layer", "7"]) == 1
    err = capsys.readouterr().err
    assert "'7' is not a Conv2d" in err and "['0', '3']" in err and err.count("\n") == 1


def test_explain_index_out_of_range(run_copy, capsys):
    assert _run(explain, ["explain", run_copy, "--index", "500"]) == 1
    assert "use 0 to 499" in capsys.readouterr().err


def test_audit_data_flags_a_planted_leak(run_copy, monkeypatch, capsys):
    from layerwise.audit import report as rep

    real = rep.load_run

    def leaky(run_dir):
        run = real(run_dir)
        x, _ = rep.split_arrays(run.splits["train"])
        xt, _ = rep.split_arrays(run.splits["test"])
        xt[:7] = x[:7]  # split_arrays returns views of the test tensors: plant 7 copies
        return run

    monkeypatch.setattr(rep, "load_run", leaky)
    json_path = os.path.join(run_copy, "data.json")
    assert _run(audit_data, ["audit-data", run_copy, "--json", json_path]) == 1
    out = capsys.readouterr().out
    assert "test in train: 7 of 500 (7 exact" in out
    with open(json_path) as f:
        rec = json.load(f)
    assert [j for _, j in rec["contamination"]["test"]["exact_pairs"]] == list(range(7))


def test_audit_data_flags_test_examples_copied_into_validation(run_copy, monkeypatch, capsys):
    from layerwise.audit import report as rep

    real = rep.load_run

    def leaky(run_dir):
        run = real(run_dir)
        xv, _ = rep.split_arrays(run.splits["val"])
        xt, _ = rep.split_arrays(run.splits["test"])
        xt[[4, 9, 11]] = xv[[0, 1, 2]]  # three validation images copied into test
        return run

    monkeypatch.setattr(rep, "load_run", leaky)
    json_path = os.path.join(run_copy, "data.json")
    assert _run(audit_data, ["audit-data", run_copy, "--json", json_path]) == 1
    out = capsys.readouterr().out
    assert "test in train: 0 of 500" in out and "test in val: 3 of 500 (3 exact" in out
    assert "exact: val[0] == test[4]" in out
    with open(json_path) as f:
        rec = json.load(f)
    assert rec["contamination"]["test_in_val"]["exact_pairs"] == [[0, 4], [1, 9], [2, 11]]


def test_audit_data_bad_folds(run_copy, capsys):
    assert _run(audit_data, ["audit-data", run_copy, "--label-issues", "--folds", "1"]) == 2
    assert "--folds must be at least 2" in capsys.readouterr().err


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
    from layerwise.train.run import make_config, start_run

    config = make_config("gpt-tiny", seed=0, epochs=1, corpus_chars=3000)
    run_dir, _ = start_run(config, out_dir=str(tmp_path_factory.mktemp("gpt")), name="g",
                           progress=False, verbose=False, callbacks=[run_cost_callback])
    return run_dir


def test_text_run_card_has_attention_maps(gpt_run):
    assert _run(report, ["report", gpt_run]) == 0
    with open(os.path.join(gpt_run, "card.json")) as f:
        card = json.load(f)
    assert card["model_details"]["task"] == "lm" and "calibration" not in card
    assert card["explanations"]["attention_layers"] == 1
    with open(os.path.join(gpt_run, "card.html"), encoding="utf-8") as f:
        assert 'alt="attention maps"' in f.read()


def test_explain_a_transformer_writes_attention_maps(gpt_run, capsys):
    assert _run(explain, ["explain", gpt_run, "--index", "1"]) == 0
    assert os.listdir(os.path.join(gpt_run, "explain")) == ["1_attention.png"]
    assert "1 attention layers" in capsys.readouterr().out
    assert _run(explain, ["explain", gpt_run, "--index", "10000"]) == 1
    assert "outside the validation sequences" in capsys.readouterr().err
