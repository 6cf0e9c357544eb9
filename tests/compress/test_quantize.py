import os

import numpy as np
import pytest

import layerwise as lw
from layerwise.train.recipes import get_recipe
from layerwise.train.run import make_config
from layerwise import nn
from layerwise.compress import (
    QuantLinear, QuantLSTM, dequantize, predict, quantize_dynamic, quantize_per_channel,
    quantize_static, save_quantized,
)


def test_per_channel_symmetric_weights():
    w = np.array([[0.5, -1.27, 0.0], [0.02, 0.01, -0.005], [0, 0, 0]], dtype=np.float32)
    q, scale = quantize_per_channel(w)
    assert q.dtype == np.int8 and scale.dtype == np.float32
    np.testing.assert_allclose(scale[:2], [1.27 / 127, 0.02 / 127], rtol=1e-6)
    assert q[0, 1] == -127 and q[1, 0] == 127 and np.all(q[2] == 0)
    assert q[0, 0] == round(0.5 / (1.27 / 127))
    # the round-trip error is at most half a step per channel
    err = np.abs(dequantize(q, scale) - w)
    assert np.all(err <= scale[:, None] / 2 + 1e-7)


def test_int_kernel_equals_integer_arithmetic():
    lw.manual_seed(0)
    lin = nn.Linear(6, 4)
    x = lw.randn(3, 6)
    q = QuantLinear(lin, input_scale=0.05, kernel="int")
    qx = np.clip(np.rint(x.data.astype(np.float64) / 0.05), -127, 127).astype(np.int64)
    acc = qx @ q.weight.data.astype(np.int64).T  # exact integer sums
    expected = acc * (0.05 * q.weight_scale.data.astype(np.float64)) + lin.bias.data
    np.testing.assert_allclose(q(x).data, expected, rtol=1e-5, atol=1e-6)
    dq = QuantLinear(lin, input_scale=0.05)  # the dequant kernel computes the same
    np.testing.assert_allclose(dq(x).data, q(x).data, rtol=1e-5, atol=1e-5)


def test_static_int8_agrees_with_float_on_digits(digits, digits_cnn):
    calib = [digits["train"][i:i + 100][0] for i in range(0, 300, 100)]
    q = quantize_static(digits_cnn, calib)
    ref, labels = predict(digits_cnn, digits["test"])
    got, _ = predict(q, digits["test"])
    agreement = (ref == got).mean()
    assert agreement >= 0.90, f"int8 agreement {agreement:.3f} is a hard failure"
    assert agreement >= 0.99


def test_dynamic_int8_agrees_on_digits(digits, digits_cnn):
    ref, _ = predict(digits_cnn, digits["test"])
    got, _ = predict(quantize_dynamic(digits_cnn), digits["test"])
    assert (ref == got).mean() >= 0.99


def test_int8_file_is_about_a_quarter(tmp_path):
    lw.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    lw.save(model.state_dict(), tmp_path / "f32.safetensors")
    q = quantize_dynamic(model)
    save_quantized(q, tmp_path / "int8.safetensors")
    ratio = os.path.getsize(tmp_path / "int8.safetensors") / os.path.getsize(
        tmp_path / "f32.safetensors")
    assert 0.24 < ratio < 0.30
    back = lw.load(tmp_path / "int8.safetensors")
    assert back["0.weight"].data.dtype == np.int8 and back["0.weight_scale"].shape == (256,)


def test_dynamic_lstm_is_weight_only_int8():
    lw.manual_seed(0)
    lstm = nn.LSTM(4, 8, batch_first=True)
    q = quantize_dynamic(nn.Sequential(lstm))[0]
    assert isinstance(q, QuantLSTM)
    assert q.state_dict()["weight_hh_l0"].data.dtype == np.int8
    x = lw.randn(2, 5, 4)
    out, _ = q(x)
    ref, _ = lstm(x)
    assert np.abs(out.data - ref.data).max() < 0.02
    assert not np.array_equal(out.data, ref.data)  # it did round the weights


def test_bad_kernel_name():
    with pytest.raises(ValueError, match="'fp8'"):
        QuantLinear(nn.Linear(2, 2), kernel="fp8")


def test_int8_file_loads_back_to_the_same_predictions(tmp_path, digits, digits_cnn):
    from layerwise.compress import load_quantized
    calib = [digits["train"][0:100][0]]
    q = quantize_static(digits_cnn, calib)
    save_quantized(q, tmp_path / "q.safetensors")
    lw.manual_seed(123)  # a differently initialised float model of the same architecture
    fresh = get_recipe("cnn").build(make_config("cnn", seed=0)["hyperparameters"], 1, None).model
    back = load_quantized(fresh, tmp_path / "q.safetensors")
    x = digits["test"][0:64][0]
    np.testing.assert_array_equal(back(x).data, q(x).data)
