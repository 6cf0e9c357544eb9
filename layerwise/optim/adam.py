"""Adam (Kingma & Ba, 2015) and AdamW (Loshchilov & Hutter, 2019), as PyTorch computes them."""

import math

from layerwise.autograd import Tensor
from layerwise.backend import xp
from layerwise.ops.fast.blocked import blockwise
from layerwise.ops.fast.kernels import kernel
from layerwise.optim.optimizer import Optimizer, _is_number


class Adam(Optimizer):
    r"""Adam with L2 weight decay folded into the gradient (torch.optim.Adam). At step t:

        g_t <- -g_t                            if maximize
        g_t <- g_t + weight_decay * p          if weight_decay != 0  (L2, coupled)
        m_t = beta1 * m_{t-1} + (1 - beta1) * g_t
        v_t = beta2 * v_{t-1} + (1 - beta2) * g_t^2
        v_t <- max(vmax_{t-1}, v_t) =: vmax_t  if amsgrad (Reddi et al., 2018)
        p <- p - lr / (1 - beta1^t) * m_t / (sqrt(v_t) / sqrt(1 - beta2^t) + eps)

    m and v start at zero; the two (1 - beta^t) factors undo that bias (Kingma & Ba, Sec. 3).
    State: ``step`` (an int), ``exp_avg`` (m), ``exp_avg_sq`` (v), ``max_exp_avg_sq`` (vmax,
    only with amsgrad; it holds the running maximum of the uncorrected v, as in PyTorch).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, maximize=False):
        defaults = dict(lr=lr, betas=_pair(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize)
        super().__init__(params, defaults)

    def _check_group(self, group):
        super()._check_group(group)
        betas = group["betas"]
        if (not isinstance(betas, tuple) or len(betas) != 2
                or not all(_is_number(b) and 0.0 <= b < 1.0 for b in betas)):
            raise ValueError(f"Invalid betas: expected two numbers in [0, 1), got {betas!r}")
        if not _is_number(group["eps"]) or group["eps"] < 0:
            raise ValueError(f"Invalid epsilon value: must be >= 0, got {group['eps']!r}")

    def init_state(self, param, group):
        state = {"step": 0, "exp_avg": Tensor(xp.zeros_like(param)),
                 "exp_avg_sq": Tensor(xp.zeros_like(param))}
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = Tensor(xp.zeros_like(param))
        return state

    def update(self, param, grad, state, group):
        if group["maximize"]:
            grad = -grad
        weight_decay = group["weight_decay"]
        if weight_decay != 0:
            grad = grad + weight_decay * param  # a new array: p.grad itself is left alone
        _adam_step(param, grad, state, group)


class AdamW(Adam):
    r"""Adam with decoupled weight decay (torch.optim.AdamW). At step t:

        p <- p * (1 - lr * weight_decay)       decay the weights, not the gradient
        then the Adam step above, without the L2 term.

    Decoupling keeps the decay from being rescaled by 1 / sqrt(v) (Loshchilov & Hutter, Sec. 2).
    Same state as Adam.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize)

    def update(self, param, grad, state, group):
        if group["maximize"]:
            grad = -grad
        weight_decay = group["weight_decay"]
        if weight_decay != 0:
            param *= 1 - group["lr"] * weight_decay
        _adam_step(param, grad, state, group)


def _adam_step(param, grad, state, group):
    """The shared moment update and parameter step, in place: one compiled pass (kernels.py)
    where it applies, else NumPy blockwise (ops/fast/blocked.py), so that the ten passes of the
    update over a block stay in cache instead of going through memory."""
    beta1, beta2 = group["betas"]
    step = state["step"] = state["step"] + 1
    amsgrad = group["amsgrad"]
    # p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    step_size = group["lr"] / (1 - beta1 ** step)
    inv_sqrt_bc2, eps = 1 / math.sqrt(1 - beta2 ** step), group["eps"]
    m, v = state["exp_avg"].data, state["exp_avg_sq"].data

    fused = kernel("adam_update")
    arrays = (param, grad, m, v)
    if (fused is not None and not amsgrad and param.dtype.kind == "f"
            and all(a.dtype == param.dtype and a.flags.c_contiguous for a in arrays)):
        # The scalars in the arrays' dtype: NumPy casts Python floats the same way.
        scalars = (beta1, 1 - beta1, beta2, 1 - beta2, step_size, inv_sqrt_bc2, eps)
        fused(*(a.reshape(-1) for a in arrays), *map(param.dtype.type, scalars))
        return

    def update(p, m, v, *rest):
        *vmax, g, s = rest  # vmax: [the running max of v] with amsgrad, else []
        xp.multiply(g, 1 - beta1, out=s)
        m *= beta1
        m += s
        xp.multiply(g, g, out=s)
        s *= 1 - beta2
        v *= beta2
        v += s
        if vmax:
            xp.maximum(vmax[0], v, out=vmax[0])
        xp.sqrt(vmax[0] if vmax else v, out=s)
        s *= inv_sqrt_bc2
        s += eps
        xp.divide(m, s, out=s)
        s *= step_size
        p -= s

    outs = [param, m, v]
    if amsgrad:
        outs.append(state["max_exp_avg_sq"].data)
    blockwise(update, outs, (grad,), param.dtype, scratch=1)


def _pair(betas):
    """``betas`` as a tuple when it is a sequence; anything else is left for the check to name."""
    return tuple(betas) if isinstance(betas, (tuple, list)) else betas
