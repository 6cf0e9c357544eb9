"""Models a user writes, the PyTorch way, trained with the Trainer and saved with lw.save.

Each model subclasses nn.Module with its own forward (not one of layerwise's models), learns
a small synthetic rule with the Trainer and its callbacks, is saved with
``lw.save(model.state_dict(), path)`` and loaded into a freshly built copy, which must give
the same outputs, bit for bit, in eval mode. The BestCheckpoint file must load too and hold
the weights that scored the best validation loss.
"""

import numpy as np
import pytest

import layerwise as lw
from layerwise import nn, optim
from layerwise.data import DataLoader, TensorDataset
from layerwise.nn import functional as F
from layerwise.serialization import load_metadata
from layerwise.train import BestCheckpoint, Callback, EarlyStopping, HistoryLogger, Trainer

# The mean loss of the last epoch must be below this fraction of the first batch's loss.
LEARNED_FRACTION = 0.8


class ResidualCNN(nn.Module):
    """conv-bn stem, one residual block (the skip added in forward), pooled, a Linear head."""

    def __init__(self, classes=4, width=8):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(width)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.pool = nn.AdaptiveAvgPool2d(2)  # 2x2 keeps which quadrant the blob is in
        self.head = nn.Linear(width * 4, classes)

    def forward(self, x):                         # (N, 1, 8, 8)
        x = F.relu(self.bn0(self.stem(x)))        # (N, W, 8, 8)
        skip = x
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        x = F.relu(x + skip)
        x = self.pool(x).reshape(x.shape[0], -1)  # (N, W * 2 * 2)
        return self.head(x)


class GRUClassifier(nn.Module):
    def __init__(self, vocab=10, embed=16, hidden=24, classes=2):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.gru = nn.GRU(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, tokens):                # (N, T) int64
        x = self.embed(tokens)                # (N, T, E)
        _, h_n = self.gru(x)                  # (layers, N, H)
        return self.head(h_n[-1])             # (N, classes)


class TransformerClassifier(nn.Module):
    def __init__(self, vocab=10, d_model=16, classes=2):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        # Every argument explicit, so the test does not depend on the layer's defaults.
        layer = nn.TransformerEncoderLayer(d_model, nhead=2, dim_feedforward=32, dropout=0.1,
                                           batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2)
        self.head = nn.Linear(d_model, classes)

    def forward(self, tokens):                # (N, T)
        x = self.encoder(self.embed(tokens))  # (N, T, D)
        return self.head(x.mean(dim=1))       # (N, classes)


def _quadrant_images(n, seed):
    """A bright 3x3 blob in one of four quadrants of a noisy 8x8 image; the label is which."""
    g = np.random.default_rng(seed)
    labels = g.integers(0, 4, size=n)
    images = 0.3 * g.standard_normal((n, 1, 8, 8))
    for i, label in enumerate(labels):
        top, left = 4 * (label // 2) + g.integers(0, 2), 4 * (label % 2) + g.integers(0, 2)
        images[i, 0, top:top + 3, left:left + 3] += 2.0
    return TensorDataset(images.astype(np.float32), labels.astype(np.int64))


def _contains_seven(n, seed, length=8):
    """Token sequences over 0..9; the label is whether a 7 occurs (half of them have one)."""
    g = np.random.default_rng(seed)
    tokens = g.choice([0, 1, 2, 3, 4, 5, 6, 8, 9], size=(n, length))
    labels = g.integers(0, 2, size=n)
    positions = g.integers(0, length, size=n)
    tokens[labels == 1, positions[labels == 1]] = 7
    return TensorDataset(tokens.astype(np.int64), labels.astype(np.int64))


def _mostly_small(n, seed, length=8):
    """Token sequences over 0..9; the label is whether most tokens are below 5 (ties are
    dropped)."""
    g = np.random.default_rng(seed)
    tokens = g.integers(0, 10, size=(4 * n, length))
    small = (tokens < 5).sum(axis=1)
    keep = np.flatnonzero(small != length // 2)[:n]
    return TensorDataset(tokens[keep].astype(np.int64),
                         (small[keep] > length // 2).astype(np.int64))


class _BatchLosses(Callback):
    def __init__(self):
        self.losses = []

    def on_batch_end(self, trainer, logs):
        self.losses.append(logs["loss"])


CASES = {
    "residual_cnn": (ResidualCNN, _quadrant_images, 0.02, 4),
    "gru": (GRUClassifier, _contains_seven, 0.03, 4),
    "transformer": (TransformerClassifier, _mostly_small, 0.01, 4),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_user_model_trains_saves_and_loads_exactly(tmp_path, case):
    build, make_data, lr, epochs = CASES[case]
    lw.manual_seed(0)
    model = build()
    train = DataLoader(make_data(128, seed=1), batch_size=16, shuffle=True, seed=2)
    val = DataLoader(make_data(64, seed=3), batch_size=32)
    best_path = tmp_path / "best.safetensors"
    best = BestCheckpoint(best_path, monitor="val_loss")
    losses = _BatchLosses()
    callbacks = [best, EarlyStopping(monitor="val_loss", patience=3),
                 HistoryLogger(tmp_path / "history.jsonl"), losses]
    trainer = Trainer(model, optim.AdamW(model.parameters(), lr=lr), F.cross_entropy, train, val,
                      epochs=epochs, callbacks=callbacks, progress=False, verbose=False)
    history = trainer.fit()

    assert history[-1]["train_loss"] < LEARNED_FRACTION * losses.losses[0], history
    assert len((tmp_path / "history.jsonl").read_text().splitlines()) == len(history)

    path = tmp_path / "model.safetensors"
    lw.save(model.state_dict(), path)
    lw.manual_seed(1)  # a different initialisation, so only the load can make them agree
    fresh = build()
    inputs = next(iter(val))[0]
    model.eval()
    fresh.eval()
    with lw.no_grad():
        expected = model(inputs).data
        assert not np.array_equal(fresh(inputs).data, expected)
        fresh.load_state_dict(lw.load(path))
        np.testing.assert_array_equal(fresh(inputs).data, expected)
    for name, value in model.state_dict().items():  # buffers (BatchNorm's) included
        got = fresh.state_dict()[name]
        assert got.dtype == value.dtype and got.data.tobytes() == value.data.tobytes(), name

    # The best checkpoint: the weights of the epoch with the lowest validation loss.
    best_epoch = min(history, key=lambda row: row["val_loss"])["epoch"]
    assert best.best_epoch == best_epoch and load_metadata(best_path)["epoch"] == best_epoch
    from_best = build()
    from_best.load_state_dict(lw.load(best_path))
    trainer.model = from_best
    assert trainer.evaluate(val)["loss"] == history[best_epoch - 1]["val_loss"]


def test_batchnorm_counts_survive_the_round_trip(tmp_path):
    lw.manual_seed(0)
    model = ResidualCNN()
    train = DataLoader(_quadrant_images(48, seed=1), batch_size=16)
    Trainer(model, optim.SGD(model.parameters(), lr=0.01), F.cross_entropy, train, epochs=2,
            progress=False, verbose=False).fit()
    lw.save(model.state_dict(), tmp_path / "cnn.safetensors")
    loaded = lw.load(tmp_path / "cnn.safetensors")
    for bn in ("bn0", "bn1", "bn2"):
        counter = loaded[f"{bn}.num_batches_tracked"]
        assert counter.shape == () and counter.dtype == np.int64
        assert int(counter.item()) == 6  # 3 batches x 2 epochs
