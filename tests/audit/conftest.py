"""Shared fixtures: a finished `tiny` run, the digits splits, and the default digits model.

``digits_mlp`` is the `mlp` recipe trained with seed 0 (see fixtures/README.md): its weights
are loaded, as training it takes about a minute.
"""

import os

import pytest

import layerwise as lw
from layerwise.audit.cost import run_cost_callback
from layerwise.data import digits_splits
from layerwise.train.recipes import get_recipe
from layerwise.train.run import make_config, start_run

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    run_dir, _ = start_run(make_config("tiny", seed=0), out_dir=str(out), name="tiny0",
                                 progress=False, verbose=False, callbacks=[run_cost_callback])
    return run_dir


@pytest.fixture(scope="session")
def digits():
    """{'train', 'val', 'test'}: (images (N, 1, 28, 28) float32, labels (N,) int64), seed 0."""
    return {name: (ds.tensors[0].data, ds.tensors[1].data)
            for name, ds in digits_splits(seed=0).items()}


@pytest.fixture(scope="session")
def digits_mlp():
    hp = make_config("mlp", seed=0)["hyperparameters"]
    model = get_recipe("mlp").build(hp, 1, None).model
    model.load_state_dict(lw.load(os.path.join(FIXTURES, "digits_mlp_seed0.safetensors")))
    model.eval()
    return model
