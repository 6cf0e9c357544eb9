"""The LSTM's compiled cells (layerwise/ops/fast/rnn.py) against the reference op, where
dispatch chooses them, and their gates on inf, -inf and NaN.

The op harness (tests/ops/test_rnn_cases.py) runs the path on every LSTM case; here the
layers are stacked and bidirectional with initial states and inputs large enough to saturate
some gates, and every parameter's gradient is compared too."""

import numpy as np
import pytest

import layerwise as lw
from layerwise.autograd import dispatch
from layerwise.ops.fast.rnn import LSTMCompiledCells
from layerwise.ops.rnn import LSTMFunction
from tests.ops.fast.common import TOL, assert_close, needs

pytestmark = needs(LSTMCompiledCells)


def _outputs_and_grads(model, forward, arrays, probe):
    """forward(*tensors) -> (out, c_n); returns out, c_n and the gradients of the arrays and of
    every parameter of ``model``."""
    for p in model.parameters():
        p.grad = None
    tensors = [lw.tensor(a, requires_grad=np.issubdtype(a.dtype, np.floating)) for a in arrays]
    out, c_n = forward(*tensors)
    ((out * lw.tensor(probe)).sum() + c_n.sum()).backward()
    grads = [t.grad.numpy() for t in tensors if t.requires_grad]
    return ([out.detach().numpy(), c_n.detach().numpy()] + grads
            + [p.grad.numpy() for p in model.parameters()])


def _path_and_reference(model, forward, arrays, probe):
    with dispatch.forced(dispatch.REFERENCE):
        reference = _outputs_and_grads(model, forward, arrays, probe)
    with dispatch.forced(LSTMCompiledCells) as uses:
        got = _outputs_and_grads(model, forward, arrays, probe)
    return got, reference, uses.count


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [True, False])
def test_compiled_cells_match_the_reference(bidirectional, batch_first):
    """Outputs, the final cell state and every gradient (input, initial states, weights and
    biases of both layers) of a two-layer float32 LSTM."""
    rng = np.random.default_rng(2)
    lw.manual_seed(0)
    lstm = lw.nn.LSTM(5, 6, num_layers=2, batch_first=batch_first, bidirectional=bidirectional)
    directions = 2 if bidirectional else 1
    x = (rng.standard_normal((3, 7, 5)) * 4).astype(np.float32)  # saturates some gates
    batch = 3 if batch_first else 7
    h0, c0 = (rng.standard_normal((2 * directions, batch, 6)).astype(np.float32) for _ in "hc")
    probe = rng.standard_normal((3, 7, 6 * directions)).astype(np.float32)

    def forward(x, h0, c0):
        out, (_, c_n) = lstm(x, (h0, c0))
        return out, c_n

    got, reference, uses = _path_and_reference(lstm, forward, [x, h0, c0], probe)
    assert uses == 2 * directions  # every layer and direction ran the compiled cells
    assert len(got) == 5 + len(list(lstm.parameters()))
    for i, (a, b) in enumerate(zip(got, reference)):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, **TOL[np.float32], err_msg=f"result {i}")


def test_a_users_embedding_then_lstm_reaches_the_compiled_cells():
    """Embedding -> LSTM(batch_first=True), as a PyTorch user writes a language model: both
    layers run the compiled cells without forcing, and forced against the reference the
    outputs and gradients agree, the embedding table's included (token ids repeat, and row 0
    is never read, so its gradient stays zero)."""
    rng = np.random.default_rng(4)
    lw.manual_seed(0)
    embedding, lstm = lw.nn.Embedding(9, 5), lw.nn.LSTM(5, 6, num_layers=2, batch_first=True)
    ids = rng.integers(1, 9, (3, 7))  # (B, T): 21 draws from 8 rows

    def forward(ids):
        out, (_, c_n) = lstm(embedding(ids))
        return out, c_n

    with dispatch.traced() as calls:
        forward(lw.tensor(ids))
    lstm_calls = [call for call in calls if call[0] is LSTMFunction]
    assert [dispatch.choose(*call) for call in lstm_calls] == [LSTMCompiledCells] * 2

    class Both(lw.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding, self.lstm = embedding, lstm

    probe = rng.standard_normal((3, 7, 6)).astype(np.float32)
    got, reference, uses = _path_and_reference(Both(), forward, [ids], probe)
    assert uses == 2
    table_grad = got[2]
    assert table_grad.shape == (9, 5) and not table_grad[0].any()
    for i, (a, b) in enumerate(zip(got, reference)):
        np.testing.assert_allclose(a, b, **TOL[np.float32], err_msg=f"result {i}")


@pytest.mark.parametrize("dtype, fast", [(np.float32, True), (np.float64, False)])
def test_dispatch_chooses_the_compiled_cells_for_float32_only(dtype, fast):
    """The forward cell is float32 only (its sigmoid and tanh are on vecmath's exp_f32)."""
    lstm = lw.nn.LSTM(4, 3).to(getattr(lw, np.dtype(dtype).name))
    x = lw.tensor(np.random.default_rng(0).standard_normal((5, 2, 4)).astype(dtype))
    with dispatch.traced() as calls:
        lstm(x)
    chosen = [dispatch.choose(*call) for call in calls if call[0] is LSTMFunction]
    assert chosen == [LSTMCompiledCells if fast else LSTMFunction]


@pytest.mark.parametrize("batch_first", [True, False])
def test_compiled_gates_at_the_extremes(batch_first):
    """inf, -inf and NaN pre-activations in every gate: sigmoid 1, 0, NaN and tanh 1, -1, NaN,
    as the reference's 0.5 tanh(0.5 a) + 0.5 and tanh give. With c_0 = 1 that makes
    c = f c_0 + i g = (2, 0, NaN) and h = o tanh(c) = (tanh 2, 0, NaN)."""
    h = 3
    xw = np.tile(np.array([np.inf, -np.inf, np.nan], np.float32), 4).reshape(1, 1, 4 * h)
    arrays = [xw, np.zeros((1, h), np.float32), np.ones((1, h), np.float32),
              np.zeros((4 * h, h), np.float32)]
    results = []
    for path in (dispatch.REFERENCE, LSTMCompiledCells):
        with dispatch.forced(path), lw.no_grad():
            packed = LSTMFunction.apply(*[lw.tensor(a) for a in arrays], batch_first=batch_first)
        results.append(packed.numpy())
    expected = [np.tanh(2), 0, np.nan, 2, 0, np.nan]  # h_1, then c_1
    for packed in results:
        np.testing.assert_allclose(packed, expected, rtol=0, atol=2e-7)


@pytest.mark.parametrize("batch_first", [True, False])
def test_gru_compiled_cells_match_the_reference_on_a_users_gru(batch_first):
    """A two-layer GRU as a user builds it, at sizes past the harness's, float32: every path
    forced through the compiled cells against the reference ops, output and all gradients."""
    from layerwise.ops.fast.rnn import GRUCompiledCells

    if not GRUCompiledCells.available():
        pytest.skip("needs numba")
    lw.manual_seed(0)
    gru = lw.nn.GRU(12, 16, num_layers=2, batch_first=batch_first)
    x = np.random.default_rng(1).standard_normal((5, 9, 12) if batch_first else (9, 5, 12))
    x = (x * 3).astype(np.float32)  # gates well into saturation
    probe = np.random.default_rng(2).standard_normal(x.shape[:2] + (16,)).astype(np.float32)
    results = []
    for path in (dispatch.REFERENCE, GRUCompiledCells):
        t = lw.tensor(x, requires_grad=True)
        for p in gru.parameters():
            p.grad = None
        with dispatch.forced(path) as uses:
            out, h_n = gru(t)
            (out * lw.tensor(probe)).sum().backward()
        assert path == dispatch.REFERENCE or uses.count == 2  # one call per layer
        results.append([out.detach().numpy(), h_n.detach().numpy(), t.grad.numpy()]
                       + [p.grad.numpy() for p in gru.parameters()])
    assert_close(results[1], results[0], np.float32)
