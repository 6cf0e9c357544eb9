"""Train, validation, test: learn on one split, choose on another, report on a third.

A wide MLP learns a few hundred digits until it knows them by heart: its training loss goes
to zero while its loss on the validation split, which it never trains on, falls and then rises.
Early stopping keeps the weights of the best validation epoch; the test split, touched once at
the end, says how well they do. Here the later epochs keep the accuracy but grow ever more
sure of their mistakes: the test loss rises with the validation loss.

Then the test split leaks: copies of some test examples join the training set. The test score
rises, but mostly on the leaked examples, which the model has memorised;
layerwise.audit.check_contamination finds every copy before training.

    uv run python examples/05_splits.py            # full size
    uv run python examples/05_splits.py --quick    # fewer digits and epochs

The picture (docs/tour/05_splits.png): left, training and validation loss per epoch with the
early-stopping epoch marked; right, test accuracy with and without early stopping, and with
the leak (overall, on the leaked examples, on the others).
"""

import numpy as np

import layerwise as lw
from layerwise import nn
from layerwise.data import DataLoader, TensorDataset
from layerwise.nn import functional as F
from tour import options, plt, save

quick, picture = options(__file__, __doc__)
N_TRAIN, EPOCHS, LEAKED = (100, 16, 50) if quick else (300, 40, 100)
splits = lw.data.digits_splits(seed=0)  # each split is sorted by digit
rng = np.random.default_rng(0)
keep = rng.permutation(len(splits["train"]))[:N_TRAIN]
x, y = (t.numpy()[keep] for t in splits["train"].tensors)
(val_x, val_y), (test_x, test_y) = splits["val"].tensors, splits["test"].tensors
leak = rng.permutation(len(test_y))  # the first LEAKED of these leak into training


def evaluate(model, images, labels):
    """{"accuracy": share of the images classified right, "loss": cross-entropy}."""
    with lw.no_grad():
        logits = model(images)
        return {"accuracy": (logits.argmax(dim=1) == labels).float().mean().item(),
                "loss": F.cross_entropy(logits, labels).item()}


def fit(train_x, train_y):
    """(model after the last epoch, its weights at the best validation epoch, per-epoch losses)."""
    lw.manual_seed(0)
    # 204k parameters for a few hundred digits: enough to learn each one by heart
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = lw.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    train_x, train_y = lw.tensor(train_x), lw.tensor(train_y)
    loader = DataLoader(TensorDataset(train_x, train_y), batch_size=16, shuffle=True, seed=0)
    history, best = [], None
    for epoch in range(EPOCHS):
        for images, labels in loader:
            loss = F.cross_entropy(model(images), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
        history.append((evaluate(model, train_x, train_y)["loss"],
                        evaluate(model, val_x, val_y)["loss"]))
        if history[-1][1] <= min(val for _, val in history):  # a copy: state_dict shares memory
            best = {name: t.clone() for name, t in model.state_dict().items()}
    return model, best, history


model, best, history = fit(x, y)
best_epoch = 1 + int(np.argmin([val for _, val in history]))
final = evaluate(model, test_x, test_y)
model.load_state_dict(best)  # early stopping: back to the best validation epoch's weights
stopped = evaluate(model, test_x, test_y)
print(f"best validation epoch: {best_epoch} of {EPOCHS}")
for figure in ("accuracy", "loss"):
    print(f"test {figure}, early stopping: {stopped[figure]:.4f}")
    print(f"test {figure}, last epoch: {final[figure]:.4f}")

# The leak: LEAKED test examples are copied into the training set.
leaked_x = np.concatenate([x, test_x.numpy()[leak[:LEAKED]]])
leaked_y = np.concatenate([y, test_y.numpy()[leak[:LEAKED]]])
for name, train_x in (("clean", x), ("contaminated", leaked_x)):
    found = len(lw.audit.check_contamination(train_x, test_x.numpy()).leaked)
    print(f"leaked test examples found, {name} training set: {found}")
leaky, best, _ = fit(leaked_x, leaked_y)
leaky.load_state_dict(best)
with_leak = {"all": evaluate(leaky, test_x, test_y)["accuracy"]}
for part, rows in (("leaked", leak[:LEAKED]), ("other", leak[LEAKED:])):
    with_leak[part] = evaluate(leaky, test_x[rows], test_y[rows])["accuracy"]
print(f"test examples copied into training: {LEAKED}")
print(f"test accuracy, clean: {stopped['accuracy']:.4f}")
print(f"test accuracy, contaminated: {with_leak['all']:.4f}")
for part in ("leaked", "other"):
    print(f"contaminated test accuracy on the {part} examples: {with_leak[part]:.4f}")

fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
epochs = range(1, EPOCHS + 1)
left.plot(epochs, [t for t, _ in history], label=f"training ({N_TRAIN} digits)")
left.plot(epochs, [v for _, v in history], label=f"validation ({len(val_y)} digits)")
left.axvline(best_epoch, color="gray", linestyle="--", label=f"early stop: epoch {best_epoch}")
left.set(title="the gap: memorising, not learning", xlabel="epoch", ylabel="cross-entropy",
         ylim=(0, None))
left.legend(fontsize=8)
scores = {"early stopping": stopped["accuracy"], "last epoch": final["accuracy"],
          "with the leak": with_leak["all"], "leak: leaked part": with_leak["leaked"],
          "leak: the rest": with_leak["other"]}
bars = right.bar(list(scores), list(scores.values()), color=["C0", "C0", "C3", "C3", "C3"])
right.bar_label(bars, fmt="%.3f", fontsize=8)
right.set(title=f"test accuracy: {LEAKED} of {len(test_y)} test digits leaked, {found} found",
          ylim=(0.5, 1.05))
right.tick_params(axis="x", labelsize=8, rotation=15)
save(fig, picture)
