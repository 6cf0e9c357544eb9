"""Data over architecture: more (and cleaner) examples beat a bigger model.

A small MLP learns the shipped digits from 10%, 30% and 100% of the training split; then from
100% with a fifth of the labels flipped to a wrong digit; and a model five times bigger learns
from the 10%. Every run takes the same number of optimizer steps on batches of 64, so the runs
differ only in what they learn from. The test accuracy rises with the amount of data; noisy
labels cost some of it; the bigger model on little data does not catch up with the small one
on all of it.

    uv run python examples/06_data.py            # full size
    uv run python examples/06_data.py --quick    # fewer steps

The picture (docs/tour/06_data.png): the test accuracy of each run, as bars.
"""

import numpy as np

import layerwise as lw
from layerwise import nn, optim
from layerwise.data import DataLoader, TensorDataset, digits_splits
from layerwise.nn import functional as F
from tour import options, plt, save

quick, picture = options(__file__, __doc__)
STEPS = 200 if quick else 1000
splits = digits_splits(seed=0)
x, y = (t.numpy() for t in splits["train"].tensors)
test_x, test_y = splits["test"].tensors
order = np.random.default_rng(0).permutation(len(y))  # 10% is inside 30%, inside 100%


def small():  # 51k parameters
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))


def big():  # 269k parameters, one layer more
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(),
                         nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def test_accuracy(make_model, fraction, flipped=0.0):
    """Train make_model() for STEPS steps on the first fraction of the shuffled training set."""
    keep = order[:round(fraction * len(y))]
    labels = y[keep].copy()
    rng = np.random.default_rng(1)
    flip = rng.random(len(labels)) < flipped  # a flipped label moves to one of the 9 others
    labels[flip] = (labels[flip] + rng.integers(1, 10, flip.sum())) % 10
    lw.manual_seed(0)
    model = make_model()
    opt = optim.AdamW(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(x[keep], labels), batch_size=64, shuffle=True, seed=0)
    step = 0
    while step < STEPS:
        for images, targets in loader:
            loss = F.cross_entropy(model(images), targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step == STEPS:
                break
    with lw.no_grad():
        return (model(test_x).argmax(dim=1) == test_y).float().mean().item()


runs = {"small model, 10% of the data": (small, 0.1),
        "small model, 30% of the data": (small, 0.3),
        "small model, 100% of the data": (small, 1.0),
        "small model, 100% of the data, 20% labels flipped": (small, 1.0, 0.2),
        "big model, 10% of the data": (big, 0.1)}
scores = {}
for name, run in runs.items():
    scores[name] = test_accuracy(*run)
    print(f"{name} test accuracy: {scores[name]:.4f}")

fig, ax = plt.subplots(figsize=(10, 4))
labels = [name.replace(", ", "\n", 1).replace(", ", "\n") for name in scores]
bars = ax.bar(labels, list(scores.values()), color=["C0", "C0", "C0", "C1", "C2"])
ax.bar_label(bars, fmt="%.3f")
ax.set(title=f"test accuracy on {len(test_y)} digits after {STEPS} steps of batch 64",
       ylabel="test accuracy", ylim=(0.5, 1.0))
ax.tick_params(axis="x", labelsize=9)
save(fig, picture)
