"""``layerwise audit-data [RUN]``: check the data before (or after) training.

    layerwise audit-data                      # the shipped digits, split with seed 0
    layerwise audit-data runs/mlp-...         # the splits of a run
    layerwise audit-data --label-issues --folds 5 --near-threshold 0.15 --json data_audit.json

Reports exact and near copies of test/validation examples in train and of test examples in
validation (the pairs), duplicates and conflicting labels within each split, class balance,
drift between train and test (per-pixel KS and a domain classifier's 2*AUC - 1), and with
``--label-issues`` the label-issue candidates of the training split by confident learning on
cross-validated probabilities. Exits 1 when test examples leak into training or validation.

For a table run it reports the rows of one split that are exact copies of a row of another
(features, target and groups), and exits 1 when more of them than chance explains (1%) leak.

For a language-model run (gpt, lstm, bert) it reports the held-out sequences found in the
training split, whole or as most of their 13-token n-grams, the share of all held-out
n-grams that occur in the training text, and identical sequences within each split; it
exits 1 when held-out sequences are copies.
"""

import json
import sys

from layerwise.cli.argtypes import MAX_FOLDS, MAX_SEED, int_in_range
from layerwise.cli.audit import resolve_run


def add_parser(subparsers):
    p = subparsers.add_parser(
        "audit-data", help="contamination, duplicates, balance, label issues and drift",
        description="Check a run's data splits (or the default digits splits) for leaks "
                    "and other problems.")
    p.add_argument("run", metavar="RUN", nargs="?",
                   help="a run directory (default: the shipped digits, split with --seed)")
    p.add_argument("--seed", type=int_in_range(0, MAX_SEED), default=0, metavar="N",
                   help="split seed when no RUN is given (default: 0)")
    p.add_argument("--near-threshold", type=float, default=None, metavar="X",
                   help="RMS distance between standardised examples below which two are near "
                        "copies (default: 0.15, i.e. correlation above 0.989)")
    p.add_argument("--label-issues", action="store_true",
                   help="also rank label-issue candidates in train (cross-validated, slower)")
    p.add_argument("--folds", type=int_in_range(1, MAX_FOLDS), default=5, metavar="K",
                   help="cross-validation folds for --label-issues (default: 5)")
    p.add_argument("--json", metavar="FILE", help="also write the full report as JSON")
    p.add_argument("--out", default="runs", metavar="DIR",
                   help="where to look for RUN given by name (default: runs)")
    p.set_defaults(handler=run)
    return p


def _splits(args, loaded=None):
    from layerwise.audit.report import split_arrays
    from layerwise.data import digits_splits

    if loaded is None:
        splits = digits_splits(seed=args.seed, fractions=(0.8, 0.1, 0.1))
    else:
        splits = loaded.splits
    return {name: split_arrays(ds) for name, ds in splits.items()}


def audit_table_data(loaded):
    """The data report of a table run: exact copies of rows between its splits
    (layerwise.audit.table_checks); the copies above the share that chance explains leak."""
    from layerwise.audit.table_checks import table_copies

    copies = table_copies(loaded.splits)
    return {"kind": "table", "copies": copies.to_dict(),
            "leaked": sum(len(pair.rows) for pair in copies.refused)}


def _print_table_report(report):
    """Print a table run's data report; returns the number of leaked held-out rows."""
    copies = report["copies"]
    print(copies["message"] or "table: no row of one split is an exact copy of a row of "
                               "another")
    return report["leaked"]


def audit_text_data(loaded):
    """The data report of a language-model run: exact and near (n-gram) copies of the
    held-out sequences in the training split, and duplicate sequences within each split."""
    from layerwise.audit import text_checks as tc

    rows = tc.split_rows(loaded)
    report = {"kind": "text", "task": loaded.kind, "ngram": tc.NGRAM,
              "near_overlap": tc.NEAR_OVERLAP, "contamination": {}, "duplicates": {}}
    for name, split in rows.items():
        if name != "train":
            report["contamination"][name] = dict(tc.text_contamination(
                rows["train"], split, other_name=name).to_dict(), reference="train")
        report["duplicates"][name] = {"duplicate_groups": tc.duplicate_rows(split)}
    return report


def _print_text_report(report):
    """Print a language-model run's data report; returns the number of leaked sequences."""
    for c in report["contamination"].values():
        name, ref = c["other"], c["reference"]
        print(f"{name} sequences in {ref}: {c['n_leaked']} of {c['n_other']} "
              f"({len(c['exact_pairs'])} exact, {len(c['near_rows'])} near: at least "
              f"{c['near_overlap']:.0%} of their {c['ngram']}-token n-grams in {ref}); "
              f"{c['ngram_share_in_train']:.2%} of all {name} {c['ngram']}-grams occur in {ref}")
        for i, j in c["exact_pairs"][:5]:
            print(f"  exact: {ref}[{i}] == {name}[{j}]")
        for j, share in c["near_rows"][:5]:
            print(f"  near:  {name}[{j}] ({share:.0%} of its n-grams in {ref})")
    for name, d in report["duplicates"].items():
        print(f"{name}: {len(d['duplicate_groups'])} groups of identical sequences")
    return sum(c["n_leaked"] for c in report["contamination"].values())


def audit_scene_data(loaded, near_threshold=None):
    """The data report of a detection or segmentation run: copies of scenes between its
    splits, duplicate scenes, drift, and the balance of its objects' classes (a detection
    run's boxes, a segmentation run's classes by the scenes they appear in)."""
    from layerwise.audit import data_checks as dc
    from layerwise.backend import xp
    from layerwise.train.recipes.scenes import arrays, unpacked_objects

    splits = {name: arrays(ds) for name, ds in loaded.splits.items()}
    # one label for every scene: copies are copies whatever their objects
    one_class = {name: (x, xp.zeros(len(x), xp.int64)) for name, (x, _) in splits.items()}
    report = audit_data(one_class, near_threshold)
    k = len(loaded.info["classes"])
    for name, (_, target) in splits.items():
        if loaded.kind == "detect":
            labels = [label for _, found in unpacked_objects(target) for label in found]
        else:  # each class once per scene it appears in (mask value class + 1)
            labels = [value - 1 for mask in target for value in set(mask.ravel().tolist())
                      if value > 0]
        report["balance"][name] = dc.class_balance(xp.asarray(labels, dtype=xp.int64), k)
    report["balance_of"] = "objects" if loaded.kind == "detect" else "scenes with each class"
    return report


def audit_data(splits, near_threshold=None, label_issues=False, folds=5):
    """The data report of {'train': (x, y), 'val': ..., 'test': ...} as a dict."""
    from layerwise.audit import data_checks as dc

    thr = dc.NEAR_THRESHOLD if near_threshold is None else near_threshold
    x_tr, y_tr = splits["train"]
    k = int(max(int(y.max()) for _, y in splits.values()) + 1)
    report = {"near_threshold": thr, "contamination": {}, "duplicates": {}, "balance": {}}
    for name, (x, y) in splits.items():
        if name != "train":
            report["contamination"][name] = dict(dc.check_contamination(
                x_tr, x, near_threshold=thr, other_name=name).to_dict(), reference="train")
        d = dc.find_duplicates(x, y)
        report["duplicates"][name] = {"duplicate_groups": d["duplicate_groups"],
                                      "conflicting_groups": d["conflicting_groups"]}
        report["balance"][name] = dc.class_balance(y, k)
    if "val" in splits and "test" in splits:
        # a test image copied into validation inflates the scores that pick the model
        report["contamination"]["test_in_val"] = dict(dc.check_contamination(
            splits["val"][0], splits["test"][0], near_threshold=thr, other_name="test")
            .to_dict(), reference="val")
    if "test" in splits:
        drift = dc.drift_report(x_tr, splits["test"][0])
        report["drift_train_test"] = {key: drift[key] for key in
                                      ("ks_max", "top_features", "domain_auc", "domain_score")}
    if label_issues:
        if folds < 2:
            raise ValueError(f"--folds must be at least 2, got {folds}")
        probs = dc.cross_val_probs(x_tr, y_tr, k, folds=folds)
        issues = dc.find_label_issues(probs, y_tr)
        issues["method"] += f" ({folds}-fold cross-validated softmax regression)"
        report["label_issues_train"] = issues
    return report


def run(args):
    from layerwise.audit.report import load_run
    from layerwise.train.checkpoint import RunError
    from layerwise.train.rundir import check_output_file

    if args.json:
        check_output_file(args.json, "--json")  # before the audit, not after it
    if args.label_issues and args.folds < 2:
        print(f"error: --folds must be at least 2, got {args.folds}", file=sys.stderr)
        return 2
    try:
        loaded = None if args.run is None else load_run(resolve_run(args.run, args.out))
        if loaded is not None and loaded.kind == "table":
            for given, option in ((args.near_threshold is not None, "--near-threshold"),
                                  (args.label_issues, "--label-issues")):
                if given:
                    print(f"error: {option} is for image runs; {args.run} is a table run, "
                          f"checked by exact copies of its rows", file=sys.stderr)
                    return 2
            report = audit_table_data(loaded)
        elif loaded is not None and loaded.kind in ("detect", "segment"):
            if args.label_issues:
                print(f"error: --label-issues is for image classifiers; {args.run} is a "
                      f"{loaded.kind!r} run, whose examples have many labels each",
                      file=sys.stderr)
                return 2
            report = audit_scene_data(loaded, args.near_threshold)
        elif loaded is not None and loaded.kind != "image":
            for given, option in ((args.near_threshold is not None, "--near-threshold"),
                                  (args.label_issues, "--label-issues")):
                if given:
                    print(f"error: {option} is for image runs; {args.run} is a language model, "
                          f"checked by exact and n-gram copies of its sequences",
                          file=sys.stderr)
                    return 2
            report = audit_text_data(loaded)
        else:
            report = audit_data(_splits(args, loaded), args.near_threshold, args.label_issues,
                                args.folds)
    except (RunError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if report.get("kind") == "table":
        leaked = _print_table_report(report)
    elif report.get("kind") == "text":
        leaked = _print_text_report(report)
    else:
        leaked = _print_image_report(report)
    if args.json:
        from layerwise.serialization import write_text_atomic

        write_text_atomic(args.json, json.dumps(report, indent=1))
        print(f"wrote {args.json}")
    if leaked:  # a finding, not a mistake: the exit code tells a script, this line a person
        print(f"audit-data: {leaked} held-out examples are copies of training examples "
              f"(listed above)", file=sys.stderr)
        return 1
    return 0


def _print_image_report(report):
    """Print an image run's data report; returns the number of leaked test examples."""
    for c in report["contamination"].values():
        name, ref = c["other"], c["reference"]
        print(f"{name} in {ref}: {c['n_leaked']} of {c['n_other']} ({len(c['exact_pairs'])} "
              f"exact, {len(c['near_pairs'])} near at RMS distance < {c['near_threshold']})")
        for i, j in c["exact_pairs"][:5]:
            print(f"  exact: {ref}[{i}] == {name}[{j}]")
        for i, j, d in c["near_pairs"][:5]:
            print(f"  near:  {ref}[{i}] ~ {name}[{j}] (distance {d:.3f})")
    for name, d in report["duplicates"].items():
        print(f"{name}: {len(d['duplicate_groups'])} duplicate groups, "
              f"{len(d['conflicting_groups'])} with conflicting labels")
    counted = report.get("balance_of", "examples")
    for name, b in report["balance"].items():
        rare = ", ".join(map(str, b["rare_classes"])) or "none"
        print(f"{name} class counts ({counted}) {b['counts']}; rare (< {b['rare_limit']:.3f}): "
              f"{rare}")
    if "drift_train_test" in report:
        dr = report["drift_train_test"]
        print(f"drift train vs test: max KS {dr['ks_max']:.3f}, domain classifier 2*AUC-1 = "
              f"{dr['domain_score']:.3f}")
    if "label_issues_train" in report:
        li = report["label_issues_train"]
        print(f"label-issue candidates in train: {len(li['indices'])} "
              f"(first {li['indices'][:10]}); {li['method']}")
    leaked = sum(report["contamination"].get(key, {}).get("n_leaked", 0)
                 for key in ("test", "test_in_val"))
    return leaked
