"""lw.compile: a replayed call must give the same bits as running the function again."""

import numpy as np
import pytest

import layerwise as lw
from layerwise import nn, optim
import layerwise.nn.functional as F
from layerwise.models import GPT, GPTConfig, LSTMLanguageModel


def _batches(n, shape, classes, seed=0, ints=False):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = (rng.integers(0, classes, shape) if ints
             else rng.standard_normal(shape).astype(np.float32))
        out.append((lw.tensor(x), lw.tensor(rng.integers(0, classes, shape[:1] if not ints
                                                         else shape))))
    return out


def _twins(build):
    """Two identical (model, step) pairs; the second's step compiled."""
    lw.manual_seed(0)
    a = build()
    lw.manual_seed(0)
    b = build()
    return a, (b[0], lw.compile(b[1]))


def _run_both(pairs, batches):
    (m1, s1), (m2, s2) = pairs
    for i, batch in enumerate(batches):
        lw.manual_seed(100 + i)  # the same dropout draws for both
        l1 = s1(*batch)
        lw.manual_seed(100 + i)
        l2 = s2(*batch)
        np.testing.assert_array_equal(l1.detach().numpy(), l2.detach().numpy())
    for (k, p1), p2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        np.testing.assert_array_equal(p1.numpy(), p2.numpy(), err_msg=k)


def _mlp_step():
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 4))
    opt = optim.AdamW(model.parameters(), lr=0.05)
    schedule = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)

    def step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        schedule.step()
        return loss
    return model, step


def test_replayed_training_steps_match_plain_steps_to_the_bit():
    """Dropout, gradient clipping, AdamW and an LR schedule inside the step, five batches."""
    pairs = _twins(_mlp_step)
    _run_both(pairs, _batches(5, (8, 12), 4))
    compiled = pairs[1][1]
    trace = next(iter(compiled._traces.values()))
    assert trace.checked and len(compiled._traces) == 1


def test_gpt_and_lstm_steps_replay_exactly():
    def gpt():
        model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16,
                              dropout=0.1))
        opt = optim.AdamW(model.parameters(), lr=1e-2)

        def step(idx, targets):
            opt.zero_grad()
            loss = model(idx, targets)[1]
            loss.backward()
            opt.step()
            return loss
        return model, step

    def lstm():
        model = LSTMLanguageModel(11, 8, 12)
        opt = optim.Adam(model.parameters(), lr=1e-2)

        def step(idx, targets):
            opt.zero_grad()
            logits, _ = model(idx)
            loss = F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1))
            loss.backward()
            opt.step()
            return loss
        return model, step

    batches = _batches(4, (3, 8), 11, seed=1, ints=True)
    _run_both(_twins(gpt), batches)
    _run_both(_twins(lstm), batches)


def test_inference_replays_and_a_new_batch_size_records_again():
    lw.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()

    def forward(x):
        with lw.no_grad():
            return model(x)
    compiled = lw.compile(forward)
    rng = np.random.default_rng(2)
    for n in (1, 1, 1, 5, 5, 1):
        x = lw.tensor(rng.standard_normal((n, 1, 8, 8)).astype(np.float32))
        np.testing.assert_array_equal(compiled(x).numpy(), forward(x).numpy())
    assert len(compiled._traces) == 2  # batch 1 and batch 5


def test_a_stale_constant_is_caught_on_the_second_call_and_the_plain_result_kept():
    lw.manual_seed(0)
    model = nn.Linear(3, 1)
    opt = optim.SGD(model.parameters(), lr=0.1)
    scale = {"value": np.ones((2, 3), np.float32)}

    def step(x):
        opt.zero_grad()
        loss = (model(x * lw.tensor(scale["value"]))).sum()  # data made inside: replayed stale
        loss.backward()
        opt.step()
        return loss
    compiled = lw.compile(step)
    x = lw.tensor(np.ones((2, 3), np.float32))
    compiled(x)
    scale["value"] = np.full((2, 3), 3.0, np.float32)
    weight_before = model.weight.detach().numpy().copy()
    with pytest.raises(RuntimeError, match="did not reproduce"):
        compiled(x)
    # the state is the plain run's: one SGD step with the new scale (gradient 3 * sum of x rows)
    np.testing.assert_allclose(model.weight.detach().numpy(), weight_before - 0.1 * 6.0)


def test_what_a_replay_cannot_repeat_is_refused_with_a_reason():
    lw.manual_seed(0)
    model = nn.Linear(3, 2)
    y_outside = lw.tensor(np.array([0, 1]))
    x = lw.tensor(np.ones((2, 3), np.float32))
    with pytest.raises(NotImplementedError, match="array argument"):
        lw.compile(lambda x: F.cross_entropy(model(x), y_outside))(x)  # targets not passed in
    with pytest.raises(TypeError, match="return Tensors"):
        lw.compile(lambda x: model(x).sum().item())(x)
    with pytest.raises(TypeError, match="hashable"):
        lw.compile(lambda x, a: model(x))(x, np.ones(3))
    with pytest.raises(ValueError, match="grad_fn"):
        lw.compile(lambda x: model(x))(model(x))
    bn = nn.BatchNorm1d(3)
    with pytest.raises(NotImplementedError, match="eval mode"):
        lw.compile(lambda x: bn(x))(x)
    bn.eval()
    np.testing.assert_array_equal(lw.compile(lambda x: bn(x))(x).detach().numpy(),
                                  bn(x).detach().numpy())


def test_freezing_a_parameter_records_again():
    lw.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))

    def step(x):
        model.zero_grad()
        model(x).sum().backward()
    compiled = lw.compile(step)
    x = lw.tensor(np.ones((2, 3), np.float32))
    compiled(x)
    compiled(x)
    model[0].weight.requires_grad_(False)
    compiled(x)
    assert model[0].weight.grad is None and model[1].weight.grad is not None
    assert len(compiled._traces) == 1 and next(iter(compiled._traces.values())).requires[0] is False
