"""Tour scripts 04-06 in quick mode: each idea must show in the figures the script prints.

04 gradient descent: a too-small rate stays high, a too-large one ends worse than the right
one (NaN counts as worse), a smaller batch goes further in the same epochs, and warm-up with
clipping rescues a fast rate. 05 splits: validation loss turns up before the last epoch, early
stopping lowers the test loss, a leak raises the test score only on the leaked examples, and
the contamination check finds exactly the copies. 06 data: more data helps and a bigger model
on a tenth of it does not catch up.
"""

import math

from tests.examples.tour_runner import run_example

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def figures(out):
    """{name: float} from the script's `name: value` lines (nan and inf parse as floats)."""
    found = {}
    for line in out.splitlines():
        name, sep, value = line.rpartition(": ")
        if not sep:
            continue
        try:
            found[name] = float(value.split()[0])
        except (ValueError, IndexError):
            continue
    return found


def worse(a, b):
    """a is a higher loss than b, a NaN or inf loss being the worst of all."""
    return not math.isfinite(a) and math.isfinite(b) or a > b


def assert_picture(tmp_path, name):
    path = tmp_path / f"{name}.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_gradient_descent(tmp_path, monkeypatch, capsys):
    out = run_example("04_gradient_descent.py", tmp_path, monkeypatch, capsys)
    f = figures(out)
    small, right, large = (f[f"lr {lr} final loss"] for lr in ("0.001", "0.1", "1.5"))
    assert math.isfinite(right) and right < small - 0.5, out
    assert small > 2.0 and worse(small, right), out  # ln(10) = 2.30 is chance for 10 digits
    assert worse(large, right), out
    assert worse(f["batch 256 final loss"], f["batch 8 final loss"]), out
    assert worse(f["lr 1.5 final loss"], f["lr 1.5, warm-up + clipping final loss"]), out
    assert math.isfinite(f["lr 1.5, warm-up + clipping final loss"]), out
    assert_picture(tmp_path, "04_gradient_descent")


def test_splits(tmp_path, monkeypatch, capsys):
    out = run_example("05_splits.py", tmp_path, monkeypatch, capsys)
    f = figures(out)
    best, epochs = (int(v) for v in out.split("best validation epoch: ")[1].split()[0:3:2])
    assert 1 <= best < epochs, out  # the validation loss rose again before the end
    assert f["test loss, early stopping"] < f["test loss, last epoch"], out
    assert f["test accuracy, contaminated"] > f["test accuracy, clean"], out
    leaked = f["contaminated test accuracy on the leaked examples"]
    assert leaked >= 0.98 and leaked > f["contaminated test accuracy on the other examples"], out
    assert f["leaked test examples found, clean training set"] == 0, out
    copied = f["test examples copied into training"]
    assert copied > 0 and f["leaked test examples found, contaminated training set"] == copied, out
    assert_picture(tmp_path, "05_splits")


def test_data(tmp_path, monkeypatch, capsys):
    out = run_example("06_data.py", tmp_path, monkeypatch, capsys)
    f = figures(out)
    small = {p: f[f"small model, {p}% of the data test accuracy"] for p in (10, 30, 100)}
    assert small[100] > small[10], out
    assert f["big model, 10% of the data test accuracy"] < small[100], out
    assert 0.1 < f["small model, 100% of the data, 20% labels flipped test accuracy"] <= 1, out
    assert_picture(tmp_path, "06_data")
