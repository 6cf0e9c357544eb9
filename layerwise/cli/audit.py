"""``layerwise audit RUN``: evaluate a trained run per class and per group, calibration,
shift and explanations, print the findings and write card.json + card.html into the run.

    layerwise audit runs/mlp-20260101-120000
    layerwise audit runs/mlp-... --groups groups.csv --group-column writer
    layerwise audit runs/tabular-...                       # by the table's --group columns
    layerwise audit runs/tabular-... --group-column sex    # by one of them

``--groups FILE`` gives one group per test example: one label a line, or a CSV with a header
whose column ``--group-column`` names (default: its first column). A table run is audited by
the group columns it was trained with and their intersections; ``--group-column`` alone picks
one of them, and ``--groups FILE`` adds a column.
"""

import csv
import os
import sys


def add_parser(subparsers):
    p = subparsers.add_parser(
        "audit", help="audit a trained run and write its model card",
        description="Disaggregated metrics with Wilson intervals, by group columns and their "
                    "intersections, calibration, OOD and corruption robustness, explanations; "
                    "writes card.json and card.html.")
    p.add_argument("run", metavar="RUN", help="the run directory (or its name under --out)")
    p.add_argument("--groups", metavar="FILE", help="one group label per test example")
    p.add_argument("--group-column", metavar="NAME",
                   help="the CSV column of --groups holding the group (default: the first); "
                        "without --groups, the one group column of a table run to audit by")
    p.add_argument("--out", default="runs", metavar="DIR",
                   help="where to look for RUN given by name (default: runs)")
    p.set_defaults(handler=run)
    return p


def resolve_run(run, out):
    if not os.path.isdir(run) and os.path.isdir(os.path.join(out, run)):
        return os.path.join(out, run)
    return run


def read_groups(path, column=None):
    """Group labels from a plain list (one a line) or a CSV with a header row."""
    if not os.path.isfile(path):
        raise ValueError(f"--groups file {path!r} does not exist")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise ValueError(f"--groups file {path!r} is not UTF-8 text; give one group label per "
                         f"line, or a CSV with a header row") from None
    if not lines:
        raise ValueError(f"--groups file {path!r} is empty; give one group label per test "
                         f"example, one a line (or a CSV with a header row)")
    if column is None and not any("," in line for line in lines):
        return lines
    rows = list(csv.DictReader(lines))
    header = list(rows[0]) if rows else []
    name = column if column is not None else (header[0] if header else None)
    if name not in header:
        raise ValueError(f"--group-column {name!r} is not a column of {path}; its columns are "
                         f"{header}")
    return [r[name] for r in rows]


def run(args):
    from layerwise.audit.report import build_report
    from layerwise.errors import LayerwiseError

    run_dir = resolve_run(args.run, args.out)
    try:
        groups = columns = None
        if args.groups:
            groups = read_groups(args.groups, args.group_column)
        elif args.group_column:
            columns = [args.group_column]  # a table run's own column; refused for other runs
        card = build_report(run_dir, group_labels=groups, group_name=args.group_column or "group",
                            group_columns=columns)
    except (LayerwiseError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print_summary(card)
    print(f"model card: {os.path.join(run_dir, 'card.html')}")
    return 0


def print_summary(card):
    m = card.get("metrics")
    if not m:
        print("not an image classifier or a table: the card holds the training record only")
        return
    if m["task"] in ("detection", "segmentation"):
        _print_scene_summary(card)
        return
    if m["task"] == "regression":
        r2 = "-" if m["r2"] is None else f"{m['r2']:.4f}"
        print(f"test MAE {m['mae']:.4g} (95% CI {m['mae_ci95'][0]:.4g}-{m['mae_ci95'][1]:.4g}), "
              f"RMSE {m['rmse']:.4g}, R^2 {r2} (n={m['n']})")
    else:
        lo, hi = m["accuracy_ci95"]
        print(f"test accuracy {m['accuracy']:.4f} (95% CI {lo:.4f}-{hi:.4f}, n={m['n']})")
    dis = card["disaggregated"]
    if "headline" in dis:
        print(dis["headline"])
        for w in dis["groups"]["warnings"]:
            print(f"  warning: {w}")
    for key, table in dis.items():
        if not key.startswith("by_"):
            continue
        print(f"accuracy {key.replace('_', ' ')}:")
        for name, r in table["groups"].items():
            a = r["accuracy"]
            print(f"  {name:>10}  n={r['n']:<5} {a['value']:.3f}  [{a['ci'][0]:.3f}, "
                  f"{a['ci'][1]:.3f}]")
        print(f"  largest gap {table['gap']['value']:.3f}, ratio {table['ratio']['value']:.3f}")
        if "fairness" in table:
            f = table["fairness"]
            print(f"  demographic-parity difference {f['demographic_parity_difference']:.3f}, "
                  f"equalized-odds difference {f['equalized_odds_difference']:.3f}")
        for w in table["warnings"]:
            print(f"  warning: {w}")
    c = card["calibration"]
    if c["task"] == "regression":
        print("calibration: " + (c["note"] if not c["intervals"] else
                                 f"interval coverage {c['coverage']['value']:.3f} against a "
                                 f"nominal {c['nominal']:.2f} ({c['verdict']})"))
    elif c["temperature"] is None:
        print(f"calibration: ECE {c['ece']:.4f}, MCE {c['mce']:.4f}")
    else:
        print(f"calibration: ECE {c['ece']:.4f}, MCE {c['mce']:.4f}; temperature "
              f"{c['temperature']:.3f} -> ECE {c['ece_scaled']:.4f}")
    warning = card["intended_use"].get("warning")
    if warning:
        print(f"warning: {warning}")
    if "robustness" not in card:
        return
    ood = card["robustness"]["ood"]
    print(f"OOD AUROC vs uniform noise: max-softmax {ood['auroc_max_softmax']:.3f}, energy "
          f"{ood['auroc_energy']:.3f}")
    cor = card["robustness"]["corruptions"]
    print("accuracy under corruption (severity " + " ".join(map(str, cor["severities"])) + "):")
    for kind, accs in cor.items():
        if kind not in ("clean", "severities", "n", "note"):
            print(f"  {kind:>9}  " + " ".join(f"{a:.3f}" for a in accs))


def _print_scene_summary(card):
    m, dis, c = card["metrics"], card["disaggregated"], card["calibration"]
    if m["task"] == "detection":
        print(f"test mAP@[.5:.95] {m['mAP']:.4f}, AP50 {m['AP50']:.4f}, AP75 {m['AP75']:.4f} "
              f"({m['n_images']} scenes, {m['n']} objects)")
        for row in dis["sizes"]:
            print(f"  {row['label']} ({row['range']}): n={row['n_objects']}, AP {row['AP']:.3f}")
    else:
        print(f"test mIoU {m['mIoU']:.4f}, pixel accuracy {m['pixel_accuracy']:.4f} "
              f"({m['n_images']} scenes)")
    if dis.get("headline"):
        print(dis["headline"])
    for w in dis["warnings"]:
        print(f"  warning: {w}")
    print(f"calibration: ECE {c['ece']:.4f}, MCE {c['mce']:.4f}")
    warning = card["intended_use"].get("warning")
    if warning:
        print(f"warning: {warning}")
