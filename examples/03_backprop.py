"""Backpropagation is the chain rule, applied layer by layer from the loss back to every weight.

A 2-3-1 network (a tanh hidden layer, mean squared error) on four points. Its forward pass is
written out in NumPy float64, and so is its backward pass: going from the loss down, each
layer's gradient is the gradient arriving from above times that layer's local derivative
(for y = h W^T + b: dL/dW = dL/dy^T h and dL/dh = dL/dy W; for h = tanh(a): dL/da =
dL/dh (1 - h^2)). The same 13 numbers come two other ways: from layerwise's loss.backward()
(the model in float64), and from central finite differences (L(w + e) - L(w - e)) / 2e, which
need no calculus, only two forward passes per weight. The script prints the largest gaps.

    uv run python examples/03_backprop.py

The picture: left, each weight's gradient from the three methods as grouped bars (they
coincide); right, how far backward() and finite differences are from the hand gradient, on
a log scale: backward() to within float64's rounding, finite differences to within ~1e-10.
"""

import numpy as np
from tour import options, plt, save

import layerwise as lw
from layerwise import nn
from layerwise.nn import functional as F

_, picture = options(__file__, __doc__)  # four points and 13 weights: --quick changes nothing
lw.manual_seed(0)
x = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [-1.0, 0.5]])  # (N, 2) inputs
t = np.array([[1.0], [-1.0], [0.5], [0.0]])  # (N, 1) targets

model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).double()
loss = F.mse_loss(model(lw.tensor(x)), lw.tensor(t))
loss.backward()
params = [p.detach().numpy().copy() for p in model.parameters()]  # W1, b1, W2, b2
by_backward = [p.grad.numpy() for p in model.parameters()]


def forward(W1, b1, W2, b2):
    a = x @ W1.T + b1  # (N, 2) -> (N, 3)
    h = np.tanh(a)
    y = h @ W2.T + b2  # (N, 3) -> (N, 1)
    return h, y, np.mean((y - t) ** 2)


def backward(W1, b1, W2, b2):
    h, y, _ = forward(W1, b1, W2, b2)
    dy = 2 * (y - t) / len(x)  # dL/dy of the mean of squares, (N, 1)
    dW2, db2 = dy.T @ h, dy.sum(0)  # (1, 3), (1,)
    dh = dy @ W2  # (N, 1) -> (N, 3)
    da = dh * (1 - h ** 2)  # tanh'(a) = 1 - tanh(a)^2
    dW1, db1 = da.T @ x, da.sum(0)  # (3, 2), (3,)
    return [dW1, db1, dW2, db2]


def finite_differences(params, e=1e-6):
    grads = [np.zeros_like(p) for p in params]
    for p, g in zip(params, grads):
        for i in np.ndindex(p.shape):
            w = p[i]
            p[i] = w + e
            up = forward(*params)[-1]
            p[i] = w - e
            g[i] = (up - forward(*params)[-1]) / (2 * e)
            p[i] = w
    return grads


by_hand = backward(*params)
by_differences = finite_differences(params)
flat = [np.concatenate([g.ravel() for g in grads])
        for grads in (by_hand, by_backward, by_differences)]  # 3 x (13,)
print(f"loss by hand: {forward(*params)[-1]:.6f}")
print(f"loss by layerwise: {loss.item():.6f}")
print(f"largest difference hand vs backward: {np.abs(flat[0] - flat[1]).max():.2e}")
print(f"largest difference hand vs finite differences: {np.abs(flat[0] - flat[2]).max():.2e}")

# --- the picture -------------------------------------------------------------------------
names = [f"{name}[{','.join(map(str, i))}]" for name, p in zip(("W1", "b1", "W2", "b2"), params)
         for i in np.ndindex(p.shape)]
at = np.arange(len(names))
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
for k, (grads, label) in enumerate(zip(flat, ("by hand", "loss.backward()",
                                              "finite differences"))):
    left.bar(at + (k - 1) * 0.27, grads, width=0.27, label=label)
left.set(title="dL/dw, three ways", xticks=at)
left.set_xticklabels(names, rotation=90)
left.axhline(0, color="k", linewidth=0.5)
left.legend(fontsize=8)
floor = 1e-20  # where an exact zero is drawn on the log scale
for k, (grads, label) in enumerate(zip(flat[1:], ("|hand - backward()|",
                                                  "|hand - finite differences|"))):
    right.bar(at + (k - 0.5) * 0.4, np.maximum(np.abs(flat[0] - grads), floor), width=0.4,
              label=label, color=f"C{k + 1}")
right.axhline(np.finfo(np.float64).eps, color="k", linestyle=":", linewidth=1,
              label="float64 epsilon")
right.set(title=f"differences (exact zeros drawn at {floor:g})", yscale="log", xticks=at,
          ylim=(floor / 3, 1e-5))
right.set_xticklabels(names, rotation=90)
right.legend(fontsize=8)
save(fig, picture)
