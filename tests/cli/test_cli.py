"""The `layerwise` command: bad input gives one clear line, runs land in fresh directories,
a SIGKILLed run resumes to the same bytes, and the default recipe reaches its target."""

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from layerwise.cli.main import main
from layerwise.train import RECIPES

CLI = [sys.executable, "-m", "layerwise.cli.main"]
FAST = ["--model", "tiny", "--no-progress"]


def run_cli(capsys, *argv):
    """(exit code, stdout, stderr) of main(argv), in this process."""
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse exits by itself on usage errors
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(err, *fragments):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("argv, code, fragments", [
    (["--epochs", "0"], 2, ["--epochs", "must be >= 1, got 0"]),
    (["--epochs", "-1"], 2, ["--epochs", "got -1"]),
    (["--epochs", "two"], 2, ["--epochs", "'two'"]),
    (["--batch-size", "0"], 2, ["--batch-size"]),
    (["--lr", "-0.1"], 2, ["--lr", "positive"]),
    (["--lr", "nan"], 2, ["--lr"]),
    (["--seed", "-3"], 2, ["--seed"]),
    (["--checkpoint-every", "0"], 2, ["--checkpoint-every"]),
    (["--model", "resnet9000"], 2, ["unknown model 'resnet9000'", "mlp", "tiny"]),
    (["--bogus"], 2, ["unrecognized arguments: --bogus"]),
])
def test_bad_options_give_one_line_and_exit_2(capsys, tmp_path, argv, code, fragments):
    got, out, err = run_cli(capsys, "train", "--out", str(tmp_path), *argv)
    assert got == code
    assert_one_error_line(err, *fragments)
    assert os.listdir(tmp_path) == []  # nothing was started


def test_missing_data_dir_is_an_error_before_any_run_dir(capsys, tmp_path):
    missing = tmp_path / "no-such-mnist"
    code, _, err = run_cli(capsys, "train", "--out", str(tmp_path / "runs"), "--data-dir",
                           str(missing), *FAST)
    assert code == 1
    assert_one_error_line(err, str(missing), "does not exist", "train-images-idx3-ubyte")
    assert not (tmp_path / "runs").exists()


def test_resume_errors(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--resume", str(tmp_path / "gone"))
    assert code == 1
    assert_one_error_line(err, "no run directory", "gone")

    code, _, err = run_cli(capsys, "train", "--resume", str(tmp_path), "--lr", "0.1")
    assert code == 2
    assert_one_error_line(err, "--resume", "drop --lr")

    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "train", "--resume", str(tmp_path / "empty"))
    assert code == 1
    assert_one_error_line(err, "config.json is missing")


def test_list_names_every_recipe(capsys):
    code, out, _ = run_cli(capsys, "train", "--list")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == len(RECIPES)
    for line, (name, recipe) in zip(lines, RECIPES.items()):
        assert line.startswith(name) and recipe.description in line


def test_runs_go_to_fresh_directories_and_names_are_not_reused(capsys, tmp_path):
    out = str(tmp_path)
    code, stdout, _ = run_cli(capsys, "train", "--out", out, "--epochs", "1", *FAST)
    assert code == 0
    first = stdout.splitlines()[0].removeprefix("run: ")
    assert os.path.dirname(first) == out and os.path.basename(first).startswith("tiny-")
    assert "test accuracy: " in stdout
    files = set(os.listdir(first))
    assert {"config.json", "history.jsonl", "metrics.json", "model.safetensors",
            "best.safetensors", "last.json", "last.safetensors"} <= files
    metrics = json.loads(Path(first, "metrics.json").read_text())
    assert {"test_accuracy", "val_accuracy", "train_seconds", "params"} <= set(metrics)
    assert metrics["params"] == 784 * 64 + 64 + 64 * 10 + 10
    config = json.loads(Path(first, "config.json").read_text())
    assert config["recipe"] == "tiny" and config["seed"] == 0
    assert config["hyperparameters"]["epochs"] == 1 and "layerwise_version" in config

    code, stdout, _ = run_cli(capsys, "train", "--out", out, "--epochs", "1", "--name", "mine",
                              *FAST)
    assert code == 0 and stdout.startswith(f"run: {os.path.join(out, 'mine')}\n")
    before = Path(out, "mine", "model.safetensors").read_bytes()
    code, _, err = run_cli(capsys, "train", "--out", out, "--name", "mine", *FAST)
    assert code == 1
    assert_one_error_line(err, "already exists", "--resume")
    assert Path(out, "mine", "model.safetensors").read_bytes() == before

    code, _, err = run_cli(capsys, "train", "--resume", os.path.join(out, "mine"))
    assert code == 1
    assert_one_error_line(err, "already finished")


def _write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_data_dir_trains_on_mnist_idx_files(capsys, tmp_path):
    g = np.random.default_rng(0)
    for prefix, n in (("train", 240), ("t10k", 60)):
        labels = np.arange(n) % 10
        images = g.integers(0, 50, size=(n, 28, 28))
        for i, c in enumerate(labels):  # a 4x4 block whose place on a 2x5 grid is the class
            top, left = (c // 5) * 12 + 5, (c % 5) * 5 + 2
            images[i, top:top + 4, left:left + 4] = 255
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", labels)
    code, stdout, _ = run_cli(capsys, "train", "--out", str(tmp_path / "runs"), "--data-dir",
                              str(tmp_path), "--model", "tiny", "--epochs", "8",
                              "--batch-size", "16", "--no-progress")
    assert code == 0
    run = stdout.splitlines()[0].removeprefix("run: ")
    config = json.loads(Path(run, "config.json").read_text())
    assert config["data"]["data_dir"] == str(tmp_path)
    metrics = json.loads(Path(run, "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.5, metrics  # 60 test images; chance is 0.1


def _subprocess_env():
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_truncated_checkpoint_on_resume_fails_cleanly_in_a_real_process(tmp_path):
    args = [*CLI, "train", *FAST, "--epochs", "1", "--no-card", "--out", str(tmp_path),
            "--name", "run"]
    subprocess.run(args, check=True, capture_output=True, env=_subprocess_env())
    run = tmp_path / "run"
    (run / "metrics.json").unlink()  # pretend it was interrupted after its last checkpoint
    data = (run / "last.safetensors").read_bytes()
    (run / "last.safetensors").write_bytes(data[: len(data) - 1000])
    proc = subprocess.run([*CLI, "train", "--resume", str(run)], capture_output=True, text=True,
                          env=_subprocess_env())
    assert proc.returncode == 1
    assert_one_error_line(proc.stderr, "last.safetensors", "truncated")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_same_final_weights(tmp_path):
    """Kill -9 a run just after a mid-epoch checkpoint; --resume must end byte-identical."""
    config = [*FAST, "--epochs", "4", "--batch-size", "16", "--checkpoint-every", "7",
              "--no-card", "--out", str(tmp_path)]
    env = _subprocess_env()
    # The reference run goes alongside the one we kill; each is deterministic on its own.
    reference = subprocess.Popen([*CLI, "train", *config, "--name", "straight"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    victim = subprocess.Popen([*CLI, "train", *config, "--name", "killed"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    run = tmp_path / "killed"
    deadline = time.monotonic() + 120
    record = None
    try:
        while time.monotonic() < deadline and victim.poll() is None:
            try:
                record = json.loads((run / "last.json").read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                record = None
            # Past the first checkpoint, and in the middle of an epoch.
            if record and record["step"] > 7 and record["batch_in_epoch"] > 0:
                victim.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
    finally:
        victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run ended before a mid-epoch checkpoint"
    assert not (run / "model.safetensors").exists()
    assert 0 < record["batch_in_epoch"] < 63

    resumed = subprocess.run([*CLI, "train", "--resume", str(run), "--no-progress",
                              "--no-card"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert reference.wait() == 0, reference.stderr.read()

    straight = tmp_path / "straight"
    assert (run / "model.safetensors").read_bytes() == (straight / "model.safetensors").read_bytes()
    assert (run / "history.jsonl").read_text() == (straight / "history.jsonl").read_text()
    m_run, m_straight = (json.loads((d / "metrics.json").read_text()) for d in (run, straight))
    assert m_run["cost"]["train_flops"] == m_straight["cost"]["train_flops"]
    assert _clock_free(m_run) == _clock_free(m_straight)


def _clock_free(metrics):
    """metrics.json without what depends on the clock or the process (time, energy, memory)."""
    clocked = {"train_seconds", "train_flops_mfu", "train_peak_memory_bytes", "energy_kwh",
               "emissions_kg_co2e", "cost"}
    return {k: v for k, v in metrics.items() if k not in clocked}


def test_the_installed_console_script_runs():
    # The README's `layerwise train` itself (accuracy included) runs in tests/test_readme.py.
    script = Path(sys.executable).parent / "layerwise"
    assert script.exists(), f"no console script beside {sys.executable}"
    proc = subprocess.run([str(script), "train", "--list"], capture_output=True, text=True,
                          env=_subprocess_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith("mlp ") and "(default)" in proc.stdout


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """`layerwise datasets | head -1`: no traceback and no error line once the pipe closes."""
    proc = subprocess.Popen([*CLI, "datasets"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_subprocess_env())
    proc.stdout.close()  # the reader is gone before the command writes
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and err == ""
