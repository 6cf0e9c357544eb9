"""The tour's first three scripts, in quick mode: what each idea says must happen, happens.

01: one unit learns AND but not XOR (no line splits XOR: at most 3 of its 4 corners, 0.75);
a two-layer net learns XOR. 02: a briefly trained CNN is well above chance, and its classes'
separation (between- over within-class variance) grows at every stage from the pixels to the
last hidden layer. 03: the hand-written chain rule agrees with
loss.backward() to float64 rounding and with central finite differences to their truncation
error (~e^2 = 1e-12 relative, plus rounding ~1e-16 / e).
"""

import re

import pytest

from tests.examples.tour_runner import run_example

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def figures(out):
    """{name: value} of the ``name: value`` lines a script printed whose value is a number."""
    found = {}
    for line in out.splitlines():
        match = re.fullmatch(r"(.+?): ([-+0-9.eE]+)", line.strip())
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


def assert_picture(out, tmp_path, name):
    path = tmp_path / f"{name}.png"
    assert f"picture: {path}" in out.splitlines()
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_one_unit_learns_and_but_not_xor_two_layers_learn_xor(tmp_path, monkeypatch, capsys):
    out = run_example("01_unit.py", tmp_path, monkeypatch, capsys)
    got = figures(out)
    assert got["perceptron AND accuracy"] == 1.0
    assert got["perceptron XOR accuracy"] <= 0.75
    assert got["two-layer net XOR accuracy"] == 1.0
    assert_picture(out, tmp_path, "01_unit")


def test_a_file_given_as_the_picture_folder_is_refused(tmp_path, monkeypatch, capsys):
    not_a_folder = tmp_path / "picture.png"
    not_a_folder.write_bytes(b"")
    with pytest.raises(SystemExit) as stop:
        run_example("01_unit.py", tmp_path, monkeypatch, capsys, "--out", str(not_a_folder))
    assert stop.value.code == 2
    assert "is a file; give a folder" in capsys.readouterr().err


def test_depth_separates_the_digit_classes(tmp_path, monkeypatch, capsys):
    out = run_example("02_depth.py", tmp_path, monkeypatch, capsys)
    got = figures(out)
    assert got["test accuracy"] >= 0.5  # chance is 0.1; 20 steps of training
    stages = ["input", "after conv block 1", "after conv block 2", "last hidden layer"]
    separation = [got[f"separation {stage}"] for stage in stages]
    assert 0 < separation[0] < separation[1] < separation[2] < separation[3]
    assert separation[3] > 2 * separation[0]
    assert_picture(out, tmp_path, "02_depth")


def test_backprop_by_hand_matches_backward_and_finite_differences(tmp_path, monkeypatch, capsys):
    out = run_example("03_backprop.py", tmp_path, monkeypatch, capsys)
    got = figures(out)
    assert got["loss by hand"] == pytest.approx(got["loss by layerwise"], abs=2e-6)
    assert got["loss by hand"] > 0.01  # a gradient that is not ~0 everywhere
    assert got["largest difference hand vs backward"] <= 1e-12
    assert got["largest difference hand vs finite differences"] <= 1e-7
    assert_picture(out, tmp_path, "03_backprop")
