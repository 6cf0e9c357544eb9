"""lw.parallel.backward_in_halves against one backward over the whole batch, and its refusals.

The reference is the plain ``loss_fn(*batch).backward()`` on the same model and data; the
halves add the same terms in another order, so gradients agree to float rounding, and two
runs of the halves agree bit for bit.
"""

import threading

import numpy as np
import pytest

import layerwise as lw
import layerwise.nn.functional as F
from layerwise import nn
from layerwise.autograd import engine
from layerwise.models import GPT, GPTConfig

# The halves are about two cores: every test here runs with two BLAS threads.
pytestmark = pytest.mark.usefixtures("two_blas_threads")


def _gpt():
    lw.manual_seed(0)
    return GPT(GPTConfig(vocab_size=40, block_size=12, n_layer=2, n_head=2, n_embd=16,
                         dropout=0.0))


def _grads(model):
    return {name: p.grad.numpy().copy() for name, p in model.named_parameters()}


def _whole_and_halves(model, loss_fn, batch, reduction="mean"):
    model.zero_grad()
    whole_loss = loss_fn(*batch)
    whole_loss.backward()
    whole = _grads(model)
    model.zero_grad()
    halves_loss = lw.parallel.backward_in_halves(model, loss_fn, *batch, reduction=reduction)
    return (float(whole_loss.data), whole), (float(halves_loss.data), _grads(model))


@pytest.mark.parametrize("batch", [2, 5, 8])
def test_gpt_halves_give_the_whole_batch_loss_and_gradients(batch):
    model = _gpt()
    rng = np.random.default_rng(batch)
    idx, targets = (lw.tensor(rng.integers(0, 40, (batch, 12))) for _ in range(2))
    (loss, whole), (halves_loss, halves) = _whole_and_halves(
        model, lambda i, t: model(i, t)[1], (idx, targets))
    assert halves_loss == pytest.approx(loss, rel=1e-6)
    assert whole.keys() == halves.keys()
    for name in whole:
        np.testing.assert_allclose(halves[name], whole[name], rtol=1e-4, atol=1e-6,
                                   err_msg=name)


def test_mlp_float64_halves_match_and_sum_reduction():
    lw.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 9), nn.Tanh(), nn.Linear(9, 3)).double()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((7, 6)), rng.integers(0, 3, 7)
    for reduction in ("mean", "sum"):
        def loss_fn(xb, yb, reduction=reduction):
            return F.cross_entropy(model(lw.tensor(xb)), lw.tensor(yb), reduction=reduction)

        (loss, whole), (halves_loss, halves) = _whole_and_halves(model, loss_fn, (x, y),
                                                                 reduction)
        assert halves_loss == pytest.approx(loss, rel=1e-12)
        for name in whole:
            np.testing.assert_allclose(halves[name], whole[name], rtol=1e-12, atol=1e-14)


def test_halves_add_into_existing_gradients_in_a_fixed_order():
    model = _gpt()
    rng = np.random.default_rng(3)
    batch = tuple(lw.tensor(rng.integers(0, 40, (6, 12))) for _ in range(2))
    runs = []
    for _ in range(2):
        model.zero_grad()
        for p in model.parameters():
            p.grad = lw.tensor(np.ones(p.shape, np.float32))
        lw.parallel.backward_in_halves(model, lambda i, t: model(i, t)[1], *batch)
        runs.append(_grads(model))
    model.zero_grad()
    lw.parallel.backward_in_halves(model, lambda i, t: model(i, t)[1], *batch)
    fresh = _grads(model)
    for name in fresh:
        np.testing.assert_array_equal(runs[0][name], runs[1][name])  # bit for bit
        np.testing.assert_allclose(runs[0][name], fresh[name] + 1, rtol=1e-6, atol=1e-6)


def test_the_two_halves_run_in_two_threads_when_the_blas_has_two():
    model = _gpt()
    seen = set()

    def loss_fn(i, t):
        seen.add(threading.get_ident())
        return model(i, t)[1]

    batch = tuple(lw.tensor(np.zeros((4, 12), np.int64)) for _ in range(2))
    lw.parallel.backward_in_halves(model, loss_fn, *batch)
    assert len(seen) == 2


def test_grad_mode_is_per_thread():
    inside, release = threading.Event(), threading.Event()

    def hold_no_grad():
        with lw.no_grad():
            inside.set()
            release.wait(5)

    other = threading.Thread(target=hold_no_grad)
    other.start()
    try:
        assert inside.wait(5)
        w = lw.tensor(np.ones(3), requires_grad=True)
        assert (w * 2).requires_grad  # this thread still records
    finally:
        release.set()
        other.join()
    seen = []
    with lw.no_grad():
        probe = threading.Thread(target=lambda: seen.append(lw.is_grad_enabled()))
        probe.start()
        probe.join()
    assert seen == [True]  # a new thread starts with grad mode on, as in PyTorch


def test_a_failing_half_leaves_gradients_and_the_sink_as_they_were():
    model = _gpt()
    batch = tuple(lw.tensor(np.zeros((4, 12), np.int64)) for _ in range(2))
    model.zero_grad()

    def vector_loss(i, t):
        return model(i)[0].sum(dim=-1)  # not a scalar

    with pytest.raises(ValueError, match="scalar loss"):
        lw.parallel.backward_in_halves(model, vector_loss, *batch)
    assert all(p.grad is None for p in model.parameters())
    assert engine.sink.grads is None


@pytest.mark.parametrize("module, match", [
    (nn.BatchNorm1d(4), "statistics of half the batch"),
    (nn.Dropout(0.1), "dropout in training mode"),
])
def test_refuses_batch_norm_and_dropout_in_training_mode(module, match):
    model = nn.Sequential(nn.Linear(4, 4), module)
    x = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match=match):
        lw.parallel.backward_in_halves(model, lambda xb: model(lw.tensor(xb)).sum(), x)
    model.eval()  # fine in eval mode: no batch statistics, no draws
    lw.parallel.backward_in_halves(model, lambda xb: model(lw.tensor(xb)).sum(), x)
    assert model[0].weight.grad is not None


def test_refuses_bad_arguments_with_the_values_quoted():
    model = nn.Linear(2, 1)

    def loss_fn(*parts):
        return model(lw.tensor(parts[0])).sum()

    with pytest.raises(ValueError, match=r"\(3, 2\), \(4,\)"):
        lw.parallel.backward_in_halves(model, loss_fn, np.ones((3, 2)), np.ones(4))
    with pytest.raises(ValueError, match="at least 2"):
        lw.parallel.backward_in_halves(model, loss_fn, np.ones((1, 2)))
    with pytest.raises(ValueError, match="'median'"):
        lw.parallel.backward_in_halves(model, loss_fn, np.ones((2, 2)), reduction="median")
    with pytest.raises(TypeError, match="function"):
        lw.parallel.backward_in_halves(loss_fn, loss_fn, np.ones((2, 2)))
    with pytest.raises(ValueError, match="needs the batch"):
        lw.parallel.backward_in_halves(model, loss_fn)
