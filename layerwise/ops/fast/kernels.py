"""Loops compiled by numba, each doing in one pass what NumPy does in several.

NumPy runs ``dx = g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * d)`` as a dozen passes over
memory, each with a temporary; the same formula as one compiled loop reads each input once and
writes the result once (the GELU backward on (2048, 512) float32: 10 ms in NumPy, 0.33 ms).

The kernels are ordinary Python functions over NumPy arrays: read them as the definition of
what they compute. ``kernel(name)`` returns the compiled version (compiled on first use and
cached on disk), or None when numba is missing or ``LAYERWISE_NO_NUMBA=1``; the fast paths that
use a kernel name it, and dispatch then runs the reference op instead. The loops are
single-threaded: numba's thread pool and OpenBLAS's would compete for the same cores.

Two things decide whether numba vectorises a loop (SIMD): its arrays must be known contiguous,
so callers pass those; and no iteration may branch, so the kernels compile with
``error_model="numpy"``. ``math.exp`` and ``math.tanh`` stay calls into the C library, one
element at a time; vecmath.py has the float32 exp and tanh that vectorise, and the kernels
built on them. Each fast path's ``why`` gives its kernel's measured figure.
"""

import math
import os

from layerwise.backend import xp  # the kernels take the NumPy backend's arrays

_compiled = {}
_numba = None  # the module, False once it has failed to import


def _load_numba():
    global _numba
    if _numba is None:
        if os.environ.get("LAYERWISE_NO_NUMBA") == "1":
            _numba = False
        else:
            try:
                import numba
                _numba = numba
            except ImportError:
                _numba = False
    return _numba


def kernel(name):
    """The compiled kernel called ``name``, or None if numba is unavailable. The names are
    those of ``_KERNELS`` below and of ``vecmath.KERNELS`` (float32 only)."""
    if name not in _compiled:
        numba = _load_numba()
        if not numba:
            _compiled[name] = None
            return None
        if name in _KERNELS:
            function, fastmath = _KERNELS[name]
        else:
            from layerwise.ops.fast import vecmath  # imports numba itself

            function, fastmath = getattr(vecmath, name), vecmath.KERNELS[name]
        # error_model="numpy": a float division by zero gives inf or NaN, as in NumPy, instead
        # of numba's default Python check; that check is a branch in every iteration, and a
        # loop with a branch is not vectorised (the Adam update: 1.96 -> 0.22 ms).
        _compiled[name] = numba.njit(cache=True, nogil=True, fastmath=fastmath,
                                     error_model="numpy")(function)
    return _compiled[name]


def preload(dtype="float32"):
    """Compile (or load from the disk cache) every kernel for ``dtype`` now, on tiny inputs,
    instead of on first use inside a step; returns whether numba is available. Used by
    bench/compare.py so that loading numba is not counted as a training step's memory."""
    if kernel("relu_forward") is None:
        return False
    v = xp.ones(4, dtype)
    m = xp.ones((2, 4), dtype)
    kernel("layer_norm_forward")(m, v, v, v[0], m.copy(), m.copy(), xp.ones((2, 1), dtype))
    kernel("layer_norm_backward")(m, m, xp.ones((2, 1), dtype), v, m.copy(), xp.zeros(4),
                                  xp.zeros(4))
    kernel("batch_norm_rows_forward")(m, v[:2], v[:2], 1e-5, m.copy(), m.copy(), xp.zeros(2),
                                      xp.zeros(2))
    kernel("batch_norm_rows_backward")(m, m, v[:2], True, m.copy(), xp.zeros(2), xp.zeros(2))
    state, gates = xp.ones((1, 1), dtype), xp.ones((1, 1, 4), dtype)
    for batch_first in (True, False):
        kernel("lstm_cell_backward")(state, state[None], 0, batch_first, state.copy(),
                                     gates[0], state, state, gates.copy())
    x4 = xp.ones((1, 2, 2, 4), dtype)
    kernel("max_pool_forward")(x4, 2, 2, 2, 2, 1, 1, x4[:, :1, :1].copy(),
                               xp.zeros((1, 1, 1, 4), xp.int8))
    kernel("max_pool_plane")(x4[0, :1], 2, 2, 2, 2, 1, 1, xp.empty((1, 1, 2), dtype))
    kernel("max_pool_plane_2x2")(x4[0, :1], xp.empty((1, 1, 2), dtype))
    kernel("scatter_add_rows")(xp.zeros(2, xp.int64), m, m.copy())
    kernel("col2im")(xp.ones((1, 1, 1, 2, 2, 4), dtype), 1, 1, 1, 1, x4.copy())
    kernel("im2col")(x4, 1, 1, 1, 1, 1, 1, 0, 2, 2, xp.empty((1, 16), dtype))
    kernel("relu_forward")(v, v.copy(), xp.zeros(4, bool))
    kernel("relu_backward")(v, xp.zeros(4, bool), v.copy())
    kernel("masked_fill_rows")(m, xp.zeros(4, bool), v[0], m.copy())
    kernel("linear_one_row")(m, v, v[:2], v[:2].copy())
    kernel("max_pool_backward_disjoint")(x4[:, :1, :1].copy(), xp.zeros((1, 1, 1, 4), xp.int8),
                                         2, 2, 2, 2, 1, 1, x4.copy())
    one = v[0]
    kernel("adam_update")(v.copy(), v, v.copy(), v.copy(), *[one] * 7)
    kernel("dropout_forward")(v, 1, xp.uint32(0), v[0], xp.empty(1, xp.uint64), v.copy(),
                              v.copy())
    rows, index = m[:, :1].copy(), xp.zeros((2, 1), xp.int64)
    kernel("gather_rows")(m, index, rows.copy())
    kernel("gather_rows_backward")(rows, index, m.copy())
    kernel("prod_rows")(m, v[:2].copy())
    cell, row3 = xp.ones((1, 1), dtype), xp.ones((1, 3), dtype)
    for batch_first in (True, False):
        kernel("gru_cell_backward")(cell.copy(), cell[None], 0, batch_first, row3, cell, cell,
                                    row3.copy(), row3.copy())
    if v.dtype == xp.float32:  # vecmath's are float32-only
        kernel("softmax_rows")(m.copy())
        kernel("softmax_backward_rows")(m.copy(), m)
        kernel("softmax_rows_into")(m, m.copy())
        kernel("log_softmax_rows_into")(m, m.copy())
        kernel("softmax_backward_rows_into")(m, m, m.copy())
        kernel("log_softmax_backward_rows_into")(m, m, m.copy())
        kernel("gelu_tanh_f32")(v, v.copy())
        kernel("gelu_tanh_backward_f32")(v.copy(), v, v)
        kernel("gelu_erf_f32")(v, v.copy())
        kernel("gelu_erf_backward_f32")(v.copy(), v, v)
        target = xp.zeros(2, xp.int64)
        kernel("cross_entropy_rows")(m, target, -100, m.copy(), v[:2].copy())
        kernel("cross_entropy_backward_rows")(m, target, -100, v[:2], m.copy())
        gates, state = xp.ones((1, 4), dtype), xp.ones((1, 1), dtype)
        for batch_first in (True, False):
            kernel("lstm_cell_forward_f32")(gates, gates[None], 0, batch_first, state,
                                            gates.copy(), state.copy(), state.copy(),
                                            state[None].copy())
            kernel("gru_cell_forward_f32")(row3, v[:3], row3[None], 0, batch_first, cell,
                                           row3.copy(), cell.copy(), cell[None].copy())
        kernel("max_rows_f32")(m, v[:2].copy())
    return True


# --- the kernels --------------------------------------------------------------------------


def dropout_forward(x, seed, threshold, scale, bits, out, multipliers):
    """out = x * multipliers, multipliers = scale where an element's 16 random bits are at or
    above ``threshold``, else 0; flat arrays. The bits are ops/random.py's random_bits16, made
    first into ``bits`` (ceil(n / 4) uint64): the k-th splitmix64 output (k from 1) holds
    elements 4k-4 .. 4k-1, lowest 16 bits first, which is their order in memory on a
    little-endian machine (the fast path checks)."""
    start, golden = xp.uint64(seed), xp.uint64(0x9E3779B97F4A7C15)
    mix_1, mix_2 = xp.uint64(0xBF58476D1CE4E5B9), xp.uint64(0x94D049BB133111EB)
    for k in range(bits.size):
        z = start + xp.uint64(k + 1) * golden
        z = (z ^ (z >> xp.uint64(30))) * mix_1
        z = (z ^ (z >> xp.uint64(27))) * mix_2
        bits[k] = z ^ (z >> xp.uint64(31))
    lanes = bits.view(xp.uint16)
    zero = x.dtype.type(0)
    for i in range(x.size):
        m = scale if lanes[i] >= threshold else zero
        multipliers[i] = m
        out[i] = x[i] * m


def gru_cell_backward(dh, dout, t, batch_first, acts, hn, h_prev, dax, dah):
    """One GRU time step backward, elementwise part (ops/rnn.py's GRUFunction): adds step t of
    dout ((B, T, H) or (T, B, H)) to dh (B, H), fills dax (B, 3H), the input projection's
    gradient at step t, and dah (B, 3H), the hidden product's, and leaves dh = dh z, to which
    the caller adds dah W_hh."""
    n_rows, h3 = acts.shape
    h = h3 // 3
    one = acts.dtype.type(1)
    for b in range(n_rows):
        d_row = dout[b, t] if batch_first else dout[t, b]
        a, hn_row, prev, dx_row, dh_row, carried = acts[b], hn[b], h_prev[b], dax[b], dah[b], dh[b]
        for j in range(h):
            d = carried[j] + d_row[j]
            r, z, n = a[j], a[h + j], a[2 * h + j]
            dan = d * (one - z) * (one - n * n)  # through h = (1 - z) n + z h_prev and tanh'
            dar = dan * hn_row[j] * r * (one - r)
            daz = d * (prev[j] - n) * z * (one - z)
            dx_row[j], dx_row[h + j], dx_row[2 * h + j] = dar, daz, dan
            dh_row[j], dh_row[h + j], dh_row[2 * h + j] = dar, daz, dan * r
            carried[j] = d * z


def gather_rows(x, index, out):
    """out[r, j] = x[r, index[r, j]] over rows (M, N) and (M, K); a negative index counts from
    the end of its row, as in the reference's take_along_axis."""
    n = x.shape[1]
    for r in range(x.shape[0]):
        for j in range(index.shape[1]):
            k = index[r, j]
            out[r, j] = x[r, k + n if k < 0 else k]


def gather_rows_backward(g, index, grad):
    """grad[r, index[r, j]] += g[r, j] over rows; grad is zeroed by the caller."""
    n = grad.shape[1]
    for r in range(grad.shape[0]):
        for j in range(index.shape[1]):
            k = index[r, j]
            grad[r, k + n if k < 0 else k] += g[r, j]


def prod_rows(x, out):
    """out[r] = the product of row r of x (M, N); compiled with 'reassoc', so that the loop
    runs as several running products in SIMD lanes (NumPy's multiply.reduce along a short
    last axis does not vectorise)."""
    for r in range(x.shape[0]):
        p = x.dtype.type(1)
        for j in range(x.shape[1]):
            p *= x[r, j]
        out[r] = p


def layer_norm_forward(x, weight, bias, eps, out, x_hat, rstd):
    """Rows of x (M, N): x_hat = (x - mean) / sqrt(var + eps), out = x_hat * weight + bias.

    Every scalar is in x's dtype (the caller passes ``eps`` in it): float64 sums of float32
    rows convert every value and halve the vector width. With float32 sums and no branch in
    the loops (without an affine the caller passes ones and zeros), the GPT workload's
    (2048, 128) rows took 0.185 -> 0.112 ms."""
    m, n = x.shape
    one, size = x.dtype.type(1), x.dtype.type(n)
    for r in range(m):
        row, row_hat, row_out = x[r], x_hat[r], out[r]
        total = x.dtype.type(0)
        for j in range(n):
            total += row[j]
        mean = total / size
        sq = x.dtype.type(0)
        for j in range(n):
            d = row[j] - mean
            sq += d * d
        inv = one / math.sqrt(sq / size + eps)  # biased variance, as PyTorch
        rstd[r, 0] = inv
        for j in range(n):
            h = (row[j] - mean) * inv
            row_hat[j] = h
            row_out[j] = h * weight[j] + bias[j]


def batch_norm_rows_forward(x, scale, shift, eps, out, x_hat, mean, var):
    """Rows of x (C, M), one channel each: its mean and biased variance (summed in float64:
    a row holds a whole batch's values of one channel, 65 K in a CIFAR ResNet's first layers),
    x_hat = (x - mean) / sqrt(var + eps) and out = x_hat * scale[c] + shift[c]."""
    c, m = x.shape
    for r in range(c):
        row = x[r]
        total = 0.0
        for j in range(m):
            total += row[j]
        mu = total / m
        sq = 0.0
        for j in range(m):
            d = row[j] - mu
            sq += d * d
        mean[r], var[r] = mu, sq / m
        inv = x.dtype.type(1 / math.sqrt(sq / m + eps))
        mu_x, a, b = x.dtype.type(mu), scale[r], shift[r]
        row_hat, row_out = x_hat[r], out[r]
        for j in range(m):
            h = (row[j] - mu_x) * inv
            row_hat[j] = h
            row_out[j] = h * a + b


def batch_norm_rows_backward(g, x_hat, scale, want_dx, dx, sum_g, sum_g_hat):
    """Per row (channel) of g and x_hat (C, M): the sums of g and g * x_hat (float64), and
    when ``want_dx`` dx = scale[c] (g - mean(g) - x_hat mean(g x_hat)), scale = weight / std."""
    c, m = g.shape
    for r in range(c):
        g_row, h_row = g[r], x_hat[r]
        sg = 0.0
        sgh = 0.0
        for j in range(m):
            sg += g_row[j]
            sgh += g_row[j] * h_row[j]
        sum_g[r], sum_g_hat[r] = sg, sgh
        if want_dx:
            k, mg, mgh = scale[r], g.dtype.type(sg / m), g.dtype.type(sgh / m)
            dx_row = dx[r]
            for j in range(m):
                dx_row[j] = k * (g_row[j] - mg - h_row[j] * mgh)


def layer_norm_backward(g, x_hat, rstd, weight, dx, dweight, dbias):
    """dx = rstd (dxh - mean(dxh) - x_hat mean(dxh x_hat)), dxh = g * weight, per row, with the
    row sums in g's dtype as in the forward (0.213 -> 0.130 ms on the GPT workload's rows);
    and the column sums dweight = sum g x_hat, dbias = sum g over the M rows, accumulated in
    the caller's float64 arrays in a loop of their own, so that the row loops stay in one
    dtype."""
    m, n = g.shape
    size = g.dtype.type(n)
    for r in range(m):
        row_g, row_hat, row_dx = g[r], x_hat[r], dx[r]
        s1 = g.dtype.type(0)
        s2 = g.dtype.type(0)
        for j in range(n):
            d = row_g[j] * weight[j]
            s1 += d
            s2 += d * row_hat[j]
        for j in range(n):
            dweight[j] += row_g[j] * row_hat[j]
            dbias[j] += row_g[j]
        a, c, inv = s1 / size, s2 / size, rstd[r, 0]
        for j in range(n):
            row_dx[j] = (row_g[j] * weight[j] - a - row_hat[j] * c) * inv


def lstm_cell_backward(dh, dout, step, batch_first, dc, a, tanh_c, c_prev, da):
    """One LSTM time step backwards, elementwise part (ops/rnn.py's LSTMFunction has the
    formulas): with dh (B, H) + dout's ``step`` as the hidden state's gradient, fills that step
    of da = the gradient of the gate pre-activations (i, f, g, o) and turns dc (B, H) into the
    gradient of the previous cell state. a (B, 4H) holds the activations. dout (B, T, H) and
    da (B, T, 4H) with ``batch_first``, else (T, B, .), come whole, so that each row numba sees
    is known to be contiguous (a step's strided slices would not be vectorised).
    Three loops per row, each writing at most two arrays, rather than one: LLVM vectorises a
    loop only when it can check that the arrays it writes do not overlap the others, and
    gives up when there are too many pairs to check (31 -> 20 us a step at B=32, H=256)."""
    n, h_size = dh.shape
    for b in range(n):
        ab, dcb, dhb = a[b], dc[b], dh[b]
        dab = da[b, step] if batch_first else da[step, b]
        doutb = dout[b, step] if batch_first else dout[step, b]
        for j in range(h_size):  # the cell state's gradient and the output gate's
            t, o = tanh_c[b, j], ab[3 * h_size + j]
            d_h = dhb[j] + doutb[j]
            dcb[j] = dcb[j] + d_h * o * (1 - t * t)
            dab[3 * h_size + j] = d_h * t * o * (1 - o)
        for j in range(h_size):  # the input, forget and cell gates'
            i, f, g = ab[j], ab[h_size + j], ab[2 * h_size + j]
            d_c = dcb[j]
            dab[j] = d_c * g * i * (1 - i)
            dab[h_size + j] = d_c * c_prev[b, j] * f * (1 - f)
            dab[2 * h_size + j] = d_c * i * (1 - g * g)
        for j in range(h_size):  # on to the previous step's cell state
            dcb[j] *= ab[h_size + j]


def max_pool_forward(x, kh, kw, sh, sw, dh, dw, out, arg):
    """Window maxima over batch-last arrays: x (C, Hp, Wp, N) already padded with -inf, out and
    arg (C, OH, OW, N); arg = the kernel position (row-major) of the first maximum, and a NaN
    is the maximum of its window (as in PyTorch). The batch is the inner loop: contiguous."""
    c_size, oh_size, ow_size, n_size = out.shape
    for c in range(c_size):
        for oy in range(oh_size):
            for ox in range(ow_size):
                for n in range(n_size):
                    out[c, oy, ox, n] = x[c, oy * sh, ox * sw, n]
                    arg[c, oy, ox, n] = 0
                for ky in range(kh):
                    for kx in range(kw):
                        if ky == 0 and kx == 0:
                            continue
                        row, col, k = oy * sh + ky * dh, ox * sw + kx * dw, ky * kw + kx
                        for n in range(n_size):
                            v, best = x[c, row, col, n], out[c, oy, ox, n]
                            if v > best or (v != v and best == best):
                                out[c, oy, ox, n] = v
                                arg[c, oy, ox, n] = k


def max_pool_plane(x, kh, kw, sh, sw, dh, dw, out):
    """Window maxima of one sample with no graph (batch-1 inference): x (C, Hp, Wp) already
    padded with -inf, out (C, OH, OW); a NaN is the maximum of its window. The maximum is
    built a kernel position at a time over a whole output row, a loop over OW that the
    batch-innermost kernel above cannot have at batch 1 (CNN workload, 64x14x14 input:
    23 -> 12 us)."""
    c_size, oh_size, ow_size = out.shape
    for c in range(c_size):
        for oy in range(oh_size):
            best = out[c, oy]
            first = x[c, oy * sh]
            for ox in range(ow_size):
                best[ox] = first[ox * sw]
            for ky in range(kh):
                row = x[c, oy * sh + ky * dh]
                for kx in range(kw):
                    if ky == 0 and kx == 0:
                        continue
                    for ox in range(ow_size):
                        v, m = row[ox * sw + kx * dw], best[ox]
                        best[ox] = v if v > m or v != v else m


def max_pool_plane_2x2(x, out):
    """max_pool_plane for the usual 2x2 window at stride 2: x (C, Hp, Wp), out (C, OH, OW).
    With the window and stride fixed the compiler knows every load's offset and vectorises
    the loop over OW (CNN workload at batch 1: 32x28x28 input 18.3 -> 4.5 us, 64x14x14
    11.4 -> 3.4 us, alone)."""
    c_size, oh_size, ow_size = out.shape
    for c in range(c_size):
        for oy in range(oh_size):
            for ox in range(ow_size):
                a, b = x[c, 2 * oy, 2 * ox], x[c, 2 * oy, 2 * ox + 1]
                m = b if b > a or b != b else a
                a, b = x[c, 2 * oy + 1, 2 * ox], x[c, 2 * oy + 1, 2 * ox + 1]
                m = a if a > m or a != a else m
                out[c, oy, ox] = b if b > m or b != b else m


def scatter_add_rows(indices, rows, out):
    """out[indices[j]] += rows[j] for every j: an embedding's backward. rows (n, D), out (V, D)."""
    for j in range(indices.size):
        k = indices[j]
        for d in range(rows.shape[1]):
            out[k, d] += rows[j, d]


def im2col(xc, kh, kw, sh, sw, dh, dw, oy_start, oy_stop, ow, cols):
    """The columns of a convolution for output rows oy_start to oy_stop: xc (C, Hp, Wp, N),
    padded and batch-last, into cols (C*KH*KW, OH*OW*N), row (c, ky, kx), column (oy, ox, n)
    = xc[c, oy*sh + ky*dh, ox*sw + kx*dw, n]. The same copy NumPy makes from the strided view,
    without its per-run overhead (runs of N values)."""
    c_size, n_size = xc.shape[0], xc.shape[3]
    for c in range(c_size):
        for ky in range(kh):
            for kx in range(kw):
                r = (c * kh + ky) * kw + kx
                for oy in range(oy_start, oy_stop):
                    for ox in range(ow):
                        base = (oy * ow + ox) * n_size
                        for n in range(n_size):
                            cols[r, base + n] = xc[c, oy * sh + ky * dh, ox * sw + kx * dw, n]


def col2im(gcols, sh, sw, dh, dw, gpad):
    """The adjoint of im2col: gcols (C, KH, KW, OH, OW, N) -> gpad (C, Hp, Wp, N), each
    column entry added to the input position it was read from (the caller zeroes gpad).
    Accumulating in one pass beats one strided slice-add per kernel position in NumPy."""
    c_size, kh, kw, oh, ow, n_size = gcols.shape
    for c in range(c_size):
        for ky in range(kh):
            for kx in range(kw):
                for oy in range(oh):
                    row = oy * sh + ky * dh
                    for ox in range(ow):
                        col = ox * sw + kx * dw
                        for n in range(n_size):
                            gpad[c, row, col, n] += gcols[c, ky, kx, oy, ox, n]


def relu_forward(x, out, mask):
    """out = x where x > 0 else 0 (NaN stays NaN, as x * (x > 0) gives), mask = x > 0; flat."""
    for i in range(x.size):
        v = x[i]
        positive = v > 0
        mask[i] = positive
        out[i] = v if positive or v != v else 0


def relu_backward(g, mask, dx):
    """dx = g where the input was positive, else 0; flat."""
    for i in range(g.size):
        dx[i] = g[i] if mask[i] else 0


def linear_one_row(weight, x, bias, out):
    """out = weight @ x + bias: a Linear at batch 1, no graph.
    weight (out, in) C-contiguous, x (in,), bias and out (out,).

    Four rows of the weight at a time share each load of x, and each row is summed in SIMD
    lanes ('reassoc'). At batch 1 the product only streams the weight once from cache, so one
    core reads it as fast as OpenBLAS's two threads; the bias and ReLU come in the same call
    instead of two more passes (float32, alone: 784->512 23.6 against 25.3 us for the BLAS
    product alone, 512->512 13.6 against 16.8, 512->10 1.0 against 2.0)."""
    n_out, n_in = weight.shape
    zero = weight.dtype.type(0)
    in_fours = n_out - n_out % 4
    for o in range(0, in_fours, 4):
        s0, s1, s2, s3 = zero, zero, zero, zero
        for i in range(n_in):
            xi = x[i]
            s0 += weight[o, i] * xi
            s1 += weight[o + 1, i] * xi
            s2 += weight[o + 2, i] * xi
            s3 += weight[o + 3, i] * xi
        out[o], out[o + 1], out[o + 2], out[o + 3] = s0, s1, s2, s3
    for o in range(in_fours, n_out):  # the last rows, fewer than four
        s = zero
        for i in range(n_in):
            s += weight[o, i] * x[i]
        out[o] = s
    for o in range(n_out):
        out[o] += bias[o]


def adam_update(p, g, m, v, beta1, one_minus_beta1, beta2, one_minus_beta2, step_size,
                inv_sqrt_bc2, eps):
    """One Adam step in place over flat arrays (optim/adam.py has the formula): the same
    operations in the same order as its NumPy form, so the result is the same to the bit. The
    scalars come in the arrays' dtype, so that float32 arrays are not computed in float64."""
    for i in range(p.size):
        gi = g[i]
        mi = m[i] * beta1 + gi * one_minus_beta1
        vi = v[i] * beta2 + (gi * gi) * one_minus_beta2
        m[i] = mi
        v[i] = vi
        p[i] -= (mi / (math.sqrt(vi) * inv_sqrt_bc2 + eps)) * step_size


def masked_fill_rows(x, mask, value, out):
    """out[i, j] = value where mask[j], else x[i, j]: x and out (M, N), the mask (N,) the same
    for every row, as a causal (T, T) mask is for each (batch, head) of the scores."""
    m, n = x.shape
    for i in range(m):
        for j in range(n):
            out[i, j] = value if mask[j] else x[i, j]


def max_pool_backward_disjoint(g, arg, kh, kw, sh, sw, dh, dw, gx):
    """Max-pool backward when windows do not overlap (stride >= dilated kernel, e.g. 2x2/2):
    every position of every window is written once, g where it won, else 0, so nothing is
    added and the inner loop over the batch is a select. g, arg (C, OH, OW, N) and gx
    (C, Hp, Wp, N) must be C-contiguous (numba cannot vectorise a loop over an array whose
    inner stride it does not know); positions outside every window are the caller's."""
    c_size, oh_size, ow_size, n_size = g.shape
    for c in range(c_size):
        for oy in range(oh_size):
            for ky in range(kh):
                row = oy * sh + ky * dh
                for ox in range(ow_size):
                    for kx in range(kw):
                        col, k = ox * sw + kx * dw, ky * kw + kx
                        for n in range(n_size):
                            gx[c, row, col, n] = g[c, oy, ox, n] if arg[c, oy, ox, n] == k else 0


# name -> (function, fastmath flags). 'reassoc' lets LLVM vectorise the row sums (a different
# summation order, as NumPy's own pairwise sums have); NaN and inf keep their IEEE meaning.
_SUMS = {"reassoc", "contract"}
_KERNELS = {
    "layer_norm_forward": (layer_norm_forward, _SUMS),
    "layer_norm_backward": (layer_norm_backward, _SUMS),
    "dropout_forward": (dropout_forward, False),
    "gather_rows": (gather_rows, False),
    "prod_rows": (prod_rows, _SUMS),
    "gather_rows_backward": (gather_rows_backward, False),
    "batch_norm_rows_forward": (batch_norm_rows_forward, _SUMS),
    "batch_norm_rows_backward": (batch_norm_rows_backward, _SUMS),
    "lstm_cell_backward": (lstm_cell_backward, False),
    "gru_cell_backward": (gru_cell_backward, False),
    "max_pool_forward": (max_pool_forward, False),
    "max_pool_plane": (max_pool_plane, False),
    "max_pool_plane_2x2": (max_pool_plane_2x2, False),
    "scatter_add_rows": (scatter_add_rows, False),
    "im2col": (im2col, False),
    "col2im": (col2im, False),
    "relu_forward": (relu_forward, False),
    "relu_backward": (relu_backward, False),
    "linear_one_row": (linear_one_row, _SUMS),
    "max_pool_backward_disjoint": (max_pool_backward_disjoint, False),
    "masked_fill_rows": (masked_fill_rows, False),
    "adam_update": (adam_update, False),
}
