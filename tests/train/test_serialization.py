"""lw.save / lw.load: safetensors round trips, atomic writes, clear errors, optimizer state."""

import errno
import json
import math
import os
import struct

import numpy as np
import pytest

import layerwise as lw
from layerwise import safetensors_reader, serialization
from layerwise.autograd import Tensor
from layerwise.errors import BadFileError


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


# --- BatchNorm state and NumPy scalars ---------------------------------------------------------


def test_batchnorm_model_saves_and_loads_after_training(tmp_path):
    from layerwise.models import ResNet

    lw.manual_seed(0)
    model = ResNet((1,), (4,), in_channels=1, num_classes=3)
    model.train()
    for _ in range(2):
        model(lw.tensor(np.random.default_rng(0).standard_normal((4, 1, 6, 6)), dtype=lw.float32))
    counter = model.bn1.num_batches_tracked
    assert isinstance(counter.data, np.ndarray) and counter.data.shape == ()
    assert counter.dtype == np.int64 and int(counter.item()) == 2  # counted, not replaced
    lw.save(model.state_dict(), tmp_path / "resnet.safetensors")
    loaded = lw.load(tmp_path / "resnet.safetensors")
    for name, value in model.state_dict().items():
        assert loaded[name].dtype == value.dtype and loaded[name].shape == value.shape
        np.testing.assert_array_equal(loaded[name].data, value.data)
    fresh = ResNet((1,), (4,), in_channels=1, num_classes=3)
    fresh.load_state_dict(loaded)
    assert int(fresh.bn1.num_batches_tracked.item()) == 2


def test_numpy_scalars_in_a_state_dict_are_saved_as_0d_arrays(tmp_path):
    counter = Tensor(np.array(0, dtype=np.int64))
    counter.data = np.int64(7)  # what `data + 1` on a 0-d array gives
    state = {"count": counter, "scale": np.float32(0.5), "flag": np.bool_(True)}
    lw.save(state, tmp_path / "s.safetensors")
    loaded = lw.load(tmp_path / "s.safetensors")
    assert [(k, v.dtype, v.shape, v.item()) for k, v in loaded.items()] == [
        ("count", np.int64, (), 7), ("scale", np.float32, (), 0.5), ("flag", np.bool_, (), True)]


# --- files that are not what they claim: one line naming the file, nothing read first ---------


def _raw_file(path, header, data=b""):
    """A file laid out as safetensors: 8-byte length, the header as given, then ``data``."""
    if not isinstance(header, bytes):
        header = json.dumps(header).encode("utf-8")
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


def _assert_one_line_error(path, error_type=BadFileError, match=None):
    with pytest.raises(error_type) as err:
        lw.load(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message, message
    if match is not None:
        assert match in message, message
    return message


_F32_2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
_BAD_HEADERS = {
    "not utf-8": b"\xff\xfe{}",
    "not json": b"{not json",
    "json list": b"[1, 2]",
    "deeply nested": b"[" * 100_000,
    "entry not an object": {"w": [0, 8]},
    "unknown dtype": {"w": {"dtype": "F128", "shape": [2], "data_offsets": [0, 8]}},
    "dtype not a string": {"w": {"dtype": 5, "shape": [2], "data_offsets": [0, 8]}},
    "shape a string": {"w": {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}},
    "negative dim": {"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}},
    "bool dim": {"w": {"dtype": "F32", "shape": [True, 2], "data_offsets": [0, 8]}},
    "float dim": {"w": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}},
    "offsets missing": {"w": {"dtype": "F32", "shape": [2]}},
    "three offsets": {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4, 8]}},
    "reversed offsets": {"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}},
    "negative offset": {"w": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}},
    "size mismatch": {"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
    "huge shape": {"w": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 8]}},
    "past the end": {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}},
    "overlap": {"a": _F32_2, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}},
    "gap": {"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}},
    "trailing bytes": {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
    "subbyte not whole bytes": {"w": {"dtype": "F4", "shape": [3], "data_offsets": [0, 1]},
                                "v": {"dtype": "U8", "shape": [7], "data_offsets": [1, 8]}},
    "metadata a list": {"__metadata__": ["a"], "w": _F32_2},
    "metadata value a number": {"__metadata__": {"epoch": 5}, "w": _F32_2},
    "order a number": {"__metadata__": {"__layerwise_order__": "5"}, "w": _F32_2},
    "order not json": {"__metadata__": {"__layerwise_order__": "[w"}, "w": _F32_2},
    "order of numbers": {"__metadata__": {"__layerwise_order__": "[1, 2]"}, "w": _F32_2},
    "order an object": {"__metadata__": {"__layerwise_order__": '{"w": 1}'}, "w": _F32_2},
    "json keys a number": {"__metadata__": {"__layerwise_json__": "5"}, "w": _F32_2},
    "json keys a string": {"__metadata__": {"__layerwise_json__": '"epoch"'}, "w": _F32_2},
    "json value not json": {"__metadata__": {"__layerwise_json__": '["epoch"]',
                                             "epoch": "three"}, "w": _F32_2},
}


@pytest.mark.parametrize("case", sorted(_BAD_HEADERS))
def test_crafted_header_gives_one_bad_file_line(tmp_path, case):
    path = _raw_file(tmp_path / "crafted.safetensors", _BAD_HEADERS[case], bytes(8))
    _assert_one_line_error(path, match="crafted.safetensors is not a valid safetensors file")


def test_header_length_past_the_end_is_refused_before_reading(tmp_path):
    path = tmp_path / "short.safetensors"
    path.write_bytes(struct.pack("<Q", 2**63) + b"{}")
    assert "truncated" in _assert_one_line_error(path)


def test_header_over_the_format_limit_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", 200_000_000))
        f.truncate(8 + 200_000_000)  # sparse: no disk used, but the size is real
    assert "100000000" in _assert_one_line_error(path)


def test_truncated_tensor_data_names_the_tensor(tmp_path):
    path = tmp_path / "cut.safetensors"
    lw.save({"a": lw.ones(4), "b": lw.ones(100)}, path)
    path.write_bytes(path.read_bytes()[:-1])
    message = _assert_one_line_error(path, match="truncated")
    assert "'b'" in message


def test_devices_and_pipes_are_refused_without_reading(tmp_path):
    # In a child process: reading /dev/zero to its end would never finish and a FIFO with no
    # writer blocks on open, so a regression must not hang or exhaust the test process.
    import subprocess
    import sys

    if not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"):
        pytest.skip("needs POSIX FIFOs and /dev/zero")
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    script = (
        "import json, sys, resource\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
        "import layerwise as lw\n"
        "out = []\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        lw.load(path)\n"
        "        out.append(['loaded', path])\n"
        "    except Exception as err:\n"
        "        out.append([type(err).__name__, str(err)])\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, "/dev/zero", str(fifo)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout)
    for (kind, message), path in zip(results, ["/dev/zero", str(fifo)]):
        assert kind == "BadFileError" and path in message and "not a regular file" in message
        assert "\n" not in message


def test_directory_is_refused_with_its_path(tmp_path):
    _assert_one_line_error(tmp_path, IsADirectoryError, "is a directory")


# --- every dtype safetensors defines --------------------------------------------------------


def _library_file(path, specs, metadata=None):
    """Write ``{name: (library dtype name, storage shape, uint8 bytes)}`` with the safetensors
    package's own writer, for the dtypes NumPy has no type for."""
    from safetensors import TensorSpec, serialize

    buffers = {name: np.ascontiguousarray(raw, dtype=np.uint8) for name, (_, _, raw) in
               specs.items()}
    tensors = {name: TensorSpec(dtype=dtype, shape=list(shape), data_ptr=buffers[name].ctypes.data,
                                data_len=buffers[name].nbytes)
               for name, (dtype, shape, _) in specs.items()}
    path.write_bytes(serialize(tensors, metadata=metadata))
    return path


def _sign(code, bits):
    return -1.0 if code >> (bits - 1) else 1.0


# Each format written out from its spec, scaled to integers so it shares no code with the
# loader: value = sign * significand_integer * 2 ** (exponent - bias - mantissa_bits).
def _ref_e4m3(c):  # OCP FP8 E4M3 (E4M3FN): bias 7, no inf, NaN only at S.1111.111
    e, m = (c >> 3) & 15, c & 7
    if e == 15 and m == 7:
        return math.nan
    return _sign(c, 8) * (m * 2.0**-9 if e == 0 else (8 + m) * 2.0 ** (e - 10))


def _ref_e5m2(c):  # OCP FP8 E5M2: bias 15, IEEE-like inf and NaN
    e, m = (c >> 2) & 31, c & 3
    if e == 31:
        return _sign(c, 8) * math.inf if m == 0 else math.nan
    return _sign(c, 8) * (m * 2.0**-16 if e == 0 else (4 + m) * 2.0 ** (e - 17))


def _ref_e4m3fnuz(c):  # bias 8, no inf, no -0: 0x80 is the only NaN
    if c == 0x80:
        return math.nan
    e, m = (c >> 3) & 15, c & 7
    return _sign(c, 8) * (m * 2.0**-10 if e == 0 else (8 + m) * 2.0 ** (e - 11))


def _ref_e5m2fnuz(c):  # bias 16, no inf, no -0: 0x80 is the only NaN
    if c == 0x80:
        return math.nan
    e, m = (c >> 2) & 31, c & 3
    return _sign(c, 8) * (m * 2.0**-17 if e == 0 else (4 + m) * 2.0 ** (e - 18))


def _ref_e8m0(c):  # OCP MX scale: unsigned power of two, 0xFF is NaN
    return math.nan if c == 255 else 2.0 ** (c - 127)


def _ref_e2m1(c):  # OCP MX FP4: bias 1, every code finite
    e, m = (c >> 1) & 3, c & 1
    return _sign(c, 4) * (m * 0.5 if e == 0 else (2 + m) * 2.0 ** (e - 2))


_FP8 = {
    "F8_E4M3": ("float8_e4m3fn", _ref_e4m3),
    "F8_E5M2": ("float8_e5m2", _ref_e5m2),
    "F8_E4M3FNUZ": ("float8_e4m3fnuz", _ref_e4m3fnuz),
    "F8_E5M2FNUZ": ("float8_e5m2fnuz", _ref_e5m2fnuz),
    "F8_E8M0": ("float8_e8m0fnu", _ref_e8m0),
}


def _assert_same_floats(got, expected):
    got, expected = np.asarray(got), np.asarray(expected, dtype=np.float64)
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    numbers = ~np.isnan(expected)
    got = got[numbers].astype(np.float64)  # NaNs left out first: casting a signalling one warns
    assert np.array_equal(got, expected[numbers])  # exact, not approximately
    assert np.array_equal(np.signbit(got), np.signbit(expected[numbers]))  # -0 too


@pytest.mark.parametrize("code", sorted(_FP8))
def test_fp8_files_decode_every_code_exactly(tmp_path, code):
    library_name, reference = _FP8[code]
    codes = np.arange(256, dtype=np.uint8)
    path = _library_file(tmp_path / "f8.safetensors", {"w": (library_name, (16, 16), codes)})
    assert json.loads(path.read_bytes()[8:8 + struct.unpack("<Q", path.read_bytes()[:8])[0]])[
        "w"]["dtype"] == code  # the library wrote the dtype under test
    got = lw.load(path)["w"]
    assert got.dtype == np.float32 and got.shape == (16, 16)
    _assert_same_floats(got.data.reshape(-1), [reference(int(c)) for c in codes])


def test_fp8_hand_computed_values():
    expected = {  # (format, code): value, worked out from the spec by hand
        ("F8_E4M3", 0x7E): 448.0, ("F8_E4M3", 0xFE): -448.0, ("F8_E4M3", 0x08): 2.0**-6,
        ("F8_E4M3", 0x01): 2.0**-9, ("F8_E4M3", 0x38): 1.0, ("F8_E4M3", 0x7F): math.nan,
        ("F8_E5M2", 0x7B): 57344.0, ("F8_E5M2", 0x7C): math.inf, ("F8_E5M2", 0xFC): -math.inf,
        ("F8_E5M2", 0x01): 2.0**-16, ("F8_E5M2", 0x3C): 1.0, ("F8_E5M2", 0x7D): math.nan,
        ("F8_E4M3FNUZ", 0x7F): 240.0, ("F8_E4M3FNUZ", 0x80): math.nan,
        ("F8_E4M3FNUZ", 0x40): 1.0, ("F8_E5M2FNUZ", 0x7F): 57344.0,
        ("F8_E5M2FNUZ", 0x01): 2.0**-17, ("F8_E5M2FNUZ", 0x40): 1.0,
        ("F8_E8M0", 0x7F): 1.0, ("F8_E8M0", 0x00): 2.0**-127, ("F8_E8M0", 0xFE): 2.0**127,
    }
    for (code, byte), value in expected.items():
        assert math.isnan(value) == math.isnan(_FP8[code][1](byte))
        if not math.isnan(value):
            assert _FP8[code][1](byte) == value, (code, hex(byte))


def test_fp4_file_unpacks_low_nibble_first(tmp_path):
    # 0x21: 0b0001 (0.5) in the low nibble comes first, 0b0010 (1.0) second; 0xF7: 6.0, -6.0
    packed = np.array([0x21, 0xF7, 0x98, 0x00], np.uint8)
    path = _library_file(tmp_path / "f4.safetensors", {"w": ("float4_e2m1fn_x2", (2, 2), packed)})
    got = lw.load(path)["w"]
    assert got.shape == (2, 4) and got.dtype == np.float32
    _assert_same_floats(got.data, [[0.5, 1.0, 6.0, -6.0], [-0.0, -0.5, 0.0, 0.0]])
    every = np.arange(16)
    _assert_same_floats(safetensors_reader._minifloat_table(*safetensors_reader._MINIFLOATS["F4"]),
                        [_ref_e2m1(int(c)) for c in every])
    assert [_ref_e2m1(c) for c in range(8)] == [0, 0.5, 1, 1.5, 2, 3, 4, 6]


def _ref_bf16(bits):
    """float64 value of each bfloat16 bit pattern: sign, 8-bit exponent (bias 127), 7 bits."""
    bits = bits.astype(np.int64)
    sign = np.where(bits >> 15, -1.0, 1.0)
    e, m = (bits >> 7) & 0xFF, bits & 0x7F
    value = np.where(e == 0, m * 2.0**-133, (128 + m) * np.exp2(e - 134.0))
    value = np.where(e == 255, np.where(m == 0, np.inf, np.nan), value)
    return sign * value


def test_bf16_file_widens_every_bit_pattern_exactly(tmp_path):
    patterns = np.arange(2**16, dtype="<u2")
    path = _library_file(tmp_path / "bf16.safetensors",
                         {"w": ("bfloat16", (256, 256), patterns.view(np.uint8))},
                         metadata={"format": "pt"})
    tensors, meta = serialization.load_with_metadata(path)
    assert meta == {"format": "pt"} and tensors["w"].dtype == np.float32
    _assert_same_floats(tensors["w"].data.reshape(-1), _ref_bf16(patterns))
    by_hand = {0x3F80: 1.0, 0xBF80: -1.0, 0x4049: 3.140625, 0x0080: 2.0**-126,
               0x0001: 2.0**-133, 0x7F7F: (2 - 2.0**-7) * 2.0**127, 0x7F80: math.inf}
    for bits, value in by_hand.items():
        assert tensors["w"].data.reshape(-1)[bits] == value, hex(bits)


def test_fp8_decoders_agree_with_ml_dtypes():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    codes = np.arange(256, dtype=np.uint8)
    for code, (library_name, _) in _FP8.items():
        table = (safetensors_reader._e8m0_table() if code == "F8_E8M0" else
                 safetensors_reader._minifloat_table(*safetensors_reader._MINIFLOATS[code]))
        expected = codes.view(getattr(ml_dtypes, library_name)).astype(np.float64)
        assert np.array_equal(table.astype(np.float64), expected, equal_nan=True), code


def test_numpy_dtypes_from_the_library_writer_load_as_they_are(tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(3)
    arrays = {name: rng.integers(0, 100, size=(2, 3)).astype(dtype) for name, dtype in [
        ("u8", np.uint8), ("i8", np.int8), ("u16", np.uint16), ("i16", np.int16),
        ("u32", np.uint32), ("i32", np.int32), ("u64", np.uint64), ("i64", np.int64),
        ("f16", np.float16), ("f32", np.float32), ("f64", np.float64)]}
    arrays["bool"] = np.array([[True, False, True]])
    arrays["c64"] = (rng.standard_normal(3) + 1j * rng.standard_normal(3)).astype(np.complex64)
    arrays["empty"] = np.zeros((0, 4), np.float32)
    save_file(arrays, str(tmp_path / "all.safetensors"))
    loaded = lw.load(tmp_path / "all.safetensors")
    assert sorted(loaded) == sorted(arrays)
    for name, expected in arrays.items():
        assert loaded[name].dtype == expected.dtype and loaded[name].shape == expected.shape
        np.testing.assert_array_equal(loaded[name].data, expected)


@pytest.mark.parametrize("code", ["F6_E2M3", "F6_E3M2"])
def test_fp6_is_refused_in_one_line_saying_why(tmp_path, code):
    # The library's writer has no FP6; the reader accepts the header, so write it by hand.
    path = _raw_file(tmp_path / "f6.safetensors",
                     {"w": {"dtype": code, "shape": [4], "data_offsets": [0, 3]}}, bytes(3))
    _assert_one_line_error(path, match="bit packing")


# --- saving where it cannot be written -------------------------------------------------------


def test_save_into_a_missing_directory_names_it(tmp_path):
    missing = tmp_path / "no" / "such"
    with pytest.raises(FileNotFoundError) as err:
        lw.save({"w": lw.ones(2)}, missing / "w.safetensors")
    message = str(err.value)
    assert str(missing) in message and "does not exist" in message and "\n" not in message
    assert os.listdir(tmp_path) == []


def _assert_disk_full_keeps_the_old_file(tmp_path, error):
    path = tmp_path / "w.safetensors"
    lw.save({"w": lw.ones(3)}, path)
    before = path.read_bytes()
    message = str(error.value)
    assert error.value.errno == errno.ENOSPC
    assert str(path) in message and "No space left" in message and "\n" not in message
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["w.safetensors"]  # no temporary file left behind


def test_full_disk_at_write_is_one_line_and_atomic(tmp_path, monkeypatch):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    path = tmp_path / "w.safetensors"
    lw.save({"w": lw.ones(3)}, path)
    real_fdopen = os.fdopen

    def onto_full_device(fd, mode, **kwargs):  # the kernel's own ENOSPC on write
        os.close(fd)
        return real_fdopen(os.open("/dev/full", os.O_WRONLY), mode, **kwargs)

    monkeypatch.setattr(serialization.os, "fdopen", onto_full_device)
    with pytest.raises(OSError) as err:
        lw.save({"w": lw.zeros(300)}, path)
    monkeypatch.undo()
    _assert_disk_full_keeps_the_old_file(tmp_path, err)


def test_full_disk_at_fsync_is_one_line_and_atomic(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    lw.save({"w": lw.ones(3)}, path)

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(serialization.os, "fsync", no_space)
    with pytest.raises(OSError) as err:
        lw.save({"w": lw.zeros(300)}, path)
    monkeypatch.undo()
    _assert_disk_full_keeps_the_old_file(tmp_path, err)


# --- the CLI on a truncated weights file -----------------------------------------------------


@pytest.fixture(scope="module")
def truncated_run(tmp_path_factory):
    from layerwise.cli.main import main

    out = tmp_path_factory.mktemp("runs")
    assert main(["train", "--model", "tiny", "--epochs", "1", "--no-progress", "--no-card",
                 "--out", str(out), "--name", "r"]) == 0
    weights = out / "r" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return out / "r"


@pytest.mark.parametrize("command", [["cost"], ["compress", "--quantize", "int8", "--no-card"]])
def test_cli_on_a_truncated_weights_file_prints_one_line(truncated_run, tmp_path, capsys,
                                                         command):
    from layerwise.cli.main import main

    capsys.readouterr()
    argv = [command[0], str(truncated_run), *command[1:]]
    if command[0] == "compress":
        argv += ["--out", str(tmp_path / "small")]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert str(truncated_run / "model.safetensors") in lines[0] and "truncated" in lines[0]


def test_every_dtype_the_installed_safetensors_knows_is_handled():
    # The library's reader lists its dtypes when it meets an unknown one; each must be one
    # layerwise either reads or refuses by name, never one it has not heard of.
    import re

    from safetensors import deserialize

    header = json.dumps({"t": {"dtype": "NOT_A_DTYPE", "shape": [1], "data_offsets": [0, 1]}})
    header = header.encode() + b" " * (-len(header) % 8)
    with pytest.raises(Exception) as err:
        deserialize(struct.pack("<Q", len(header)) + header + b"\0")
    known = re.findall(r"`([A-Z0-9_]+)`", str(err.value).split("expected one of", 1)[-1])
    assert "F32" in known and "BF16" in known, str(err.value)  # the message was understood
    assert set(known) <= set(safetensors_reader._DTYPE_BITS), set(known) - set(
        safetensors_reader._DTYPE_BITS)
