"""Structured pruning: whole hidden units and conv channels removed, a smaller dense model.

    small = prune_units(model, 0.5)     # half the units of every hidden Linear / Conv2d

A unit is a producer's output row (Linear: a row of weight; Conv2d: an output channel) and
the matching input column(s) of the next consumer. Units are ranked by the L2 norm of their
incoming weights (Li et al. 2017, "Pruning filters for efficient ConvNets", use the L1 norm
of filters; either ranks magnitude). Only elementwise layers, pooling, dropout, Flatten and
BatchNorm may sit between a producer and its consumer, in one ``nn.Sequential``; the last
producer (the model's outputs) is never pruned.

``unit_mask_model`` returns the same choice as zeros in a full-size copy (the unit's weights
and bias): with activations that map 0 to 0 (ReLU, Tanh, GELU) and no BatchNorm in between,
its outputs equal the small model's, which is how the tests check the slicing.
"""

import copy

from layerwise import nn
from layerwise.autograd import Tensor
from layerwise.backend import xp
from layerwise.compress.prune import _check_amount

_PRODUCERS = (nn.Linear, nn.Conv2d)
_PASS = (nn.ReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.LeakyReLU, nn.Dropout,
         nn.MaxPool2d, nn.AvgPool2d, nn.Identity)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def _pairs(seq):
    """[(producer index, [norm indices], flatten?, consumer index)] along a Sequential."""
    layers = list(seq)
    pairs = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, _PRODUCERS):
            continue
        norms, flatten = [], False
        for j in range(i + 1, len(layers)):
            nxt = layers[j]
            if isinstance(nxt, _PRODUCERS):
                pairs.append((i, norms, flatten, j))
                break
            if isinstance(nxt, _NORMS):
                norms.append(j)
            elif isinstance(nxt, nn.Flatten):
                flatten = True
            elif not isinstance(nxt, _PASS):
                break  # an unknown layer: its effect on units is not known, leave this pair
    return pairs


def _keep_indices(layer, amount):
    w = layer.weight.data
    norms = xp.sqrt((w.reshape(w.shape[0], -1).astype(xp.float64) ** 2).sum(axis=1))
    n_keep = max(1, w.shape[0] - round(amount * w.shape[0]))
    # the n_keep largest, back in their original order (stable: ties go to the first)
    return xp.sort(xp.argsort(-norms, kind="stable")[:n_keep])


def _check(model):
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"structured pruning works on an nn.Sequential of layers, got "
                        f"{type(model).__name__}")
    pairs = _pairs(model)
    if not pairs:
        raise ValueError("no Linear/Conv2d followed by another Linear/Conv2d to prune units "
                         "between")
    return pairs


def _param(array):
    return nn.Parameter(xp.ascontiguousarray(array))


def prune_units(model, amount):
    """A new, smaller nn.Sequential with ``amount`` of each hidden layer's units removed."""
    _check_amount(amount)
    pairs = _check(model)
    small = copy.deepcopy(model)
    for i, norms, flatten, j in pairs:
        keep = _keep_indices(model[i], amount)
        producer, consumer = small[i], small[j]
        producer.weight = _param(producer.weight.data[keep])
        if producer.bias is not None:
            producer.bias = _param(producer.bias.data[keep])
        if isinstance(producer, nn.Linear):
            producer.out_features = len(keep)
        else:
            producer.out_channels = len(keep)
        for k in norms:
            _slice_norm(small[k], keep)
        _slice_consumer(consumer, keep, model[i].weight.shape[0], flatten)
    return small


def _slice_norm(norm, keep):
    for name in ("weight", "bias"):
        p = getattr(norm, name, None)
        if p is not None:
            setattr(norm, name, _param(p.data[keep]))
    for name in ("running_mean", "running_var"):
        b = getattr(norm, name, None)
        if b is not None:
            setattr(norm, name, Tensor(xp.ascontiguousarray(b.data[keep])))
    norm.num_features = len(keep)


def _slice_consumer(consumer, keep, n_units, flatten):
    w = consumer.weight.data
    if isinstance(consumer, nn.Linear):
        if flatten:  # (C * H * W) columns in C-major blocks of H * W
            block = w.shape[1] // n_units
            cols = (keep[:, None] * block + xp.arange(block)).reshape(-1)
        else:
            cols = keep
        consumer.weight = _param(w[:, cols])
        consumer.in_features = len(cols)
    else:  # Conv2d: (O, C, KH, KW) -> (O, kept C, KH, KW)
        consumer.weight = _param(w[:, keep])
        consumer.in_channels = len(keep)


def unit_mask_model(model, amount):
    """A full-size copy with the units ``prune_units`` would remove set to zero."""
    _check_amount(amount)
    masked = copy.deepcopy(model)
    for i, _, _, _ in _check(model):
        drop = xp.setdiff1d(xp.arange(model[i].weight.shape[0]), _keep_indices(model[i], amount))
        masked[i].weight.data[drop] = 0
        if masked[i].bias is not None:
            masked[i].bias.data[drop] = 0
    return masked
