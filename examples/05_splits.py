"""Train, validation, test: learn on one split, choose on another, report on a third.

A wide MLP learns a few hundred digits until it knows them by heart: its training loss goes
to zero while its loss on the validation split, which it never trains on, falls and then rises.
Early stopping keeps the weights of the best validation epoch; the test split, touched once at
the end, says how well they do. Here the later epochs keep the accuracy but grow ever more
sure of their mistakes: the test loss rises with the validation loss.

Then the test split leaks: copies of some test examples join the training set. The test score
rises, but mostly on the leaked examples, which the model has memorised;
layerwise.audit.check_split_contamination finds every copy before training.

    uv run python examples/05_splits.py            # full size
    uv run python examples/05_splits.py --quick    # fewer digits and epochs

The picture (docs/tour/05_splits.png): left, training and validation loss per epoch with the
early-stopping epoch marked; right, test accuracy with and without early stopping, and with
the leak (overall, on the leaked examples, on the others).
"""

import numpy as np

import layerwise as lw
from layerwise import nn, optim
from layerwise.audit import check_split_contamination
from layerwise.data import DataLoader, TensorDataset, digits_splits
from layerwise.nn import functional as F
from tour import options, plt, save

quick, picture = options(__file__, __doc__)
N_TRAIN, EPOCHS, LEAKED = (100, 16, 50) if quick else (300, 40, 100)
splits = digits_splits(seed=0)  # each split is sorted by digit
rng = np.random.default_rng(0)
keep = rng.permutation(len(splits["train"]))[:N_TRAIN]
x, y = (t.numpy()[keep] for t in splits["train"].tensors)
val_x, val_y = splits["val"].tensors
test_x, test_y = splits["test"].tensors
leak = rng.permutation(len(test_y))  # the first LEAKED of these leak into training


def fit(train_x, train_y):
    """(model with the best validation epoch's weights, last-epoch weights, per-epoch losses)."""
    lw.manual_seed(0)
    # 204k parameters for a few hundred digits: enough to learn each one by heart
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    train_x, train_y = lw.tensor(train_x), lw.tensor(train_y)
    loader = DataLoader(TensorDataset(train_x, train_y), batch_size=16, shuffle=True, seed=0)
    history, best = [], None
    for epoch in range(EPOCHS):
        for images, labels in loader:
            loss = F.cross_entropy(model(images), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with lw.no_grad():
            history.append((F.cross_entropy(model(train_x), train_y).item(),
                            F.cross_entropy(model(val_x), val_y).item()))
        if history[-1][1] <= min(val for _, val in history):  # a copy: state_dict shares memory
            best = {name: t.clone() for name, t in model.state_dict().items()}
    last = {name: t.clone() for name, t in model.state_dict().items()}
    model.load_state_dict(best)
    return model, last, history


def accuracy(model, images, labels):
    with lw.no_grad():
        return (model(images).argmax(dim=1) == labels).float().mean().item()


model, last, history = fit(x, y)
best_epoch = 1 + int(np.argmin([val for _, val in history]))
stopped = accuracy(model, test_x, test_y)
with lw.no_grad():
    stopped_loss = F.cross_entropy(model(test_x), test_y).item()
    model.load_state_dict(last)
    last_loss = F.cross_entropy(model(test_x), test_y).item()
print(f"best validation epoch: {best_epoch} of {EPOCHS}")
print(f"test accuracy, early stopping: {stopped:.4f}")
print(f"test accuracy, last epoch: {accuracy(model, test_x, test_y):.4f}")
print(f"test loss, early stopping: {stopped_loss:.4f}")
print(f"test loss, last epoch: {last_loss:.4f}")

# The leak: LEAKED test examples are copied into the training set.
leaked_x = np.concatenate([x, test_x.numpy()[leak[:LEAKED]]])
leaked_y = np.concatenate([y, test_y.numpy()[leak[:LEAKED]]])
for name, train_x, train_y in (("clean", x, y), ("contaminated", leaked_x, leaked_y)):
    report = check_split_contamination({"train": TensorDataset(train_x, train_y),
                                        "test": splits["test"]})
    print(f"leaked test examples found, {name} training set: {len(report.leaked)}")
found = len(report.leaked)
leaky, _, _ = fit(leaked_x, leaked_y)
scores = {"early stopping": stopped, "last epoch": accuracy(model, test_x, test_y),
          "with the leak": accuracy(leaky, test_x, test_y),
          "leak: leaked part": accuracy(leaky, test_x[leak[:LEAKED]], test_y[leak[:LEAKED]]),
          "leak: the rest": accuracy(leaky, test_x[leak[LEAKED:]], test_y[leak[LEAKED:]])}
print(f"test examples copied into training: {LEAKED}")
print(f"test accuracy, clean: {stopped:.4f}")
print(f"test accuracy, contaminated: {scores['with the leak']:.4f}")
print(f"contaminated test accuracy on the leaked examples: {scores['leak: leaked part']:.4f}")
print(f"contaminated test accuracy on the other examples: {scores['leak: the rest']:.4f}")

fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
epochs = range(1, EPOCHS + 1)
left.plot(epochs, [t for t, _ in history], label=f"training ({N_TRAIN} digits)")
left.plot(epochs, [v for _, v in history], label=f"validation ({len(val_y)} digits)")
left.axvline(best_epoch, color="gray", linestyle="--", label=f"early stop: epoch {best_epoch}")
left.set(title="the gap: memorising, not learning", xlabel="epoch", ylabel="cross-entropy",
         ylim=(0, None))
left.legend(fontsize=8)
bars = right.bar(list(scores), list(scores.values()), color=["C0", "C0", "C3", "C3", "C3"])
right.bar_label(bars, fmt="%.3f", fontsize=8)
right.set(title=f"test accuracy: {LEAKED} of {len(test_y)} test digits leaked, {found} found",
          ylim=(0.5, 1.05))
right.tick_params(axis="x", labelsize=8, rotation=15)
save(fig, picture)
