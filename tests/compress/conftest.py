from pathlib import Path

import pytest

import layerwise as lw
from layerwise.data import digits_splits
from layerwise.train.recipes import get_recipe
from layerwise.train.run import make_config

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="package")
def digits():
    return digits_splits(seed=0, fractions=(0.8, 0.1, 0.1))


@pytest.fixture(scope="package")
def digits_cnn():
    """The digits CNN: the `cnn` recipe trained with seed 0 (test accuracy 0.980), loaded from
    fixtures/ (see fixtures/README.md; training it takes ~30 s, too slow for a test)."""
    hp = make_config("cnn", seed=0)["hyperparameters"]
    model = get_recipe("cnn").build(hp, 1, None).model
    model.load_state_dict(lw.load(str(FIXTURES / "digits_cnn_seed0.safetensors")))
    model.eval()
    return model
