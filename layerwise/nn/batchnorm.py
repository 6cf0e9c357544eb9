"""Batch normalisation (Ioffe & Szegedy 2015): BatchNorm1d, BatchNorm2d and F.batch_norm.

Per channel c (dim 1), over every other dim:
    training: y = (x - mean_B) / sqrt(var_B + eps) * weight + bias, with the biased batch
              variance var_B; running_mean <- (1 - m) running_mean + m mean_B and
              running_var <- (1 - m) running_var + m var_B * n / (n - 1) (unbiased), n the
              number of values per channel;
    eval:     the same with running_mean / running_var in place of the batch statistics.

One fused node (ops/norm.py's BatchNorm). Composed from ops, the training forward is ~10 nodes (mean, subtract, square,
mean, add, rsqrt, multiply, multiply, add) that save several full-size arrays; the fused
backward needs only x_hat and 1/std and two per-channel reductions:
    dx = weight / std * (g - mean(g) - x_hat * mean(g * x_hat)).
Measured forward + backward, float32, one thread: (64, 16, 28, 28) ~5 ms fused vs ~13 ms
composed; (64, 64, 7, 7) ~1.1 ms vs ~2.1 ms.
"""

from layerwise import backend
from layerwise.backend import xp
from layerwise.autograd import recording
from layerwise.ops.norm import BatchNorm
from layerwise.nn import init
from layerwise.nn.module import Module
from layerwise.nn.parameter import Parameter
from layerwise.autograd.tensor import Tensor, check_tensor


def _count_batch(counter):
    """counter += 1, in place as PyTorch's ``add_(1)``, so it stays a 0-d array: ``data + 1``
    would give a NumPy scalar, which is neither writable in place nor savable by ``lw.save``."""
    if getattr(counter.data, "flags", None) is not None and counter.data.flags.writeable:
        counter.data[...] += 1
    else:
        counter.data = xp.asarray(counter.data + 1, dtype=counter.dtype)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Functional batch norm over dim 1 of (N, C, ...). In training the batch statistics are
    used and running_mean / running_var (when given) are updated in place."""
    if input.ndim < 2:
        raise ValueError(f"batch_norm expected input of at least 2 dims (N, C, ...), got shape "
                         f"{tuple(input.shape)}")
    c = input.shape[1]
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                    ("running_var", running_var)):
        if t is not None and tuple(t.shape) != (c,):
            raise ValueError(f"batch_norm {name} must have shape ({c},) for input of shape "
                             f"{tuple(input.shape)}, got {tuple(t.shape)}")
    axes = (0,) + tuple(range(2, input.ndim))
    n = input.numel() // c if c else 0
    if training and n <= 1:
        raise ValueError(f"batch_norm expected more than 1 value per channel when training, "
                         f"got input of shape {tuple(input.shape)}")
    tensors = [input] + [t for t in (weight, bias) if t is not None]
    tracked = running_mean is not None and running_var is not None
    stats = running = None
    if training and tracked:
        running = (running_mean, running_var, momentum)
    elif not training and tracked:
        stats = (running_mean, running_var)
    return BatchNorm.apply(*tensors, axes=axes, eps=eps, has_weight=weight is not None,
                           has_bias=bias is not None, stats=stats, running=running)


class _BatchNorm(Module):
    _expected = ()  # allowed input dims
    _layout = ""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=None):
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"{type(self).__name__} num_features must be a positive int, got "
                             f"{num_features!r}")
        if momentum is not None and not (isinstance(momentum, (int, float))
                                         and 0.0 <= momentum <= 1.0):
            raise ValueError(f"{type(self).__name__} momentum must be in [0, 1] (or None for a "
                             f"cumulative average), got {momentum!r}")
        if not isinstance(eps, (int, float)) or not eps >= 0:
            raise ValueError(f"{type(self).__name__} eps must be a number >= 0, got {eps!r}")
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        dtype = backend.to_dtype(dtype or backend.default_float())
        if affine:
            self.weight = Parameter(xp.ones(num_features, dtype=dtype))
            self.bias = Parameter(xp.zeros(num_features, dtype=dtype))
        else:
            self.weight = self.bias = None
        if track_running_stats:
            self.register_buffer("running_mean", Tensor(xp.zeros(num_features, dtype=dtype)))
            self.register_buffer("running_var", Tensor(xp.ones(num_features, dtype=dtype)))
            self.register_buffer("num_batches_tracked", Tensor(xp.array(0, dtype=backend.int64)))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data = xp.array(0, dtype=backend.int64)

    def reset_parameters(self):
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            init.zeros_(self.bias)

    def forward(self, x):
        name = type(self).__name__
        check_tensor(x, name)
        if x.ndim not in self._expected:
            raise ValueError(f"{name} expected {self._layout} input, got shape {tuple(x.shape)}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{name} expected input with {self.num_features} channels (dim 1), "
                             f"got shape {tuple(x.shape)}")
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            recording.unsupported(f"{name} in training mode counts batches in Python, which a "
                                  "replay would skip; compile the model in eval mode")
            _count_batch(self.num_batches_tracked)
            if self.momentum is None:  # cumulative moving average over all batches so far
                momentum = 1.0 / int(self.num_batches_tracked.data)
        # Eval with tracked statistics uses them; otherwise (training, or nothing tracked)
        # the batch's own. Buffers are None when not tracked, so nothing is updated then.
        return batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                          self.training or not self.track_running_stats, momentum, self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L), per channel C."""

    _expected = (2, 3)
    _layout = "2-D (N, C) or 3-D (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W), per channel C."""

    _expected = (4,)
    _layout = "4-D (N, C, H, W)"
