"""`layerwise train --nproc 2`: the same accuracy as one process, a run directory that loads
on one process, and a rank killed mid-epoch: one line naming it, a good checkpoint, and a
`--resume` that ends with the weights of a run never interrupted."""

import json
import os
import sys
import textwrap

import numpy as np
import pytest

import layerwise as lw
from layerwise.cli.main import main
from layerwise.data import DataLoader
from layerwise.distributed.launch import run_under_mpiexec
from layerwise.train.checkpoint import load_resume_state
from layerwise.train.finished import load_finished_run
from tests.distributed.jobs import JOB_ENV, mpiexec_or_skip

# Test accuracy of the tiny recipe (500 test digits) on 1 and 2 processes: 0.724 and 0.722
# measured. Different dropout draws and sample orders move it by a few hundredths.
ACCURACY_NOISE = 0.05
QUIET = ["--no-progress", "--no-card"]

# Rank 1 dies without a word (os._exit) right after optimizer step KILL_AT_STEP, as a process
# killed by the kernel would; everything else is the `layerwise` command.
KILLER = textwrap.dedent('''
    import os, sys
    from layerwise import distributed
    from layerwise.cli.main import main
    from layerwise.train.trainer import Trainer

    step, kill_at = Trainer._train_step, int(os.environ["KILL_AT_STEP"])

    def dying_step(self, inputs, targets):
        loss = step(self, inputs, targets)
        if distributed.rank() == 1 and self.global_step == kill_at:
            os._exit(7)
        return loss

    Trainer._train_step = dying_step
    sys.exit(main(sys.argv[1:]))
''')


@pytest.fixture
def job_env(monkeypatch):
    mpiexec_or_skip()
    for key in ("LAYERWISE_NO_NUMBA", "LAYERWISE_DIST_TIMEOUT"):
        monkeypatch.setenv(key, JOB_ENV[key])


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _weights(run_dir):
    return lw.load(os.path.join(run_dir, "model.safetensors"))


@pytest.mark.slow
def test_two_processes_train_like_one_and_a_killed_rank_resumes_to_the_same_weights(
        tmp_path, job_env, monkeypatch, capfd):
    out = str(tmp_path)
    # tiny: 1,000 digits, 16 steps of 64 an epoch, 2 epochs; checkpoints every 5 steps
    tiny = ["train", "--model", "tiny", "--out", out, "--checkpoint-every", "5", *QUIET]
    assert main([*tiny, "--name", "one"]) == 0
    assert main([*tiny, "--name", "two", "--nproc", "2"]) == 0

    # the same test accuracy as one process, within noise, in as many steps
    one, two = (_read_json(os.path.join(out, name, "metrics.json")) for name in ("one", "two"))
    assert abs(one["test_accuracy"] - two["test_accuracy"]) <= ACCURACY_NOISE, (one, two)
    assert two["steps"] == one["steps"] == 32  # --batch-size is the global batch
    # the cost counts every rank's samples, though rank 0 alone records it
    assert two["cost"]["train_samples"] == one["cost"]["train_samples"] == 32 * 64
    assert two["train_flops"] == one["train_flops"]
    if "estimate" in two["energy_method"]:  # no machine-wide meter here: rank 0's, doubled
        assert "multiplied by the 2 processes on its machine" in two["energy_warnings"]
    with open(os.path.join(out, "two", "history.jsonl")) as f:
        assert [json.loads(line)["epoch"] for line in f] == [1, 2]  # one writer: once each

    # the run directory loads on one process: its weights have no "module." prefix
    run = load_finished_run(os.path.join(out, "two"))
    correct = seen = 0
    with lw.no_grad():
        for images, labels in DataLoader(run.splits["test"], batch_size=256):
            correct += int((run.model(images).data.argmax(-1) == labels.data).sum())
            seen += len(labels)
    assert correct / seen == pytest.approx(two["test_accuracy"], abs=2 / seen)

    # rank 1 dies after step 23, in epoch 2: the job ends with one line naming it
    capfd.readouterr()
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    monkeypatch.setenv("KILL_AT_STEP", "23")
    assert run_under_mpiexec(2, [sys.executable, str(killer), *tiny, "--name", "cut"]) == 1
    errors = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and errors[0].startswith("error: rank 1 of 2 (on ") \
        and "exited with code 7" in errors[0] and "--resume RUN --nproc 2" in errors[0], errors

    # its last checkpoint, of step 20 (batch 4 of epoch 2), is intact and holds both ranks
    cut = os.path.join(out, "cut")
    state = load_resume_state(cut)
    assert (state["global_step"], state["batch_in_epoch"], state["world_size"]) == (20, 4, 2)
    assert len(state["ranks"]) == 2 and state["ranks"][0]["rng"] != state["ranks"][1]["rng"]
    assert not os.path.exists(os.path.join(cut, "model.safetensors"))

    # resumed on 2 processes, it ends with the uninterrupted run's weights, bit for bit
    assert main(["train", "--resume", cut, "--nproc", "2", *QUIET]) == 0
    resumed, whole = _weights(cut), _weights(os.path.join(out, "two"))
    assert list(resumed) == list(whole)
    for name in whole:
        np.testing.assert_array_equal(resumed[name].data, whole[name].data)
