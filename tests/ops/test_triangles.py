"""lw.tril and lw.triu against NumPy, with their gradient (the same triangle of ones)."""

import numpy as np
import pytest

import layerwise as lw


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (5, 3), (2, 3, 4, 4)])
@pytest.mark.parametrize("diagonal", [-2, -1, 0, 1, 3])
@pytest.mark.parametrize("name", ["tril", "triu"])
def test_triangle_matches_numpy_with_its_gradient(shape, diagonal, name):
    x = np.random.default_rng(0).standard_normal(shape)
    t = lw.tensor(x, requires_grad=True)
    out = getattr(lw, name)(t, diagonal)
    want = getattr(np, name)(x, k=diagonal)  # NumPy's act on the last two dims too
    np.testing.assert_array_equal(out.detach().numpy(), want)
    out.sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), getattr(np, name)(np.ones(shape), k=diagonal))
    np.testing.assert_array_equal(getattr(t, name)(diagonal).detach().numpy(), want)


def test_the_causal_mask_of_nanogpt():
    mask = lw.tril(lw.ones(4, 4)).view(1, 1, 4, 4)
    scores = lw.zeros(2, 3, 4, 4).masked_fill(mask == 0, float("-inf"))
    weights = lw.softmax(scores, dim=-1).numpy()
    np.testing.assert_allclose(weights[0, 0], np.tril(np.ones((4, 4))) / np.arange(1, 5)[:, None])


def test_integer_and_boolean_inputs_keep_their_dtype():
    assert lw.tril(lw.ones(3, 3, dtype=lw.int64)).dtype == lw.int64
    got = lw.triu(lw.tensor(np.ones((3, 3), bool)), 1)
    np.testing.assert_array_equal(got.numpy(), np.triu(np.ones((3, 3), bool), 1))


@pytest.mark.parametrize("call, error, quoted", [
    (lambda: lw.tril(lw.ones(3)), ValueError, "(3,)"),
    (lambda: lw.triu(lw.ones(3, 3), 1.5), TypeError, "1.5"),
    (lambda: lw.tril(np.ones((3, 3))), TypeError, "lw.tensor("),
])
def test_bad_input_is_one_line(call, error, quoted):
    with pytest.raises(error) as caught:
        call()
    assert quoted in str(caught.value) and "\n" not in str(caught.value)
