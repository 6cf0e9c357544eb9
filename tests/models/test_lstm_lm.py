"""LSTMLanguageModel: shapes and state, the forward against NumPy, the state-dict names of saved
models, overfitting a short string, generate() (carried state
equals re-running the prefix, seeds, greedy, top-k, top-p), tied weights, and sample_next's
distribution."""

import numpy as np
import pytest

import layerwise as lw
from layerwise.models.lstm_lm import LSTMLanguageModel, sample_next
from layerwise.nn import functional as F
from layerwise.optim import Adam
from tests.ops.test_rnn_cases import np_lstm_cell, np_stacked

TEXT = "hello layerwise, hello lstm. "
VOCAB = sorted(set(TEXT))


def _encode(text):
    return np.array([VOCAB.index(ch) for ch in text])


def test_shapes_and_state():
    lw.manual_seed(0)
    model = LSTMLanguageModel(11, 8, 6, num_layers=2)
    logits, (h, c) = model(lw.tensor(np.zeros((3, 5), dtype=np.int64)))
    assert logits.shape == (3, 5, 11)
    assert h.shape == (2, 3, 6) and c.shape == (2, 3, 6)
    names = [n for n, _ in model.named_parameters()]
    assert names[0] == "embedding.weight" and names[-2:] == ["decoder.weight", "decoder.bias"]
    assert "lstm.weight_hh_l1" in names


@pytest.mark.parametrize("num_layers", [1, 2])
def test_forward_is_embedding_lstm_decoder_against_numpy(num_layers):
    """Embedding -> LSTM(batch_first=True) -> Linear, with a carried state, against NumPy
    float64 cell by cell; more tokens (12) than vocabulary rows (7), so rows repeat."""
    lw.manual_seed(0)
    model = LSTMLanguageModel(7, 5, 6, num_layers=num_layers).double()
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 7, (3, 4))
    h0, c0 = rng.standard_normal((2, num_layers, 3, 6))
    logits, (h, c) = model(lw.tensor(idx), (lw.tensor(h0), lw.tensor(c0)))
    params = {n: p.detach().numpy() for n, p in model.named_parameters()}
    lstm = {n[len("lstm."):]: v for n, v in params.items() if n.startswith("lstm.")}
    x = params["embedding.weight"][idx]  # (B, T, E)
    out, (h_want, c_want) = np_stacked(np_lstm_cell, x, (h0, c0), lstm, num_layers,
                                       bidirectional=False, batch_first=True)
    want = out @ params["decoder.weight"].T + params["decoder.bias"]  # (B, T, V)
    np.testing.assert_allclose(logits.detach().numpy(), want, atol=1e-12)
    np.testing.assert_allclose(h.detach().numpy(), h_want, atol=1e-12)
    np.testing.assert_allclose(c.detach().numpy(), c_want, atol=1e-12)


def test_state_dict_keeps_the_names_saved_models_hold(tmp_path):
    """The names a saved lstm run's model.safetensors holds; a saved state dict loads into a
    model built from another seed and gives the same logits."""
    lw.manual_seed(0)
    model = LSTMLanguageModel(11, 8, 6, num_layers=2)
    layer = ["weight_ih_l{k}", "weight_hh_l{k}", "bias_ih_l{k}", "bias_hh_l{k}"]
    assert list(model.state_dict()) == (
        ["embedding.weight"] + ["lstm." + n.format(k=k) for k in (0, 1) for n in layer]
        + ["decoder.weight", "decoder.bias"])
    lw.save(model.state_dict(), tmp_path / "model.safetensors")
    lw.manual_seed(1)
    loaded = LSTMLanguageModel(11, 8, 6, num_layers=2)
    loaded.load_state_dict(lw.load(tmp_path / "model.safetensors"))
    idx = lw.tensor(np.arange(10).reshape(2, 5))
    np.testing.assert_array_equal(loaded(idx)[0].detach().numpy(),
                                  model(idx)[0].detach().numpy())


def test_overfits_a_short_string():
    lw.manual_seed(0)
    data = _encode(TEXT * 2)
    x, y = lw.tensor(data[None, :-1]), lw.tensor(data[None, 1:])
    model = LSTMLanguageModel(len(VOCAB), 16, 32)
    opt = Adam(model.parameters(), lr=0.03)
    losses = []
    for _ in range(120):
        logits, _ = model(x)
        loss = F.cross_entropy(logits.reshape(-1, len(VOCAB)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 2.0  # about log(15) = 2.7 at the start
    assert losses[-1] < 0.15, losses[::10]
    # it has memorised the text: greedy decoding from the first character reproduces it
    out = model.generate(lw.tensor(data[None, :1]), len(TEXT) - 1, temperature=0)
    assert "".join(VOCAB[i] for i in out.numpy()[0]) == TEXT


def _naive_greedy(model, idx, n):
    """Greedy decoding that re-runs the whole prefix for every token: no state carried."""
    seq = idx.numpy()
    model.eval()
    for _ in range(n):
        with lw.no_grad():
            logits, _ = model(lw.tensor(seq))
        seq = np.concatenate([seq, logits.numpy()[:, -1].argmax(-1)[:, None]], axis=1)
    return seq


def test_generate_with_carried_state_equals_rerunning_the_prefix():
    lw.manual_seed(0)
    model = LSTMLanguageModel(13, 8, 10, num_layers=2, dropout=0.3)
    prefix = lw.tensor(np.random.default_rng(0).integers(0, 13, (2, 4)))
    model.train()
    out = model.generate(prefix, 6, temperature=0)
    assert model.training  # restored after generating
    assert out.shape == (2, 10) and out.dtype == lw.int64
    np.testing.assert_array_equal(out.numpy(), _naive_greedy(model, prefix, 6))


def test_generate_seeded_sampling_is_repeatable_and_leaves_global_rng_alone():
    lw.manual_seed(0)
    model = LSTMLanguageModel(13, 8, 10)
    prefix = lw.tensor([[1, 2, 3]])
    state = lw.get_rng_state()
    a = model.generate(prefix, 20, temperature=1.5, seed=7)
    b = model.generate(prefix, 20, temperature=1.5, seed=7)
    c = model.generate(prefix, 20, temperature=1.5, seed=8)
    assert lw.get_rng_state() == state
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())  # 20 draws at high temperature
    np.testing.assert_array_equal(a.numpy()[:, :3], prefix.numpy())
    greedy = model.generate(prefix, 5, temperature=0)
    np.testing.assert_array_equal(
        model.generate(prefix, 5, top_k=1, seed=3).numpy(), greedy.numpy()
    )
    np.testing.assert_array_equal(
        model.generate(prefix, 5, top_p=1e-6, seed=3).numpy(), greedy.numpy()
    )


def test_sample_next_follows_softmax_top_k_and_top_p():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    rows = np.repeat(logits, 20000, axis=0)
    gen = np.random.default_rng(0)
    freq = np.bincount(sample_next(rows, gen=gen), minlength=4) / 20000
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.15, 0.05], atol=0.015)
    freq = np.bincount(sample_next(rows, top_k=2, gen=gen), minlength=4) / 20000
    np.testing.assert_allclose(freq, [0.625, 0.375, 0, 0], atol=0.015)
    # nucleus 0.7: 0.5 alone is short of it, 0.5 + 0.3 reaches it
    freq = np.bincount(sample_next(rows, top_p=0.7, gen=gen), minlength=4) / 20000
    np.testing.assert_allclose(freq, [0.625, 0.375, 0, 0], atol=0.015)
    # temperature 2 flattens: p ~ sqrt(p)
    flat = np.sqrt([0.5, 0.3, 0.15, 0.05])
    freq = np.bincount(sample_next(rows, temperature=2.0, gen=gen), minlength=4) / 20000
    np.testing.assert_allclose(freq, flat / flat.sum(), atol=0.015)


def test_tied_weights_share_one_parameter():
    lw.manual_seed(0)
    model = LSTMLanguageModel(20, 8, 8, tie_weights=True)
    assert model.decoder.weight is model.embedding.weight
    assert len(list(model.parameters())) == len(list(LSTMLanguageModel(20, 8, 8).parameters())) - 1
    state = model.state_dict()
    assert "embedding.weight" in state and "decoder.weight" in state  # both keys, as PyTorch
    logits, _ = model(lw.tensor([[1, 2, 3]]))
    F.cross_entropy(logits.reshape(-1, 20), lw.tensor([2, 3, 4])).backward()
    assert model.embedding.weight.grad is not None
    with pytest.raises(ValueError, match="embed_dim=8, hidden_size=6"):
        LSTMLanguageModel(20, 8, 6, tie_weights=True)


def test_errors():
    model = LSTMLanguageModel(10, 4, 4)
    with pytest.raises(ValueError, match=r"\(batch, seq_len\), got \(3,\)"):
        model(lw.tensor([1, 2, 3]))
    with pytest.raises(IndexError, match="index 10"):
        model(lw.tensor([[1, 10]]))
    with pytest.raises(ValueError, match="temperature"):
        model.generate(lw.tensor([[1]]), 3, temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        model.generate(lw.tensor([[1]]), 3, top_p=1.5)
