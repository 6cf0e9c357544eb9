"""Embedding: a learned table of vectors, one row per token id."""

import functools

from layerwise import backend
from layerwise.backend import xp
from layerwise.autograd.tensor import Tensor
from layerwise.nn import init
from layerwise.nn.module import Module
from layerwise.nn.parameter import Parameter
from layerwise.ops.embedding import check_padding_idx, embedding


def positions(start, stop):
    """The position indices start .. stop - 1, as a Tensor for a position embedding.

    The array is cached and read-only: every forward asks for the same few, and lw.compile
    replays a read-only array as a constant (a writable one might hold data)."""
    return Tensor(_positions(start, stop))


@functools.lru_cache(maxsize=64)
def _positions(start, stop):
    array = xp.arange(start, stop)
    array.flags.writeable = False
    return array


class Embedding(Module):
    """``Embedding(num_embeddings, embedding_dim, padding_idx=None)``: integer ids (*) -> (*, D).

    weight (num_embeddings, embedding_dim) ~ N(0, 1) as in PyTorch; the ``padding_idx`` row
    starts at zero and receives no gradient, so it stays zero under any optimizer without
    weight decay.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, _weight=None, dtype=None):
        super().__init__()
        for name, n in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
            if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
                raise ValueError(f"Embedding {name} must be a positive int, got {n!r}")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = check_padding_idx(padding_idx, num_embeddings)
        if _weight is not None:
            if tuple(_weight.shape) != (num_embeddings, embedding_dim):
                raise ValueError(
                    f"Embedding _weight must have shape ({num_embeddings}, "
                    f"{embedding_dim}), got {tuple(_weight.shape)}"
                )
            self.weight = Parameter(_weight)
        else:
            dtype = backend.to_dtype(dtype or backend.default_float())
            self.weight = Parameter(xp.empty((num_embeddings, embedding_dim), dtype=dtype))
            self.reset_parameters()

    def reset_parameters(self):
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None):
        """A table holding ``embeddings`` (V, D) as given; ``freeze`` stops its gradient."""
        array = embeddings.data if isinstance(embeddings, Tensor) else xp.asarray(embeddings)
        if array.ndim != 2:
            raise ValueError(
                f"from_pretrained needs a 2-D (num_embeddings, embedding_dim) "
                f"tensor, got shape {tuple(array.shape)}"
            )
        module = cls(*array.shape, padding_idx=padding_idx, _weight=array.copy())
        module.weight.requires_grad = not freeze
        return module

    def forward(self, input):
        return embedding(input, self.weight, self.padding_idx)

    def extra_repr(self):
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        return text + (f", padding_idx={self.padding_idx}" if self.padding_idx is not None else "")
