"""Named recipes: a model, its data and its training defaults, chosen by one word.

    layerwise train --model mlp        # the default
    layerwise train --list             # every recipe with its one line

A recipe is a description, a dict of hyperparameter defaults (everything its builder reads;
the CLI overrides some), a schema beside them (key -> check from ``layerwise.limits``: the
type and range each value must have), cross-checks of values that only make sense together,
a builder ``build(hparams, steps_per_epoch, data) -> Parts`` and a task: how its data is
loaded and what a finished run reports (``image.ImageTask``, the language-model tasks of
``language`` and ``masked_lm``, ``tabular.TableTask`` for a user's table). Register a new one
with ``@register(name, description, defaults, task, schema=..., checks=...)``; the registry is a
plain dict, so adding a recipe touches nothing else. ``validate_hyperparameters`` holds a
config to its recipe's schema: ``make_config`` calls it, so a bad value fails before any data
is loaded or directory made, and ``check_run_config`` does the same for a config.json read
back from disk.
"""

from layerwise.train.recipes.base import (
    DEFAULT_RECIPE, PROBABILITY, RECIPES, TRAINING_SCHEMA, HyperparameterError, Parts,
    Recipe, Task, TaskData, check_run_config, get_recipe, recipe_of, register,
    validate_hyperparameters,
)
# Each family registers its recipes on import: images first (mlp is the default), then the
# causal language models, then BERT, which builds on their corpus and tokenizer, then the
# models of a user's table, then detection and segmentation of scenes.
from layerwise.train.recipes import image, language, masked_lm, tabular, scenes  # noqa: E402, I001
from layerwise.train.recipes.image import IMAGE, ImageTask, load_datasets, random_shift

__all__ = [
    "DEFAULT_RECIPE", "IMAGE", "PROBABILITY", "RECIPES", "TRAINING_SCHEMA",
    "HyperparameterError", "ImageTask", "Parts", "Recipe", "Task", "TaskData",
    "check_run_config", "get_recipe", "image", "language", "load_datasets", "masked_lm",
    "random_shift", "recipe_of", "register", "scenes", "tabular", "validate_hyperparameters",
]
