"""Function: one differentiable primitive, its forward and backward side by side.

A subclass writes ``forward(self, *arrays, **params) -> array`` and
``backward(self, grad) -> tuple of arrays (or None) per tensor input``, storing on ``self``
only what backward needs. ``apply`` asks ``dispatch.choose`` which implementation runs (this
class, or a fast path derived from it), runs its forward on the arrays inside the tensors and,
when a graph is being recorded, links the output to that node so the engine can walk back.
"""

from layerwise.autograd import anomaly, dispatch, grad_mode, recording
from layerwise.autograd.tensor import Tensor, not_a_tensor_error


class Function:
    parents = ()
    needs_input_grad = ()
    # Set by the engine before backward: whether this node's saved arrays must survive it
    # (retain_graph=True). A backward may drop a large saved array early only when False.
    retains_graph = True

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def backward(self, grad):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **params):
        """Inputs are Tensors (the differentiable arguments); params are plain values."""
        for t in inputs:
            if not isinstance(t, Tensor):
                raise not_a_tensor_error(t, cls.__name__)
        track = grad_mode.state.enabled and any(t.requires_grad for t in inputs)
        arrays = [t.data for t in inputs]
        ctx = dispatch.choose(cls, arrays, params, track)()  # the reference or a fast path
        if track:
            ctx.needs_input_grad = tuple(t.requires_grad for t in inputs)
        out = Tensor(ctx.forward(*arrays, **params), requires_grad=track)
        if anomaly._enabled:
            anomaly.check_finite(out.data, cls.__name__, "forward")
        if track:
            ctx.parents = tuple(t._graph_ref() for t in inputs)  # not the tensors: their data
            out._ctx = ctx
        if recording.active is not None and not recording.active.paused:
            recording.active.op(type(ctx), ctx, inputs, params, out, track)  # lw.compile's capture
        if recording.observer is not None:
            recording.observer(type(ctx), inputs, params, out)  # lw.onnx.export's trace
        return out

    def __repr__(self):
        return f"<{type(self).__name__}>"
