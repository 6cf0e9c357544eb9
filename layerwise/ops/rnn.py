"""Recurrent layers as whole-sequence Functions: one node per layer and direction, whose
backward runs the time loop in reverse (backpropagation through time written by hand).

Why not compose the cell from core ops: a composed LSTM step records about twenty nodes and
saves their inputs, so a 64-step sequence builds ~1,300 nodes, and the backward multiplies a
small weight-gradient matrix once per step. On the LSTM language-model workload (batch 32,
64 steps, hidden 256) the composed cell took 2.2x the CPU time per training step of the
Functions here (216 vs 99 ms, single-threaded, same input projection).

The input projection is not part of the loop: the layer computes

    XW = X @ W_ih^T + b       one GEMM over all T*B rows (F.linear), before the loop

and hands XW to these Functions, which run per step only H_{t-1} @ W_hh^T and the gate
nonlinearities. The backward keeps the pre-activation gradients dA of every step and returns
dA as the gradient of XW (so dX and dW_ih are again one GEMM each, in F.linear's backward);
after the loop dW_hh = dA^T H_prev is one GEMM too. Keeping the projection outside also lets
a language model project its V-row embedding table instead of the B*T embedded tokens.

Layout: ``xw`` is (T, B, G), or (B, T, G) with ``batch_first``. The arrays that meet in a GEMM
after the loop (dA, H_prev) and the outputs are kept in that layout, so their reshapes to
(T*B, .) are free; the loop reaches step t through a time-major view (``swapaxes``, no copy).
What only the loop reads (gate activations, cell states) is stored time-major, so each step's
slice is contiguous. ``reverse`` runs the steps from
t = T-1 down to 0 (the second direction of a bidirectional layer); outputs stay indexed by t
either way. Gate orders and equations are PyTorch's (torch.nn.LSTM / GRU / RNN docs).
"""

from layerwise.backend import threads, xp
from layerwise.autograd.function import Function
from layerwise.ops.embedding import scatter_add_rows
from layerwise.ops.fast.kernels import kernel


def _hidden_gemm(w_hh, h):
    """h @ w_hh^T (B, G), computed as (w_hh @ h^T)^T: OpenBLAS runs the (G, H) @ (H, B) form
    about 35% faster for a small batch (190 vs 300 us for B=32, H=256, G=1024), and the
    transposed result is only a view."""
    return (w_hh @ h.T).T


class _Sequence(Function):
    """Loop bookkeeping shared by the three cells."""

    def _setup(self, layout, batch_first, reverse):
        self.batch_first, self.reverse = batch_first, reverse
        self.layout = tuple(layout)  # (T, B) or (B, T)
        self.T, self.B = (layout[1], layout[0]) if batch_first else layout

    def _tm(self, a):
        """Time-major view of an array kept in the input's layout."""
        return a.swapaxes(0, 1) if self.batch_first else a

    def _order(self):
        """Time indices in processing order."""
        return range(self.T - 1, -1, -1) if self.reverse else range(self.T)

    def _empty(self, width, dtype):
        return xp.empty(self.layout + (width,), dtype=dtype)

    def _empty_tm(self, width, dtype):
        """A time-major (T, B, width) array: for what only the loop reads, whose per-step slices
        are then contiguous (numpy's ufuncs run ~2x slower on a strided (B, .) slice)."""
        return xp.empty((self.T, self.B, width), dtype=dtype)

    def _w_hh_grad(self, dA, index):
        """dW_hh = sum_t dA_t^T H_{t-1}: one (G, T*B) @ (T*B, H) GEMM over all steps."""
        if not self.needs_input_grad[index]:
            return None
        return dA.reshape(-1, dA.shape[-1]).T @ self.hprev.reshape(-1, self.hprev.shape[-1])


# The LSTM's loops run as two halves of the batch from this many rows and this much work (the
# hidden products' multiply-adds over the sequence, T * B * 4H * H; the LSTM workload has
# 537 M): below it the ~0.2 ms of parking and restarting OpenBLAS's threads, once each way,
# would eat a gain of ~3% of the loops. Measured at B=32 only.
MIN_BATCH_IN_HALVES, MIN_WORK_IN_HALVES = 16, 1 << 28


class LSTMFunction(_Sequence):
    """Inputs xw (layout + (4H,)) = x W_ih^T + b_ih + b_hh, h0 (B, H), c0 (B, H), w_hh (4H, H).

        a = xw_t + h_{t-1} W_hh^T,   gates in the order (i, f, g, o)
        i, f, o = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o);  g = tanh(a_g)
        c_t = f * c_{t-1} + i * g;   h_t = o * tanh(c_t)

    With ``index`` (an integer array in the layout, (T, B) or (B, T)), xw is instead a
    projected embedding table (V, 4H) and the sequence is xw[index]: the loop reads each step's
    rows from the table, which stays in cache, instead of from a gathered (T, B, 4H) copy, and
    the gradient of xw is the table's (rows added up per token id). The LSTM workload's
    model forward 15.5-15.8 -> 14.1-14.5 ms (three in-process A/B runs), its training step
    1.066, 1.011 and 1.022x: the gather's 8 MB written and read back cold are gone. (Adding
    the table's gradient up inside the backward kernel, while each dA row is in cache, gained
    nothing: 0.994-1.002x.)

    Returns one flat array: the outputs h_t (layout + (H,)) followed by c_T (B, H). A Function
    has one output, and h_T is already among the outputs, so only c_T needs packing alongside.
    """

    def forward(self, xw, h0, c0, w_hh, index=None, batch_first=False, reverse=False):
        self._setup(xw.shape[:2] if index is None else index.shape, batch_first, reverse)
        self.index, self.table_rows = index, xw.shape[0]
        H, dtype = w_hh.shape[1], xw.dtype
        n_out = self.T * self.B * H
        packed = xp.empty(n_out + self.B * H, dtype=dtype)
        out = packed[:n_out].reshape(self.layout + (H,))
        acts_t = self._empty_tm(4 * H, dtype)  # (T, B, 4H) gate activations (i, f, g, o)
        cs_t, tanh_t = self._empty_tm(H, dtype), self._empty_tm(H, dtype)  # c_t, tanh(c_t)
        hprev = self._empty(H, dtype)  # in the input's layout, like dA: both feed one GEMM
        fused = kernel("lstm_cell_forward_f32") if dtype == xp.float32 else None
        if fused is not None:
            rows, index = self._rows(xw, index)
            c0 = xp.ascontiguousarray(c0, dtype=dtype)
            arrays = (w_hh, h0, c0, rows, index, out, acts_t, cs_t, tanh_t, hprev)
            self._over_rows(lambda part: self._forward_rows(part, *arrays), w_hh)
            c = cs_t[self._order()[-1]] if self.T else c0
            return self._finish_forward(packed, n_out, c, w_hh, c0, acts_t, cs_t, tanh_t, hprev)
        # sigmoid(a) = 0.5 * tanh(0.5 a) + 0.5, so all four gates are one tanh:
        # act = tanh(a * scale) * scale + shift, scale 0.5 (i, f, o) or 1 (g), shift 0.5 or 0.
        scale = xp.full(4 * H, 0.5, dtype=dtype)
        scale[2 * H : 3 * H] = 1.0
        shift = (0.5 * (scale != 1.0)).astype(dtype)
        xw_t = self._tm(xw if index is None else xp.take(xw, index, axis=0))
        out_t, hprev_t = self._tm(out), self._tm(hprev)
        h, c = h0, c0
        for t in self._order():
            hprev_t[t] = h
            a = acts_t[t]
            xp.add(_hidden_gemm(w_hh, h), xw_t[t], out=a)  # (B, 4H)
            a *= scale
            xp.tanh(a, out=a)
            a *= scale
            a += shift
            c = a[:, H : 2 * H] * c
            c += a[:, :H] * a[:, 2 * H : 3 * H]
            cs_t[t] = c
            xp.tanh(c, out=tanh_t[t])
            h = xp.multiply(a[:, 3 * H :], tanh_t[t], out=out_t[t])
        return self._finish_forward(packed, n_out, c, w_hh, c0, acts_t, cs_t, tanh_t, hprev)

    def _forward_rows(self, part, w_hh, h0, c0, rows, index, out, acts_t, cs_t, tanh_t, hprev):
        """The compiled time loop for the batch rows ``part`` (a slice), writing only theirs.

        One compiled pass per step (kernels_vecmath.py) instead of eleven NumPy ones (LSTM
        workload forward 14.8 -> 11.9 ms alone, training step 1.033x on average over five
        in-process A/B runs). Its rows must be contiguous, so the hidden product, taken in
        _hidden_gemm's faster order as (4H, n), is transposed into (n, 4H) by a compiled tiled
        copy: OpenBLAS runs that order in 110-175 us where h @ W_hh^T in C order takes 145-210
        us (B=32, H=256, two threads; the copy 10.5 us). Training step 0.990-1.076x over
        fifteen in-process A/B runs, 1.02x on average (in the loop the products run slower
        than alone, and the gain is less).
        """
        fused, transpose = kernel("lstm_cell_forward_f32"), kernel("transpose_into")
        n, H = part.stop - part.start, w_hh.shape[1]
        hw_t = xp.empty((4 * H, n), dtype=out.dtype)  # W_hh h^T
        hw = xp.empty((n, 4 * H), dtype=out.dtype)  # h W_hh^T, the kernel's rows
        out_t, hprev_t = self._tm(out), self._tm(hprev)
        h, c = h0[part], c0
        for t in self._order():
            hprev_t[t, part] = h
            xp.matmul(w_hh, h.T, out=hw_t)  # (4H, H) @ (H, n)
            transpose(hw_t, hw)
            fused(hw, part.start, rows, index, t, self.batch_first, c, acts_t[t], cs_t[t],
                  tanh_t[t], out)
            h, c = out_t[t, part], cs_t[t]

    def _backward_rows(self, part, dout, dc, dA):
        """The compiled backward loop for the batch rows ``part``: fills their rows of dA and
        dc and returns their dh (n, H), the gradient of h0."""
        fused = kernel("lstm_cell_backward")
        acts_t, cs_t, tanh_t, dA_t = self.acts_t, self.cs_t, self.tanh_t, self._tm(dA)
        step_back = 1 if self.reverse else -1  # where the previous step's state lives
        first = self.T - 1 if self.reverse else 0
        dh = xp.zeros((part.stop - part.start, self.w_hh.shape[1]), dtype=dA.dtype)
        for t in reversed(self._order()):
            c_prev = self.c0 if t == first else cs_t[t + step_back]
            fused(dh, part.start, dout, t, self.batch_first, dc, acts_t[t], tanh_t[t], c_prev,
                  dA)
            dh = dA_t[t, part] @ self.w_hh  # (n, 4H) @ (4H, H)
        return dh

    # --- the batch in two halves, one per core (backend/threads.py) ---------------------------
    # The sequences of a batch are independent, so the compiled loops can run over two halves
    # of the batch at once, each half's products on one BLAS thread. The 16-row product on
    # one core takes 120-130 us a step, about what the 32-row one takes on two, so the gain
    # is the elementwise passes, now on two cores, and the hand-over between the cores of
    # every step's product: LSTM workload forward 11.57 -> 10.97 ms and backward 18.17 ->
    # 17.95 ms (fastest tenth).

    def _over_rows(self, work, w_hh):
        """work(part) over the whole batch, or over its two halves on two cores at once when
        there is enough of it (the hidden products' multiply-adds, T * B * 4H * H)."""
        b = self.B
        if b >= MIN_BATCH_IN_HALVES and self.T * b * w_hh.size >= MIN_WORK_IN_HALVES:
            cut = b // 2
            return threads.run_pair(lambda: work(slice(0, cut)), lambda: work(slice(cut, b)))
        return (work(slice(0, b)),)

    def _rows(self, xw, index):
        """(rows (R, 4H) contiguous, index into them in the layout) for the compiled step: the
        table and token ids as given, or the sequence flattened and its row numbers."""
        if index is not None:
            return xp.ascontiguousarray(xw), index
        rows = xp.ascontiguousarray(xw).reshape(-1, xw.shape[-1])  # (T*B, 4H) in the layout
        return rows, xp.arange(rows.shape[0], dtype=xp.intp).reshape(self.layout)

    def _finish_forward(self, packed, n_out, c, w_hh, c0, acts_t, cs_t, tanh_t, hprev):
        """Pack the last cell state after the outputs; keep what backward reads."""
        packed[n_out:] = c.reshape(-1)
        self.w_hh, self.c0 = w_hh, c0
        self.acts_t, self.cs_t, self.tanh_t, self.hprev = acts_t, cs_t, tanh_t, hprev
        return packed

    def backward(self, g):
        H, B = self.w_hh.shape[1], self.B
        n_out = self.T * B * H
        dout = g[:n_out].reshape(self.layout + (H,))
        dc = g[n_out:].reshape(B, H).copy()
        dh = xp.zeros((B, H), dtype=g.dtype)
        dA = self._empty(4 * H, g.dtype)
        if kernel("lstm_cell_backward") is not None:  # each step's elementwise part compiled
            parts = self._over_rows(lambda part: (part, self._backward_rows(part, dout, dc, dA)),
                                    self.w_hh)
            for part, dh_part in parts:
                dh[part] = dh_part
            return self._xw_grad(dA), dh, dc, self._w_hh_grad(dA, 3)
        acts_t, cs_t, tanh_t, dA_t = self.acts_t, self.cs_t, self.tanh_t, self._tm(dA)
        step_back = 1 if self.reverse else -1  # where the previous step's state lives
        first = self.T - 1 if self.reverse else 0
        da = xp.empty((B, 4 * H), dtype=g.dtype)  # contiguous scratch, copied into dA per step
        dout_t = self._tm(dout)
        for t in reversed(self._order()):
            dh += dout_t[t]
            a, tc = acts_t[t], tanh_t[t]
            i, f, gg, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
            c_prev = self.c0 if t == first else cs_t[t + step_back]
            dc += dh * o * (1 - tc * tc)
            # d gate activations, then through sigmoid' = s(1-s) and tanh' = 1-g^2
            xp.multiply(dc, gg, out=da[:, :H])
            xp.multiply(dc, c_prev, out=da[:, H : 2 * H])
            xp.multiply(dc, i, out=da[:, 2 * H : 3 * H])
            xp.multiply(dh, tc, out=da[:, 3 * H :])
            deriv = a * (1 - a)
            deriv[:, 2 * H : 3 * H] = 1 - gg * gg
            da *= deriv
            dA_t[t] = da
            dc *= f
            dh = da @ self.w_hh  # (B, 4H) @ (4H, H)
        return self._xw_grad(dA), dh, dc, self._w_hh_grad(dA, 3)

    def _xw_grad(self, dA):
        """dA is the gradient of the sequence xw; for a table, each row's is the sum of dA at
        the steps that read it."""
        if self.index is None:
            return dA
        return scatter_add_rows(self.index.reshape(-1), dA.reshape(-1, dA.shape[-1]),
                                self.table_rows)


class GRUFunction(_Sequence):
    """Inputs xw (layout + (3H,)) = x W_ih^T + b_ih, h0 (B, H), w_hh (3H, H)[, b_hh (3H,)];
    gates (r, z, n):

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr);  z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn));  h_t = (1 - z) * n + z * h_{t-1}

    b_hh stays inside the loop because b_hn is multiplied by r. Returns the outputs h_t
    (layout + (H,)); h_T is among them.
    """

    def forward(self, xw, h0, w_hh, b_hh=None, batch_first=False, reverse=False):
        self._setup(xw.shape[:2], batch_first, reverse)
        self.has_bias = b_hh is not None
        H, dtype = w_hh.shape[1], xw.dtype
        acts_t, hwn_t = self._empty_tm(3 * H, dtype), self._empty_tm(H, dtype)
        out, hprev = self._empty(H, dtype), self._empty(H, dtype)
        xw_t, out_t, hprev_t = map(self._tm, (xw, out, hprev))
        h = h0
        for t in self._order():
            hprev_t[t] = h
            hw = _hidden_gemm(w_hh, h)  # (B, 3H)
            if self.has_bias:
                hw += b_hh
            a = acts_t[t]
            xp.add(xw_t[t], hw, out=a)  # the n part is corrected below
            rz = a[:, : 2 * H]
            rz *= 0.5  # sigmoid(v) = 0.5 * tanh(0.5 v) + 0.5
            xp.tanh(rz, out=rz)
            rz *= 0.5
            rz += 0.5
            hwn_t[t] = hw[:, 2 * H :]
            n = a[:, 2 * H :]
            xp.multiply(a[:, :H], hw[:, 2 * H :], out=n)
            n += xw_t[t][:, 2 * H :]
            xp.tanh(n, out=n)
            z = a[:, H : 2 * H]
            h = xp.subtract(h, n, out=out_t[t])  # h_t = n + z * (h_{t-1} - n)
            h *= z
            h += n
        self.w_hh, self.acts_t, self.hwn_t, self.hprev = w_hh, acts_t, hwn_t, hprev
        return out

    def backward(self, g):
        H = self.w_hh.shape[1]
        dout_t = self._tm(g)
        dh = xp.zeros((self.B, H), dtype=g.dtype)
        dAx, dAh = self._empty(3 * H, g.dtype), self._empty(3 * H, g.dtype)
        acts_t, hwn_t = self.acts_t, self.hwn_t
        hprev_t, dAx_t, dAh_t = map(self._tm, (self.hprev, dAx, dAh))
        for t in reversed(self._order()):
            dh += dout_t[t]
            a, dax, dah = acts_t[t], dAx_t[t], dAh_t[t]
            r, z, n = a[:, :H], a[:, H : 2 * H], a[:, 2 * H :]
            dan = dh * (1 - z) * (1 - n * n)  # through h_t = (1 - z) n + z h and tanh'
            dax[:, 2 * H :] = dan
            xp.multiply(dan, r, out=dah[:, 2 * H :])
            dax[:, :H] = dan * hwn_t[t] * r * (1 - r)
            dax[:, H : 2 * H] = dh * (hprev_t[t] - n) * z * (1 - z)
            dah[:, : 2 * H] = dax[:, : 2 * H]
            dh = dh * z
            dh += dah @ self.w_hh  # (B, 3H) @ (3H, H)
        grads = (dAx, dh, self._w_hh_grad(dAh, 2))
        if self.has_bias:
            grads += (dAh.reshape(-1, 3 * H).sum(axis=0),)
        return grads


class RNNFunction(_Sequence):
    """Inputs xw (layout + (H,)) = x W_ih^T + b_ih + b_hh, h0 (B, H), w_hh (H, H):
    h_t = act(xw_t + h_{t-1} W_hh^T), act tanh or relu. Returns the outputs h_t (layout + (H,))."""

    def forward(self, xw, h0, w_hh, nonlinearity="tanh", batch_first=False, reverse=False):
        self._setup(xw.shape[:2], batch_first, reverse)
        self.nonlinearity = nonlinearity
        H = w_hh.shape[1]
        out, hprev = self._empty(H, xw.dtype), self._empty(H, xw.dtype)
        xw_t, out_t, hprev_t = map(self._tm, (xw, out, hprev))
        h = h0
        for t in self._order():
            hprev_t[t] = h
            a = _hidden_gemm(w_hh, h)
            a += xw_t[t]
            if nonlinearity == "tanh":
                h = xp.tanh(a, out=out_t[t])
            else:
                h = xp.maximum(a, 0, out=out_t[t])
        self.w_hh, self.out, self.hprev = w_hh, out, hprev
        return out

    def backward(self, g):
        H = self.w_hh.shape[1]
        dout_t, out_t = self._tm(g), self._tm(self.out)
        dh = xp.zeros((self.B, H), dtype=g.dtype)
        dA = self._empty(H, g.dtype)
        dA_t = self._tm(dA)
        for t in reversed(self._order()):
            dh += dout_t[t]
            h = out_t[t]
            deriv = 1 - h * h if self.nonlinearity == "tanh" else (h > 0)
            da = xp.multiply(dh, deriv, out=dA_t[t])
            dh = da @ self.w_hh
        return dA, dh, self._w_hh_grad(dA, 2)
