"""Every recipe's model, at its default sizes, exported and run in onnxruntime against
layerwise on other batch sizes (and, for language models, other lengths)."""

from types import SimpleNamespace

import numpy as np
import pytest

import layerwise as lw
from layerwise.train.recipes import RECIPES

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TOLERANCE = 1e-4
VOCAB = 40  # language models: a tokenizer's vocabulary stands in for the corpus
TABLE_FEATURES = 7


def _cases():
    """(recipe name, table task or None) for every recipe: the table recipes twice."""
    for name in sorted(RECIPES):
        tasks = ("classification", "regression") if RECIPES[name].task.kind == "table" else (None,)
        for task in tasks:
            yield name, task


def _model(name, task):
    """(model, example, other inputs, export options) of recipe ``name`` at its defaults."""
    recipe, rng = RECIPES[name], np.random.default_rng(0)
    hp = dict(recipe.defaults, epochs=1, batch_size=8)
    kind = recipe.task.kind
    if kind == "image":
        def batch(n):
            return rng.random((n, 1, 28, 28), dtype=np.float32)
        model = recipe.build(hp, 1, None).model  # the shipped digits' shape and classes
        return model, batch(2), [batch(5), batch(1)], {}
    if kind == "table":  # a regression model ends in TargetScale: predictions in units
        info = ({"classes": ["a", "b", "c"]} if task == "classification"
                else {"target_mean": 3.0, "target_std": 2.0})
        data = SimpleNamespace(info=dict(info, task=task, num_features=TABLE_FEATURES))

        def rows(n):
            return rng.standard_normal((n, TABLE_FEATURES)).astype(np.float32)
        return recipe.build(hp, 1, data).model, rows(3), [rows(6)], {}
    if kind in ("lm", "mlm"):
        def ids(n, t):
            return rng.integers(0, VOCAB, (n, t))
        model = recipe.task.make_model(hp, VOCAB)
        return model, ids(2, 8), [ids(3, 12), ids(1, 5)], {"dynamic_axes": {"input": {1: "t"}}}
    if kind in ("detect", "segment"):  # a detector's maps joined as `layerwise export` does
        from layerwise.train.recipes.scenes import joined_maps

        def scenes(n):
            return rng.random((n, 1, 96, 96), dtype=np.float32)
        model = recipe.build(hp, 1, None).model  # the digit scenes' shape and classes
        if kind == "detect":
            model = _Joined(model, joined_maps)
        return model, scenes(2), [scenes(3)], {}
    raise AssertionError(f"recipe {name!r} has a kind ({kind!r}) this test does not know")


class _Joined(lw.nn.Module):
    def __init__(self, model, join):
        super().__init__()
        self.model, self.join = model, join

    def forward(self, x):
        return self.join(self.model(x))


@pytest.mark.parametrize("name, task", list(_cases()))
def test_every_recipe_model_exports(name, task):
    lw.manual_seed(0)
    model, example, others, options = _model(name, task)
    model.eval()
    proto = lw.onnx.to_onnx(model, example, **options)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for x in [example] + others:
        with lw.no_grad():
            expected = model(lw.tensor(x))
        expected = expected[0] if isinstance(expected, tuple) else expected
        got = session.run(None, {"input": x})[0]
        assert got.shape == expected.shape
        assert np.abs(got - expected.numpy()).max() < TOLERANCE
