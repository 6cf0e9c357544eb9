"""Batch normalisation (Ioffe & Szegedy 2015): BatchNorm1d, BatchNorm2d and F.batch_norm.

Per channel c (dim 1), over every other dim:
    training: y = (x - mean_B) / sqrt(var_B + eps) * weight + bias, with the biased batch
              variance var_B; running_mean <- (1 - m) running_mean + m mean_B and
              running_var <- (1 - m) running_var + m var_B * n / (n - 1) (unbiased), n the
              number of values per channel;
    eval:     the same with running_mean / running_var in place of the batch statistics.

One fused node. Composed from ops, the training forward is ~10 nodes (mean, subtract, square,
mean, add, rsqrt, multiply, multiply, add) that save several full-size arrays; the fused
backward needs only x_hat and 1/std and two per-channel reductions:
    dx = weight / std * (g - mean(g) - x_hat * mean(g * x_hat)).
Measured forward + backward, float32, one thread: (64, 16, 28, 28) ~5 ms fused vs ~13 ms
composed; (64, 64, 7, 7) ~1.1 ms vs ~2.1 ms.
"""

from layerwise import backend
from layerwise.backend import xp
from layerwise.autograd import recording
from layerwise.autograd.function import Function
from layerwise.nn import init
from layerwise.nn.module import Module
from layerwise.nn.parameter import Parameter
from layerwise.autograd.tensor import Tensor, check_tensor


class BatchNorm(Function):
    """Normalise x per channel, then scale and shift. In training (``stats`` None) the batch
    statistics are used and the gradient flows through them too; ``running`` =
    (running_mean, running_var, momentum) are then updated in place, as PyTorch's kernel does.
    In eval, ``stats`` = the (mean, var) Tensors are constants."""

    def forward(self, x, *affine, axes, eps, has_weight, has_bias, stats=None, running=None):
        shape = [1] * x.ndim
        shape[1] = x.shape[1]  # per-channel arrays broadcast as (1, C, 1, ...)
        if stats is None:
            mean = x.mean(axis=axes, keepdims=True)
            centred = x - mean
            var = xp.mean(centred * centred, axis=axes, keepdims=True)  # biased
            if running is not None:
                running_mean, running_var, momentum = running
                n = x.size // x.shape[1]
                _update_running(running_mean, mean.reshape(-1), momentum)
                _update_running(running_var, var.reshape(-1) * (n / (n - 1)), momentum)  # unbiased
        else:
            # Tensors, read here: lw.compile replays the op with the buffers' current data
            mean, var = (s.data.reshape(shape).astype(x.dtype, copy=False) for s in stats)
            centred = x - mean
        invstd = (1.0 / xp.sqrt(var + eps)).astype(x.dtype, copy=False)
        x_hat = centred * invstd
        weight = affine[0].reshape(shape) if has_weight else None
        out = x_hat * weight if has_weight else x_hat.copy()
        if has_bias:
            out += affine[-1].reshape(shape)
        if self.needs_input_grad:
            self.x_hat, self.invstd, self.weight, self.axes = x_hat, invstd, weight, axes
            self.has, self.batch = (has_weight, has_bias), stats is None
        return out

    def backward(self, g):
        axes, x_hat = self.axes, self.x_hat
        needs = self.needs_input_grad
        g_bias = g.sum(axis=axes, keepdims=True)  # (1, C, 1, ...)
        g_weight = (g * x_hat).sum(axis=axes, keepdims=True)
        gx = None
        if needs[0]:
            scale = self.invstd if self.weight is None else self.weight * self.invstd
            if self.batch:  # the batch statistics depend on x as well
                n = x_hat.size // x_hat.shape[1]
                gx = scale * (g - g_bias / n - x_hat * (g_weight / n))
            else:
                gx = g * scale
        grads = [gx]
        if self.has[0]:
            grads.append(g_weight.reshape(-1))
        if self.has[1]:
            grads.append(g_bias.reshape(-1))
        return tuple(grads)


def _update_running(running, batch_value, momentum):
    """running <- (1 - momentum) * running + momentum * batch_value, in place when possible
    (so tensors from an earlier state_dict() see the update, as in PyTorch)."""
    new = (1 - momentum) * running.data + momentum * batch_value
    if getattr(running.data, "flags", None) is not None and running.data.flags.writeable:
        running.data[...] = new
    else:
        running.data = new.astype(running.dtype)


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
