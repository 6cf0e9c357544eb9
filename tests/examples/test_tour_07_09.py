"""The tour's last three scripts, in quick mode: what each idea says must happen, happens.

07: a CNN pre-trained on the digits 0-4 and fine-tuned on 10 labels per class of 5-9 beats the
same CNN trained from scratch on those labels. 08: saliency and Grad-CAM lie on the digit's
ink; a GPT's samples grow more varied with the temperature; a sentence of the search index
finds itself. 09: the worst group's error rate and its Wilson interval (recomputed here from
the formula), temperature scaling of an overconfident model, noise told from digits, the CO2
of the measured energy on the world grid, the FLOPs of a step against the hand count, and
accuracy and file size after pruning and int8.
"""

import math
import re

from tests.examples.tour_runner import run_example

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def figures(out):
    """{name: value} of the ``name: value`` lines a script printed whose value is a number."""
    found = {}
    for line in out.splitlines():
        match = re.fullmatch(r"(.+?): ([-+0-9.eE]+)( \S+)?", line.strip())
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


def texts(out):
    """{name: text} of every ``name: text`` line."""
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


def assert_picture(out, tmp_path, name):
    path = tmp_path / f"{name}.png"
    assert f"picture: {path}" in out.splitlines()
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_fine_tuning_beats_training_from_scratch_on_few_labels(tmp_path, monkeypatch, capsys):
    out = run_example("07_transfer.py", tmp_path, monkeypatch, capsys)
    got = figures(out)
    assert got["pre-trained on digits 0-4, accuracy on them"] >= 0.8
    tuned = got["fine-tuned accuracy at 10 labels per class"]
    scratch = got["from scratch accuracy at 10 labels per class"]
    assert tuned > scratch + 0.02, (tuned, scratch)
    assert_picture(out, tmp_path, "07_transfer")


def test_maps_on_the_ink_samples_by_temperature_and_search(tmp_path, monkeypatch, capsys):
    out = run_example("08_vision_language.py", tmp_path, monkeypatch, capsys)
    got, said = figures(out), texts(out)
    assert got["CNN test accuracy"] >= 0.7  # chance is 0.1
    for method, factor in (("saliency", 2.0), ("Grad-CAM", 1.3)):  # measured: ~3.8, ~1.7
        assert got[f"{method} mean on ink"] > factor * got[f"{method} mean off ink"], method
    entropy = [got[f"character entropy at temperature {t}"] for t in (0.5, 1.0, 1.5)]
    distinct = [got[f"distinct characters at temperature {t}"] for t in (0.5, 1.0, 1.5)]
    assert entropy[0] < entropy[1] < entropy[2]
    assert distinct[0] < distinct[2]
    assert said["search top hit"] == said["search query"]
    paraphrase = "search for 'A traceback object is the stack trace of an exception.'"
    assert said[paraphrase] == "Traceback objects represent a stack trace of an exception."
    assert_picture(out, tmp_path, "08_vision_language")


def wilson(errors, n, z=1.959963984540054):
    """The 95% Wilson score interval of errors / n, from its formula (Wilson 1927)."""
    p = errors / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_the_duties_groups_confidence_ood_cost_compression(tmp_path, monkeypatch, capsys):
    out = run_example("09_duties.py", tmp_path, monkeypatch, capsys)
    got, said = figures(out), texts(out)

    n = int(re.search(r"\(n=(\d+)\)", said["worst group"]).group(1))
    rate, low, high = map(float, re.fullmatch(r"([0-9.]+) \(95% CI ([0-9.]+) to ([0-9.]+)\)",
                                              said["worst group error rate"]).groups())
    want_low, want_high = wilson(round(rate * n), n)
    assert abs(low - want_low) < 1.5e-3 and abs(high - want_high) < 1.5e-3
    assert rate >= got["overall error rate"]
    assert said["worst group"].split(" (n=")[0].replace(", ", " & ") in said["Worst group"]

    assert got["fitted temperature"] > 1  # many passes over few digits: overconfident
    assert got["ECE after temperature scaling"] < got["ECE before temperature scaling"]
    for unknown in ("noise", "shuffled digits"):  # 0.5 is chance
        assert got[f"OOD AUROC, digits vs {unknown} by max softmax"] > 0.7, unknown

    grams = got["training CO2"]
    assert grams > 0
    assert math.isclose(grams, got["training energy"] / 3.6e6 * 481, rel_tol=2e-3)
    batch = 64  # first layer: forward and weight gradient (its input needs none); second: all 3
    hand = batch * (4 * 784 * 128 + 6 * 128 * 10)
    assert hand <= got["FLOPs per training step of 64 digits"] <= 1.03 * hand

    dense, size = got["accuracy dense"], got["file size dense (KB)"]
    assert got["accuracy 50% pruned"] >= dense - 0.03
    assert got["accuracy int8"] >= dense - 0.02
    assert got["file size int8 (KB)"] < size / 3
    assert got["file size 95% pruned (KB)"] < got["file size 80% pruned (KB)"] < size
    assert_picture(out, tmp_path, "09_duties")
