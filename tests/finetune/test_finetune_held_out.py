"""`layerwise finetune` tests only on images its source run never trained on: checked against
the source's training split recomputed here, from the seed, independently of finetune."""

import hashlib
import json

import numpy as np
import pytest

import layerwise as lw
from layerwise.cli.main import main
from layerwise.data import digits_splits
from layerwise.data.digits import load_digits_5k
from layerwise.finetune.label_efficiency import Classifier, split_digits
from layerwise.serialization import save

SEED = 3  # not 0, so that a split rebuilt with a default seed would be caught


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A `tiny` run on the whole 4,000-image training split (one epoch, about a second)."""
    out = tmp_path_factory.mktemp("runs")
    assert main(["train", "--model", "tiny", "--seed", str(SEED), "--epochs", "1", "--set",
                 "train_subset=4000", "--no-progress", "--no-card", "--out", str(out),
                 "--name", "source"]) == 0
    return out / "source"


def _sha1s(images):
    return {hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest() for im in images}


def test_finetune_test_images_are_disjoint_from_the_source_training_split(source_run,
                                                                            tmp_path, capsys):
    assert main(["finetune", str(source_run), "--data", "digits:5-9", "--labels-per-class", "2",
                 "--epochs", "1", "--min-steps", "3", "--out", str(tmp_path),
                 "--name", "ft"]) == 0
    out = capsys.readouterr().out
    assert "none of them among the 4,000" in out
    # the tiny source trained on every digit: 5-9 among them, and the command says so
    assert "note: the source run trained on 2,000 labelled images of digits:5-9" in out
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    images, labels = load_digits_5k()
    tested = np.asarray(metrics["test_indices"])
    # the source run's training split, as `layerwise train --seed 3` made it
    source_train = digits_splits(seed=SEED, fractions=(0.8, 0.1, 0.1))["train"]
    trained = _sha1s(source_train.tensors[0].data)
    assert len(trained) == len(source_train) == 4000
    assert not _sha1s(images[tested]) & trained
    assert metrics["test_overlap_with_source_train"] == 0
    assert metrics["test_images"] == len(tested) == len(set(tested.tolist()))
    # the few labels come from images the source never saw either, apart from the test ones
    pool = np.asarray(metrics["pool_indices"])
    assert not _sha1s(images[pool]) & trained
    assert not set(pool.tolist()) & set(tested.tolist())
    # each digit keeps 100 images out of the 4,000 (val and test): 2 for the labels, 98 to test
    assert np.bincount(labels[tested], minlength=10).tolist() == [0] * 5 + [98] * 5
    assert np.bincount(labels[pool], minlength=10).tolist() == [0] * 5 + [2] * 5
    assert metrics["source_trained_on_target_class_images"] == 2000
    # the fixed draw of the test images before this check: most were training images
    naive = split_digits(images, labels, pretrain_classes=[0, 1, 2, 3, 4])["test_indices"]
    assert len(_sha1s(images[naive]) & trained) > 250


def test_more_labels_than_the_unseen_images_hold_is_refused(source_run, tmp_path, capsys):
    # 100 unseen images of each digit cannot give 90 labels and 20 test images
    assert main(["finetune", str(source_run), "--data", "digits:5-9", "--labels-per-class",
                 "90", "--out", str(tmp_path), "--name", "ft"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: digit 5 has 100 images the source model did not train on; "
                          "90 labels per class and a test set of at least 20 need 110")
    assert err.count("\n") == 1 and not (tmp_path / "ft").exists()


def _label_efficiency_source(tmp_path, data):
    lw.manual_seed(0)
    run = tmp_path / "le-source"
    run.mkdir()
    save(Classifier("mlp", num_classes=5, width=16).state_dict(), run / "model.safetensors")
    (run / "config.json").write_text(json.dumps(
        {"model": {"arch": "mlp", "width": 16, "num_classes": 5}, **data}))
    return run


def test_classes_the_source_trained_on_entirely_cannot_be_tested(tmp_path, capsys):
    run = _label_efficiency_source(tmp_path, {"data": {"pretrain_classes": [0, 1, 2, 3, 4]}})
    assert main(["finetune", str(run), "--data", "digits:0-9", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: digit 0 has 0 images") and err.count("\n") == 1


def test_a_source_that_does_not_say_what_it_trained_on_is_refused(tmp_path, capsys):
    run = _label_efficiency_source(tmp_path, {})
    assert main(["finetune", str(run), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "pretrain_classes" in err and err.startswith("error:") and err.count("\n") == 1
