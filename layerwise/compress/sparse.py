"""Sparse storage and sparse inference for pruned Linear layers (scipy.sparse CSR).

    fast = to_sparse(pruned.remove(), min_sparsity=0.9)   # inference-only copy
    save_sparse(fast, "model.safetensors")                  # CSR arrays, not the dense zeros

CSR stores each non-zero once with its column (int32) and a row pointer, so at density d a
float32 weight takes about d * (4 + 4) bytes per entry instead of 4: a saving past 50%
sparsity. A CSR matrix-times-dense product costs ~2 * nnz * B FLOPs against BLAS's
2 * out * in * B, but BLAS runs several times faster per FLOP, so sparse inference wins only
at high sparsity and small batches; bench/compress.py measures where, and to_sparse takes
a threshold so the choice is explicit. Training stays dense (with masks: see prune.py).
"""

import copy
import json

import scipy.sparse

from layerwise import nn
from layerwise.autograd import Tensor
from layerwise.backend import xp
from layerwise.compress._tree import find, set_submodule
from layerwise.nn.module import Module
from layerwise.serialization import load_with_metadata, save


class SparseLinear(Module):
    """y = x W^T + b with W held as CSR (out_features, in_features); no gradients."""

    def __init__(self, weight_csr, bias=None):
        super().__init__()
        self.out_features, self.in_features = weight_csr.shape
        self._w = _Holder(weight_csr.tocsr())
        self._wt = _Holder(self._w.value.T.tocsr())  # (in, out): x @ W^T as one CSR product
        self.bias = None if bias is None else Tensor(xp.asarray(bias))

    @classmethod
    def from_linear(cls, linear):
        return cls(scipy.sparse.csr_matrix(linear.weight.data),
                   None if linear.bias is None else linear.bias.data.copy())

    @property
    def weight_csr(self):
        return self._w.value

    def forward(self, x):
        if x.shape[-1] != self.in_features:
            raise ValueError(f"SparseLinear expected last dim {self.in_features}, got input of "
                             f"shape {tuple(x.shape)}")
        lead = x.shape[:-1]
        flat = x.data.reshape(-1, self.in_features)  # (M, in)
        # (W x^T)^T: CSR times dense, the product scipy runs without densifying W
        out = xp.asarray(self._w.value @ flat.T).T  # (M, out)
        if self.bias is not None:
            out = out + self.bias.data
        return Tensor(xp.ascontiguousarray(out, dtype=x.dtype).reshape(*lead, self.out_features))

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"nnz={self._w.value.nnz}")


class _Holder:
    """Keeps a scipy matrix out of the attribute walk (it is not a Parameter or buffer)."""

    def __init__(self, value):
        self.value = value


def to_sparse(model, min_sparsity=0.5):
    """A copy with each Linear whose weight has >= ``min_sparsity`` zeros made SparseLinear."""
    out = copy.deepcopy(model)
    for name, layer in find(out, nn.Linear):
        w = layer.weight.data
        if (w == 0).mean() >= min_sparsity:
            if name == "":
                return SparseLinear.from_linear(layer)
            set_submodule(out, name, SparseLinear.from_linear(layer))
    return out


def sparse_state(model):
    """A flat name -> array dict with each SparseLinear's CSR parts instead of a dense weight,
    plus the shapes; dense entries are the model's state_dict as usual."""
    state, shapes = {}, {}
    for key, value in model.state_dict().items():
        state[key] = value
    for name, layer in find(model, SparseLinear):
        prefix = f"{name}." if name else ""
        csr = layer.weight_csr
        state[prefix + "weight.data"] = Tensor(csr.data)
        state[prefix + "weight.indices"] = Tensor(csr.indices.astype(xp.int32))
        state[prefix + "weight.indptr"] = Tensor(csr.indptr.astype(xp.int32))
        if layer.bias is not None:
            state[prefix + "bias"] = layer.bias
        shapes[prefix + "weight"] = list(csr.shape)
    return state, shapes


def save_sparse(model, path):
    state, shapes = sparse_state(model)
    save(state, path, metadata={"layerwise_sparse": json.dumps(shapes)})


def load_sparse_weights(path):
    """{name: dense array}: the CSR entries of a save_sparse file expanded back to dense."""
    tensors, metadata = load_with_metadata(path)
    shapes = json.loads(metadata.get("layerwise_sparse", "{}"))
    out = {k: v for k, v in tensors.items()
           if not any(k.startswith(w + ".") for w in shapes)}
    for name, shape in shapes.items():
        csr = scipy.sparse.csr_matrix(
            (tensors[name + ".data"].data, tensors[name + ".indices"].data,
             tensors[name + ".indptr"].data), shape=tuple(shape))
        out[name] = Tensor(csr.toarray())
    return out
