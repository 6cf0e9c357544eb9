"""nn.init: fan computation, gains, and the statistics of each initialiser on large tensors."""

import math

import numpy as np
import pytest

import layerwise as lw
from layerwise.nn import init


@pytest.mark.parametrize(
    "shape, fans",
    [
        ((30, 20), (20, 30)),  # Linear (out, in)
        ((16, 3, 5, 5), (75, 400)),  # Conv2d (out, in, kH, kW): receptive field 25
        ((8, 4, 3), (12, 24)),  # Conv1d
    ],
)
def test_fan_in_and_fan_out(shape, fans):
    assert init._calculate_fan_in_and_fan_out(lw.zeros(*shape)) == fans


def test_fan_needs_two_dims():
    with pytest.raises(ValueError, match=r"at least 2 dims.*\(5,\)"):
        init.kaiming_uniform_(lw.zeros(5))


def test_calculate_gain():
    assert init.calculate_gain("linear") == 1 and init.calculate_gain("conv2d") == 1
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01**2)))
    assert init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(math.sqrt(1 / 3))
    with pytest.raises(ValueError, match="swish"):
        init.calculate_gain("swish")


SHAPE = (200, 100, 3)  # fan_in 300, fan_out 600, 60,000 draws


@pytest.mark.parametrize(
    "fn, kwargs, bound",
    [
        (init.xavier_uniform_, {}, math.sqrt(6 / 900)),
        (init.xavier_uniform_, {"gain": 2.0}, 2 * math.sqrt(6 / 900)),
        (init.kaiming_uniform_, {}, math.sqrt(2) * math.sqrt(3 / 300)),  # a=0: leaky_relu slope 0
        (
            init.kaiming_uniform_,
            {"mode": "fan_out", "nonlinearity": "relu"},
            math.sqrt(2) * math.sqrt(3 / 600),
        ),
        (init.kaiming_uniform_, {"a": math.sqrt(5)}, 1 / math.sqrt(300)),
        (init.uniform_, {"a": -0.3, "b": 0.3}, 0.3),
    ],
)
def test_uniform_initialisers_bounds_and_std(fn, kwargs, bound):
    lw.manual_seed(0)
    w = fn(lw.zeros(*SHAPE), **kwargs).data
    assert np.abs(w).max() <= bound * (1 + 1e-6)  # float32 rounding of the bound
    assert np.abs(w).max() > 0.99 * bound  # the whole range is used
    assert abs(w.std() - bound / math.sqrt(3)) < 0.02 * bound
    assert abs(w.mean()) < 0.02 * bound


@pytest.mark.parametrize(
    "fn, kwargs, std",
    [
        (init.xavier_normal_, {}, math.sqrt(2 / 900)),
        (init.kaiming_normal_, {"nonlinearity": "relu"}, math.sqrt(2) / math.sqrt(300)),
        (
            init.kaiming_normal_,
            {"mode": "fan_out", "nonlinearity": "tanh"},
            (5 / 3) / math.sqrt(600),
        ),
        (init.normal_, {"mean": 0.0, "std": 0.02}, 0.02),
    ],
)
def test_normal_initialisers_std(fn, kwargs, std):
    lw.manual_seed(0)
    w = fn(lw.zeros(*SHAPE), **kwargs).data
    assert abs(w.std() - std) < 0.02 * std
    assert abs(w.mean()) < 0.02 * std


def test_normal_mean_and_trunc_normal_range():
    lw.manual_seed(0)
    w = init.normal_(lw.zeros(100, 100), mean=3.0, std=0.5).data
    assert abs(w.mean() - 3.0) < 0.02
    t = init.trunc_normal_(lw.zeros(200, 200), std=1.0, a=-1.0, b=1.5).data
    assert t.min() >= -1.0 and t.max() <= 1.5 and t.min() < -0.99 and t.max() > 1.49


def test_constant_zeros_ones_in_place_and_dtype():
    t = lw.zeros(3, 4, dtype=lw.float64)
    data = t.data
    assert init.constant_(t, 0.25) is t and t.data is data
    np.testing.assert_array_equal(t.data, np.full((3, 4), 0.25))
    init.ones_(t)
    assert (t.data == 1).all() and t.dtype == lw.float64
    init.zeros_(t)
    assert not t.data.any()


def test_init_is_reproducible_with_manual_seed():
    lw.manual_seed(7)
    a = init.kaiming_normal_(lw.zeros(10, 10)).data.copy()
    lw.manual_seed(7)
    b = init.kaiming_normal_(lw.zeros(10, 10)).data
    np.testing.assert_array_equal(a, b)
