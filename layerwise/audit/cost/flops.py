"""FLOPs, parameters and activation memory per layer and per op, forward and backward.

How it counts: inside ``count_flops()`` every ``Function.apply`` is wrapped, so each
primitive that runs is seen once with its input shapes, its keyword parameters and which
inputs need a gradient, and each op is charged to the innermost module running it. Counting
at the Function level means a model needs no per-layer rules: anything built from counted
ops is counted, including the loss and functional code outside any layer. (autograd has no
public per-op hook, so ``Function.apply`` is swapped for the block; modules are not: see
"Which module" below.)

The count is a function of the model and the input shapes alone, not of which fast path ran:
- the op counted is the reference Function called, whichever of its fast paths ran it
  (autograd/dispatch.py): the attention's query blocks or batch halves cost what the
  reference's arithmetic costs;
- every rule is a sum over the batch, so a step run as two halves of its batch on two
  threads (``lw.parallel.backward_in_halves``) costs what the whole batch costs. In
  particular a broadcast input's gradient (a bias, a layer norm's weight) is charged per
  element of the output it is summed from, not per element of the parameter;
- modules are only observed: the counter changes nothing they run.

Which module: global module hooks (``nn.register_module_forward_pre_hook`` and
``register_module_forward_hook``, as PyTorch's) push each module of ``model`` on a stack of
the thread that calls it and pop it after. Ops that a split runs on a helper thread outside
any module of their own are charged to the module that ran the split.

Backward FLOPs are derived from the same forward record, not measured during backward: for
each input that needs a gradient, the matmul that produces it. So a first layer, whose
input needs no gradient, costs one matmul backward, not two; that is what really runs.

Conventions (one multiply-add = 2 FLOPs, as in nanoGPT, PaLM's MFU and fvcore's x2):
    linear     fwd 2*M*in*out (+ M*out bias)   bwd dx 2*M*in*out, dW 2*M*in*out, db M*out
    matmul     fwd 2*batch*n*k*m               bwd per needed operand 2*batch*n*k*m
    conv       fwd 2*N*OH*OW*O*(C/g)*KH*KW (+ N*O*OH*OW bias); bwd per needed operand the same
    attention  fwd 2*B*H*Tq*Tk*(d + dv) (QK^T and PV); softmax 5 per score (max, sub, exp,
               sum, div) + 1 per score for the scale; bwd dV, dP 2*B*H*Tq*Tk*dv, dQ, dK
               2*B*H*Tq*Tk*d, the softmax backward 3 per score
    others     1 FLOP per element of the largest tensor the op reads or writes, forward
               (elementwise ops, activations, layer norm, reductions and losses read each
               input element once); backward, per input that needs a gradient, 1 per element
               of the larger of that input and the output; ops that move data only
               (reshape, transpose, index, cat, ...) cost 0
"""

import math
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

from layerwise.autograd.function import Function
from layerwise.nn.module import register_module_forward_hook, register_module_forward_pre_hook

# Functions that only move or view data: no arithmetic.
_MOVEMENT = {
    "Reshape", "View", "Transpose", "Permute", "Expand", "Squeeze", "Unsqueeze", "Index",
    "Getitem", "GetItem", "Cat", "Stack", "Split", "Flatten", "Contiguous", "Pad", "Cast",
    "Copy", "Repeat", "Tile", "Gather", "Narrow", "Slice", "Chunk", "Embedding", "Dropout",
    "MovedAxis", "Flip", "Roll", "Where", "Detach", "EmbeddingFunction",
}


@dataclass
class OpRecord:
    """One primitive call: what ran, on what shapes, inside which module, and its cost."""

    op: str
    module: str
    input_shapes: list
    output_shape: tuple
    forward_flops: int
    backward_flops: int
    output_bytes: int
    saved_for_backward: bool


@dataclass
class FlopReport:
    ops: list = field(default_factory=list)
    params: dict = field(default_factory=dict)  # module name -> its own parameter count
    module_order: list = field(default_factory=list)  # the model's module names, in order

    @property
    def forward_flops(self):
        return sum(r.forward_flops for r in self.ops)

    @property
    def backward_flops(self):
        return sum(r.backward_flops for r in self.ops)

    @property
    def total_flops(self):
        return self.forward_flops + self.backward_flops

    @property
    def activation_bytes(self):
        """Bytes of op outputs the graph keeps for backward (what a training step holds)."""
        return sum(r.output_bytes for r in self.ops if r.saved_for_backward)

    def by_op(self):
        """op name -> {'calls', 'forward_flops', 'backward_flops'}."""
        table = {}
        for r in self.ops:
            row = table.setdefault(r.op, {"calls": 0, "forward_flops": 0, "backward_flops": 0})
            row["calls"] += 1
            row["forward_flops"] += r.forward_flops
            row["backward_flops"] += r.backward_flops
        return table

    def by_module(self):
        """module name ('' for ops outside any layer) -> totals: the model's modules in their
        declared order (ops of two threads arrive interleaved), then the rest as first seen."""
        rank = {name: i for i, name in enumerate(self.module_order)}
        table = {}
        for r in sorted(self.ops, key=lambda r: rank.get(r.module, len(rank))):
            row = table.setdefault(r.module, {"forward_flops": 0, "backward_flops": 0,
                                              "activation_bytes": 0, "ops": 0,
                                              "params": self.params.get(r.module, 0)})
            row["forward_flops"] += r.forward_flops
            row["backward_flops"] += r.backward_flops
            row["activation_bytes"] += r.output_bytes if r.saved_for_backward else 0
            row["ops"] += 1
        return table

    def summary(self):
        return {"forward_flops": self.forward_flops, "backward_flops": self.backward_flops,
                "total_flops": self.total_flops, "activation_bytes": self.activation_bytes,
                "params": sum(self.params.values())}


# --- per-op rules ---------------------------------------------------------------------------


def _numel(shape):
    return math.prod(shape)


def _linear(shapes, params, out, needs):
    m, n_in = _numel(shapes[0][:-1]), shapes[0][-1]
    n_out = shapes[1][0]
    mm = 2 * m * n_in * n_out
    has_bias = len(shapes) > 2
    fwd = mm + (m * n_out if has_bias else 0)
    bwd = mm * needs[0] + mm * needs[1] + (m * n_out if has_bias and needs[2] else 0)
    return fwd, bwd


def _matmul(shapes, params, out, needs):
    k = shapes[0][-1]
    mm = 2 * _numel(out) * k  # every output element is a length-k dot product
    return mm, mm * needs[0] + mm * needs[1]


def _conv(shapes, params, out, needs):
    cg = shapes[1][1]  # weight (O, C/groups, *kernel)
    kernel = _numel(shapes[1][2:])
    mm = 2 * _numel(out) * cg * kernel  # out = (N, O, *spatial), each a cg*kernel dot product
    has_bias = len(shapes) > 2
    fwd = mm + (_numel(out) if has_bias else 0)
    bwd = mm * needs[0] + mm * needs[1] + (_numel(out) if has_bias and needs[2] else 0)
    return fwd, bwd


def _conv_transpose(shapes, params, out, needs):
    og = shapes[1][1]  # weight (C, O/groups, *kernel): each input value feeds og*kernel outputs
    mm = 2 * _numel(shapes[0]) * og * _numel(shapes[1][2:])
    has_bias = len(shapes) > 2
    fwd = mm + (_numel(out) if has_bias else 0)
    bwd = mm * needs[0] + mm * needs[1] + (_numel(out) if has_bias and needs[2] else 0)
    return fwd, bwd


def _attention_cost(lead, tq, tk, d, dv, needs_qk, need_v):
    scores = lead * tq * tk
    fwd = 2 * scores * d + 2 * scores * dv + 6 * scores
    bwd = 0
    if need_v:
        bwd += 2 * scores * dv  # dV = P^T g
    if needs_qk:
        bwd += 2 * scores * dv + 3 * scores  # dP = g V^T, then the softmax backward
        bwd += 2 * scores * d * needs_qk  # dQ = dS K, dK = dS^T Q (each one needed)
    return fwd, bwd


def _sdpa(shapes, params, out, needs):
    q, k, v = shapes[:3]
    lead = _numel(out[:-2])
    return _attention_cost(lead, q[-2], k[-2], q[-1], v[-1], needs[0] + needs[1], needs[2])


def _recurrent(shapes, params, out, needs):
    # xw: the input projection (done by a LinearFunction before) with gates*H per step;
    # w_hh (gates*H, H): one recurrent GEMM per step, plus the gate arithmetic (~1 per gate).
    xw = shapes[0]
    # w_hh comes after h0 (and c0): the last 2-D input with gates*H rows
    w_hh = [s for s in shapes[1:] if len(s) == 2 and s[0] == xw[-1]][-1]
    gate_values = _numel(xw)
    gemm = 2 * gate_values * w_hh[1]
    fwd = gemm + gate_values
    return fwd, (2 * gemm + gate_values) if any(needs) else 0


def _elementwise(shapes, params, out, needs):
    # the larger of input and output: a reduction reads every input element, and a broadcast
    # input's gradient is summed from every output element (so the count adds up over batch
    # halves: a layer norm's weight gradient on B/2 rows twice costs what it costs on B rows)
    fwd = max([_numel(out)] + [_numel(s) for s in shapes])
    bwd = sum(max(_numel(s), _numel(out)) for s, need in zip(shapes, needs) if need)
    return fwd, bwd


RULES = {
    "LinearFunction": _linear,
    "MatMul": _matmul,
    "Conv2d": _conv,
    "Conv1d": _conv,
    "ConvTranspose2d": _conv_transpose,
    "SDPAttention": _sdpa,
    "LSTMFunction": _recurrent,
    "GRUFunction": _recurrent,
    "RNNFunction": _recurrent,
}


def op_cost(name, shapes, params, out_shape, needs):
    """(forward, backward) FLOPs of one primitive call; ``needs`` has one bool per input."""
    needs = tuple(int(bool(n)) for n in needs) + (0,) * (len(shapes) - len(needs))
    if name in RULES:
        return RULES[name](shapes, params, out_shape, needs)
    if name in _MOVEMENT:
        return 0, 0
    return _elementwise(shapes, params, out_shape, needs)


# --- the counter ----------------------------------------------------------------------------


@contextmanager
def count_flops(model=None):
    """Record every primitive run inside the block; yields a FlopReport filled on the way.

        with count_flops(model) as report:
            loss = loss_fn(model(x), y)
        report.by_module()

    Not for use from two threads at once: it swaps ``Function.apply`` for the block (the
    helper thread of layerwise's own two-core splits is counted).
    """
    report = FlopReport()
    names = {}
    if model is not None:
        for name, module in model.named_modules():
            if id(module) in names:
                continue  # a shared module keeps its first name
            names[id(module)] = name
            report.module_order.append(name)
            own = sum(_numel(p.shape) for p in module.parameters(recurse=False))
            if own:
                report.params[name] = own
    where = _ModuleStacks()
    original_apply = Function.__dict__["apply"]

    def apply(cls, *inputs, **params):
        module, opened = where.enter_op()
        try:
            out = original_apply.__func__(cls, *inputs, **params)
        finally:
            where.leave_op(opened)
        shapes = [tuple(t.shape) for t in inputs]
        needs = tuple(t.requires_grad for t in inputs) if out.requires_grad else ()
        fwd, bwd = op_cost(cls.__name__, shapes, params, tuple(out.shape), needs)
        report.ops.append(OpRecord(cls.__name__, module, shapes, tuple(out.shape), int(fwd),
                                   int(bwd), int(out.data.nbytes), bool(out.requires_grad)))
        return out

    def entered(module, args):
        name = names.get(id(module))
        if name is not None:
            where.stack().append(name)

    def left(module, args, out):
        if id(module) in names:
            where.stack().pop()

    Function.apply = classmethod(apply)
    hooks = [register_module_forward_pre_hook(entered), register_module_forward_hook(left)]
    try:
        yield report
    finally:
        Function.apply = original_apply
        for hook in hooks:
            hook.remove()


class _ModuleStacks:
    """The module each op runs in: a stack of module names per thread, pushed and popped by
    the counter's module hooks. A thread that runs ops outside any module of its own (the
    helper of a two-core split) takes the module of the op that started it: the outermost op
    running at the time."""

    def __init__(self):
        self.local = threading.local()
        self.outer = None  # the module of the outermost op now running, on any thread

    def stack(self):
        stack = getattr(self.local, "stack", None)
        if stack is None:
            stack = self.local.stack = []
        return stack

    def enter_op(self):
        """(the module to charge, whether this op is the outermost one running)."""
        stack = self.stack()
        module = stack[-1] if stack else (self.outer or "")
        if self.outer is None:
            self.outer = module
            return module, True
        return module, False

    def leave_op(self, opened):
        if opened:
            self.outer = None


def profile_model(model, inputs, loss_fn=None, targets=None):
    """FlopReport of one forward (and the backward it implies) of ``model`` on ``inputs``.

    With ``loss_fn`` and ``targets`` the loss is counted too. Runs in the model's current mode
    with gradients on, so the backward counts match a training step; nothing is stepped.
    """
    with count_flops(model) as report:
        out = model(inputs)
        if loss_fn is not None:
            loss_fn(out, targets)
    return report


def format_table(report, top=None):
    """A plain-text per-layer table: FLOPs forward and backward, params, activations."""
    rows = [(name or "(outside layers)", r) for name, r in report.by_module().items()]
    if top:
        rows = sorted(rows, key=lambda nr: -nr[1]["forward_flops"])[:top]
    width = max([len(n) for n, _ in rows] + [5])
    lines = [f"{'layer':<{width}}  {'fwd FLOPs':>14}  {'bwd FLOPs':>14}  {'params':>10}  "
             f"{'act. bytes':>12}"]
    for name, r in rows:
        lines.append(f"{name:<{width}}  {r['forward_flops']:>14,}  {r['backward_flops']:>14,}  "
                     f"{r['params']:>10,}  {r['activation_bytes']:>12,}")
    s = report.summary()
    lines.append(f"{'total':<{width}}  {s['forward_flops']:>14,}  {s['backward_flops']:>14,}  "
                 f"{s['params']:>10,}  {s['activation_bytes']:>12,}")
    return "\n".join(lines)
