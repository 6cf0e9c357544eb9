"""Run directories and the two-file resume checkpoint: journal recovery and clear errors."""

import json
import os

import numpy as np
import pytest

import layerwise as lw
from layerwise import nn, optim
from layerwise.train import RunError, create_run_dir, load_resume_state, save_resume_state
from layerwise.train.checkpoint import RESUME_JSON, RESUME_WEIGHTS, _PENDING_WEIGHTS


def _state(step, fill):
    """A Trainer-shaped state with a real model and an AdamW state after one step."""
    lw.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2))
    opt = optim.AdamW(model.parameters(), lr=0.01)
    model(lw.ones(4, 3)).sum().backward()
    opt.step()
    for p in model.parameters():
        p.data[...] = fill
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": None,
            "rng": lw.get_rng_state(), "train_loader": {"epoch": 0}, "val_loader": None,
            "epoch": 0, "global_step": step, "batch_in_epoch": step, "epoch_sums": {},
            "should_stop": False, "history": [], "callbacks": {}}


def test_resume_state_round_trips(tmp_path):
    state = _state(7, 0.5)
    save_resume_state(str(tmp_path), state)
    assert sorted(os.listdir(tmp_path)) == [RESUME_JSON, RESUME_WEIGHTS]
    back = load_resume_state(str(tmp_path))
    assert back["global_step"] == 7 and back["rng"] == state["rng"]
    assert list(back["model"]) == list(state["model"])
    for k, v in state["model"].items():
        np.testing.assert_array_equal(back["model"][k].data, v.data)
    opt_back, opt = back["optimizer"], state["optimizer"]
    assert opt_back["param_groups"] == opt["param_groups"]
    for idx, per_param in opt["state"].items():
        for name, value in per_param.items():
            got = opt_back["state"][idx][name]
            if hasattr(value, "data"):
                np.testing.assert_array_equal(got.data, value.data)
            else:
                assert got == value


def test_crash_after_the_commit_is_completed_on_load(tmp_path, monkeypatch):
    save_resume_state(str(tmp_path), _state(5, 0.0))
    old_weights = (tmp_path / RESUME_WEIGHTS).read_bytes()
    # A crash between last.json's commit and the final rename leaves the pending weights.
    real_replace = os.replace

    def crash_on_final_rename(src, dst):
        if str(src).endswith(_PENDING_WEIGHTS):
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", crash_on_final_rename)
        with pytest.raises(KeyboardInterrupt):
            save_resume_state(str(tmp_path), _state(9, 1.0))
    assert (tmp_path / RESUME_WEIGHTS).read_bytes() == old_weights  # still step 5's weights
    assert json.loads((tmp_path / RESUME_JSON).read_text())["step"] == 9

    back = load_resume_state(str(tmp_path))
    assert back["global_step"] == 9
    assert all((v.data == 1.0).all() for v in back["model"].values())
    assert not (tmp_path / _PENDING_WEIGHTS).exists()  # the rename was finished


def test_crash_before_the_commit_keeps_the_old_pair(tmp_path):
    save_resume_state(str(tmp_path), _state(5, 0.0))
    lw.save({"junk": lw.ones(1)}, tmp_path / _PENDING_WEIGHTS, metadata={"step": 9})
    back = load_resume_state(str(tmp_path))
    assert back["global_step"] == 5
    assert all((v.data == 0.0).all() for v in back["model"].values())


def test_mismatched_pair_is_refused(tmp_path):
    save_resume_state(str(tmp_path), _state(5, 0.0))
    weights = (tmp_path / RESUME_WEIGHTS).read_bytes()
    save_resume_state(str(tmp_path), _state(9, 1.0))
    (tmp_path / RESUME_WEIGHTS).write_bytes(weights)  # step 5's weights beside step 9's JSON
    with pytest.raises(RunError, match="holds step 5 but last.json describes step 9"):
        load_resume_state(str(tmp_path))


def test_truncated_weights_name_the_file(tmp_path):
    save_resume_state(str(tmp_path), _state(5, 0.0))
    data = (tmp_path / RESUME_WEIGHTS).read_bytes()
    (tmp_path / RESUME_WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(RunError, match=r"last.safetensors is not a valid safetensors.*truncated"):
        load_resume_state(str(tmp_path))


def test_missing_and_corrupt_json_are_clear(tmp_path):
    with pytest.raises(RunError, match="no resume checkpoint"):
        load_resume_state(str(tmp_path))
    (tmp_path / RESUME_JSON).write_text('{"step": 3')
    with pytest.raises(RunError, match="last.json is not valid JSON"):
        load_resume_state(str(tmp_path))
    (tmp_path / RESUME_JSON).write_text('{"step": 3}')
    with pytest.raises(RunError, match="not a layerwise resume checkpoint"):
        load_resume_state(str(tmp_path))


def test_create_run_dir_never_reuses_a_directory(tmp_path):
    out = str(tmp_path / "runs")
    first = create_run_dir(out, "mlp-x")
    (tmp_path / "runs" / "mlp-x" / "keep.txt").write_text("precious")
    second = create_run_dir(out, "mlp-x")
    third = create_run_dir(out, "mlp-x")
    assert [os.path.basename(p) for p in (first, second, third)] == ["mlp-x", "mlp-x-2", "mlp-x-3"]
    assert (tmp_path / "runs" / "mlp-x" / "keep.txt").read_text() == "precious"
    assert os.listdir(second) == []
    with pytest.raises(RunError, match="already exists.*--resume"):
        create_run_dir(out, "mlp-x", explicit=True)
    assert os.path.basename(create_run_dir(out, "mine", explicit=True)) == "mine"
    for bad in ("../escape", "a/b", "", ".hidden"):
        with pytest.raises(RunError, match="not allowed"):
            create_run_dir(out, bad, explicit=True)
