"""Detection and segmentation as a user runs them: train, the card's sections, predict on an
image file or a test scene, export, and a COCO file of the user's own."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from layerwise.cli.main import main
from layerwise.data.scenes import digit_scenes

SMALL = ["--set", "train_scenes=16", "--set", "eval_scenes=8", "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    for recipe in ("detect-tiny", "segment-tiny"):
        assert main(["train", "--model", recipe, "--out", str(out), "--name", recipe,
                     *SMALL]) == 0
    return out


@pytest.fixture(scope="module")
def scene_png(tmp_path_factory):
    """A 96x96 grey scene of the test split, as a PNG a user would have."""
    images = digit_scenes(counts={"train": 1, "val": 1, "test": 1})["test"].tensors[0].data
    path = tmp_path_factory.mktemp("images") / "scene.png"
    Image.fromarray((images[0, 0] * 255).round().astype(np.uint8)).save(path)
    return str(path)


def _card(run):
    with open(os.path.join(run, "card.json"), encoding="utf-8") as f:
        return json.load(f)


def test_the_detection_card_breaks_ap_down_by_size_and_class(runs):
    card = _card(runs / "detect-tiny")
    m = card["metrics"]
    assert m["task"] == "detection" and m["n_images"] == 8
    metrics = json.loads((runs / "detect-tiny" / "metrics.json").read_text())
    assert m["AP50"] == pytest.approx(metrics["test_AP50"], nan_ok=True)
    dis = card["disaggregated"]
    sizes = dis["sizes"]
    assert [r["label"] for r in sizes] == ["smallest third", "middle third", "largest third"]
    assert sum(r["n_objects"] for r in sizes) == m["n"]  # each object in one third
    assert [r["label"] for r in dis["classes"]] == [str(d) for d in range(10)]
    assert sum(r["n_objects"] for r in dis["classes"]) == m["n"]
    assert card["calibration"]["task"] == "detection"
    html = (runs / "detect-tiny" / "card.html").read_text()
    assert "AP by object size" in html and "ECE of detection scores" in html


def test_the_segmentation_card_gives_iou_per_class(runs):
    card = _card(runs / "segment-tiny")
    assert card["metrics"]["task"] == "segmentation"
    rows = card["disaggregated"]["classes"]
    assert rows[0]["label"] == "background" and len(rows) == 11
    assert sum(r["n_pixels"] for r in rows) == 8 * 96 * 96
    assert "IoU by class" in (runs / "segment-tiny" / "card.html").read_text()


@pytest.mark.parametrize("recipe, says", [("detect-tiny", "object(s) scored at least"),
                                          ("segment-tiny", "of the image")])
def test_predict_draws_over_an_image_file(runs, scene_png, recipe, says, tmp_path, capsys):
    out = tmp_path / "drawn.png"
    assert main(["predict", str(runs / recipe), scene_png, "--out", str(out)]) == 0
    assert says in capsys.readouterr().out
    with Image.open(out) as im:
        assert im.size == (288, 288) and im.mode == "RGB"  # 96 px drawn 3x


def test_predict_on_a_test_scene_never_overwrites(runs, capsys):
    run = str(runs / "segment-tiny")
    assert main(["predict", run, "--scene", "1"]) == 0
    written = os.path.join(run, "predictions", "test-1.png")
    assert os.path.isfile(written)
    before = os.path.getmtime(written)
    assert main(["predict", run, "--scene", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists; pass --force" in err[0]
    assert os.path.getmtime(written) == before
    assert main(["predict", run, "--scene", "1", "--force"]) == 0


@pytest.mark.parametrize("argv, says", [
    ([], "give either IMAGE"),
    (["IMAGE", "--scene", "0"], "not both"),
    (["missing.png"], "does not exist"),
    (["--scene", "8"], "has 8 examples (0 to 7)"),
    (["--scene", "0", "--score", "1.5"], "must be a number from 0 to 1, got 1.5"),
])
def test_predict_refuses_in_one_line(runs, scene_png, argv, says, capsys):
    argv = [scene_png if a == "IMAGE" else a for a in argv]
    try:
        rc = main(["predict", str(runs / "detect-tiny"), *argv])
    except SystemExit as stop:  # argparse's own refusals
        rc = stop.code
    assert rc in (1, 2)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and says in err[0]


def test_export_writes_maps_that_onnxruntime_computes_alike(runs, capsys):
    assert main(["export", str(runs / "detect-tiny")]) == 0
    out = capsys.readouterr().out
    assert "maps (batch, 14, 24, 24)" in out and "onnxruntime matches layerwise" in out


def write_coco(folder, n_images=6, size=32):
    """A COCO file of grey squares (class "square") and bars (class "bar"), one polygon each."""
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(n_images):
        pixels = np.zeros((size, size), np.uint8)
        for cid, (h, w) in ((7, (8, 8)), (3, (4, 12))):
            y, x = rng.integers(0, size - 12, 2)
            pixels[y:y + h, x:x + w] = 255
            polygon = [x, y, x + w, y, x + w, y + h, x, y + h]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": cid, "bbox": [int(x), int(y), w, h],
                                "area": w * h, "iscrowd": 0,
                                "segmentation": [[int(v) for v in polygon]]})
        Image.fromarray(pixels).save(folder / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": size, "height": size})
    path = folder / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 7, "name": "square"},
                                               {"id": 3, "name": "bar"}]}))
    return path


def test_a_users_coco_file_trains_a_detector(tmp_path, capsys):
    coco = write_coco(tmp_path)
    out = tmp_path / "runs"
    assert main(["train", "--data", str(coco), "--model", "detect-tiny", "--image-size", "32",
                 "--out", str(out), "--name", "toy", "--no-progress", "--no-card"]) == 0
    printed = capsys.readouterr().out
    assert "is a COCO annotation file" in printed and "test mAP" in printed
    metrics = json.loads((out / "toy" / "metrics.json").read_text())
    assert set(metrics["test_AP_per_class"]) == {"bar", "square"}  # the file's names, id order
    config = json.loads((out / "toy" / "config.json").read_text())
    assert config["hyperparameters"]["image_size"] == 32
    assert config["data"]["kind"] == "coco"


def test_an_image_size_the_detector_cannot_take_is_refused_before_reading(tmp_path, capsys):
    coco = write_coco(tmp_path, n_images=3)
    rc = main(["train", "--data", str(coco), "--model", "detect-tiny", "--image-size", "36",
               "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "multiple of 8" in err[0]
    assert not (tmp_path / "runs").exists()
