"""Fast path of the batched matrix product: the batch as two halves on two cores.

NumPy runs a batched product as one BLAS call per matrix, and OpenBLAS spreads each small
call over its threads, paying a synchronisation per matrix. Two halves of the batch, each on
one core with the BLAS single-threaded (backend/threads.py), keep both cores busy instead.
"""

from layerwise.autograd.dispatch import fast_path
from layerwise.backend import threads, xp
from layerwise.ops.fast.path import FastPath
from layerwise.ops.matmul import MatMul

# Multiply-adds of the whole product from which the halves pay for parking OpenBLAS's threads
# (~0.13 ms): (4, 128, 32, 128), 2 M, took 0.046 ms whole and 0.126 ms in halves.
MIN_MACS_IN_HALVES = 1 << 24


@fast_path
class MatMulInHalves(FastPath, MatMul):
    why = ("attention scores of a GPT, (64, 128, 32) @ (64, 32, 128) float32: 0.68 -> 0.46 ms; "
           "(2, 1024, 64) @ (2, 64, 1024): 3.6 -> 2.0 ms")

    @classmethod
    def supports(cls, a, b, *, graph):
        # the same batch dims on both sides, so that each half's gradients are its own
        return a.ndim >= 3 and a.shape[:-2] == b.shape[:-2] and a.shape[0] >= 2

    @classmethod
    def worth_it(cls, a, b, *, graph):
        macs = a.size * b.shape[-1]  # batch * n * k * m
        return macs >= MIN_MACS_IN_HALVES and threads.available()

    def forward(self, a, b):
        self.a, self.b = a, b
        out = xp.empty(a.shape[:-1] + b.shape[-1:], xp.result_type(a, b))  # (..., n, m)
        _in_halves(a.shape[0], lambda part: xp.matmul(a[part], b[part], out=out[part]))
        return out

    def backward(self, g):
        needs = self.needs_input_grad
        ga = xp.empty(self.a.shape, g.dtype) if needs[0] else None
        gb = xp.empty(self.b.shape, g.dtype) if needs[1] else None

        def half(part):
            if ga is not None:
                xp.matmul(g[part], xp.swapaxes(self.b[part], -1, -2), out=ga[part])
            if gb is not None:
                xp.matmul(xp.swapaxes(self.a[part], -1, -2), g[part], out=gb[part])

        _in_halves(g.shape[0], half)
        return ga, gb


def _in_halves(n, work):
    """work(slice) over the first dim's two halves, on two cores where available."""
    cut = n // 2
    threads.run_pair(lambda: work(slice(0, cut)), lambda: work(slice(cut, n)))
