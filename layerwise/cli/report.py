"""``layerwise report RUN``: (re)write a run's model card, card.json and card.html.

    layerwise report runs/mlp-20260101-120000
"""

import os
import sys

from layerwise.cli.audit import resolve_run


def add_parser(subparsers):
    p = subparsers.add_parser(
        "report", help="write a run's model card (card.json, card.html)",
        description="Evaluate a finished run and write its model card into the run directory.")
    p.add_argument("run", metavar="RUN", help="the run directory (or its name under --out)")
    p.add_argument("--out", default="runs", metavar="DIR",
                   help="where to look for RUN given by name (default: runs)")
    p.set_defaults(handler=run)
    return p


def run(args):
    from layerwise.audit.report import build_report
    from layerwise.train.checkpoint import RunError

    run_dir = resolve_run(args.run, args.out)
    try:
        build_report(run_dir)
    except RunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"model card: {os.path.join(run_dir, 'card.html')} (and card.json)")
    return 0
