"""Stochastic gradient descent, with momentum, Nesterov momentum and weight decay."""

from layerwise.autograd import Tensor
from layerwise.optim.optimizer import Optimizer


class SGD(Optimizer):
    r"""SGD as PyTorch computes it (torch.optim.SGD). With gradient g_t of step t:

        g_t <- -g_t                            if maximize
        g_t <- g_t + weight_decay * p          if weight_decay != 0
        if momentum != 0:
            b_t = g_t                                     at the first step
            b_t = momentum * b_{t-1} + (1 - dampening) * g_t   afterwards
            g_t <- g_t + momentum * b_t        if nesterov, else g_t <- b_t
        p <- p - lr * g_t

    Nesterov momentum is Sutskever et al. (2013), in the form PyTorch uses. As in PyTorch's
    code (its documentation puts ``maximize`` last), the sign flip comes first, so weight decay
    still pulls weights toward zero when maximizing. State: ``momentum_buffer`` (b_t) when
    momentum != 0.
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, maximize=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def _check_group(self, group):
        super()._check_group(group)
        if group["momentum"] < 0:
            raise ValueError(f"Invalid momentum value: must be >= 0, got {group['momentum']!r}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                "Nesterov momentum requires a momentum > 0 and zero dampening, got "
                f"momentum={group['momentum']!r}, dampening={group['dampening']!r}"
            )

    def init_state(self, param, group):
        # The momentum buffer starts as the first gradient, so it is made in update().
        return {}

    def update(self, param, grad, state, group):
        weight_decay, momentum = group["weight_decay"], group["momentum"]
        if group["maximize"]:
            grad = -grad
        if weight_decay != 0:
            grad = grad + weight_decay * param  # a new array: p.grad itself is left alone
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = Tensor(grad.copy())
                buf = buf.data
            else:
                buf = buf.data
                buf *= momentum
                dampening = group["dampening"]
                buf += grad if dampening == 0 else (1 - dampening) * grad
            grad = grad + momentum * buf if group["nesterov"] else buf
        param -= group["lr"] * grad
