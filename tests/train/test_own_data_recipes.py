"""The recipes on a user's data (make_config(..., data=...)): the image models sized from the
data, the records a run keeps, and the refusals of text too short for a recipe."""

import numpy as np
import pytest
from PIL import Image

from layerwise import nn
from layerwise.autograd import Tensor
from layerwise.errors import RunError
from layerwise.limits import SettingError
from layerwise.train.recipes import TaskData, get_recipe
from layerwise.train.recipes.corpus import min_chars, split_text
from layerwise.train.run import make_config


def image_folder(root, classes=("cat", "dog", "owl"), per_class=10, mode="RGB"):
    rng = np.random.default_rng(1)
    for name in classes:
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            shape = (6 + k, 9) if mode == "L" else (6 + k, 9, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
                root / name / f"{k}.png")
    return str(root)


def images_config(recipe, root, image_size, **overrides):
    return make_config(recipe, data={"kind": "images", "path": root, "image_size": image_size},
                       **overrides)


@pytest.mark.parametrize("recipe, mode, size, first, last", [
    ("cnn", "RGB", 9, (32, 3, 3, 3), (3, 128)),    # Linear weights are (out, in)
    ("mlp", "L", 10, (16, 100), (3, 16)),          # 1 x 10 x 10 inputs flattened
])
def test_the_models_take_their_shape_from_the_folder(tmp_path, recipe, mode, size, first, last):
    root = image_folder(tmp_path / "photos", mode=mode)
    config = images_config(recipe, root, size, hidden=[16])
    task = get_recipe(recipe).task
    data = task.load(config)
    assert data.info["input_shape"] == [1 if mode == "L" else 3, size, size]
    assert data.info["num_classes"] == 3 and data.info["classes"] == ["cat", "dog", "owl"]
    model = get_recipe(recipe).build(config["hyperparameters"], 1, data).model
    weights = [m.weight.shape for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert weights[0] == first and weights[-1] == last
    x, _ = data.splits["train"][0:4]
    assert model(x).shape == (4, 3)
    if recipe == "cnn":  # 9 -> 4 -> 2 pixels a side after two 2 x 2 poolings
        assert weights[2] == (128, 64 * 2 * 2)


def test_the_record_of_an_image_folder(tmp_path):
    from layerwise.data import folder_fingerprint

    root = image_folder(tmp_path / "photos")
    record = images_config("cnn", root, 12)["data"]
    assert record == {"source": "user", "kind": "images", "path": root, "image_size": 12,
                      "sha256": folder_fingerprint(root), "classes": ["cat", "dog", "owl"],
                      "data_dir": None}


def test_an_mlp_too_big_for_its_images_is_refused_when_built():
    data = TaskData({}, info={"input_shape": [3, 1024, 1024], "num_classes": 2})
    hp = make_config("mlp", hidden=[1024])["hyperparameters"]  # 784 inputs pass at config time
    # 3 * 1024 * 1024 * 1024 + 1024 + 1024 * 2 + 2 parameters
    with pytest.raises(SettingError, match=r"an MLP 3145728-1024-2 .* would have 3,221,228,546 "
                                           r"parameters, more than MAX_PARAMETERS"):
        get_recipe("mlp").build(hp, 1, data)


def test_without_data_the_builders_keep_the_digits_shape():
    model = get_recipe("cnn").build(make_config("cnn")["hyperparameters"], 1, None).model
    assert model(Tensor(np.zeros((2, 1, 28, 28), np.float32))).shape == (2, 10)


# --- text ------------------------------------------------------------------------------------


def text_config(recipe, path, **overrides):
    return make_config(recipe, data={"kind": "text", "path": str(path)}, **overrides)


@pytest.mark.parametrize("tokens, fraction", [(33, 0.1), (129, 0.1), (2, 0.5), (65, 0.3333)])
def test_min_chars_is_the_shortest_text_that_splits_into_two_windows(tokens, fraction):
    n = min_chars(tokens, fraction)

    def fits(length):
        return all(len(part) >= tokens for part in split_text("x" * length, fraction))

    assert fits(n) and not any(fits(m) for m in range(1, n))


def test_text_of_exactly_the_needed_length_trains_and_one_less_is_refused(tmp_path):
    need = min_chars(33, 0.1)  # gpt-tiny: block_size 32
    path = tmp_path / "t.txt"
    path.write_text("The " + "ab" * need, encoding="utf-8")  # room for the sample prompt
    full = path.read_text()
    path.write_text(full[:need], encoding="utf-8")
    data = get_recipe("gpt-tiny").task.load(text_config("gpt-tiny", path))
    assert len(data.splits["val"]) == 1 and data.info["val_tokens"] == 32
    path.write_text(full[:need - 1], encoding="utf-8")
    with pytest.raises(RunError) as err:
        get_recipe("gpt-tiny").task.load(text_config("gpt-tiny", path))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{str(path)!r} is too short for recipe 'gpt-tiny': {need - 1} "
                              f"characters split into")
    assert f"the validation part has fewer than block_size + 1 = 33; give at least {need} " \
        f"characters" in message


def test_the_record_of_a_text_and_a_changed_text_refused(tmp_path):
    import hashlib

    path = tmp_path / "t.txt"
    text = "The " + "words and more words. " * 40
    path.write_text(text, encoding="utf-8")
    config = text_config("lstm-tiny", path)
    assert config["data"] == {"source": "user", "kind": "text", "path": str(path), "files": 1,
                              "chars": len(text), "data_dir": None,
                              "sha256": hashlib.sha256(text.encode()).hexdigest()}
    path.write_text(text + "!", encoding="utf-8")
    with pytest.raises(RunError, match=rf"the text in {str(path)!r} is not the one this run was "
                                       rf"made with \({len(text) + 1:,} characters now, "
                                       rf"{len(text):,} then"):
        get_recipe("lstm-tiny").task.load(config)


@pytest.mark.parametrize("recipe, change, words", [
    ("cnn", {"path": 5}, "data.path = 5; expected the image folder's path, as text"),
    ("cnn", {"sha256": None}, "data.sha256 = null; expected the SHA-256"),
    ("cnn", {"image_size": 4}, "data.image_size must be an integer from 8 to 1,024"),
    ("gpt-tiny", {"path": ["a"]}, "data.path = [\"a\"], data.sha256 = "),
    ("gpt-tiny", {"sha256": 7}, "data.sha256 = 7; expected the text's path and its SHA-256"),
])
def test_a_crafted_data_record_is_one_line(tmp_path, recipe, change, words):
    if recipe == "cnn":
        config = images_config("cnn", image_folder(tmp_path / "photos"), 8)
    else:
        path = tmp_path / "t.txt"
        path.write_text("The " + "text " * 100, encoding="utf-8")
        config = text_config(recipe, path)
    config["data"].update(change)
    with pytest.raises(RunError) as err:
        get_recipe(recipe).task.load(config, str(tmp_path))
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("the run's config.json: ") and words in str(err.value)
