"""read_coco on a tiny COCO file written here: boxes, labels, masks and categories against
rectangles drawn by hand and pycocotools' own decoding, and the mistakes a user makes."""

import json
import sys

import numpy as np
import pytest
from PIL import Image

from layerwise.data import read_coco
from layerwise.errors import BadFileError

mask_utils = pytest.importorskip("pycocotools.mask")

POLYGON = [4, 6, 20, 6, 20, 18, 4, 18]  # x 4-20, y 6-18: pixels cols 4-19, rows 6-17
TRIANGLE = [2, 2, 28, 2, 2, 28]
CATEGORIES = [{"id": 11, "name": "bird"}, {"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}]


def rect(rows, cols, shape=(32, 32)):
    m = np.zeros(shape, np.uint8)
    m[rows[0]:rows[1], cols[0]:cols[1]] = 1
    return m


def uncompressed_rle(mask):
    """COCO's list RLE, by hand: run lengths of the column-major pixels, zeros first."""
    flat = mask.ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(edges).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"counts": counts, "size": list(mask.shape)}


DOG = rect((14, 22), (16, 28))  # overlaps the polygon's rows 14-17, cols 16-19
CROWD = rect((26, 30), (2, 10))


def crowd_string():
    rle = mask_utils.encode(np.asfortranarray(CROWD))
    return {"counts": rle["counts"].decode("ascii"), "size": rle["size"]}


def coco_dict():
    return {
        "images": [{"id": 5, "file_name": "a.png", "width": 32, "height": 32},
                   {"id": 9, "file_name": "b.png"},
                   {"id": 2, "file_name": "c.png"}],
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 7, "bbox": [4, 6, 16, 12],
             "segmentation": [POLYGON], "iscrowd": 0},
            {"id": 2, "image_id": 5, "category_id": 3, "bbox": [16, 14, 12, 8],
             "segmentation": uncompressed_rle(DOG), "iscrowd": 0},
            {"id": 3, "image_id": 5, "category_id": 3, "bbox": [2, 26, 8, 4],
             "segmentation": crowd_string(), "iscrowd": 1},
            {"id": 4, "image_id": 9, "category_id": 7, "bbox": [2, 2, 26, 26],
             "segmentation": [TRIANGLE], "iscrowd": 0},
        ],
        "categories": CATEGORIES,
    }


def grey_image(seed):
    return (np.random.default_rng(seed).random((32, 32)) * 255).astype(np.uint8)


@pytest.fixture
def coco(tmp_path):
    for seed, name in enumerate(["a.png", "b.png", "c.png"]):
        Image.fromarray(grey_image(seed)).save(tmp_path / name)
    path = tmp_path / "instances_tiny.json"
    path.write_text(json.dumps(coco_dict()))
    return path


def test_images_boxes_labels_categories(coco):
    ds = read_coco(coco, coco.parent, size=32)
    images, boxes, labels, masks = [t.data for t in ds.tensors]
    assert images.shape == (3, 1, 32, 32) and images.dtype == np.float32
    for i in range(3):
        np.testing.assert_allclose(images[i, 0], grey_image(i) / 255, atol=1e-6)
    assert ds.category_ids == [3, 7, 11] and ds.class_names == ["dog", "cat", "bird"]
    assert ds.image_ids == [5, 9, 2] and ds.file_names == ["a.png", "b.png", "c.png"]
    # At most two non-crowd objects in one image: the crowd is in no box.
    assert boxes.shape == (3, 2, 4) and labels.shape == (3, 2) and masks.shape == (3, 32, 32)
    np.testing.assert_array_equal(labels, [[1, 0], [1, -1], [-1, -1]])
    np.testing.assert_array_equal(boxes[0], [[4, 6, 20, 18], [16, 14, 28, 22]])
    np.testing.assert_array_equal(boxes[1], [[2, 2, 28, 28], [0, 0, 0, 0]])
    assert (boxes[2] == 0).all()
    b, lab = ds.objects(1)
    np.testing.assert_array_equal(b, [[2, 2, 28, 28]])
    np.testing.assert_array_equal(lab, [1])
    assert ds.objects(2)[0].shape == (0, 4)


def test_masks_against_drawn_shapes_and_pycocotools(coco):
    masks = read_coco(coco, coco.parent, size=32).tensors[3].data
    polygon = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([POLYGON], 32, 32)))
    crowd = mask_utils.decode({**crowd_string(), "counts": crowd_string()["counts"].encode()})
    np.testing.assert_array_equal(crowd, CROWD)  # the RLE string holds the drawn rectangle
    np.testing.assert_array_equal(polygon, rect((6, 18), (4, 20)))
    # Painted in file order, cat = 2, dog = 1: the dog (later) wins where it meets the cat.
    expected = np.zeros((32, 32), np.int64)
    expected[polygon > 0] = 2
    expected[DOG > 0] = 1
    expected[CROWD > 0] = 1
    np.testing.assert_array_equal(masks[0], expected)
    assert (masks[0] == 2).sum() == 16 * 12 - 4 * 4  # the polygon less the dog's corner
    assert (masks[0] == 1).sum() == 12 * 8 + 8 * 4  # the dog and the crowd
    triangle = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([TRIANGLE], 32, 32)))
    np.testing.assert_array_equal(masks[1], 2 * triangle.astype(np.int64))
    assert abs(int((masks[1] == 2).sum()) - 26 * 26 / 2) <= 26 * 2  # area within a border
    assert (masks[2] == 0).all()


def test_resize_doubles_boxes_and_repeats_mask_pixels(coco):
    small = read_coco(coco, coco.parent, size=32)
    big = read_coco(coco, coco.parent, size=64)
    np.testing.assert_array_equal(big.tensors[1].data, 2 * small.tensors[1].data)
    for m32, m64 in zip(small.tensors[3].data, big.tensors[3].data):
        np.testing.assert_array_equal(m64, np.kron(m32, np.ones((2, 2), np.int64)))


def test_rgb_non_square_image(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (20, 40, 3), dtype=np.uint8)  # H=20, W=40
    Image.fromarray(rgb).save(tmp_path / "wide.png")
    poly = [10, 5, 30, 5, 30, 15, 10, 15]
    (tmp_path / "c.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "wide.png", "width": 40, "height": 20}],
        "annotations": [{"image_id": 1, "category_id": 1, "bbox": [10, 5, 20, 10],
                         "segmentation": [poly]}],
        "categories": [{"id": 1, "name": "thing"}]}))
    ds = read_coco(tmp_path / "c.json", tmp_path, size=32)
    images, boxes, _, masks = [t.data for t in ds.tensors]
    assert images.shape == (1, 3, 32, 32)
    ref = np.asarray(Image.fromarray(rgb).resize((32, 32), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(images[0].transpose(1, 2, 0), ref / 255, atol=1e-6)
    np.testing.assert_allclose(boxes[0, 0], [10 * 32 / 40, 5 * 32 / 20, 30 * 32 / 40,
                                             15 * 32 / 20])
    full = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly], 20, 40)))
    nearest = np.asarray(Image.fromarray(full).resize((32, 32), Image.Resampling.NEAREST))
    np.testing.assert_array_equal(masks[0], nearest)


def _write(tmp_path, data=None, text=None):
    path = tmp_path / "instances_bad.json"
    path.write_text(text if text is not None else json.dumps(data))
    return path


def _edit(change):
    def make(tmp_path):
        data = coco_dict()
        change(data)
        return _write(tmp_path, data)
    return make


def _bad_png(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return _write(tmp_path, coco_dict())


def _rgb_b(tmp_path):
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "b.png")
    return _write(tmp_path, coco_dict())


def _set(table, i, key, value):
    def change(data):
        data[table][i][key] = value
    return change


@pytest.mark.parametrize("make, error, match", [
    (lambda p: _write(p, text="{not json"), BadFileError, r"instances_bad.json is not JSON"),
    (_edit(lambda d: d.pop("images")), BadFileError,
     r"instances_bad.json: the list 'images' is missing"),
    (_edit(lambda d: d.update(images=[])), BadFileError, r"instances_bad.json lists no images"),
    (_edit(_set("annotations", 2, "image_id", 99)), BadFileError,
     r"annotations\[2\] has image_id 99, which is not the id of any entry of 'images'"),
    (_edit(_set("annotations", 1, "category_id", 5)), BadFileError,
     r"annotations\[1\] has category_id 5, which is not in 'categories' \(ids \[3, 7, 11\]\)"),
    (_edit(_set("annotations", 0, "bbox", [1, 2, 3])), BadFileError,
     r"annotations\[0\] 'bbox' is \[1, 2, 3\]; it must be 4 numbers"),
    (_edit(_set("annotations", 3, "bbox", [1, 2, -3, 4])), BadFileError,
     r"annotations\[3\] 'bbox' \[1, 2, -3, 4\] has a negative width or height"),
    (_edit(_set("images", 1, "file_name", "gone.png")), FileNotFoundError,
     r"instances_bad.json: images\[1\] names 'gone.png', which is not a file"),
    (_bad_png, BadFileError, r"a.png: cannot decode the image"),
    (_rgb_b, BadFileError, r"b.png is colour but .*a.png is grey"),
    (_edit(_set("annotations", 1, "segmentation", {"counts": [0, 5, 10], "size": [32, 32]})),
     BadFileError, r"annotations\[1\] 'segmentation' has run lengths that sum to 15"),
    (_edit(_set("annotations", 0, "segmentation", [[1, 2, 3, "4"]])), BadFileError,
     r"annotations\[0\] 'segmentation' has the polygon \[1, 2, 3, \"4\"\]; each polygon"),
    (_edit(_set("annotations", 0, "segmentation", [[1, 2, 3, 4, 1e12, 5]])), BadFileError,
     r"annotations\[0\] 'segmentation' has the polygon .*, far outside the 32x32 image"),
    (_edit(_set("images", 0, "width", 64)), BadFileError,
     r"images\[0\] has width 64 but .*a.png is 32x32 pixels"),
])
def test_mistakes_are_one_line_naming_file_and_entry(coco, make, error, match):
    path = make(coco.parent)
    with pytest.raises(error, match=match) as info:
        read_coco(path, coco.parent, size=32)
    assert "\n" not in str(info.value)


def test_polygon_of_two_points_is_left_out_with_a_warning(coco):
    data = coco_dict()
    data["annotations"][3]["segmentation"] = [[2, 2, 28, 28], TRIANGLE]
    data["annotations"][0]["segmentation"] = [[4, 6, 20, 18]]
    path = _write(coco.parent, data)
    with pytest.warns(UserWarning, match=r"of 2 annotation\(s\), e.g. annotations\[0\]"):
        ds = read_coco(path, coco.parent, size=32)
    masks = ds.tensors[3].data
    assert (masks[0] == 2).sum() == 0 and (masks[0] == 1).sum() == 12 * 8 + 8 * 4
    triangle = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([TRIANGLE], 32, 32)))
    np.testing.assert_array_equal(masks[1], 2 * triangle.astype(np.int64))
    np.testing.assert_array_equal(ds.tensors[2].data[0], [1, 0])  # the boxes stay


def test_missing_pycocotools_says_how_to_install(coco, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    monkeypatch.setitem(sys.modules, "pycocotools.mask", None)
    with pytest.raises(ImportError, match=r"install layerwise\[vision\]"):
        read_coco(coco, coco.parent)
