"""ONNX export round trip: the exported file run by onnxruntime matches layerwise's outputs."""

import numpy as np
import pytest

import layerwise as lw
from layerwise import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from layerwise.finetune import apply_lora
from layerwise.interop.onnx_export import export_onnx
from layerwise.models import GPT, MLP, GPTConfig, LeNet


def _roundtrip(model, x, path, other=None, **options):
    if options:
        proto = lw.onnx.export(model, x, path, **options)
    else:
        proto = export_onnx(model, path, example_input=x)
    assert proto.opset_import[0].version == 17
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for inp in [x] + ([other] if other is not None else []):
        with lw.no_grad():
            expected = model.eval()(lw.tensor(inp))
        expected = (expected[0] if isinstance(expected, tuple) else expected).numpy()
        got = session.run(None, {"input": inp})[0]
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    return proto


def test_mlp_with_dropout_exports_and_runs_on_another_batch_size(tmp_path):
    lw.manual_seed(0)
    model = MLP(784, hidden=(32, 16), num_classes=10, dropout=0.3)
    rng = np.random.default_rng(0)
    x = rng.random((3, 1, 28, 28), dtype=np.float32)
    proto = _roundtrip(model, x, tmp_path / "mlp.onnx", other=x[:1])
    assert {"Gemm", "Relu", "Reshape"} <= {n.op_type for n in proto.graph.node}


def test_cnn_and_lenet_export(tmp_path):
    lw.manual_seed(1)
    cnn = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, stride=2, padding="valid"), nn.GELU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(6 * 3 * 3, 5))
    cnn(lw.randn(8, 1, 28, 28))  # move the BatchNorm running statistics off their defaults
    x = np.random.default_rng(1).random((2, 1, 28, 28), dtype=np.float32)
    proto = _roundtrip(cnn, x, tmp_path / "cnn.onnx")
    assert {"Conv", "MaxPool", "BatchNormalization"} <= {n.op_type for n in proto.graph.node}
    _roundtrip(LeNet(num_classes=3), x, tmp_path / "lenet.onnx")


def test_gpt_exports_with_symbolic_batch_and_length(tmp_path):
    lw.manual_seed(2)
    model = GPT(GPTConfig(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=16))
    rng = np.random.default_rng(0)
    for p in model.parameters():  # GPT-2's 0.02 init leaves GELU nearly linear: use O(1) weights
        p.data[...] = rng.normal(scale=0.5, size=p.shape)
    ids = np.random.default_rng(2).integers(0, 23, size=(2, 7))
    proto = _roundtrip(model, ids, tmp_path / "gpt.onnx", other=ids[:1, :4],
                       dynamic_axes={"input": {1: "sequence"}})
    ops = {n.op_type for n in proto.graph.node}
    assert {"LayerNormalization", "Softmax", "MatMul", "Gather", "Reshape"} <= ops


def test_lora_model_exports_with_the_adapter_folded_in(tmp_path):
    lw.manual_seed(3)
    model = apply_lora(MLP(12, hidden=(8,), num_classes=4), "layers.*", r=2, alpha=4)
    for p in model.parameters():
        if p.requires_grad:
            p.data[...] = np.random.default_rng(0).normal(size=p.shape)
    _roundtrip(model, np.random.default_rng(3).random((2, 12), dtype=np.float32),
               tmp_path / "lora.onnx")


def test_an_op_without_onnx_form_is_named_with_its_module(tmp_path):
    from layerwise.autograd.function import Function

    class Twice(Function):
        def forward(self, x):
            return 2 * x

        def backward(self, g):
            return 2 * g

    class Odd(nn.Module):
        def forward(self, x):
            return Twice.apply(x)

    with pytest.raises(ValueError, match=r"^cannot export: op 'Twice' \(in 1, a Odd\) has no "
                                         r"ONNX form; .*register_op"):
        export_onnx(nn.Sequential(nn.ReLU(), Odd()), tmp_path / "odd.onnx",
                    np.zeros((1, 2), np.float32))
    assert not (tmp_path / "odd.onnx").exists()
