"""A unit: weights, a bias and an activation. One unit cannot learn XOR; two layers can.

A unit computes sigmoid(w . x + b). Where it says 0.5 is the line w . x + b = 0, so one unit
can cut AND's points apart (one corner against three) but not XOR's (two diagonal pairs: no
straight line splits them). Eight tanh units in front of it bend the boundary, and the same
training loop then gets XOR right. The points are the four corners of the unit square, each
repeated with a little noise; the script prints each model's accuracy on them.

    uv run python examples/01_unit.py

The picture: what each model says (the probability of class 1, from blue 0 to red 1, with
its 0.5 boundary drawn) over the plane, with the points on top: the unit on AND, the unit on
XOR, the two-layer net on XOR.
"""

import numpy as np
from tour import options, plt, save

import layerwise as lw
from layerwise import nn
from layerwise.nn import functional as F

quick, picture = options(__file__, __doc__)
lw.manual_seed(0)
rng = np.random.default_rng(0)
copies, steps = (20, 150) if quick else (100, 600)

corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
points = np.repeat(corners, copies, axis=0)  # (4 * copies, 2)
points += rng.normal(0, 0.1, points.shape).astype(np.float32)
x = lw.tensor(points)
labels = {"AND": np.array([0, 0, 0, 1]), "XOR": np.array([0, 1, 1, 0])}
targets = {name: lw.tensor(np.repeat(y, copies)[:, None].astype(np.float32))
           for name, y in labels.items()}  # (4 * copies, 1)


def train(model, y):
    opt = lw.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        loss = F.binary_cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def accuracy(model, y):
    with lw.no_grad():
        return ((model(x) > 0.5).float() == y).float().mean().item()


runs = []  # (title, model, gate)
for gate in ("AND", "XOR"):
    unit = nn.Sequential(nn.Linear(2, 1), nn.Sigmoid())  # weights, bias, activation
    train(unit, targets[gate])
    print(f"perceptron {gate} accuracy: {accuracy(unit, targets[gate]):.2f}")
    runs.append((f"one unit on {gate}", unit, gate))
net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1), nn.Sigmoid())
train(net, targets["XOR"])
print(f"two-layer net XOR accuracy: {accuracy(net, targets['XOR']):.2f}")
runs.append(("two-layer net (2-8-1) on XOR", net, "XOR"))

# --- the picture -------------------------------------------------------------------------
grid = np.linspace(-0.5, 1.5, 121, dtype=np.float32)
gx, gy = np.meshgrid(grid, grid)
fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
for ax, (title, model, gate) in zip(axes, runs):
    with lw.no_grad():
        p = model(lw.tensor(np.stack([gx.ravel(), gy.ravel()], 1))).numpy().reshape(gx.shape)
    ax.contourf(gx, gy, p, levels=np.linspace(0, 1, 11), cmap="coolwarm", alpha=0.6)
    ax.contour(gx, gy, p, levels=[0.5], colors="k", linewidths=1.5)
    y = np.repeat(labels[gate], copies)
    ax.scatter(points[:, 0], points[:, 1], c=y, cmap="coolwarm", vmin=0, vmax=1, s=10,
               edgecolors="k", linewidths=0.3)
    ax.set(title=title, xlabel="$x_1$", ylabel="$x_2$", aspect="equal")
save(fig, picture)
