"""Transfer learning: what a network learnt on one task is a head start on another.

An MLP learns the digits 0-4 (2,500 images, each moved by up to 2 pixels at every step, so
that its features describe strokes wherever they are rather than the exact pixels of five
digits). The digits 5-9 are then a new task with only a few labelled images of each: the same
MLP is trained on them twice, once from the weights learnt on 0-4 (a new 5-way last layer,
every layer trained) and once from scratch, with the same steps, batches and learning rate.
Both are tested on 100 held-out images of each digit 5-9. The gain is real but modest: strokes
learnt on 0-4 help with 5-9, most when the labels are fewest.

    uv run python examples/07_transfer.py           # 1, 5, 10, 50 labels per class, 3 draws
    uv run python examples/07_transfer.py --quick   # 10 labels per class, one draw

The picture: test accuracy on the digits 5-9 against the labelled images per class (mean
over the draws of labelled images), fine-tuned from the 0-4 network and trained from scratch.
"""

import numpy as np

import layerwise as lw
from layerwise import nn
from layerwise.finetune import replace_head
from layerwise.finetune.label_efficiency import sample_per_class, shift_images, split_digits
from layerwise.nn import functional as F
from tour import options, plt, save

quick, picture = options(__file__, __doc__)
lw.manual_seed(0)
data = split_digits(*lw.data.load_digits_5k())  # 0-4: all; 5-9 (as 0-4): a pool and a test set
source_x, source_y = data["pretrain"]
test_x, test_y = data["test"]
label_counts, draws = ((10,), (0,)) if quick else ((1, 5, 10, 50), (0, 1, 2))
pretrain_steps, tune_steps = (600, 50) if quick else (1200, 60)


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(),
                         nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 5))


def train(model, x, y, steps, seed=0, max_shift=0):
    rng = np.random.default_rng(seed)  # the same batches for every model given the same data
    opt = lw.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(steps):
        batch = rng.integers(0, len(x), size=64)
        images = shift_images(x[batch], rng, max_shift) if max_shift else x[batch]
        loss = F.cross_entropy(model(lw.tensor(images)), lw.tensor(y[batch]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def accuracy(model, x, y):
    with lw.no_grad():
        return float((model(lw.tensor(x)).argmax(dim=1).numpy() == y).mean())


pretrained = train(mlp(), source_x, source_y, pretrain_steps, max_shift=2)
source_accuracy = accuracy(pretrained, source_x, source_y)
print(f"pre-trained on digits 0-4, accuracy on them: {source_accuracy:.3f}")
results = {"fine-tuned": [], "from scratch": []}
for n in label_counts:
    runs = {name: [] for name in results}
    for draw in draws:
        x, y = sample_per_class(*data["pool"], n, seed=draw)  # n images of each of 5-9
        lw.manual_seed(draw)
        tuned, scratch = mlp(), mlp()
        tuned.load_state_dict(pretrained.state_dict())
        replace_head(tuned, "5", num_classes=5)  # 5-9 are new classes: a fresh last layer
        for name, model in (("fine-tuned", tuned), ("from scratch", scratch)):
            runs[name].append(accuracy(train(model, x, y, tune_steps, draw), test_x, test_y))
    for name in results:
        results[name].append(np.mean(runs[name]))
        print(f"{name} accuracy at {n} labels per class: {results[name][-1]:.3f}")

fig, ax = plt.subplots(figsize=(10, 4))
for name, accs in results.items():
    ax.plot(label_counts, accs, marker="o", label=name)
ax.set_xscale("log")
ax.set_xticks(label_counts, [str(n) for n in label_counts])
ax.set_xlabel("labelled images per class of the digits 5-9")
ax.set_ylabel(f"test accuracy ({len(test_y)} images)")
ax.set_title("An MLP pre-trained on the digits 0-4 and fine-tuned on 5-9, against one from scratch")
ax.grid(alpha=0.3)
ax.legend()
save(fig, picture)
