"""Which images a source run trained on, so that a fine-tune never tests on them.

    trained = source_training_hashes("runs/mlp-...")     # content hashes of its training images
    held_out = ~xp.isin(image_hashes(images), list(trained))

A ``layerwise train`` image run's training split is rebuilt from its config.json exactly as
the run built it (the recipe's data loader with the run's seed, data directory and
``train_subset``); a label-efficiency run (``python -m layerwise.finetune.label_efficiency``)
trained on every shipped digit of its ``pretrain_classes``. Images are compared by content,
not by index: the same digit reached through another split, or from full MNIST, is the same
image.
"""

import hashlib
import os

from layerwise.backend import xp
from layerwise.errors import RunError


def image_hashes(images):
    """One SHA-1 per image of its pixels as bytes 0-255 (N, ...) -> [hex, ...].

    Pixels are rounded to the 0-255 steps every loader here starts from, so that an image
    scaled to [0, 1] by another loader (float32 or float64) hashes the same.
    """
    pixels = xp.rint(xp.asarray(images, dtype=xp.float64) * 255).astype(xp.uint8)
    rows = xp.ascontiguousarray(pixels.reshape(len(pixels), -1))
    return [hashlib.sha1(row.tobytes()).hexdigest() for row in rows]


def source_training_images(run_dir, config):
    """The images (N, 1, 28, 28) the run in ``run_dir`` trained on, rebuilt from ``config``."""
    if "model" in config and "arch" in config["model"]:  # a label-efficiency run
        classes = config.get("data", {}).get("pretrain_classes")
        if not classes:
            raise RunError(f"{os.path.join(run_dir, 'config.json')} does not say which digits "
                           f"the source model trained on (data.pretrain_classes); without it "
                           f"the fine-tune cannot keep them out of its test set")
        from layerwise.data.digits import load_digits_5k

        images, labels = load_digits_5k()
        return images[xp.isin(labels, xp.asarray(classes))]
    from layerwise.audit.report import split_arrays
    from layerwise.train.recipes import get_recipe

    recipe = get_recipe(config.get("recipe"))
    if recipe.task.kind != "image":
        raise RunError(f"{run_dir} is a {recipe.task.kind!r} run; finetune takes image "
                       f"classifier runs")
    splits = recipe.task.load(config, run_dir).splits
    return split_arrays(splits["train"])[0]


def source_training_hashes(run_dir, config):
    """The set of content hashes of the images the source run trained on."""
    return set(image_hashes(source_training_images(run_dir, config)))
