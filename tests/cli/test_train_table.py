"""`layerwise train --data TABLE --target COL` end to end: every bad input is one line and a
non-zero exit with nothing written; CSV, TSV and gzip CSV train; metrics.json holds what the
summary printed; an interrupted run resumes to the same weights, and refuses a changed file;
copies of test rows in train are refused, a few chance copies only warned about."""

import gzip
import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest

from layerwise.audit.groups import wilson_interval
from layerwise.autograd import Tensor
from layerwise.data import adult_path, diabetes_path
from layerwise.train.checkpoint import ResumeCheckpoint
from layerwise.train.finished import load_finished_run
from tests.cli.test_cli import assert_one_error_line, run_cli

FAST = ["--model", "tabular-tiny", "--no-progress", "--no-card"]
HEADER = ["age", "color", "hours", "sex", "label"]


def people(n=240, seed=0):
    """Rows of a classification table: label 'yes' mostly when age + 10 * (color == 'red')
    is over 50. Ages and hours are drawn with two decimals, so no two rows coincide."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        age, color = round(rng.uniform(18, 80), 2), rng.choice(["red", "green", "blue"])
        hours = round(rng.uniform(10, 60), 2)
        label = "yes" if age + 10 * (color == "red") + rng.gauss(0, 5) > 50 else "no"
        rows.append([str(age), color, str(hours), rng.choice(["f", "m"]), label])
    return rows


def write_table(path, rows, header=HEADER, delimiter=","):
    text = "\n".join(delimiter.join(row) for row in [header, *rows]) + "\n"
    if str(path).endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return str(path)


@pytest.fixture
def table(tmp_path):
    return write_table(tmp_path / "people.csv", people())


def read_json(path):
    with open(path) as f:
        return json.load(f)


def run_dir_of(stdout):
    """The run directory that `layerwise train` printed on its second line."""
    return stdout.splitlines()[1].removeprefix("run: ")


def train(capsys, out, *argv):
    return run_cli(capsys, "train", "--out", str(out), *FAST, *argv)


# --- bad input: one line, a non-zero exit, nothing under --out ------------------------------


def _bad_tables(tmp_path):
    one_class = [[*row[:4], "yes"] for row in people(40)]
    empty_column = [[row[0], row[1], "", row[3], row[4]] for row in people(40)]
    return {"table": write_table(tmp_path / "people.csv", people()),
            "one_class": write_table(tmp_path / "one.csv", one_class),
            "empty_column": write_table(tmp_path / "empty.csv", empty_column)}


@pytest.mark.parametrize("argv, code, fragments", [
    (["--data", "{table}"], 2, ["is a table", "--target COL"]),
    (["--target", "label"], 2, ["--target describe your own data", "--data PATH"]),
    (["--group", "sex", "--target", "label"], 2, ["--target and --group", "--data PATH"]),
    (["--data", "{table}", "--target", "label", "--image-size", "32"], 2,
     ["--image-size does not apply", "a table"]),
    (["--data", "{table}", "--target", "label", "--model", "gpt"], 2,
     ["--model gpt does not train on a table", "tabular, tabular-tiny"]),
    (["--data", "{table}", "--target", "label", "--model", "tiny"], 2,
     ["--model tiny does not train on a table"]),
    (["--data", "{table}", "--target", "income"], 1,
     ["no column 'income' (asked as target)", "age, color, hours, sex, label"]),
    (["--data", "{one_class}", "--target", "label"], 1,
     ["'label' has one value, 'yes'", "at least two classes"]),
    (["--data", "{empty_column}", "--target", "label"], 1,
     ["column 'hours' is empty", "--drop hours"]),
    (["--data", "{table}", "--target", "label", "--group", "race"], 1,
     ["no column 'race' (asked as group)", "age, color"]),
    (["--data", "{table}", "--target", "label", "--drop", "label"], 1,
     ["'label' is the target", "cannot also be", "dropped"]),
    (["--data", "{table}", "--target", "color", "--task", "regression"], 1,
     ["needs a numeric target", "'color'"]),
    (["--data", "{table}", "--target", "label", "--data-dir", "."], 2,
     ["--data-dir", "give one"]),
    (["--data", "{missing}", "--target", "label"], 1, ["no such file"]),
    (["--target", "label", "--model", "tabular"], 2, ["--data PATH"]),
    (["--model", "tabular"], 1, ["table you give", "--data PATH"]),
    (["--data", "{table}", "--target", "label", "--set", "hidden=[65536, 65536]"], 1,
     ["parameters, more than MAX_PARAMETERS"]),
    (["--data", "{table}", "--target", "label", "--set", "hidden=[0]"], 2,
     ["--set hidden=[0]", "from 1"]),
    (["--data", "{table}", "--target", "label", "--intended-users", "students"], 2,
     ["intended_users needs intended_use", "--intended-use TEXT"]),
    (["--data", "{table}", "--target", "label", "--intended-use", ""], 2,
     ['intended_use=""', "a text of 1 to 2,000 characters"]),
])
def test_bad_table_input_gives_one_line_and_writes_nothing(capsys, tmp_path, argv, code,
                                                           fragments):
    paths = _bad_tables(tmp_path) | {"missing": str(tmp_path / "missing.csv")}
    out = tmp_path / "runs"
    got, _, err = train(capsys, out, *[a.format(**paths) for a in argv])
    assert got == code, err
    assert_one_error_line(err, *fragments)
    assert not out.exists()


# --- runs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name, delimiter", [("people.csv", ","), ("people.tsv", "\t"),
                                             ("people.csv.gz", ",")])
def test_a_table_trains_and_metrics_json_holds_what_was_printed(capsys, tmp_path, name,
                                                                delimiter):
    path = write_table(tmp_path / name, people(), delimiter=delimiter)
    code, out, err = train(capsys, tmp_path / "runs", "--data", path, "--target", "label",
                           "--group", "sex", "--epochs", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"data: {path} is a .{name.split('.')[1]} file: training 'tabular-tiny'"
    run_dir = run_dir_of(out)
    metrics = read_json(os.path.join(run_dir, "metrics.json"))
    config = read_json(os.path.join(run_dir, "config.json"))
    # the file's own bytes (compressed, for the .gz) are what the run is tied to
    assert config["data"]["sha256"] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert lines[2] == f"table: {metrics['table']}"
    assert "classification of 'label' into 2 classes (no, yes), because its values are not " \
           "all numbers; 7 features from 3 columns" in lines[2]  # sex is a group, not a feature
    low, high = metrics["test_accuracy_ci95"]
    assert lines[3].startswith(f"test accuracy: {metrics['test_accuracy']:.4f}  (95% CI "
                               f"{low:.4f}-{high:.4f} over 24 test rows; the majority class "
                               f"alone {metrics['majority_accuracy']:.4f};")
    # the accuracy of the saved model, recomputed; its interval from the audit's Wilson
    run = load_finished_run(run_dir)
    x, y = (t.data for t in run.splits["test"].tensors)
    correct = int((run.model(Tensor(x)).data.argmax(1) == y).sum())
    assert metrics["test_accuracy"] == correct / len(y)
    np.testing.assert_allclose([low, high], wilson_interval(correct, len(y)), rtol=1e-12)
    assert metrics["test_accuracy"] > 0.7  # age and colour decide the label
    assert config["hyperparameters"]["batch_size"] == 19  # 192 training rows // 10
    assert metrics["split_copies"]["copies"] == 0  # the check ran, and found nothing


def test_a_regression_table_prints_its_errors_in_the_targets_units(capsys, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 2))
    y = 500 + 30 * x[:, 0] - 20 * x[:, 1] + rng.normal(scale=3, size=200)
    rows = [[f"{a:.4f}", f"{b:.4f}", f"{t:.3f}"] for (a, b), t in zip(x, y)]
    path = write_table(tmp_path / "r.csv", rows, header=["a", "b", "price"])
    code, out, err = train(capsys, tmp_path / "runs", "--data", path, "--target", "price")
    assert code == 0, err
    run_dir = run_dir_of(out)
    metrics = read_json(os.path.join(run_dir, "metrics.json"))
    assert "regression of 'price', because it is numeric with 200 distinct values" in out
    assert (f"test MAE {metrics['test_mae']:.4g}, RMSE {metrics['test_rmse']:.4g}, R^2 "
            f"{metrics['test_r2']:.4f}  (in units of 'price' over 20 test rows; predicting the "
            f"training mean: RMSE {metrics['mean_rmse']:.4g};") in out
    assert not [key for key in metrics if "accuracy" in key]


def _interrupt_after_first_epoch(monkeypatch):
    write = ResumeCheckpoint.on_epoch_end

    def on_epoch_end(self, trainer, logs):
        write(self, trainer, logs)
        if trainer.epoch == 1:
            raise KeyboardInterrupt  # what Ctrl-C raises in the training loop

    monkeypatch.setattr(ResumeCheckpoint, "on_epoch_end", on_epoch_end)


def test_an_interrupted_table_run_resumes_to_the_same_weights(capsys, tmp_path, table,
                                                              monkeypatch):
    runs = tmp_path / "runs"
    options = ["--data", table, "--target", "label", "--group", "sex", "--epochs", "3"]
    assert train(capsys, runs, *options, "--name", "straight")[0] == 0
    with monkeypatch.context() as patch:
        _interrupt_after_first_epoch(patch)
        assert train(capsys, runs, *options, "--name", "cut")[0] == 130
    assert not (runs / "cut" / "metrics.json").exists()
    code, out, err = run_cli(capsys, "train", "--resume", str(runs / "cut"), "--no-progress",
                             "--no-card")
    assert code == 0, err
    assert "test accuracy: " in out
    assert (runs / "cut" / "model.safetensors").read_bytes() == \
        (runs / "straight" / "model.safetensors").read_bytes()
    straight, cut = (read_json(runs / name / "metrics.json") for name in ("straight", "cut"))
    assert cut["test_accuracy"] == straight["test_accuracy"]
    assert cut["split_copies"] == straight["split_copies"]  # recorded when the run began


def test_resume_refuses_a_table_that_changed_since(capsys, tmp_path, table, monkeypatch):
    runs = tmp_path / "runs"
    with monkeypatch.context() as patch:
        _interrupt_after_first_epoch(patch)
        assert train(capsys, runs, "--data", table, "--target", "label", "--name", "cut")[0] \
            == 130
    with open(table, "a") as f:
        f.write("30.5,red,40.25,f,no\n")
    before = sorted(os.listdir(runs / "cut"))
    code, _, err = run_cli(capsys, "train", "--resume", str(runs / "cut"), "--no-progress",
                           "--no-card")
    assert code == 1
    assert_one_error_line(err, table, "has changed since the run was made", "restore")
    assert sorted(os.listdir(runs / "cut")) == before


# --- copies between the splits ----------------------------------------------------------------


def _with_split_column(rows, n_test):
    """The rows with a 'split' column: the last ``n_test`` are the test split, the ``n_test``
    before them the val split, the rest the train split."""
    marks = ["train"] * (len(rows) - 2 * n_test) + ["val"] * n_test + ["test"] * n_test
    return [[*row, mark] for row, mark in zip(rows, marks)]


def test_test_rows_copied_into_train_are_refused(capsys, tmp_path):
    rows = people(200)
    rows[:10] = [list(row) for row in rows[-10:]]  # 10 of the 50 test rows also in train
    path = write_table(tmp_path / "leak.csv", _with_split_column(rows, 50), HEADER + ["split"])
    out = tmp_path / "runs"
    code, _, err = train(capsys, out, "--data", path, "--target", "label", "--group", "sex")
    assert code == 1
    # the test rows are the file's lines 152-201; those of lines 192-201 were copied to the top
    assert_one_error_line(err, "10 of 50 test rows (20.00%) are exact copies of train rows",
                          "lines 192, 193, 194, 195, 196, ...", "--allow-contamination")
    assert not out.exists()
    code, stdout, err = train(capsys, out, "--data", path, "--target", "label", "--group",
                              "sex", "--allow-contamination")
    assert code == 0, err
    # audit-data finds the same copies in the finished run, and says so in its exit code
    code, stdout, err = run_cli(capsys, "audit-data", run_dir_of(stdout))
    assert code == 1 and "Traceback" not in err
    assert "10 of 50 test rows (20.00%) are exact copies of train rows (lines 192," in stdout
    assert err.strip() == "audit-data: 10 held-out examples are copies of training examples " \
                          "(listed above)"


def test_a_chance_copy_is_warned_about_once_and_recorded(capsys, tmp_path):
    rows = people(400)
    rows[0] = list(rows[-1])  # 1 of 100 test rows (1%): the threshold of chance
    path = write_table(tmp_path / "twins.csv", _with_split_column(rows, 100), HEADER + ["split"])
    code, out, err = train(capsys, tmp_path / "runs", "--data", path, "--target", "label",
                           "--group", "sex")
    assert code == 0, err
    warned = [line for line in err.splitlines() if "exact copies" in line]
    assert warned == [("warning: table: 1 of 100 test rows (1.00%) are exact copies of train "
                       "rows (lines 401); up to 1% is read as distinct records that happen to "
                       "match, so training goes on")]
    metrics = read_json(os.path.join(run_dir_of(out), "metrics.json"))
    assert metrics["split_copies"]["pairs"] == [{"other": "test", "into": "train",
                                                 "n_other": 100, "copies": 1, "share": 0.01,
                                                 "lines": [401]}]


@pytest.mark.slow
def test_the_default_table_recipe_reaches_084_on_adult(capsys, tmp_path):
    """Logistic regression reaches about 0.85 on UCI's own test split."""
    code, out, err = run_cli(capsys, "train", "--data", adult_path(), "--target", "income",
                             "--group", "sex", "--group", "race", "--no-progress", "--no-card",
                             "--out", str(tmp_path))
    assert code == 0, err
    metrics = read_json(os.path.join(run_dir_of(out), "metrics.json"))
    assert metrics["test_accuracy"] >= 0.84, out
    assert metrics["n_test"] == 16_281


def test_audit_data_and_explain_of_a_table_run_answer_in_one_line(capsys, tmp_path, table):
    code, out, err = train(capsys, tmp_path / "runs", "--data", table, "--target", "label")
    run_dir = run_dir_of(out)
    code, out, err = run_cli(capsys, "audit-data", run_dir)
    assert code == 0 and err == ""
    assert out == "table: no row of one split is an exact copy of a row of another\n"
    code, _, err = run_cli(capsys, "audit-data", run_dir, "--label-issues")
    assert code == 2
    assert_one_error_line(err, "--label-issues is for image runs", "a table run")
    code, _, err = run_cli(capsys, "explain", run_dir, "--index", "0")
    assert code == 1
    assert_one_error_line(err, "'tabular-tiny' run on a table")


def test_a_shipped_table_by_name_with_its_target_and_the_card_says_who_it_is_for(capsys,
                                                                                  tmp_path):
    out = tmp_path / "runs"
    code, stdout, err = run_cli(
        capsys, "train", "--out", str(out), "--model", "tabular-tiny", "--no-progress",
        "--data", "diabetes", "--group", "sex", "--intended-use", "Teaching regression",
        "--intended-users", "students of a statistics course")
    assert code == 0, err
    assert stdout.startswith("data: diabetes is the shipped table 'diabetes', a .csv file: "
                             "training 'tabular-tiny'\n")
    run = run_dir_of(stdout)
    config = read_json(os.path.join(run, "config.json"))
    assert config["data"]["path"] == str(Path(diabetes_path()).resolve())
    assert config["data"]["target"] == "target"  # the shipped table's own target
    card = read_json(os.path.join(run, "card.json"))
    assert card["intended_use"]["use"] == "Teaching regression"
    assert card["intended_use"]["users"] == "students of a statistics course"
    assert "students of a statistics course" in Path(run, "card.html").read_text()
    # the headline is printed last; sex 1 and 2 of 44 test patients: cells under 30 are warned
    assert stdout.rstrip().splitlines()[-1].startswith("Worst group: sex=")
    assert "not to be trusted" in stdout.rstrip().splitlines()[-1]
