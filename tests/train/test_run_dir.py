"""A run directory is a small database: no path read from it leads out of it, no write goes
through a link, one writer at a time, nothing half-written survives a resume, and a run that
failed while finishing can be finished without training again."""

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import layerwise as lw
from layerwise.audit.cost import run_cost_callback
from layerwise.cli.main import main
from layerwise.train import RunError
from layerwise.train.callbacks import HistoryLogger
from layerwise.train.checkpoint import _PENDING_WEIGHTS, RESUME_JSON, RESUME_WEIGHTS
from layerwise.train.recipes import ImageTask
from layerwise.train.run import make_config, resume_run, start_run
from layerwise.train.rundir import LOCK_FILE, RunLock
from layerwise.train.trainer import Trainer

CHECKPOINT_EVERY = 5
DIE_AT_STEP = 8  # the tiny recipe has 16 steps per epoch; the last checkpoint is at step 5


class Interrupt(Exception):
    pass


def _config():
    return make_config("tiny", epochs=1, checkpoint_every=CHECKPOINT_EVERY)


def _start(out, name):
    run_dir, metrics = start_run(_config(), out_dir=str(out), name=name, progress=False,
                                 verbose=False, callbacks=[run_cost_callback])
    return Path(run_dir), metrics


def _resume(run):
    return resume_run(str(run), progress=False, verbose=False, callbacks=[run_cost_callback])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(a finished run, the same run killed at step 8 with its last checkpoint at step 5)."""
    root = tmp_path_factory.mktemp("runs")
    straight, _ = _start(root, "straight")
    real_step = Trainer._train_step
    calls = {"n": 0}

    def step_then_die(self, inputs, targets):
        calls["n"] += 1
        if calls["n"] == DIE_AT_STEP:
            raise Interrupt
        return real_step(self, inputs, targets)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "_train_step", step_then_die)
        with pytest.raises(Interrupt):
            _start(root, "interrupted")
    interrupted = root / "interrupted"
    assert json.loads((interrupted / RESUME_JSON).read_text())["step"] == CHECKPOINT_EVERY
    return straight, interrupted


def _copy(run, tmp_path, name="run"):
    return Path(shutil.copytree(run, tmp_path / name, symlinks=True))


def _cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(err, *fragments):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _one_line_run_error(excinfo, *fragments):
    message = str(excinfo.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


# --- 1. no path out of the run, no write through a link ---------------------------------------


@pytest.mark.parametrize("weights", [
    "../victim.safetensors",                 # relative, out of the run
    "sub/../../victim.safetensors",          # the same, disguised
    "ABSOLUTE",                              # the victim's absolute path
    "best.safetensors",                      # inside, but the journal would rename onto it
    "",                                      # the run directory itself
    5,                                       # not a name at all
    None,
])
def test_resume_never_writes_where_last_json_points(runs, tmp_path, weights):
    run = _copy(runs[1], tmp_path)
    victim = tmp_path / "victim.safetensors"
    victim.write_bytes(b"precious")
    (run / "best.safetensors").write_bytes(b"the best weights so far")  # epoch 1 has none yet
    value = str(victim) if weights == "ABSOLUTE" else weights
    record = json.loads((run / RESUME_JSON).read_text())
    record["weights"] = value
    (run / RESUME_JSON).write_text(json.dumps(record))
    # A committed pending file: the journal would rename it onto the named weights file.
    shutil.copy(run / RESUME_WEIGHTS, run / _PENDING_WEIGHTS)

    with pytest.raises(RunError) as excinfo:
        _resume(run)
    _one_line_run_error(excinfo, str(run / RESUME_JSON), repr(value))
    assert victim.read_bytes() == b"precious"
    assert (run / "best.safetensors").read_bytes() == b"the best weights so far"
    assert not (run / "metrics.json").exists()


def test_resume_refuses_resume_weights_that_link_out_of_the_run(runs, tmp_path, capsys):
    run = _copy(runs[1], tmp_path)
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(run / RESUME_WEIGHTS, outside)
    before = outside.read_bytes()
    os.symlink(outside, run / RESUME_WEIGHTS)
    shutil.copy(outside, run / _PENDING_WEIGHTS)

    code, _, err = _cli(capsys, "train", "--resume", str(run), "--no-progress", "--no-card")
    assert code == 1
    _one_line(err, "last.json", "'last.safetensors'", str(outside), "outside the run")
    assert outside.read_bytes() == before and os.path.islink(run / RESUME_WEIGHTS)


def test_a_resumed_run_replaces_links_to_outside_files_and_never_writes_through_them(
        runs, tmp_path):
    straight, interrupted = runs
    run = _copy(interrupted, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    linked = {}
    for name in ("history.jsonl", "best.safetensors", "last.json", "model.safetensors"):
        target = outside / name
        if (run / name).exists():
            shutil.move(run / name, target)
        else:
            target.write_text("precious")
        linked[name] = target.read_bytes()
        os.symlink(target, run / name)
    os.symlink(outside / "made_through_a_link", run / "metrics.json")  # a dangling link

    _resume(run)
    for name, before in linked.items():
        assert (outside / name).read_bytes() == before, name
        assert not os.path.islink(run / name), name
    assert sorted(os.listdir(outside)) == sorted(linked)  # nothing created through the link
    assert not os.path.islink(run / "metrics.json")
    assert (run / "model.safetensors").read_bytes() == (straight / "model.safetensors").read_bytes()
    assert (run / "history.jsonl").read_text() == (straight / "history.jsonl").read_text()


def test_a_linked_emissions_csv_is_refused_before_training(runs, tmp_path, capsys):
    run = _copy(runs[1], tmp_path)
    outside = tmp_path / "someone_elses.csv"
    outside.write_text("a,b\n1,2\n")
    os.symlink(outside, run / "emissions.csv")
    steps = {"n": 0}
    real_step = Trainer._train_step

    def count(self, inputs, targets):
        steps["n"] += 1
        return real_step(self, inputs, targets)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "_train_step", count)
        code, _, err = _cli(capsys, "train", "--resume", str(run), "--no-progress", "--no-card")
    assert code == 1
    _one_line(err, str(run / "emissions.csv"), "symbolic link", "remove it")
    assert outside.read_text() == "a,b\n1,2\n" and steps["n"] == 0


def test_emissions_csv_with_a_second_hard_link_is_copied_not_written_through(runs, tmp_path):
    run = _copy(runs[1], tmp_path)
    outside = tmp_path / "all_my_emissions.csv"
    earlier = (runs[0] / "emissions.csv").read_bytes()  # a header and one row, csv's \r\n
    outside.write_bytes(earlier)
    os.link(outside, run / "emissions.csv")
    _resume(run)
    assert outside.read_bytes() == earlier
    rows = (run / "emissions.csv").read_bytes().split(b"\r\n")
    assert b"\r\n".join(rows[:2]) + b"\r\n" == earlier and len(rows) == 4 and rows[3] == b""
    assert os.stat(run / "emissions.csv").st_nlink == 1


@pytest.mark.parametrize("plant", ["symlink", "hardlink", "fifo"])
def test_appends_refuse_anything_but_the_runs_own_regular_file(tmp_path, plant):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    path = tmp_path / "history.jsonl"
    if plant == "symlink":
        os.symlink(outside, path)
    elif plant == "hardlink":
        os.link(outside, path)
    else:
        os.mkfifo(path)
    logger = HistoryLogger(path)
    with pytest.raises(RunError) as excinfo:
        logger.on_epoch_end(None, {"epoch": 1})
    _one_line_run_error(excinfo, str(path), "remove it")
    assert outside.read_text() == "precious\n"


def test_the_model_card_replaces_a_link_rather_than_writing_through_it(tmp_path, monkeypatch):
    from layerwise.audit import card_html as card

    monkeypatch.setattr(card, "render_html", lambda content, figures: "<html></html>")
    outside = tmp_path / "outside.json"
    outside.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(outside, run / "card.json")
    os.symlink(outside, run / "card.html")
    card.write_card(str(run), {"model": {"name": "x"}}, {})
    assert outside.read_text() == "precious"
    assert not os.path.islink(run / "card.json") and not os.path.islink(run / "card.html")
    assert json.loads((run / "card.json").read_text())["model"] == {"name": "x"}
    assert (run / "card.html").read_text() == "<html></html>"


# --- 2. one writer at a time ------------------------------------------------------------------

# A holder written with plain flock, not layerwise's RunLock: any process that locks the file
# the POSIX way must keep layerwise out, and its death must free the run.
_HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, str(os.getpid()).encode())
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_a_second_writer_is_refused_while_another_process_holds_the_run(runs, tmp_path, capsys):
    run = _copy(runs[1], tmp_path)
    last_before = (run / RESUME_JSON).read_bytes()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run / LOCK_FILE)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunError) as excinfo:
            _resume(run)
        _one_line_run_error(excinfo, f"run {run} is in use by process {holder.pid} (run.lock)",
                            "wait for it to finish or stop it")
        code, _, err = _cli(capsys, "train", "--resume", str(run), "--no-progress", "--no-card")
        assert code == 1
        _one_line(err, f"in use by process {holder.pid}")
        assert (run / RESUME_JSON).read_bytes() == last_before
        assert not (run / "history.jsonl").read_text().strip()  # nothing appended
    finally:
        holder.kill()  # SIGKILL: no chance to unlock; the kernel must release the lock
        holder.wait()
    with RunLock(run):
        assert (run / LOCK_FILE).read_text().strip() == str(os.getpid())
    assert (run / LOCK_FILE).read_text() == ""  # released, pid cleared


def test_a_resume_while_the_run_still_trains_is_refused_in_process(tmp_path, monkeypatch):
    from layerwise.train.checkpoint import ResumeCheckpoint

    refusals = []
    real_save = ResumeCheckpoint.on_batch_end

    def save_then_try_to_resume(self, trainer, logs):
        real_save(self, trainer, logs)
        if trainer.global_step == CHECKPOINT_EVERY:  # a resumable checkpoint exists now
            with pytest.raises(RunError) as excinfo:
                _resume(self.run_dir)
            refusals.append(str(excinfo.value))

    monkeypatch.setattr(ResumeCheckpoint, "on_batch_end", save_then_try_to_resume)
    run, _ = _start(tmp_path, "busy")
    expected = (f"run {run} is in use by process {os.getpid()} (run.lock); wait for it to "
                "finish or stop it")
    assert refusals == [expected]
    history = (run / "history.jsonl").read_text().splitlines()
    assert [json.loads(row)["epoch"] for row in history] == [1]  # no duplicated rows
    lock = RunLock(run)
    lock.acquire()  # free again once the run returned
    lock.release()


# --- 3. what a killed writer left ---------------------------------------------------------------


def test_resume_removes_the_leftovers_of_a_killed_writer_and_keeps_user_files(runs, tmp_path):
    straight, interrupted = runs
    run = _copy(interrupted, tmp_path)
    temps = []
    for name in ("history.jsonl", "last.json", _PENDING_WEIGHTS, "model.safetensors"):
        fd, path = tempfile.mkstemp(dir=run, prefix=f".{name}.", suffix=".tmp")  # as a writer
        os.write(fd, b"half of a file")
        os.close(fd)
        temps.append(os.path.basename(path))
    # a pending file that was never committed: last.json describes step 5, not 999
    lw.save({"junk": lw.ones(1)}, run / _PENDING_WEIGHTS, metadata={"step": 999})
    (run / "notes.tmp").write_text("mine")
    (run / ".notes.tmp").write_text("mine too")

    _resume(run)
    left = set(os.listdir(run))
    assert not left & set(temps) and _PENDING_WEIGHTS not in left
    assert (run / "notes.tmp").read_text() == "mine" and (run / ".notes.tmp").exists()
    assert (run / "model.safetensors").read_bytes() == (straight / "model.safetensors").read_bytes()


def test_a_committed_pending_file_is_still_renamed_into_place_on_resume(runs, tmp_path):
    straight, interrupted = runs
    run = _copy(interrupted, tmp_path)
    # The crash fell after last.json's commit, before the rename: an older pair of weights.
    shutil.move(run / RESUME_WEIGHTS, run / _PENDING_WEIGHTS)
    lw.save({"junk": lw.ones(1)}, run / RESUME_WEIGHTS, metadata={"step": 0})
    _resume(run)
    assert not (run / _PENDING_WEIGHTS).exists()
    assert (run / "model.safetensors").read_bytes() == (straight / "model.safetensors").read_bytes()


# --- 4. a failure while finishing can be retried ----------------------------------------------


def _no_training(self):
    raise AssertionError("the run finished training; a resume must not train again")


def _failing_finish(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _same_run_metrics(metrics, reference):
    clocked = ("seconds", "energy", "emissions", "mfu", "memory", "cost")
    return {k: v for k, v in metrics.items() if not any(w in k for w in clocked)} == \
        {k: v for k, v in reference.items() if not any(w in k for w in clocked)}


def test_a_failed_finish_is_retried_from_the_saved_weights_without_training_again(
        runs, tmp_path, monkeypatch):
    straight = runs[0]
    reference = json.loads((straight / "metrics.json").read_text())
    with monkeypatch.context() as patch:
        patch.setattr(ImageTask, "finish", _failing_finish)
        with pytest.raises(OSError, match="No space left"):
            _start(tmp_path, "run")
        run = tmp_path / "run"
        assert (run / "model.safetensors").exists() and not (run / "metrics.json").exists()
        patch.setattr(Trainer, "fit", _no_training)
        with pytest.raises(OSError, match="No space left"):  # fails again: still retryable
            _resume(run)

    monkeypatch.setattr(Trainer, "fit", _no_training)
    metrics = _resume(run)
    assert json.loads((run / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert _same_run_metrics(metrics, reference)
    assert metrics["train_flops"] == reference["train_flops"] > 0
    assert metrics["test_accuracy"] == reference["test_accuracy"]
    assert (run / "model.safetensors").read_bytes() == (straight / "model.safetensors").read_bytes()
    assert (run / "history.jsonl").read_text() == (straight / "history.jsonl").read_text()
    emissions = (run / "emissions.csv").read_text().strip().splitlines()
    assert len(emissions) == 2  # the header and the one training session: nothing retrained
    assert not (run / "trained.json").exists()
    with pytest.raises(RunError, match="already finished.*layerwise report"):
        _resume(run)


def test_a_language_model_whose_sample_failed_is_finished_on_resume(tmp_path, monkeypatch):
    from layerwise.train.recipes import language as lm_recipes

    config = make_config("gpt-tiny", epochs=1, batch_size=8, corpus_chars=8000)
    straight, reference = start_run(config, out_dir=str(tmp_path), name="straight",
                                    progress=False, verbose=False, callbacks=[run_cost_callback])
    with monkeypatch.context() as patch:
        patch.setattr(lm_recipes, "generate_text", _failing_finish)
        with pytest.raises(OSError):
            start_run(config, out_dir=str(tmp_path), name="run", progress=False, verbose=False,
                      callbacks=[run_cost_callback])
    run = tmp_path / "run"
    assert not (run / "sample.txt").exists()
    monkeypatch.setattr(Trainer, "fit", _no_training)
    metrics = _resume(run)
    assert (run / "sample.txt").read_text() == Path(straight, "sample.txt").read_text()
    assert metrics["sample"] == reference["sample"]
    assert _same_run_metrics(metrics, reference)


# --- 5. command outputs never land on a run's own files -----------------------------------------


@pytest.fixture
def quick_audit(monkeypatch):
    """audit-data with its (slow) audit replaced: these tests are about where it writes."""
    from layerwise.cli import audit_data

    report = {"contamination": {}, "duplicates": {}, "balance": {}, "near_threshold": 0.15}
    monkeypatch.setattr(audit_data, "_splits", lambda *args: None)
    monkeypatch.setattr(audit_data, "audit_data", lambda *args: report)
    return report


@pytest.mark.parametrize("target, fragment", [
    ("model.safetensors", "the run's own model.safetensors"),
    ("config.json", "the run's own config.json"),
    ("history.jsonl", "the run's own history.jsonl"),
    ("OUTSIDE_TEXT", "is not a JSON file"),
    ("OUTSIDE_DIR", "is a directory"),
])
def test_audit_data_json_refuses_to_overwrite_a_run_file_or_a_non_json_file(
        runs, tmp_path, capsys, quick_audit, target, fragment):
    run = _copy(runs[0], tmp_path)
    notes = tmp_path / "notes.txt"
    notes.write_text("not json, and mine")
    path = {"OUTSIDE_TEXT": notes, "OUTSIDE_DIR": tmp_path}.get(target, run / target)
    before = {p: p.read_bytes() for p in [*run.iterdir(), notes]}

    code, out, err = _cli(capsys, "audit-data", "--json", str(path))
    assert code == 1 and out == ""
    _one_line(err, f"--json {path}", fragment)
    assert {p: p.read_bytes() for p in [*run.iterdir(), notes]} == before


def test_audit_data_json_replaces_an_old_report_atomically(tmp_path, capsys, quick_audit,
                                                            monkeypatch):
    path = tmp_path / "report.json"
    path.write_text('{"old": true}')
    code, out, _ = _cli(capsys, "audit-data", "--json", str(path))
    assert code == 0 and out.strip().endswith(f"wrote {path}")
    assert json.loads(path.read_text()) == quick_audit

    path.write_text('{"old": true}')

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    code, _, err = _cli(capsys, "audit-data", "--json", str(path))
    assert code == 1
    _one_line(err, str(path), "No space left")
    assert path.read_text() == '{"old": true}'  # the old report, whole
    assert os.listdir(tmp_path) == ["report.json"]  # no temporary file left


def test_explain_save_dir_that_is_a_file_is_one_line(runs, tmp_path, capsys):
    existing = tmp_path / "figures.png"
    existing.write_bytes(b"an image of mine")
    code, out, err = _cli(capsys, "explain", str(runs[0]), "--index", "0", "--save-dir",
                          str(existing))
    assert code == 1 and out == ""
    _one_line(err, f"--save-dir {existing} is an existing file, not a directory")
    assert existing.read_bytes() == b"an image of mine"


def test_explain_replaces_a_linked_png_rather_than_writing_through_it(runs, tmp_path, capsys):
    outside = tmp_path / "mine.png"
    outside.write_bytes(b"an image of mine")
    save_dir = tmp_path / "figures"
    save_dir.mkdir()
    (save_dir / "0_saliency.png").symlink_to(outside)
    code, out, err = _cli(capsys, "explain", str(runs[0]), "--index", "0", "--steps", "4",
                          "--save-dir", str(save_dir))
    assert code == 0, err
    assert outside.read_bytes() == b"an image of mine"
    linked = save_dir / "0_saliency.png"
    assert not linked.is_symlink() and linked.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_is_refused_while_another_process_writes_the_run(runs, capsys):
    run = runs[0]
    before = (run / "card.json").read_bytes() if (run / "card.json").exists() else None
    holder = RunLock(run)
    holder.acquire()  # as a resume in progress would
    try:
        code, out, err = _cli(capsys, "report", str(run))
    finally:
        holder.release()
    assert code == 1
    _one_line(err, f"run {run} is in use by process {os.getpid()} (run.lock)")
    after = (run / "card.json").read_bytes() if (run / "card.json").exists() else None
    assert after == before
