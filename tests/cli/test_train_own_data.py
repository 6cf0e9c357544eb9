"""`layerwise train --data PATH` on an image folder and on text, end to end through the command:
train, the model card, audit / report, generate, resume; and the one-line refusals of bad data
before anything is trained."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from layerwise.data import folder_fingerprint, python_docs_corpus
from layerwise.train.finished import load_finished_run
from tests.cli.test_cli import assert_one_error_line, run_cli

QUICK = ("--no-progress", "--epochs", "1")


def write_images(root, classes=("cat", "dog"), per_class=10, mode="RGB", seed=0):
    """Class folders of small PNG and JPEG images of varied sizes; each class its own tint, so
    that one epoch can tell them apart."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            shape = (7 + k, 11) if mode == "L" else (7 + k, 11, 3)
            pixels = rng.integers(0, 100, shape) + 120 * c
            suffix = "png" if k % 2 else "jpg"
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{k}.{suffix}")
    return root


def write_text(path, chars=3000):
    path.write_text(python_docs_corpus()[:chars], encoding="utf-8")
    return path


# --- an image folder -------------------------------------------------------------------------


def test_an_image_folder_trains_gets_its_card_and_an_audit(tmp_path, capsys):
    root = write_images(tmp_path / "photos")
    (root / "cat" / "notes.txt").write_text("a stray file")
    out = tmp_path / "runs"
    code, stdout, stderr = run_cli(capsys, "train", "--data", str(root), "--image-size", "9",
                                   "--out", str(out), "--name", "img", "--set", "batch_size=8",
                                   *QUICK)
    assert code == 0, stderr
    assert stdout.startswith(f"data: {root} is 2 class folders of images: training 'cnn'\n")
    assert f"model card: {out / 'img' / 'card.html'}" in stdout
    assert stderr.count("skipped 1 file(s) that are not .png/.jpg/.jpeg images") == 1
    config = json.loads((out / "img" / "config.json").read_text())
    assert config["data"]["classes"] == ["cat", "dog"] and config["data"]["image_size"] == 9
    assert config["data"]["sha256"] == folder_fingerprint(root)
    run = load_finished_run(str(out / "img"))
    assert run.model[0].weight.shape == (32, 3, 3, 3) and run.model[-1].weight.shape == (2, 128)
    assert {name: len(ds) for name, ds in run.splits.items()} == {"train": 16, "val": 2, "test": 2}
    card = json.loads((out / "img" / "card.json").read_text())
    assert card["metrics"]["n"] == 2 and "saliency" in (out / "img" / "card.html").read_text()

    code, stdout, stderr = run_cli(capsys, "audit", str(out / "img"))
    assert code == 0, stderr
    assert "test accuracy" in stdout and "skipped" not in stderr  # reported once, when trained

    # finetune's other digits are no task for photos of cats and dogs
    code, _, stderr = run_cli(capsys, "finetune", str(out / "img"), "--out", str(out))
    assert code == 1
    assert_one_error_line(stderr, f"trained on {str(root)!r}", "the shipped digits or MNIST")

    # An image edited after training: the run's data is not what it was trained on.
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "dog" / "3.png")
    code, _, stderr = run_cli(capsys, "report", str(out / "img"))
    assert code == 1
    assert_one_error_line(stderr, repr(str(root)), "not the ones this run was made with")


def _linear_shapes(run_dir):
    model = load_finished_run(str(run_dir)).model
    return [m.weight.shape for m in model.modules() if type(m).__name__ == "Linear"]


def test_a_grey_folder_trains_an_mlp_and_distils_into_a_student_sized_from_it(tmp_path, capsys):
    root = write_images(tmp_path / "grey", classes=("a", "b", "c"), mode="L")
    out = tmp_path / "runs"
    code, _, stderr = run_cli(capsys, "train", "--data", str(root), "--model", "mlp",
                              "--image-size", "10", "--set", "hidden=[16]", "--no-card",
                              "--out", str(out), "--name", "mlp", *QUICK)
    assert code == 0, stderr
    assert _linear_shapes(out / "mlp") == [(16, 1 * 10 * 10), (3, 16)]
    # The student is built for the run's images too, not for 28 x 28 digits.
    code, _, stderr = run_cli(capsys, "compress", str(out / "mlp"), "--distill-into",
                              "mlp-small", "--distill-epochs", "1", "--no-card", "--out",
                              str(out / "student"))
    assert code == 0, stderr
    assert _linear_shapes(out / "student") == [(128, 100), (3, 128)]


# --- text ------------------------------------------------------------------------------------


def test_a_text_file_trains_generates_and_resumes(tmp_path, capsys):
    text = write_text(tmp_path / "docs.txt")
    out = tmp_path / "runs"
    code, stdout, stderr = run_cli(capsys, "train", "--data", str(text), "--model", "gpt-tiny",
                                   "--set", "sample_tokens=5", "--out", str(out), "--name",
                                   "gpt", *QUICK)
    assert code == 0, stderr
    assert stdout.startswith(f"data: {text} is a .txt file: training 'gpt-tiny'\n")
    run = out / "gpt"
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["source"] == "user" and config["data"]["chars"] == 3000
    assert (run / "card.json").is_file()

    code, stdout, stderr = run_cli(capsys, "generate", str(run), "--prompt", "The ",
                                   "--max-new-tokens", "6")
    assert code == 0, stderr
    assert stdout.startswith("The ") and len(stdout) == len("The ") + 6 + 1

    # Resume a run whose finishing step did not happen: refused while the text differs.
    (run / "metrics.json").unlink()
    shutil.copy(text, tmp_path / "kept.txt")
    text.write_text(text.read_text() + "one more line\n", encoding="utf-8")
    code, _, stderr = run_cli(capsys, "train", "--resume", str(run), "--no-progress",
                              "--no-card")
    assert code == 1
    assert_one_error_line(stderr, repr(str(text)), "is not the one this run was made with",
                          "3,014 characters now, 3,000 then")
    shutil.copy(tmp_path / "kept.txt", text)
    code, _, stderr = run_cli(capsys, "train", "--resume", str(run), "--no-progress",
                              "--no-card")
    assert code == 0, stderr
    assert (run / "metrics.json").is_file()
    assert run_cli(capsys, "report", str(run))[0] == 0


def test_a_folder_of_text_files_trains_an_lstm(tmp_path, capsys):
    folder = tmp_path / "texts"
    folder.mkdir()
    write_text(folder / "b.md", 1500)
    (folder / "a.txt").write_text(python_docs_corpus()[5000:6500], encoding="utf-8")
    out = tmp_path / "runs"
    code, _, stderr = run_cli(capsys, "train", "--data", str(folder), "--model", "lstm-tiny",
                              "--set", "sample_tokens=5", "--no-card", "--out", str(out),
                              "--name", "lstm", *QUICK)
    assert code == 0, stderr
    record = json.loads((out / "lstm" / "config.json").read_text())["data"]
    assert record["files"] == 2 and record["chars"] == 1500 + 2 + 1500
    code, stdout, _ = run_cli(capsys, "generate", str(out / "lstm"), "--prompt", "The ",
                              "--max-new-tokens", "3")
    assert code == 0 and stdout.startswith("The ")


# --- bad data: one line, before a run directory is made ----------------------------------------


def _one_class(tmp_path):
    return write_images(tmp_path / "d", classes=("only",))


def _corrupt_image(tmp_path):
    root = write_images(tmp_path / "d")
    (root / "dog" / "4.jpg").write_bytes((root / "dog" / "4.jpg").read_bytes()[:60])
    return root


def _few_images(tmp_path):
    return write_images(tmp_path / "d", per_class=2)


def _empty_class(tmp_path):
    root = write_images(tmp_path / "d")
    (root / "emu").mkdir()
    return root


def _short_text(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("The short text.", encoding="utf-8")
    return path


def _latin1_text(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("The café".encode("latin-1") * 50)
    return path


def _text_without_the_prompt(tmp_path):
    path = tmp_path / "lower.txt"
    path.write_text("only lower case here. " * 30, encoding="utf-8")
    return path


def _no_paragraph_to_validate(tmp_path):
    path = tmp_path / "para.txt"
    path.write_text("A paragraph." + "\n" * 6, encoding="utf-8")
    return path


@pytest.mark.parametrize("make, args, fragments", [
    (_one_class, (), ["has one class folder ('only')", "at least 2 classes"]),
    (_corrupt_image, (), ["4.jpg: cannot decode the image (truncated or corrupt"]),
    (_few_images, (), ["4 images are too few to split 80%/10%/10%"]),
    (_empty_class, (), ["emu'", "holds no images"]),
    (_short_text, ("--model", "gpt-tiny"),
     ["short.txt' is too short for recipe 'gpt-tiny': 15 characters", "give at least 321"]),
    (_short_text, ("--model", "lstm-tiny", "--tokenizer", "bpe"),
     ["is too short for recipe 'lstm-tiny'", "bpe tokens to train on"]),
    (_latin1_text, ("--model", "gpt-tiny"), ["latin1.txt: not UTF-8 text: byte 7"]),
    (_text_without_the_prompt, ("--model", "gpt-tiny"),
     ["sample_prompt='The '", "--set sample_prompt=TEXT", "'only low'"]),
    (_no_paragraph_to_validate, ("--model", "bert-tiny"),
     ["is too short for recipe 'bert-tiny'", "validation part"]),
])
def test_bad_data_is_one_line_before_any_run(tmp_path, capsys, make, args, fragments):
    path = make(tmp_path)
    out = tmp_path / "runs"
    code, _, stderr = run_cli(capsys, "train", "--data", str(path), *args, "--out", str(out),
                              *QUICK)
    assert code == 1
    assert_one_error_line(stderr, *fragments)
    assert not out.exists() or not any(out.iterdir())
