"""Gradient descent: the step size, the batch size and the first steps decide whether it learns.

The same small MLP learns the shipped digits with plain SGD (p <- p - lr * grad), three ways:
  1. learning rates too small (the loss barely moves), about right, and too large (the steps
     overshoot: the loss blows up to NaN/inf or stalls high);
  2. batch 8 against batch 256 at the same rate over the same epochs: the small batch takes
     32 times as many (noisier) steps per pass over the data and ends lower;
  3. the too-large rate again, now with a linear warm-up of the rate over the first epoch and
     gradient-norm clipping (lr_scheduler.LinearLR, nn.utils.clip_grad_norm_): the big early
     gradients no longer throw the weights away, and the fast rate trains.

    uv run python examples/04_gradient_descent.py            # full size
    uv run python examples/04_gradient_descent.py --quick    # fewer digits and epochs

The picture (docs/tour/04_gradient_descent.png): the mean training loss of each epoch, one
panel per question (a run whose loss turns NaN or inf stops there).
"""

import math

import numpy as np

import layerwise as lw
from layerwise import nn
from layerwise.data import DataLoader, Subset, digits_splits
from layerwise.nn import functional as F
from layerwise.optim import SGD, lr_scheduler
from tour import options, plt, save

quick, picture = options(__file__, __doc__)
train = digits_splits(seed=0)["train"]
if quick:  # the split is sorted by digit: a random 800 of it
    train = Subset(train, np.random.default_rng(0).permutation(len(train))[:800])
EPOCHS = 3 if quick else 10
SMALL, RIGHT, LARGE = 0.001, 0.1, 1.5  # learning rates


def fit(lr, batch_size=64, warmup_and_clip=False):
    """Mean training loss of each epoch; stops at the first NaN or inf."""
    lw.manual_seed(0)  # every run starts from the same weights
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = SGD(model.parameters(), lr=lr)
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, seed=0)
    if warmup_and_clip:  # the rate climbs from lr/100 to lr over the first epoch, then stays
        warmup = lr_scheduler.LinearLR(opt, start_factor=0.01, total_iters=len(loader))
    losses = []
    for epoch in range(EPOCHS):
        total = 0.0
        for images, labels in loader:
            loss = F.cross_entropy(model(images), labels)
            opt.zero_grad()
            loss.backward()
            if warmup_and_clip:
                nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            opt.step()
            if warmup_and_clip:
                warmup.step()
            total += loss.item() * len(labels)
            if not math.isfinite(total):
                return losses + [total]
        losses.append(total / len(train))
    return losses


runs = {
    "lr": {f"lr {lr}": fit(lr) for lr in (SMALL, RIGHT, LARGE)},
    "batch": {f"batch {b}": fit(RIGHT, batch_size=b) for b in (8, 256)},
}
runs["warmup"] = {f"lr {LARGE}": runs["lr"][f"lr {LARGE}"],
                  f"lr {LARGE}, warm-up + clipping": fit(LARGE, warmup_and_clip=True)}
for name, losses in {**runs["lr"], **runs["batch"], **runs["warmup"]}.items():
    print(f"{name} final loss: {losses[-1]:.4f}")

titles = {"lr": "learning rate (batch 64)", "batch": f"batch size (lr {RIGHT})",
          "warmup": f"lr {LARGE}, tamed"}
fig, axes = plt.subplots(1, 3, figsize=(10, 4))
for ax, (key, panel) in zip(axes, runs.items()):
    for name, losses in panel.items():
        ax.plot(range(1, len(losses) + 1), losses, marker=".", label=name)  # NaN/inf: not drawn
    ax.set(title=titles[key], xlabel="epoch", ylim=(0, 3))
    ax.legend(fontsize=8)
axes[0].set_ylabel("training loss (cross-entropy)")
save(fig, picture)
