"""The scene recipes' training translation moves boxes and masks with the image."""

import numpy as np

import layerwise as lw
from layerwise.autograd import Tensor
from layerwise.backend import rng
from layerwise.data.scenes import digit_scenes
from layerwise.train.recipes.scenes import MIN_BOX_SIDE, packed_objects, random_translation

LIMIT = 16


def _scenes(n=12):
    images, boxes, labels, masks = (t.data for t in digit_scenes(
        counts={"train": n, "val": 1, "test": 1})["train"].tensors)
    return images, packed_objects(boxes, labels), masks


def _moved(a, dx, dy):
    """``a`` (..., H, W) moved right by dx and down by dy, zeros coming in: by slicing."""
    out = np.zeros_like(a)
    h, w = a.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        a[..., max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def test_images_boxes_and_masks_move_together():
    images, objects, masks = _scenes()
    lw.manual_seed(3)
    dx, dy = rng().integers(-LIMIT, LIMIT + 1, size=(2, len(images)))  # the draw it will make
    lw.manual_seed(3)
    moved_images, moved = random_translation(LIMIT, detection=True)(Tensor(images),
                                                                    Tensor(objects))
    lw.manual_seed(3)
    _, moved_masks = random_translation(LIMIT, detection=False)(Tensor(images), Tensor(masks))
    dropped = 0
    for i in range(len(images)):
        assert np.array_equal(moved_images.data[i], _moved(images[i], dx[i], dy[i]))
        assert np.array_equal(moved_masks.data[i], _moved(masks[i], dx[i], dy[i]))
        for before, after in zip(objects[i], moved.data[i]):
            if before[4] < 0:
                assert np.array_equal(before, after)  # padding rows stay padding
                continue
            box = np.clip(before[:4] + [dx[i], dy[i], dx[i], dy[i]], 0, 96)
            if (box[2:] - box[:2] < MIN_BOX_SIDE).any():
                assert after[4] == -1  # cut off by the edge: no longer an object
                dropped += 1
            else:
                assert np.array_equal(after, np.append(box, before[4]))
    assert dropped < (objects[..., 4] >= 0).sum()  # most objects survive a 16 px shift


def test_the_segmenter_starts_at_the_training_masks_class_priors():
    from layerwise.train.recipes import get_recipe

    recipe = get_recipe("segment-tiny")
    data = recipe.task.load({"hyperparameters": recipe.defaults, "seed": 0,
                             "data": recipe.task.data_record(recipe.defaults, None)})
    model = recipe.build(dict(recipe.defaults), 1, data).model
    masks = data.splits["train"].tensors[1].data
    share = np.bincount(masks.ravel(), minlength=11) / masks.size
    expected = np.log(np.maximum(share, 1 / masks.size))  # a class never seen: one pixel's worth
    np.testing.assert_allclose(model.outc.bias.data, expected, rtol=1e-6)
    softmax = np.exp(expected) / np.exp(expected).sum()
    np.testing.assert_allclose(softmax, share / share.sum(), atol=1e-6)  # predicts the shares
