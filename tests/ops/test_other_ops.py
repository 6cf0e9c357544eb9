"""Ops outside the harness: no-grad ops, random ops, dtypes, factories and error messages."""

import numpy as np
import pytest

import layerwise as lw


def test_comparisons_return_bool_tensors_without_grad():
    a = lw.tensor([1.0, 2.0, 3.0], requires_grad=True)
    for result, expected in [(a > 2, [0, 0, 1]), (a <= 2, [1, 1, 0]), (a == 2.0, [0, 1, 0]), (a != lw.tensor([1.0, 0, 3]), [0, 1, 0])]:
        assert result.dtype == lw.bool and not result.requires_grad
        np.testing.assert_array_equal(result.numpy(), np.array(expected, dtype=bool))


def test_argmax_and_max_with_dim_return_indices():
    x = lw.tensor([[1.0, 5.0, 2.0], [7.0, 0.0, 7.5]])
    values, indices = x.max(dim=1)
    np.testing.assert_array_equal(values.numpy(), [5.0, 7.5])
    np.testing.assert_array_equal(indices.numpy(), [1, 2])
    assert x.argmax().item() == 5 and x.argmin(dim=0).tolist() == [0, 1, 0]


def test_max_ties_share_the_gradient():
    x = lw.tensor([3.0, 1.0, 3.0], requires_grad=True)
    x.max().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.5, 0.0, 0.5])


def test_repeated_fancy_indices_scatter_add_their_gradients():
    x = lw.tensor([1.0, 2.0, 3.0], requires_grad=True)
    x[[0, 0, 2, 0]].sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 0.0, 1.0])
    w = lw.tensor(np.arange(6.0).reshape(3, 2), requires_grad=True)
    w.gather(0, lw.tensor([[0, 0], [0, 1]])).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), [[2, 1], [0, 1], [0, 0]])


def test_prod_gradient_is_exact_with_zeros():
    x = lw.tensor([2.0, 0.0, 3.0, 0.5], dtype=lw.float64, requires_grad=True)
    x.prod().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.0, 3.0, 0.0, 0.0])


def test_dropout_scales_kept_values_and_is_seeded():
    lw.manual_seed(3)
    x = lw.ones(1000, requires_grad=True)
    y = lw.dropout(x, p=0.25)
    kept = y.detach().numpy() != 0
    assert 0.70 < kept.mean() < 0.80
    np.testing.assert_allclose(y.detach().numpy()[kept], 1 / 0.75, rtol=1e-6)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), kept / 0.75, rtol=1e-6)
    lw.manual_seed(3)
    np.testing.assert_array_equal(lw.dropout(lw.ones(1000), p=0.25).numpy(), y.detach().numpy())
    assert lw.dropout(x, p=0.25, training=False) is x
    with pytest.raises(ValueError, match="got 1.5"):
        lw.dropout(x, p=1.5)


def test_one_hot():
    np.testing.assert_array_equal(lw.one_hot(lw.tensor([2, 0]), 3).numpy(), [[0, 0, 1], [1, 0, 0]])
    with pytest.raises(ValueError, match=r"must be in \[0, 2\], got values from 0 to 3"):
        lw.one_hot(lw.tensor([3, 0]), 3)


def test_dtypes_follow_pytorch():
    assert lw.tensor([1.5]).dtype == lw.float32
    assert lw.tensor([1, 2]).dtype == lw.int64
    assert lw.tensor(np.zeros(2)).dtype == lw.float64  # arrays keep their dtype
    assert lw.randn(2, 2).dtype == lw.float32
    x = lw.ones(2, dtype=lw.float32)
    assert (x * 2).dtype == lw.float32 and (x + 0.5).dtype == lw.float32
    assert (lw.tensor([1, 2]) / 2).dtype == lw.float32  # true division of ints
    assert x.double().dtype == lw.float64 and x.long().dtype == lw.int64


def test_cast_passes_gradient_back_in_the_input_dtype():
    x = lw.ones(3, dtype=lw.float32, requires_grad=True)
    (x.double() * 2).sum().backward()
    assert x.grad.dtype == lw.float32
    np.testing.assert_allclose(x.grad.numpy(), 2.0)


def test_factories_and_seed():
    lw.manual_seed(0)
    a = lw.randn(3, 4)
    lw.manual_seed(0)
    np.testing.assert_array_equal(a.numpy(), lw.randn(3, 4).numpy())
    assert lw.zeros((2, 3)).shape == (2, 3) and lw.full((2,), 7.0).tolist() == [7.0, 7.0]
    np.testing.assert_array_equal(lw.eye(3).numpy(), np.eye(3))
    assert lw.arange(5).tolist() == [0, 1, 2, 3, 4] and lw.arange(0, 1, 0.5).dtype == lw.float32
    r = lw.rand(1000)
    assert 0 <= r.min().item() and r.max().item() < 1
    with pytest.raises(ValueError, match="non-negative ints"):
        lw.zeros(2, -1)


def test_shape_errors_quote_the_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(2, 3\) do not align"):
        lw.ones(2, 3) @ lw.ones(2, 3)
    with pytest.raises(ValueError, match=r"cannot reshape tensor of shape \(2, 3\)"):
        lw.ones(2, 3).reshape(4, 2)
    with pytest.raises(IndexError, match="dim=2 is out of range"):
        lw.ones(2, 3).sum(dim=2)
    with pytest.raises(ValueError, match="cat along dim 0"):
        lw.cat([lw.ones(2, 3), lw.ones(2, 4)])
    with pytest.raises(ValueError, match="cannot expand"):
        lw.ones(2, 3).expand(4, 3)


def test_item_numpy_and_repr():
    x = lw.tensor([[1.0, 2.0]], requires_grad=True)
    with pytest.raises(RuntimeError, match="detach"):
        x.numpy()
    with pytest.raises(ValueError, match="one element"):
        x.item()
    assert "requires_grad=True" in repr(x)
    assert "grad_fn=Mul" in repr(x * 2)
    assert x.T.shape == (2, 1) and x.detach().numpy().shape == (1, 2)


def test_where_between_two_numbers_takes_pytorchs_dtypes():
    cond = lw.tensor(np.array([True, False, True]))
    floats = lw.where(cond, 0.0, -np.inf)  # two floats: the default float dtype
    assert floats.dtype == lw.float32 and floats.numpy().tolist() == [0.0, -np.inf, 0.0]
    ints = lw.where(cond, 1, 0)  # two ints: int64, as torch.where
    assert ints.dtype == lw.int64 and ints.numpy().tolist() == [1, 0, 1]
