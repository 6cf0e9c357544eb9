"""Fast paths of the LSTM and the GRU: each time step's elementwise part as one compiled pass,
forward and backward, instead of about a dozen NumPy passes with a temporary each."""

from layerwise.autograd.dispatch import fast_path
from layerwise.backend import xp
from layerwise.ops.fast.path import FastPath
from layerwise.ops.rnn import GRUFunction, LSTMFunction, previous_states, steps, time_major


@fast_path
class LSTMCompiledCells(FastPath, LSTMFunction):
    """The hidden product of each step stays one BLAS call; around it, the compiled cell of
    fast/vecmath.py forward (float32: its sigmoid and tanh are on exp_f32) and of
    fast/kernels.py backward. What only the loops read (gate activations, cell states and
    their tanh) is kept time-major, so that each step's (B, .) slice is contiguous, as the
    compiled loops need; dA and h_{t-1} are kept in xw's layout, so that their reshapes to
    (T*B, .) for dW_hh's product are free and dA is xw's gradient as it stands."""

    kernels = ("lstm_cell_forward_f32", "lstm_cell_backward")
    why = ("LSTM workload (batch 32, 64 steps, hidden 256): forward 14.8 -> 11.9 ms, "
           "training step 1.033x")

    @classmethod
    def supports(cls, xw, h0, c0, w_hh, batch_first=False, reverse=False, *, graph):
        return all(a.dtype == xp.float32 for a in (xw, h0, c0, w_hh))

    def forward(self, xw, h0, c0, w_hh, batch_first=False, reverse=False):
        xw = xp.ascontiguousarray(xw)  # (T, B, 4H) or (B, T, 4H): the cell reads whole rows
        layout, H = xw.shape[:2], w_hh.shape[1]
        T, B = (layout[1], layout[0]) if batch_first else layout
        packed = xp.empty(T * B * H + B * H, xw.dtype)  # the outputs, then c_T
        out = packed[: T * B * H].reshape(layout + (H,))
        gates = xp.empty((T, B, 4 * H), xw.dtype)  # i, f, g, o after their nonlinearities
        cs, tanh_cs = xp.empty((T, B, H), xw.dtype), xp.empty((T, B, H), xw.dtype)
        h_prev = xp.empty(layout + (H,), xw.dtype)  # h_{t-1} of each step
        hw = xp.empty((B, 4 * H), xw.dtype)  # h_{t-1} W_hh^T
        out_t, h_prev_t = time_major(out, batch_first), time_major(h_prev, batch_first)
        cell = self.kernel("lstm_cell_forward_f32")
        h, c = h0, xp.ascontiguousarray(c0)
        for t in steps(T, reverse):
            h_prev_t[t] = h
            xp.matmul(h, w_hh.T, out=hw)  # (B, H) @ (H, 4H)
            cell(hw, xw, t, batch_first, c, gates[t], cs[t], tanh_cs[t], out)
            h, c = out_t[t], cs[t]
        packed[T * B * H :] = c.reshape(-1)
        self.batch_first, self.reverse, self.layout = batch_first, reverse, layout
        self.c0, self.w_hh, self.gates, self.cs, self.tanh_cs = c0, w_hh, gates, cs, tanh_cs
        self.h_prev = h_prev
        return packed

    def backward(self, grad):
        T, B, H = self.cs.shape
        grad = xp.ascontiguousarray(grad)
        dout = grad[: T * B * H].reshape(self.layout + (H,))
        dc = grad[T * B * H :].reshape(B, H).copy()  # the cell turns it into d c_{t-1}
        dh = xp.zeros((B, H), grad.dtype)
        da = xp.empty(self.layout + (4 * H,), grad.dtype)  # in xw's layout: its gradient
        da_t = time_major(da, self.batch_first)
        c0 = xp.ascontiguousarray(self.c0)
        cell = self.kernel("lstm_cell_backward")
        order = steps(T, self.reverse)
        for k in range(T - 1, -1, -1):
            t = order[k]
            c_prev = c0 if k == 0 else self.cs[order[k - 1]]
            cell(dh, dout, t, self.batch_first, dc, self.gates[t], self.tanh_cs[t], c_prev, da)
            dh = da_t[t] @ self.w_hh  # (B, 4H) @ (4H, H)
        dw_hh = da.reshape(-1, 4 * H).T @ self.h_prev.reshape(-1, H)  # (4H, T*B) @ (T*B, H)
        return da, dh, dc, dw_hh


@fast_path
class GRUCompiledCells(FastPath, GRUFunction):
    """The hidden product of each step stays one BLAS call; around it, the compiled cell of
    fast/vecmath.py forward (float32: its sigmoid and tanh are on exp_f32) and of
    fast/kernels.py backward, each reading and writing the outputs in the input's layout."""

    kernels = ("gru_cell_forward_f32", "gru_cell_backward")
    why = "Embedding -> GRU(256) -> Linear of bench/models.py, batch-1 inference: 3.5 -> 1.3 ms"

    @classmethod
    def supports(cls, xw, h0, w_hh, b_hh=None, batch_first=False, reverse=False, *, graph):
        arrays = (xw, h0, w_hh) if b_hh is None else (xw, h0, w_hh, b_hh)
        return all(a.dtype == xp.float32 for a in arrays)

    def forward(self, xw, h0, w_hh, b_hh=None, batch_first=False, reverse=False):
        xw = xp.ascontiguousarray(xw)  # (T, B, 3H) or (B, T, 3H): the cell reads whole rows
        layout, H = xw.shape[:2], w_hh.shape[1]
        T, B = (layout[1], layout[0]) if batch_first else layout
        out = xp.empty(layout + (H,), xw.dtype)
        acts = xp.empty((T, B, 3 * H), xw.dtype)  # r, z, n after their nonlinearities
        hn = xp.empty((T, B, H), xw.dtype)  # W_hn h_{t-1} + b_hn, which r multiplies
        hw = xp.empty((B, 3 * H), xw.dtype)  # h_{t-1} W_hh^T
        bias = xp.zeros(3 * H, xw.dtype) if b_hh is None else xp.ascontiguousarray(b_hh)
        out_t, cell = time_major(out, batch_first), self.kernel("gru_cell_forward_f32")
        h = xp.ascontiguousarray(h0)
        for t in steps(T, reverse):
            xp.matmul(h, w_hh.T, out=hw)  # (B, H) @ (H, 3H)
            cell(hw, bias, xw, t, batch_first, h, acts[t], hn[t], out)
            h = out_t[t]
        self.batch_first, self.reverse, self.has_bias = batch_first, reverse, b_hh is not None
        self.h0, self.w_hh, self.acts, self.hn, self.out = h0, w_hh, acts, hn, out
        return out

    def backward(self, grad):
        T, B, H = self.hn.shape
        grad = xp.ascontiguousarray(grad)
        out_t = time_major(self.out, self.batch_first)  # (T, B, H)
        h0 = xp.ascontiguousarray(self.h0)
        dh = xp.zeros((B, H), grad.dtype)
        dax = xp.empty((T, B, 3 * H), grad.dtype)  # gradient of xw
        dah = xp.empty((T, B, 3 * H), grad.dtype)  # gradient of h W_hh^T + b_hh
        cell, order = self.kernel("gru_cell_backward"), steps(T, self.reverse)
        for k in range(T - 1, -1, -1):
            t = order[k]
            h_prev = h0 if k == 0 else out_t[order[k - 1]]
            cell(dh, grad, t, self.batch_first, self.acts[t], self.hn[t], h_prev, dax[t], dah[t])
            dh += dah[t] @ self.w_hh  # (B, 3H) @ (3H, H)
        h_prev = previous_states(out_t, h0, self.reverse)  # (T, B, H)
        dw_hh = dah.reshape(-1, 3 * H).T @ h_prev.reshape(-1, H)  # (3H, T*B) @ (T*B, H)
        grads = (time_major(dax, self.batch_first), dh, dw_hh)
        if self.has_bias:
            grads += (dah.reshape(-1, 3 * H).sum(axis=0),)
        return grads
