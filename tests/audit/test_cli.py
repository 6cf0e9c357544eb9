"""The audit subcommands: audit, audit-data, explain, report."""

import argparse
import json
import os
import shutil

import pytest

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


def test_audit_data_bad_folds(run_copy, capsys):
    assert _run(audit_data, ["audit-data", run_copy, "--label-issues", "--folds", "1"]) == 2
    assert "--folds must be at least 2" in capsys.readouterr().err


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
    from layerwise.train.run import make_config, start_run

    config = make_config("gpt-tiny", seed=0, epochs=1, corpus_chars=3000)
    run_dir, _ = start_run(config, out_dir=str(tmp_path_factory.mktemp("gpt")), name="g",
                           progress=False, verbose=False)
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
