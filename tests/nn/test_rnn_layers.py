"""nn.Embedding, nn.RNN, nn.LSTM, nn.GRU: PyTorch fixtures (state_dict loaded unchanged, outputs,
final states and every gradient), parameter names and init, state carrying, dropout between
layers, unbatched input, and the error messages."""

import math
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import layerwise as lw
from layerwise.nn.embedding import Embedding
from layerwise.nn.rnn import GRU, LSTM, RNN
from layerwise.ops.embedding import embedding
from tests.ops.test_rnn_cases import np_lstm_cell, np_stacked

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "torch"
TORCH_CASES = ["lstm", "lstm_nobias", "gru", "gru_timemajor", "rnn_tanh", "rnn_relu"]


# --- against PyTorch -------------------------------------------------------------------------


def _from_fixture(name):
    f = load_file(FIXTURES / f"rnn_{name}.safetensors")
    config = {k.split("/")[1]: int(v) for k, v in f.items() if k.startswith("config/")}
    cls = {"lstm": LSTM, "gru": GRU, "rnn": RNN}[name.split("_")[0]]
    if cls is RNN:
        config["nonlinearity"] = "relu" if config.pop("relu", 0) else "tanh"
    module = cls(**config)
    module.load_state_dict({k: v for k, v in f.items() if "/" not in k})  # torch's keys, unchanged
    return f, module


@pytest.mark.parametrize("name", TORCH_CASES)
def test_matches_pytorch_outputs_states_and_gradients(name):
    f, module = _from_fixture(name)
    x = lw.tensor(f["input/x"], requires_grad=True)
    init = {
        k: lw.tensor(f[f"input/{k}"], requires_grad=True) for k in ("h0", "c0") if f"input/{k}" in f
    }
    hx = None
    if init:
        hx = (init["h0"], init["c0"]) if isinstance(module, LSTM) else init["h0"]
    output, final = module(x, hx)
    results = {"output": output}
    if isinstance(module, LSTM):
        results["h_n"], results["c_n"] = final
    else:
        results["h_n"] = final
    assert set(results) == {k.split("/")[1] for k in f if k.startswith("output/")}
    loss = sum((results[k] * lw.tensor(f[f"probe/{k}"])).sum() for k in results)
    loss.backward()

    for k, value in results.items():
        assert value.shape == f[f"output/{k}"].shape
        np.testing.assert_allclose(value.detach().numpy(), f[f"output/{k}"], atol=1e-5, err_msg=k)
    np.testing.assert_allclose(x.grad.numpy(), f["grad/x"], atol=1e-5)
    for k, t in init.items():
        np.testing.assert_allclose(t.grad.numpy(), f[f"grad/{k}"], atol=1e-5, err_msg=k)
    assert sorted(n for n, _ in module.named_parameters()) == sorted(k for k in f if "/" not in k)
    for n, p in module.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), f[f"grad/{n}"], atol=1e-5, err_msg=n)


def test_state_dict_round_trips_through_pytorch_keys():
    f, module = _from_fixture("lstm")
    state = module.state_dict()
    assert sorted(state) == sorted(k for k in f if "/" not in k)
    for k, v in state.items():
        np.testing.assert_array_equal(v.detach().numpy(), f[k])


# --- parameters ------------------------------------------------------------------------------


def test_parameter_names_shapes_and_order_follow_pytorch():
    m = LSTM(3, 5, num_layers=2, bidirectional=True)
    expected = []
    for layer, width in ((0, 3), (1, 10)):  # layer 1 reads both directions: 2 * hidden
        for s in ("", "_reverse"):
            expected += [
                (f"weight_ih_l{layer}{s}", (20, width)),
                (f"weight_hh_l{layer}{s}", (20, 5)),
                (f"bias_ih_l{layer}{s}", (20,)),
                (f"bias_hh_l{layer}{s}", (20,)),
            ]
    assert [(n, tuple(p.shape)) for n, p in m.named_parameters()] == expected
    assert [n for n, _ in GRU(2, 4, bias=False).named_parameters()] == [
        "weight_ih_l0",
        "weight_hh_l0",
    ]
    assert tuple(GRU(2, 4).weight_ih_l0.shape) == (12, 2)
    assert tuple(RNN(2, 4).weight_hh_l0.shape) == (4, 4)
    assert len(m.all_weights) == 4 and m.all_weights[1][0] is m.weight_ih_l0_reverse


def test_init_is_uniform_within_one_over_sqrt_hidden():
    lw.manual_seed(1)
    m = LSTM(30, 64, num_layers=2)
    bound = 1 / math.sqrt(64)
    values = np.concatenate([p.data.ravel() for p in m.parameters()])
    assert np.abs(values).max() <= bound
    # U(-b, b) has variance b^2 / 3; 60k draws put the sample within a few percent of it
    assert abs(values.var() / (bound**2 / 3) - 1) < 0.05
    assert abs(values.mean()) < 0.02 * bound  # its standard error is about 0.0024 * bound


# --- behaviour -------------------------------------------------------------------------------


def test_final_state_is_last_output_of_each_direction():
    lw.manual_seed(0)
    m = GRU(3, 4, bidirectional=True, batch_first=True)
    out, h_n = m(lw.randn(2, 5, 3))
    np.testing.assert_array_equal(
        h_n.detach().numpy()[0], out.detach().numpy()[:, -1, :4]
    )  # forward: last step
    np.testing.assert_array_equal(
        h_n.detach().numpy()[1], out.detach().numpy()[:, 0, 4:]
    )  # reverse: first step


@pytest.mark.parametrize("cls", [LSTM, GRU, RNN])
def test_running_in_chunks_with_carried_state_equals_one_run(cls):
    lw.manual_seed(0)
    m = cls(3, 4, num_layers=2, batch_first=True)
    x = lw.randn(2, 7, 3)
    whole, final = m(x)
    first, state = m(x[:, :3])
    second, state = m(x[:, 3:], state)
    np.testing.assert_allclose(
        lw.cat([first, second], dim=1).detach().numpy(), whole.detach().numpy(), atol=1e-6
    )
    finals = final if cls is LSTM else (final,)
    states = state if cls is LSTM else (state,)
    for a, b in zip(finals, states):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), atol=1e-6)


def test_float64_matches_numpy_reference():
    lw.manual_seed(3)
    m = LSTM(2, 3, num_layers=2, bidirectional=True).double()
    x = lw.randn(4, 2, 2, dtype=lw.float64)
    out, (h_n, c_n) = m(x)
    params = {n: p.data for n, p in m.named_parameters()}
    zeros = np.zeros((4, 2, 3))
    ref_out, (ref_h, ref_c) = np_stacked(
        np_lstm_cell,
        x.numpy(),
        (zeros, zeros),
        params,
        num_layers=2,
        bidirectional=True,
        batch_first=False,
    )
    assert out.dtype == lw.float64
    np.testing.assert_allclose(out.detach().numpy(), ref_out, atol=1e-12)
    np.testing.assert_allclose(h_n.detach().numpy(), ref_h, atol=1e-12)
    np.testing.assert_allclose(c_n.detach().numpy(), ref_c, atol=1e-12)


@pytest.mark.parametrize("cls", [LSTM, GRU, RNN])
@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_input_equals_batch_of_one(cls, batch_first):
    lw.manual_seed(0)
    m = cls(3, 4, num_layers=2, bidirectional=True, batch_first=batch_first)
    x = lw.randn(5, 3)  # (seq_len, input_size) whatever batch_first says, as in PyTorch
    out, final = m(x)
    batched_out, batched_final = m(x.unsqueeze(0 if batch_first else 1))
    assert out.shape == (5, 8)
    np.testing.assert_allclose(
        out.detach().numpy(), batched_out.detach().numpy().reshape(5, 8), atol=1e-7
    )
    for a, b in zip(
        final if cls is LSTM else [final], batched_final if cls is LSTM else [batched_final]
    ):
        assert a.shape == (4, 4)
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy()[:, 0], atol=1e-7)


@pytest.mark.parametrize("cls", [LSTM, GRU, RNN])
def test_forward_takes_pytorchs_arguments_only(cls):
    """forward(input, hx=None), as torch.nn.LSTM / GRU / RNN: no project-only arguments."""
    import inspect

    assert list(inspect.signature(cls.forward).parameters) == ["self", "input", "hx"]
    m = cls(3, 4)
    assert not hasattr(m, "project_input")
    for extra in ({"projected": True}, {"index": np.zeros((2, 3), np.int64)}):
        with pytest.raises(TypeError, match=f"unexpected keyword argument '{next(iter(extra))}'"):
            m(lw.randn(2, 3, 3), **extra)


def test_dropout_acts_between_layers_only_in_training():
    lw.manual_seed(0)
    m = LSTM(3, 8, num_layers=2, dropout=0.5)
    plain = LSTM(3, 8, num_layers=2)
    plain.load_state_dict(m.state_dict())
    x = lw.randn(4, 2, 3)
    a, _ = m(x)
    b, _ = m(x)
    assert not np.allclose(a.detach().numpy(), b.detach().numpy())  # fresh masks each call
    m.eval()
    np.testing.assert_array_equal(m(x)[0].detach().numpy(), plain(x)[0].detach().numpy())
    single = GRU(3, 8, dropout=0.5)  # one layer: nothing lies between layers
    np.testing.assert_array_equal(single(x)[0].detach().numpy(), single(x)[0].detach().numpy())


def test_gradient_reaches_initial_state_through_all_steps():
    lw.manual_seed(0)
    m = LSTM(2, 3, batch_first=True)
    h0 = lw.randn(1, 1, 3, requires_grad=True)
    c0 = lw.randn(1, 1, 3, requires_grad=True)
    out, _ = m(lw.randn(1, 6, 2), (h0, c0))
    out[:, -1].sum().backward()  # only the last step is in the loss
    assert np.abs(h0.grad.numpy()).min() > 0 and np.abs(c0.grad.numpy()).min() > 0


def test_repr():
    assert (
        repr(LSTM(10, 20, num_layers=2, batch_first=True))
        == "LSTM(10, 20, num_layers=2, batch_first=True)"
    )
    assert (
        repr(RNN(3, 4, nonlinearity="relu", bidirectional=True))
        == "RNN(3, 4, nonlinearity='relu', bidirectional=True)"
    )


# --- errors ----------------------------------------------------------------------------------


def test_wrong_input_size_quotes_shapes():
    m = LSTM(10, 20)
    with pytest.raises(ValueError, match=r"input_size=10.*\(5, 3, 7\)"):
        m(lw.randn(5, 3, 7))
    with pytest.raises(ValueError, match=r"3-D input.*\(2, 5, 3, 10\)"):
        m(lw.randn(2, 5, 3, 10))


def test_wrong_hx_shape_quotes_shapes():
    m = GRU(4, 6, num_layers=2, bidirectional=True)
    x = lw.randn(5, 3, 4)
    with pytest.raises(ValueError, match=r"\(4, 3, 6\).*got \(2, 3, 6\)"):
        m(x, lw.zeros(2, 3, 6))
    lstm = LSTM(4, 6)
    with pytest.raises(ValueError, match=r"c_0 of shape \(1, 3, 6\).*got \(1, 2, 6\)"):
        lstm(x, (lw.zeros(1, 3, 6), lw.zeros(1, 2, 6)))
    with pytest.raises(TypeError, match="tuple"):
        lstm(x, lw.zeros(1, 3, 6))


def test_other_mistakes():
    with pytest.raises(ValueError, match="nonlinearity"):
        RNN(2, 3, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="hidden_size"):
        LSTM(2, 0)
    with pytest.raises(TypeError, match="float64"):
        LSTM(2, 3)(lw.randn(4, 1, 2, dtype=lw.float64))


# --- embedding -------------------------------------------------------------------------------


def test_embedding_init_and_padding_row():
    lw.manual_seed(0)
    e = Embedding(200, 50, padding_idx=-1)
    assert e.padding_idx == 199
    w = e.weight.detach().numpy()
    np.testing.assert_array_equal(w[199], 0)
    assert abs(w[:199].std() - 1) < 0.03 and abs(w[:199].mean()) < 0.03  # N(0, 1), 9950 draws


def test_embedding_backward_adds_repeats_and_skips_padding():
    lw.manual_seed(0)
    e = Embedding(6, 3, padding_idx=2)
    idx = np.array([[1, 2, 1, 5], [2, 1, 0, 1]])
    g = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
    out = e(lw.tensor(idx))
    np.testing.assert_array_equal(out.detach().numpy(), e.weight.detach().numpy()[idx])
    out.backward(lw.tensor(g))
    expected = np.zeros((6, 3), dtype=np.float32)
    np.add.at(expected, idx, g)
    expected[2] = 0
    np.testing.assert_allclose(e.weight.grad.numpy(), expected, atol=1e-6)


def test_embedding_backward_for_mostly_distinct_indices():
    # a large table with few repeats takes the other branch of the scatter-add
    w = lw.randn(1000, 4, dtype=lw.float64, requires_grad=True)
    idx = np.random.default_rng(1).integers(0, 1000, 300)
    g = np.random.default_rng(2).standard_normal((300, 4))
    embedding(lw.tensor(idx), w).backward(lw.tensor(g))
    expected = np.zeros((1000, 4))
    np.add.at(expected, idx, g)
    np.testing.assert_allclose(w.grad.numpy(), expected, atol=1e-12)


def test_embedding_errors():
    e = Embedding(10, 3)
    with pytest.raises(IndexError, match=r"index 12 .* 10 embeddings"):
        e(lw.tensor([1, 12]))
    with pytest.raises(IndexError, match=r"index -1 .* 10 embeddings"):
        e(lw.tensor([-1, 2]))
    with pytest.raises(TypeError, match="integers"):
        e(lw.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="padding_idx"):
        Embedding(10, 3, padding_idx=10)


def test_embedding_from_pretrained_freezes():
    table = lw.randn(4, 2)
    e = Embedding.from_pretrained(table)
    assert not e.weight.requires_grad
    np.testing.assert_array_equal(e(lw.tensor([3])).detach().numpy(), table.detach().numpy()[[3]])
    assert repr(Embedding(5, 2, padding_idx=0)) == "Embedding(5, 2, padding_idx=0)"
