"""Fast paths of the layer norm and the batch norm: each row (a layer norm's sample, a batch
norm's channel) normalised in one compiled pass, and its backward in another."""

from layerwise.autograd.dispatch import fast_path
from layerwise.backend import xp
from layerwise.ops.fast.path import FastPath
from layerwise.ops.norm import BatchNorm, LayerNormFunction, rows_of, update_running


@fast_path
class LayerNormCompiledRows(FastPath, LayerNormFunction):
    """Without an affine the kernels get a weight of ones and a bias of zeros, so that their
    loops have no branch (see the kernels in fast/kernels.py)."""

    kernels = ("layer_norm_forward", "layer_norm_backward")
    why = ("GPT workload's (2048, 128) float32 rows against the NumPy form: forward 0.39 -> "
           "0.19 ms, backward 0.54 -> 0.22 ms")

    @classmethod
    def supports(cls, x, *params, n_dims, eps, affine, graph):
        return x.dtype.char in "fd" and all(p.dtype == x.dtype for p in params)

    def forward(self, x, *params, n_dims, eps, affine):
        rows = xp.ascontiguousarray(rows_of(x, n_dims))  # (M, N)
        n = rows.shape[1]
        self.shape, self.affine, self.n_dims = x.shape, affine, n_dims
        self.weight = params[0].reshape(-1) if affine != "none" else xp.ones(n, rows.dtype)
        bias = params[1].reshape(-1) if affine == "weight_bias" else xp.zeros(n, rows.dtype)
        out, self.x_hat = xp.empty_like(rows), xp.empty_like(rows)
        self.rstd = xp.empty((rows.shape[0], 1), rows.dtype)
        # eps in the rows' dtype: the kernel's sums take it (float32 rows, float32 sums)
        self.kernel("layer_norm_forward")(rows, xp.ascontiguousarray(self.weight),
                                          xp.ascontiguousarray(bias), rows.dtype.type(eps), out,
                                          self.x_hat, self.rstd)
        return out.reshape(x.shape)

    def backward(self, g):
        g = xp.ascontiguousarray(g).reshape(self.x_hat.shape)  # (M, N)
        n = g.shape[1]
        dx = xp.empty_like(g)
        dweight, dbias = xp.zeros(n), xp.zeros(n)  # float64 sums over the rows
        self.kernel("layer_norm_backward")(g, self.x_hat, self.rstd,
                                           xp.ascontiguousarray(self.weight), dx, dweight, dbias)
        grads = (dx.reshape(self.shape),)
        wshape = self.shape[len(self.shape) - self.n_dims:]
        if self.affine != "none":
            grads += (dweight.astype(g.dtype).reshape(wshape),)
        if self.affine == "weight_bias":
            grads += (dbias.astype(g.dtype).reshape(wshape),)
        return grads


def channel_rows(a):
    """(C, M) view of ``a``'s memory with channel c (dim 1) in row c, and the permutation of
    a's dims that lays it out, or (None, None) where a channel's values are not one contiguous
    block (NCHW with N > 1). A conv's batch-last output (fast/conv.py) and a single NCHW sample
    are such blocks."""
    rest = sorted((d for d in range(a.ndim) if d != 1), key=lambda d: -a.strides[d])
    order = [1] + rest
    laid_out = a.transpose(order)
    if not laid_out.flags.c_contiguous:
        return None, None
    return laid_out.reshape(a.shape[1], -1), order


def like(rows, shape, order):
    """The (C, M) rows as an array of ``shape`` laid out by ``order`` (channel_rows' inverse)."""
    laid_out = rows.reshape([shape[d] for d in order])
    return laid_out.transpose(sorted(range(len(order)), key=order.__getitem__))


@fast_path
class BatchNormChannelRows(FastPath, BatchNorm):
    """Training-mode batch norm over channel rows (see channel_rows): each channel's statistics,
    output and backward in two compiled passes over its contiguous block, in place of NumPy's
    reductions over three strided axes."""

    kernels = ("batch_norm_rows_forward", "batch_norm_rows_backward")
    why = ("ResNet-8 of bench/models.py, its nine batch norms a training step, forward and "
           "backward: 20.6 -> 8.3 ms")

    @classmethod
    def supports(cls, x, *affine, graph, axes, eps, has_weight, has_bias, stats=None,
                 running=None):
        return (stats is None and x.dtype.char in "fd" and x.size > 0
                and all(p.dtype == x.dtype for p in affine) and channel_rows(x)[0] is not None)

    def forward(self, x, *affine, axes, eps, has_weight, has_bias, stats=None, running=None):
        rows, order = channel_rows(x)  # (C, M)
        c, m = rows.shape
        weight = affine[0] if has_weight else xp.ones(c, x.dtype)
        bias = affine[-1] if has_bias else xp.zeros(c, x.dtype)
        out, x_hat = xp.empty_like(rows), xp.empty_like(rows)
        mean, var = xp.empty(c), xp.empty(c)  # float64
        self.kernel("batch_norm_rows_forward")(rows, xp.ascontiguousarray(weight),
                                               xp.ascontiguousarray(bias), eps, out, x_hat,
                                               mean, var)
        if running is not None:
            running_mean, running_var, momentum = running
            update_running(running_mean, mean.astype(x.dtype), momentum)
            update_running(running_var, (var * (m / (m - 1))).astype(x.dtype), momentum)
        if self.needs_input_grad:
            self.x_hat, self.order, self.shape = x_hat, order, x.shape
            self.scale = (weight / xp.sqrt(var + eps)).astype(x.dtype)  # weight / std
            self.has = (has_weight, has_bias)
        return like(out, x.shape, order)

    def backward(self, g):
        laid_out = g.transpose(self.order)  # g in x's layout: rows of the same values
        g_rows = xp.ascontiguousarray(laid_out).reshape(self.x_hat.shape)  # (C, M)
        c = g_rows.shape[0]
        want_dx = bool(self.needs_input_grad[0])
        dx = xp.empty_like(g_rows) if want_dx else g_rows
        sum_g, sum_g_hat = xp.empty(c), xp.empty(c)
        self.kernel("batch_norm_rows_backward")(g_rows, self.x_hat, self.scale, want_dx, dx,
                                                sum_g, sum_g_hat)
        grads = [like(dx, self.shape, self.order) if want_dx else None]
        if self.has[0]:
            grads.append(sum_g_hat.astype(g.dtype))
        if self.has[1]:
            grads.append(sum_g.astype(g.dtype))
        return tuple(grads)
