"""lw.onnx.export: models written by users, run in onnxruntime against layerwise's own output,
on batch sizes (and lengths) other than the example's."""

import numpy as np
import pytest

import layerwise as lw
from layerwise import nn
from layerwise.autograd.function import Function
from layerwise.nn import functional as F

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TOLERANCE = 1e-4  # max |onnxruntime - layerwise|, float32
rng = np.random.default_rng(0)


def run_both(model, example, others, **options):
    """Export on ``example``, then run every input set in onnxruntime and in layerwise; returns
    the proto and the largest difference over every output."""
    was_training = getattr(model, "training", None)
    proto = lw.onnx.to_onnx(model, example, **options)
    assert getattr(model, "training", None) == was_training  # the trace's eval mode undone
    if was_training is not None:
        model.eval()  # what the export computes: Dropout off, BatchNorm's running statistics
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    worst = 0.0
    for inputs in [example] + others:
        inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        with lw.no_grad():
            expected = model(*(lw.tensor(a) for a in inputs))
        expected = [t for t in (expected if isinstance(expected, tuple) else (expected,))
                    if isinstance(t, lw.Tensor)]
        got = session.run(None, {i.name: a for i, a in zip(session.get_inputs(), inputs)})
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.shape == e.shape
            worst = max(worst, float(np.abs(g.astype(np.float64) - e.numpy()).max()))
    assert worst < TOLERANCE
    return proto


def images(*shape):
    return rng.random(shape, dtype=np.float32)


class Block(nn.Module):
    """A residual block: conv-bn-relu-conv(groups)-bn, plus the input."""

    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, groups=2), nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class ResidualCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1, dilation=1)
        self.blocks = nn.Sequential(Block(8), Block(8))
        self.pool, self.pool2 = nn.AdaptiveAvgPool2d(1), nn.AdaptiveAvgPool2d((2, 2))
        self.fc = nn.Linear(8 + 8 * 4, 5)

    def forward(self, x):  # (B, 3, 16, 16) -> (B, 5)
        h = self.blocks(self.stem(x))  # (B, 8, 8, 8)
        return self.fc(lw.cat([self.pool(h).flatten(1), self.pool2(h).flatten(1)], 1))


def test_residual_cnn_with_batch_norm_and_adaptive_pooling():
    lw.manual_seed(0)
    model = ResidualCNN()
    model(lw.randn(8, 3, 16, 16))  # training mode: the running statistics move off 0 and 1
    proto = run_both(model, images(2, 3, 16, 16), [images(5, 3, 16, 16), images(1, 3, 16, 16)])
    ops = {n.op_type for n in proto.graph.node}
    assert {"Conv", "BatchNormalization", "ReduceSum"} <= ops
    names = {t.name for t in proto.graph.initializer}
    assert {"blocks.0.bn1.running_mean", "blocks.1.conv2.weight", "fc.bias"} <= names


class TinyUNet(nn.Module):
    """Down by a strided conv, up by transposed convs (output_padding, groups, dilation), and a
    skip connection concatenated on the channels."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(2, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.head = nn.ConvTranspose2d(6, 3, 2, dilation=2, bias=False)

    def forward(self, x):  # (B, 2, 10, 12) -> (B, 3, 12, 14)
        return self.head(lw.cat([self.up(F.relu(self.down(x))), x], 1))


def test_transposed_convolutions_export_as_conv_transpose():
    lw.manual_seed(5)
    proto = run_both(TinyUNet(), images(2, 2, 10, 12), [images(3, 2, 10, 12)])
    assert sum(n.op_type == "ConvTranspose" for n in proto.graph.node) == 2


class Tagger(nn.Module):
    """Embedding -> 2-layer bidirectional LSTM -> Linear, with a padding mask from the ids."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8, padding_idx=0)
        self.lstm = nn.LSTM(8, 12, num_layers=2, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(24, 20)

    def forward(self, ids):  # (B, T) -> (B, T, 20), (B, 24)
        out, (h, c) = self.lstm(self.emb(ids))
        padding = (ids == 0) | ~(ids < 19)  # ids 0 and 19 are masked
        logits = self.fc(out).masked_fill(padding.unsqueeze(-1), 0.0)
        return logits, lw.cat([h[-1], c[-2]], dim=-1)


def test_embedding_lstm_linear_with_dynamic_batch_and_length():
    lw.manual_seed(1)
    ids = rng.integers(0, 20, (2, 7))
    ids[0, -2:] = 0, 19
    proto = run_both(Tagger(), ids, [rng.integers(0, 20, (4, 11)), rng.integers(0, 20, (1, 3))],
                     dynamic_axes={"input": {1: "sequence"}})
    assert sum(n.op_type == "LSTM" for n in proto.graph.node) == 4  # 2 layers x 2 directions
    dims = [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence"]


class GRUClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru, self.fc = nn.GRU(6, 10, num_layers=2), nn.Linear(10, 3)

    def forward(self, x):  # (T, B, 6) sequence-first -> (B, 3)
        _, h = self.gru(x)
        return self.fc(h[-1])


def test_sequence_first_gru_with_its_batch_axis_named():
    lw.manual_seed(2)
    run_both(GRUClassifier(), images(5, 2, 6), [images(5, 3, 6), images(5, 1, 6)],
             dynamic_batch=False, dynamic_axes={"input": {1: "batch"}})


def test_transformer_encoder_layers_and_an_mlp_with_layer_norm():
    lw.manual_seed(3)
    encoder = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True)
    run_both(encoder, images(2, 5, 16), [images(3, 5, 16)])
    pre_norm = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, norm_first=True,
                                          activation="gelu")  # (S, N, E)
    run_both(pre_norm, images(5, 2, 16), [images(5, 3, 16)], dynamic_batch=False,
             dynamic_axes={"input": {1: "batch"}})
    mlp = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.GELU(), nn.Dropout(0.3),
                        nn.Linear(16, 8), nn.GELU(approximate="tanh"), nn.SiLU(),
                        nn.LeakyReLU(0.2), nn.Tanh(), nn.Linear(8, 3), nn.Sigmoid())
    proto = run_both(mlp, images(3, 6), [images(7, 6)])
    assert "Dropout" not in {n.op_type for n in proto.graph.node}


class Unrolled(nn.Module):
    """A Python loop, a recurrence cell written by hand, indexing, splitting and reductions:
    an op sequence no module type describes."""

    def __init__(self):
        super().__init__()
        self.cell, self.out = nn.Linear(8, 8), nn.Linear(4, 3)

    def forward(self, x):  # (B, T, 4)
        h = lw.zeros(x.shape[0], 4)  # made inside forward: follows the batch
        for t in range(x.shape[1]):
            gates = self.cell(lw.cat([x[:, t], h], dim=-1))
            z, n = gates.chunk(2, dim=-1)
            h = (1 - z.sigmoid()) * h + z.sigmoid() * n.tanh()
        y = h[:, 1:3].abs().sqrt().exp() - (h[:, :2] ** 2 + 1).log().clamp(min=-3)
        y = y + (h[:, ::2] * h[:, ::2] + 0.5).rsqrt().clamp(max=2) / 2
        pooled = lw.stack([y, -y], 1).sum(1) + y.amax(-1, keepdim=True) + y.mean(-1, keepdim=True)
        return F.log_softmax(self.out(h.permute(1, 0).transpose(0, 1)), -1), pooled.softmax(0)


def _padding(batch, length, lengths):
    """(batch, length) int64 attention mask: 1 for the first lengths[i] tokens of row i."""
    return (np.arange(length)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)


def test_bert_with_its_attention_mask_as_an_input():
    # the mask is computed inside forward from the attention_mask input: exported, not frozen
    from layerwise.models.bert import BertConfig, BertModel

    lw.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=64,
                                max_position_embeddings=32))
    ids = lambda b, t: rng.integers(1, 50, (b, t))  # noqa: E731
    example = (ids(3, 10), _padding(3, 10, [7, 10, 4]))
    others = [(ids(4, 12), _padding(4, 12, [12, 5, 12, 9])), (ids(1, 6), _padding(1, 6, [2]))]
    run_both(bert, example, others, input_names=["input_ids", "attention_mask"],
             dynamic_axes={"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}})


def test_multihead_attention_with_a_key_padding_mask_as_an_input():
    lw.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=True)
    blocked = lambda b, t, lengths: _padding(b, t, lengths) == 0  # noqa: E731  True: not allowed

    def attend(x, padding):
        return mha(x, x, x, key_padding_mask=padding, need_weights=False)[0]

    example = (images(2, 5, 16), blocked(2, 5, [3, 5]))
    run_both(attend, example, [(images(3, 5, 16), blocked(3, 5, [1, 5, 2]))], module=mha)


def test_a_python_loop_and_an_op_sequence_no_converter_knew():
    lw.manual_seed(4)
    proto = run_both(Unrolled(), images(3, 5, 4), [images(6, 5, 4)])
    assert not [n for n in proto.graph.node if n.op_type in ("LSTM", "GRU")]


def test_the_file_is_written_once_and_not_replaced(tmp_path):
    model = nn.Linear(3, 2)
    path = tmp_path / "linear.onnx"
    proto = lw.onnx.export(model, images(2, 3), path, input_names=["x"], output_names=["y"])
    assert [i.name for i in proto.graph.input] == ["x"] and path.stat().st_size > 0
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        lw.onnx.export(nn.Linear(3, 2), images(2, 3), path)
    assert path.read_bytes() == before
    lw.onnx.export(nn.Linear(3, 2), images(2, 3), path, overwrite=True)
    assert path.read_bytes() != before


class Twice(Function):
    def forward(self, x):
        return 2 * x

    def backward(self, g):
        return 2 * g


class MyBlock(nn.Module):
    def forward(self, x):
        return Twice.apply(x)


class Branches(nn.Module):
    def forward(self, x):
        return x * 2 if x.shape[0] < 3 else x + 1


class FrozenMask(nn.Module):
    def forward(self, x):
        return lw.where(lw.tensor(x.data > 0.5), x, 0.0)  # the mask leaves the ops via .data


class FloorBatch(nn.Module):
    def forward(self, x):
        return x.reshape(x.shape[0] // 2, -1)


@pytest.mark.parametrize("model, example, options, message", [
    (nn.Sequential(nn.Linear(2, 2), nn.ReLU(), MyBlock()), images(2, 2), {},
     r"^cannot export: op 'Twice' \(in 2, a MyBlock\) has no ONNX form; "),
    (Branches(), images(2, 3), {},
     r"^cannot export: op 0 is Mul .* branches on them; export with dynamic_batch=False"),
    (FrozenMask(), np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3), {"dynamic_batch": False},
     (r"^cannot export: op 'Where' \(in the model itself, a FrozenMask\) reads a constant .*"
      r"computed from the input's values")),
    (FloorBatch(), images(2, 3), {}, r"^cannot export: op 'Reshape' .* makes shapes "),
    (nn.Linear(2, 2), "abc", {}, r"example_input holds a str"),
    (nn.Linear(2, 2), images(2, 2), {"opset": 12}, r"opset must be an int from 17 to 21, got 12"),
    (nn.Linear(2, 2), images(2, 2), {"input_names": ["a", "b"]}, r"input_names must be a list "),
    (nn.Linear(2, 2), images(2, 2), {"dynamic_axes": {"x": {1: "s"}}},
     r"dynamic_axes names input 'x'; the inputs are \['input'\]"),
    (nn.Linear(2, 2), images(2, 2), {"dynamic_axes": {"input": {5: "s"}}}, r"has no axis 5"),
    (lambda a, b: a + b, (images(2, 3), images(4, 3)), {},
     r"'batch' axes of the inputs have different sizes \[2, 4\]"),
])
def test_what_cannot_be_exported_is_refused_in_one_line(model, example, options, message):
    with pytest.raises(lw.onnx.ExportError, match=message) as info:
        lw.onnx.to_onnx(model, example, **options)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_supported_ops_and_registering_one():
    assert {"LinearFunction", "LSTMFunction", "SDPAttention", "GetItem"} <= set(
        lw.onnx.supported_ops())
    lw.onnx.register_op(Twice, lambda g, op: g.op("Add", [op.inputs[0].name] * 2))
    try:
        run_both(MyBlock(), images(2, 3), [images(4, 3)])
    finally:
        from layerwise.onnx import table

        del table.EMITTERS[Twice]
