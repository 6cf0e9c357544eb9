import pytest

import layerwise as lw
from layerwise import nn, optim
from layerwise.data import DataLoader, digits_splits
from layerwise.train.trainer import Trainer


@pytest.fixture(scope="package")
def digits():
    return digits_splits(seed=0, fractions=(0.8, 0.1, 0.1))


@pytest.fixture(scope="package")
def digits_cnn(digits):
    """A small CNN trained one epoch on the shipped digits (~80% test accuracy, a few s)."""
    lw.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 8, 14, 14)
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 16, 7, 7)
        nn.Flatten(), nn.Linear(16 * 49, 32), nn.ReLU(), nn.Linear(32, 10))
    loader = DataLoader(digits["train"], batch_size=64, shuffle=True, seed=1)
    Trainer(model, optim.Adam(model.parameters(), lr=3e-3), train_loader=loader, epochs=1,
            progress=False, verbose=False).fit()
    model.eval()
    return model
