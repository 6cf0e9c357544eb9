"""Embedding lookup: rows of a weight table picked by integer indices.

A Function of its own rather than ``weight[idx]`` through the generic GetItem: its backward is
a scatter-add of many rows into few, which fast/embedding.py runs as one compiled loop, and the
row ``padding_idx`` gets no gradient.
"""

from layerwise.backend import xp
from layerwise.autograd.function import Function
from layerwise.autograd.tensor import Tensor


class EmbeddingFunction(Function):
    """weight (V, D) and integer indices (*) -> (*, D).

    d weight[k] = sum of the output gradients at every position holding index k; the row
    ``padding_idx`` gets none, so it stays as it is (zero when initialised by nn.Embedding).
    """

    def forward(self, weight, indices, padding_idx=None):
        self.indices, self.num_rows, self.padding_idx = indices, weight.shape[0], padding_idx
        return xp.take(weight, indices, axis=0)  # (*, D)

    def backward(self, g):
        grad = xp.zeros((self.num_rows, g.shape[-1]), dtype=g.dtype)  # (V, D)
        # unbuffered: an index that occurs n times adds its n rows of g
        xp.add.at(grad, self.indices.reshape(-1), g.reshape(-1, g.shape[-1]))
        if self.padding_idx is not None:
            grad[self.padding_idx] = 0
        return grad


def index_array(input):
    data = input.data if isinstance(input, Tensor) else xp.asarray(input)
    if data.dtype.kind not in "iu":
        raise TypeError(
            f"embedding indices must be integers (lw.int64), got dtype {data.dtype}; "
            "convert with idx.long()"
        )
    return data


def check_indices(indices, num_rows):
    """Raise unless every index picks one of ``num_rows`` rows (numpy would silently wrap
    negative ones around, and a compiled loop would read past the table)."""
    if indices.size:
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high >= num_rows:
            bad = low if low < 0 else high
            raise IndexError(
                f"embedding index {bad} is out of range for a table of {num_rows} "
                f"embeddings; indices must be in [0, {num_rows - 1}]"
            )


def check_padding_idx(padding_idx, num_embeddings):
    """PyTorch's rule: padding_idx in [-num_embeddings, num_embeddings), negatives count from
    the end; returns the non-negative row or None."""
    if padding_idx is None:
        return None
    if (
        isinstance(padding_idx, bool)
        or not isinstance(padding_idx, int)
        or not -num_embeddings <= padding_idx < num_embeddings
    ):
        raise ValueError(
            f"padding_idx must be an int in [{-num_embeddings}, {num_embeddings}) "
            f"for {num_embeddings} embeddings, got {padding_idx!r}"
        )
    return padding_idx % num_embeddings


def embedding(input, weight, padding_idx=None):
    """``F.embedding``: ``weight[input]`` for integer ``input`` of any shape, weight (V, D).

    Out-of-range indices raise (numpy would silently wrap negative ones around).
    """
    indices = index_array(input)
    if weight.ndim != 2:
        raise ValueError(
            f"embedding weight must be 2-D (num_embeddings, embedding_dim), got shape "
            f"{tuple(weight.shape)}"
        )
    num = weight.shape[0]
    check_indices(indices, num)
    return EmbeddingFunction.apply(
        weight, indices=indices, padding_idx=check_padding_idx(padding_idx, num)
    )
