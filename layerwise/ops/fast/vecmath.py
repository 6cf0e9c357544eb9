"""Compiled softmax, cross-entropy and GELU kernels on a float32 exp that LLVM can vectorise.

Why: numba compiles ``math.exp`` to a call into the C library, one element at a time, so a
fused softmax loop ran slower than NumPy's SIMD exp in separate passes. ``exp_f32`` below is
plain arithmetic instead: Cephes' range reduction and polynomial (as in ``expf``), with 2^n
built from its bits, so every step has a vector instruction and the loops that call it are
vectorised whole. Measured on the 2-core machine: NumPy's exp of 1 M float32 values 0.45 ms,
``exp_f32`` in a loop 0.34 ms; the attention softmax of (4096, 128) rows 0.97 -> 0.51 ms and
its backward 0.27 -> 0.11 ms; GELU and cross-entropy figures are at their callers. The row
maximum in eight lanes (``_row_max``) then took the softmax of (8192, 128) rows from 1.10 to
0.66 ms.

Accuracy: ``exp_f32`` is within 1.4 ulp of the exact value over its range (measured against
float64 on 1 M values in [-88, 88]); below -88 it gives 0 (exp is < 2^-126 there, a denormal
that NumPy would keep), above 88.7 inf. It is float32-only: callers pass float32 arrays and
take NumPy's path for any other dtype.

``tanh_f32`` is 1 - 2 / (e^(2x) + 1) on that exp, good where tanh is added to 1 (the GELU).
``normal_cdf_f32``, the exact GELU's Phi, is Numerical Recipes' erfc on that exp: within
1.1 eps32 of float64 for GELU(x) / max(|GELU(x)|, 1) and 1.8 eps32 for its derivative over
[-14, 14], and 2.1e-6 relatively down to x = -9 (measured on a dense grid).
The LSTM cell's forward runs here with fused multiply-adds allowed and on contiguous rows:
29 us a step, the LSTM workload's forward 14.8 -> 11.9 ms alone.

``kernels.kernel(name)`` compiles the kernels here as it does those of kernels.py.
"""

import math

import numba
from llvmlite import ir
from numba.core import types
from numba.core.extending import intrinsic

from layerwise.backend import xp  # numba sees the NumPy module: the NumPy backend's arrays

f32 = xp.float32


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose IEEE bits are the int32 ``bits`` (a bitcast, no conversion)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


# Cephes expf: x = n ln2 + r, |r| <= ln2 / 2, ln2 split in two so n * ln2 stays exact.
_LOG2E = f32(1.44269504088896341)
_LN2_HI, _LN2_LO = f32(0.693359375), f32(-2.12194440e-4)
_EXP_POLY = tuple(f32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                                   4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))
_EXP_LO, _EXP_HI = f32(-88.0), f32(88.7)  # exp(-88) ~ 6e-39: 2^-127 flushes to 0 below


@numba.njit(inline="always", error_model="numpy")
def exp_f32(x):
    """e^x for a float32 x; NaN stays NaN, -inf gives 0, inf gives inf."""
    c0, c1, c2, c3, c4, c5 = _EXP_POLY
    y = _EXP_LO if x < _EXP_LO else x  # NaN compares False and passes through
    y = _EXP_HI if y > _EXP_HI else y
    n = xp.floor(y * _LOG2E + f32(0.5))
    r = y - n * _LN2_HI - n * _LN2_LO
    p = ((((c0 * r + c1) * r + c2) * r + c3) * r + c4) * r + c5
    p = p * r * r + r + f32(1)  # e^r
    two_n = _float32_from_bits(xp.int32(n + f32(127)) << 23)  # 2^n; n = -127 gives 0.0
    return f32(xp.inf) if x > _EXP_HI else p * two_n


@numba.njit(inline="always", error_model="numpy")
def tanh_f32(x):
    """tanh(x) = 1 - 2 / (e^(2x) + 1) for a float32 x: within ~1.2e-7 of tanh in absolute
    terms, but not in relative terms near 0 (1 - 0.9999 cancels), so it serves where tanh is
    added to 1, as in the GELU; e^(2x) = inf gives 1 and 0 gives -1."""
    return f32(1) - f32(2) / (exp_f32(f32(2) * x) + f32(1))


@numba.njit(inline="always", error_model="numpy")
def sigmoid_f32(x):
    """1 / (1 + e^-x) for a float32 x: -inf gives 0, inf gives 1, NaN stays NaN."""
    return f32(1) / (f32(1) + exp_f32(-x))


# --- the kernels (float32 arrays) -----------------------------------------------------------


@numba.njit(inline="always", error_model="numpy")
def _row_max(s, r, last):
    """The largest of s[r, :last] (last >= 1), where a NaN never wins a comparison (unless it
    comes first): the same value as one running maximum (up to the sign of a zero maximum,
    which changes nothing once subtracted and exponentiated), in eight running maxima over
    interleaved columns, merged at the end. LLVM does not vectorise a single running
    maximum (each step waits on the last); these eight become one vector instruction per
    eight columns: 0.34 -> 0.15 ms over (8192, 128). Written out because the same eight
    maxima kept in a local array, updated by an inner loop, stayed scalar (0.34 ms)."""
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = s[r, 0]
    body = last - last % 8
    for j in range(0, body, 8):
        v = s[r, j]
        m0 = v if v > m0 else m0
        v = s[r, j + 1]
        m1 = v if v > m1 else m1
        v = s[r, j + 2]
        m2 = v if v > m2 else m2
        v = s[r, j + 3]
        m3 = v if v > m3 else m3
        v = s[r, j + 4]
        m4 = v if v > m4 else m4
        v = s[r, j + 5]
        m5 = v if v > m5 else m5
        v = s[r, j + 6]
        m6 = v if v > m6 else m6
        v = s[r, j + 7]
        m7 = v if v > m7 else m7
    for j in range(body, last):
        v = s[r, j]
        m0 = v if v > m0 else m0
    m0 = m1 if m1 > m0 else m0
    m2 = m3 if m3 > m2 else m2
    m4 = m5 if m5 > m4 else m4
    m6 = m7 if m7 > m6 else m6
    m0 = m2 if m2 > m0 else m0
    m4 = m6 if m6 > m4 else m4
    return m4 if m4 > m0 else m0


def max_rows_f32(x, out):
    """out[r] = the largest value of row r of x (M, N), NaN where the row holds one (NumPy's
    rule): the eight-lane maximum, then a separate NaN test, which vectorises on its own."""
    n = x.shape[1]
    for r in range(x.shape[0]):
        mx = _row_max(x, r, n)
        has_nan = False
        for j in range(n):
            has_nan |= x[r, j] != x[r, j]
        out[r] = f32(xp.nan) if has_nan else mx


def softmax_rows(s):
    """Softmax over the rows of s (M, N), in place, as attention.softmax_rows_: a row whose
    maximum is not finite (all -inf, or a NaN first) is shifted by 0 instead, so an all -inf
    row gives zeros; a NaN anywhere makes its row NaN (through the sum)."""
    m, n = s.shape
    for r in range(m):
        mx = _row_max(s, r, n)
        if not (-xp.inf < mx < xp.inf):
            mx = f32(0)
        total = f32(0)
        for j in range(n):
            e = exp_f32(s[r, j] - mx)
            s[r, j] = e
            total += e
        inv = f32(1) / total if total != 0 else f32(1)
        for j in range(n):
            s[r, j] *= inv


def softmax_backward_rows(dp, p):
    """dS = P * (dP - rowsum(dP * P)) in dP's memory; dp and p (M, N)."""
    m, n = dp.shape
    for r in range(m):
        dot = f32(0)
        for j in range(n):
            dot += dp[r, j] * p[r, j]
        for j in range(n):
            dp[r, j] = p[r, j] * (dp[r, j] - dot)


def softmax_rows_into(x, out):
    """out = the softmax of each row of x (M, N), as reduce.Softmax computes it: a row whose
    maximum is not finite (all -inf, an inf, or a NaN first) is NaN throughout, as
    exp(x - max) makes it there; a NaN elsewhere makes its row NaN through the sum."""
    m, n = x.shape
    for r in range(m):
        mx = _row_max(x, r, n)
        if not (-xp.inf < mx < xp.inf):
            for j in range(n):
                out[r, j] = xp.nan
            continue
        total = f32(0)
        for j in range(n):
            e = exp_f32(x[r, j] - mx)
            out[r, j] = e
            total += e
        inv = f32(1) / total
        for j in range(n):
            out[r, j] *= inv


def log_softmax_rows_into(x, out):
    """out = (x - max) - log(sum exp(x - max)) over each row of x (M, N), as
    reduce.LogSoftmax computes it; a row whose maximum is not finite is NaN throughout."""
    m, n = x.shape
    for r in range(m):
        mx = _row_max(x, r, n)
        if not (-xp.inf < mx < xp.inf):
            for j in range(n):
                out[r, j] = xp.nan
            continue
        total = f32(0)
        for j in range(n):
            total += exp_f32(x[r, j] - mx)
        log_total = f32(math.log(total))
        for j in range(n):
            out[r, j] = (x[r, j] - mx) - log_total


def softmax_backward_rows_into(g, y, dx):
    """dx = y * (g - rowsum(g * y)) over rows (M, N), y the softmax; dx apart from g and y."""
    m, n = g.shape
    for r in range(m):
        dot = f32(0)
        for j in range(n):
            dot += g[r, j] * y[r, j]
        for j in range(n):
            dx[r, j] = y[r, j] * (g[r, j] - dot)


def log_softmax_backward_rows_into(g, out, dx):
    """dx = g - exp(out) * rowsum(g) over rows (M, N), out the log-softmax; dx apart."""
    m, n = g.shape
    for r in range(m):
        total = f32(0)
        for j in range(n):
            total += g[r, j]
        for j in range(n):
            dx[r, j] = g[r, j] - exp_f32(out[r, j]) * total


def cross_entropy_rows(logits, target, ignore_index, probs, losses):
    """Rows of logits (N, C) against class indices: probs = softmax of each row, losses[r] =
    log(sum exp(x - max)) - (x[target] - max), 0 where target == ignore_index."""
    n, c = logits.shape
    for r in range(n):
        mx = _row_max(logits, r, c)
        total = f32(0)
        for j in range(c):
            e = exp_f32(logits[r, j] - mx)
            probs[r, j] = e
            total += e
        inv = f32(1) / total
        for j in range(c):
            probs[r, j] *= inv
        t = target[r]
        if t == ignore_index:
            losses[r] = 0
        elif 0 <= t < c:  # checked by F.cross_entropy, but not in an lw.compile replay
            losses[r] = f32(math.log(total)) - (logits[r, t] - mx)
        else:
            losses[r] = xp.nan


def cross_entropy_backward_rows(probs, target, ignore_index, scales, grad):
    """grad = (probs - one_hot(target)) * scales[:, None], zero rows where ignored."""
    n, c = probs.shape
    for r in range(n):
        t = target[r]
        s = f32(0) if t == ignore_index else scales[r]
        for j in range(c):
            grad[r, j] = probs[r, j] * s
        if t != ignore_index and 0 <= t < c:
            grad[r, t] = (probs[r, t] - f32(1)) * s


_GELU_C = f32(math.sqrt(2 / math.pi))


def gelu_tanh_f32(x, out):
    """out = x (1 + t) / 2, t = tanh(sqrt(2/pi) (x + 0.044715 x^3)); flat arrays."""
    for i in range(x.size):
        xi = x[i]
        t = tanh_f32(_GELU_C * (xi + f32(0.044715) * xi * xi * xi))
        out[i] = f32(0.5) * xi * (f32(1) + t)


def gelu_tanh_backward_f32(dx, g, x):
    """dx = g ((1 + t) / 2 + x (1 - t^2) sqrt(2/pi) (1 + 3a x^2) / 2), t recomputed from x as in
    the forward; flat arrays, dx not sharing memory with g or x."""
    for i in range(dx.size):
        xi = x[i]
        t = tanh_f32(_GELU_C * (xi + f32(0.044715) * xi * xi * xi))
        dinner = _GELU_C * (f32(1) + f32(3 * 0.044715) * xi * xi)
        dx[i] = g[i] * (f32(0.5) * (f32(1) + t) + f32(0.5) * xi * (f32(1) - t * t) * dinner)


# Numerical Recipes' erfc (Press et al., 2nd ed., section 6.2, a Chebyshev fit): for z >= 0,
# erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z / 2), within 1.2e-7 of erfc(z) relatively.
_ERFC_POLY = tuple(f32(c) for c in (0.17087277, -0.82215223, 1.48851587, -1.13520398,
                                    0.27886807, -0.18628806, 0.09678418, 0.37409196,
                                    1.00002368, -1.26551223))
_INV_SQRT2 = f32(1 / math.sqrt(2))
_INV_SQRT_2PI = f32(1 / math.sqrt(2 * math.pi))


@numba.njit(inline="always", error_model="numpy")
def normal_cdf_f32(x):
    """Phi(x) = erfc(-x / sqrt 2) / 2 for a float32 x, from the erfc above: h = erfc(|x| /
    sqrt 2) / 2 is Phi(x) for x <= 0 and 1 - Phi(x) for x > 0. Written in erfc rather than as
    (1 + erf) / 2, the lower tail keeps its relative accuracy (about 1e-6 down to x = -5,
    where 1 + erf in float32 is off by 5%), and no step is a libm call, so loops vectorise.
    NaN stays NaN; -inf gives 0, inf gives 1."""
    c0, c1, c2, c3, c4, c5, c6, c7, c8, c9 = _ERFC_POLY
    t = f32(1) / (f32(1) + f32(0.5) * _INV_SQRT2 * abs(x))
    p = ((((((((c0 * t + c1) * t + c2) * t + c3) * t + c4) * t + c5) * t + c6) * t + c7) * t
         + c8) * t + c9
    h = f32(0.5) * t * exp_f32(f32(-0.5) * x * x + p)  # z^2 = x^2 / 2: one rounding, of x * x
    return h if x <= f32(0) else f32(1) - h


def gelu_erf_f32(x, out):
    """out = x Phi(x), the exact GELU; flat arrays."""
    for i in range(x.size):
        xi = x[i]
        out[i] = xi * normal_cdf_f32(xi)


def gelu_erf_backward_f32(dx, g, x):
    """dx = g (Phi(x) + x phi(x)), phi(x) = exp(-x^2 / 2) / sqrt(2 pi), Phi recomputed from x
    as in the forward; flat arrays, dx not sharing memory with g or x."""
    for i in range(dx.size):
        xi = x[i]
        pdf = _INV_SQRT_2PI * exp_f32(f32(-0.5) * xi * xi)
        dx[i] = g[i] * (normal_cdf_f32(xi) + xi * pdf)


def lstm_cell_forward_f32(hw, xw, t, batch_first, c_prev, acts, c, tanh_c, out):
    """One LSTM time step forward, elementwise part (ops/rnn.py's LSTMFunction has the
    formulas): from the hidden product hw (B, 4H) and step t of the input projection xw
    ((B, T, 4H) with ``batch_first``, else (T, B, 4H)), fills acts (B, 4H) = the gate
    activations (i, f, g, o), c (B, H) = f c_prev + i g, tanh_c = tanh(c) and step t of out
    ((B, T, H) or (T, B, H)) = o tanh_c. xw and out are passed whole, so that each row numba
    sees is known to be contiguous."""
    n, h4 = hw.shape
    h = h4 // 4
    for b in range(n):
        x_row = xw[b, t] if batch_first else xw[t, b]
        h_row, a_row = hw[b], acts[b]
        for j in range(2 * h):  # input and forget gates
            a_row[j] = sigmoid_f32(h_row[j] + x_row[j])
        for j in range(2 * h, 3 * h):  # the cell candidate
            a_row[j] = tanh_f32(h_row[j] + x_row[j])
        for j in range(3 * h, h4):  # the output gate
            a_row[j] = sigmoid_f32(h_row[j] + x_row[j])
        c_old, c_row, tanh_row = c_prev[b], c[b], tanh_c[b]
        out_row = out[b, t] if batch_first else out[t, b]
        for j in range(h):
            cj = a_row[h + j] * c_old[j] + a_row[j] * a_row[2 * h + j]
            c_row[j] = cj
            tj = tanh_f32(cj)
            tanh_row[j] = tj
            out_row[j] = a_row[3 * h + j] * tj


def gru_cell_forward_f32(hw, bias, xw, t, batch_first, h_prev, acts, hn, out):
    """One GRU time step forward, elementwise part (ops/rnn.py's GRUFunction has the
    formulas): from the hidden product hw (B, 3H), to which b_hh (``bias``) is added here, and
    step t of the input projection xw ((B, T, 3H) with ``batch_first``, else (T, B, 3H)),
    fills acts (B, 3H) = the gates (r, z, n), hn (B, H) = W_hn h_prev + b_hn and step t of
    out ((B, T, H) or (T, B, H)) = (1 - z) n + z h_prev."""
    n_rows, h3 = hw.shape
    h = h3 // 3
    for b in range(n_rows):
        x_row = xw[b, t] if batch_first else xw[t, b]
        h_row, a_row, hn_row, prev = hw[b], acts[b], hn[b], h_prev[b]
        out_row = out[b, t] if batch_first else out[t, b]
        for j in range(2 * h):  # the reset and update gates
            a_row[j] = sigmoid_f32(x_row[j] + h_row[j] + bias[j])
        for j in range(h):
            hn_j = h_row[2 * h + j] + bias[2 * h + j]
            hn_row[j] = hn_j
            n_j = tanh_f32(x_row[2 * h + j] + a_row[j] * hn_j)
            a_row[2 * h + j] = n_j
            z_j = a_row[h + j]
            out_row[j] = (f32(1) - z_j) * n_j + z_j * prev[j]


# name -> fastmath flags, as kernels._KERNELS. 'reassoc' vectorises the row sums.
KERNELS = {
    "softmax_rows": {"reassoc", "contract"},
    "softmax_backward_rows": {"reassoc", "contract"},
    "softmax_rows_into": {"reassoc", "contract"},
    "log_softmax_rows_into": {"reassoc", "contract"},
    "softmax_backward_rows_into": {"reassoc", "contract"},
    "log_softmax_backward_rows_into": {"reassoc", "contract"},
    "cross_entropy_rows": {"reassoc", "contract"},
    "cross_entropy_backward_rows": False,
    "gelu_tanh_f32": False,
    "gelu_tanh_backward_f32": False,
    # 'contract' (fused multiply-adds): 4 M values, 1.16 -> 0.81 ms forward, 1.52 -> 1.05 ms
    # backward, and 1.35 -> 1.03 eps32 from float64
    "gelu_erf_f32": {"contract"},
    "gelu_erf_backward_f32": {"contract"},
    # 'contract' (fused multiply-adds) alone: 49 -> 29 us a step of the LSTM workload
    "lstm_cell_forward_f32": {"contract"},
    "gru_cell_forward_f32": {"contract"},
    "max_rows_f32": False,
}
