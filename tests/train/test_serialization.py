"""lw.save / lw.load: safetensors round trips, atomic writes, clear errors, optimizer state."""

import json
import os
import struct

import numpy as np
import pytest

import layerwise as lw
from layerwise import serialization
from layerwise.autograd import Tensor


def _state():
    rng = np.random.default_rng(0)
    return {
        "layer.weight": Tensor(rng.standard_normal((4, 3)).astype(np.float32)),
        "layer.bias": Tensor(rng.standard_normal(4).astype(np.float64)),
        "counts": rng.integers(-5, 5, size=(2, 3, 2)),  # a raw int64 array is accepted too
        "scalar": Tensor(np.array(2.5, dtype=np.float32)),
        "mask": Tensor(np.array([True, False])),
    }


def test_round_trip_keeps_values_dtypes_shapes_and_order(tmp_path):
    state = _state()
    path = tmp_path / "w.safetensors"
    lw.save(state, path)
    loaded = lw.load(path)
    assert list(loaded) == list(state)  # safetensors sorts names; the original order comes back
    for name, value in state.items():
        expected = value.data if isinstance(value, Tensor) else value
        got = loaded[name]
        assert isinstance(got, Tensor)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got.data, expected)
        got.data[...] = 0  # loaded arrays own writable memory


def test_file_is_plain_safetensors_readable_by_the_library(tmp_path):
    from safetensors.numpy import load_file

    state = _state()
    lw.save(state, tmp_path / "w.safetensors", metadata={"note": "hi"})
    raw = load_file(str(tmp_path / "w.safetensors"))
    np.testing.assert_array_equal(raw["layer.weight"], state["layer.weight"].data)
    with open(tmp_path / "w.safetensors", "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    assert header["__metadata__"]["note"] == "hi"  # strings stay readable to other tools


def test_metadata_round_trip_strings_and_structured(tmp_path):
    meta = {"format": "pt", "step": 12, "lr": 0.1, "config": {"layers": [784, 256, 10]}, "num": "7"}
    lw.save({"w": lw.ones(2)}, tmp_path / "m.safetensors", metadata=meta)
    tensors, got = serialization.load_with_metadata(tmp_path / "m.safetensors")
    assert got == meta
    assert isinstance(got["num"], str) and isinstance(got["step"], int)
    assert serialization.load_metadata(tmp_path / "m.safetensors") == meta


def test_non_contiguous_arrays_are_saved_as_their_values(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4).T  # a transposed view
    lw.save({"a": a}, tmp_path / "t.safetensors")
    np.testing.assert_array_equal(lw.load(tmp_path / "t.safetensors")["a"].data, a)


def test_save_rejects_non_state_dicts(tmp_path):
    with pytest.raises(TypeError, match="state dict"):
        lw.save([lw.ones(2)], tmp_path / "x.safetensors")
    with pytest.raises(TypeError, match="'lr'.*metadata"):
        lw.save({"lr": 0.1}, tmp_path / "x.safetensors")
    assert not os.listdir(tmp_path)  # nothing written, not even a temporary file


def test_failed_replace_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    lw.save({"w": lw.ones(3)}, path)
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(serialization.os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        lw.save({"w": lw.zeros(3)}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["w.safetensors"]  # the temporary file was cleaned up


def test_failure_mid_write_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / "log.json"
    serialization.write_text_atomic(path, "old")

    def half_then_fail(f):
        f.write("new but incompl")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        serialization.write_atomic(path, half_then_fail, mode="w")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["log.json"]


def test_truncated_file_gives_one_clear_line(tmp_path):
    path = tmp_path / "w.safetensors"
    lw.save({"w": lw.ones(100)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 17])
    with pytest.raises(ValueError) as err:
        lw.load(path)
    message = str(err.value)
    assert str(path) in message and "truncated" in message and "\n" not in message


@pytest.mark.parametrize("content", [b"", b"hello", b'{"not": "safetensors"}' * 10,
                                     np.random.default_rng(0).bytes(64)])
def test_foreign_file_is_rejected_with_its_path(tmp_path, content):
    path = tmp_path / "foreign.bin"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="foreign.bin is not a valid safetensors"):
        lw.load(path)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        lw.load(tmp_path / "nope.safetensors")


def test_optimizer_state_round_trips_through_safetensors_and_json(tmp_path):
    state_dict = {
        "state": {
            0: {"step": 3, "exp_avg": Tensor(np.full((2, 3), 0.25, np.float32)),
                "exp_avg_sq": Tensor(np.full((2, 3), 1e-8, np.float32))},
            2: {"step": 3, "momentum_buffer": Tensor(np.arange(4, dtype=np.float64))},
        },
        "param_groups": [
            {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01,
             "amsgrad": False, "params": [0, 1]},
            {"lr": 0.1, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.0,
             "amsgrad": True, "params": [2]},
        ],
    }
    tensors, json_part = serialization.flatten_optimizer_state(state_dict)
    assert set(tensors) == {"optim.state.0.exp_avg", "optim.state.0.exp_avg_sq",
                            "optim.state.2.momentum_buffer"}
    lw.save(tensors, tmp_path / "o.safetensors")
    (tmp_path / "o.json").write_text(json.dumps(json_part))

    back = serialization.unflatten_optimizer_state(
        lw.load(tmp_path / "o.safetensors"), json.loads((tmp_path / "o.json").read_text()))
    assert back["param_groups"] == state_dict["param_groups"]
    assert isinstance(back["param_groups"][0]["betas"], tuple)
    assert set(back["state"]) == {0, 2}
    for idx, per_param in state_dict["state"].items():
        assert set(back["state"][idx]) == set(per_param)
        for name, value in per_param.items():
            got = back["state"][idx][name]
            if isinstance(value, Tensor):
                assert got.dtype == value.dtype
                np.testing.assert_array_equal(got.data, value.data)
            else:
                assert got == value and type(got) is type(value)


def test_unflatten_reports_a_missing_tensor():
    state_dict = {"state": {0: {"exp_avg": lw.ones(2)}},
                  "param_groups": [{"lr": 1.0, "params": [0]}]}
    tensors, json_part = serialization.flatten_optimizer_state(state_dict)
    with pytest.raises(ValueError, match="optim.state.0.exp_avg"):
        serialization.unflatten_optimizer_state({}, json_part)


def test_equal_state_dicts_give_byte_identical_files(tmp_path):
    # The library writes metadata from a hash map in varying order; save canonicalises it.
    state = _state()
    meta = {f"key{i}": i for i in range(12)} | {"recipe": "mlp"}
    blobs = {serialization.to_bytes(state, dict(meta)) for _ in range(5)}
    assert len(blobs) == 1
    lw.save(state, tmp_path / "a.safetensors", metadata=meta)
    lw.save(state, tmp_path / "b.safetensors", metadata=dict(reversed(list(meta.items()))))
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert serialization.load_metadata(tmp_path / "a.safetensors") == meta


def test_files_from_other_safetensors_writers_load(tmp_path):
    from safetensors.numpy import save_file

    arrays = {"b": np.ones((2, 2), np.float32), "a": np.arange(3, dtype=np.int64)}
    save_file(arrays, str(tmp_path / "other.safetensors"), metadata={"format": "np"})
    tensors, meta = serialization.load_with_metadata(tmp_path / "other.safetensors")
    assert list(tensors) == ["a", "b"] and meta == {"format": "np"}
    np.testing.assert_array_equal(tensors["b"].data, arrays["b"])
