"""What every script of the tour (examples/01_*.py to 09_*.py, docs/tour.md) shares: its two
options and where its picture goes. Plotting and argument parsing live here so that each
script shows only the idea it is about.

    uv run python examples/01_unit.py            # full size; the picture goes to docs/tour/
    uv run python examples/01_unit.py --quick    # a few seconds: fewer examples and steps
    uv run python examples/01_unit.py --out DIR  # the picture goes to DIR/01_unit.png
"""

import argparse
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: the tour runs where no display is
import matplotlib.pyplot as plt  # noqa: E402

TOUR_PICTURES = Path(__file__).resolve().parents[1] / "docs" / "tour"
DPI = 100  # a 10 x 4 inch figure is 1000 x 400 pixels, ~50-100 KB as a PNG


def options(script, doc, argv=None):
    """(quick, picture path) from the command line of ``script`` (its __file__ and __doc__)."""
    name = Path(script).stem
    parser = argparse.ArgumentParser(prog=f"examples/{name}.py", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="fewer examples and steps: the same code in seconds (the tests')")
    parser.add_argument("--out", default=str(TOUR_PICTURES),
                        help=f"folder for the picture (default: {TOUR_PICTURES})")
    args = parser.parse_args(argv)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        parser.error(f"--out {args.out!r} is a file; give a folder for the picture")
    os.makedirs(args.out, exist_ok=True)
    return args.quick, Path(args.out) / f"{name}.png"


def save(fig, path):
    """Write ``fig`` to ``path`` as a PNG, close it, and say where it went."""
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    print(f"picture: {path}")
