"""The tour as a whole: every example script is run by a test, and docs/tour.md shows every
picture that a script writes, in the scripts' order."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
TOUR = REPO / "docs" / "tour.md"


def tour_scripts():
    return sorted(p.name for p in EXAMPLES.glob("[0-9][0-9]_*.py"))


def test_there_are_nine_steps_numbered_in_order():
    numbers = [int(name[:2]) for name in tour_scripts()]
    assert numbers == list(range(1, 10))


def test_every_example_is_run_by_a_test():
    tests = "".join(p.read_text() for p in Path(__file__).parent.glob("test_tour_*.py"))
    run = set(re.findall(r'"(\d\d_\w+\.py)"', tests))
    assert set(tour_scripts()) <= run, set(tour_scripts()) - run


def test_the_tour_shows_each_scripts_picture_in_order():
    text = TOUR.read_text()
    shown = re.findall(r"!\[[^\]]*\]\(tour/(\d\d_\w+)\.png\)", text)
    assert shown == [name[:-3] for name in tour_scripts()]
    for name in shown:
        picture = REPO / "docs" / "tour" / f"{name}.png"
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", picture
    for name in tour_scripts():  # and says how to run it
        assert f"uv run python examples/{name}" in text, name
