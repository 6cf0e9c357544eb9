"""``layerwise finetune RUN --data digits:5-9 --labels-per-class N --freeze "features.*"``:
fine-tune a trained image run on a few labels per class, optionally against the same
architecture trained from scratch on the same labels.

    layerwise finetune runs/label-efficiency-... --data digits:5-9 --labels-per-class 10 50 \\
        --seeds 0 1 2 --compare-scratch
    layerwise finetune runs/mlp-2025... --data digits:0-9 --labels-per-class 20 --freeze "1.*"

RUN is a run directory with config.json and model.safetensors: a ``layerwise train`` image run
or a label-efficiency run. Its last Linear layer (or ``--head``) is replaced by a new one with
one output per class of ``--data``. The few labels and the test images (up to 100 per class)
are never images the source run trained on: its training split is rebuilt from its
config.json and compared by content, and metrics.json records the overlap (0), both sets'
indices, and how many images of the target classes the source trained on (when it did, the
gain over scratch is not a few-label gain, and the command says so). The new run
directory holds model.safetensors (the model fine-tuned on the largest N, first seed),
config.json, metrics.json with the accuracy table, and report/label_efficiency.{md,png}.
"""

import os
import sys
import time

from layerwise.cli.argtypes import (
    MAX_EPOCHS, MAX_LABELS_PER_CLASS, MAX_SEED, MAX_TRAIN_STEPS, int_in_range, positive_float,
)


def add_parser(subparsers):
    p = subparsers.add_parser(
        "finetune", help="fine-tune a trained image run on a few labels per class",
        description="Fine-tune RUN's model on N labelled images per class of --data, with a "
                    "new head; report test accuracy (mean +- std over seeds).")
    p.add_argument("run", metavar="RUN", help="the source run directory")
    p.add_argument("--data", default="digits:5-9", metavar="SPEC",
                   help="digits[:CLASSES], e.g. digits:5-9 or digits:1,7 (default: digits:5-9); "
                        "the labels and up to 100 test images per class are drawn from "
                        "images the source run did not train on")
    p.add_argument("--labels-per-class", type=int_in_range(1, MAX_LABELS_PER_CLASS), nargs="+",
                   default=[10], metavar="N",
                   help="labelled training images per class (several: a table)")
    p.add_argument("--freeze", action="append", default=[], metavar="PATTERN",
                   help='glob of parameter names to keep fixed, e.g. "features.*" (repeatable)')
    p.add_argument("--head", metavar="NAME", help="module to replace (default: the last Linear)")
    p.add_argument("--features-lr-decay", type=positive_float, metavar="D",
                   help="train all but the head at lr / D (discriminative learning rates)")
    p.add_argument("--compare-scratch", action="store_true",
                   help="also train the architecture from scratch on the same labels")
    p.add_argument("--seeds", type=int_in_range(0, MAX_SEED), nargs="+", default=[0],
                   metavar="S")
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--epochs", type=int_in_range(1, MAX_EPOCHS), default=10)
    p.add_argument("--min-steps", type=int_in_range(1, MAX_TRAIN_STEPS), default=150)
    p.add_argument("--out", default="runs", metavar="DIR", help="where the new run goes")
    p.add_argument("--name", metavar="NAME", help="the new run's directory name")
    p.set_defaults(handler=run)
    return p


def parse_classes(spec):
    """"digits" -> 0..9; "digits:5-9" -> 5..9; "digits:1,7" -> [1, 7]."""
    source, colon, classes = spec.partition(":")
    if source != "digits":
        raise ValueError(f"--data {spec!r}: the source must be 'digits' (the shipped 5k MNIST "
                         f"sample), e.g. digits:5-9")
    if not colon:
        return list(range(10))
    out = set()
    for part in classes.split(","):
        lo, _, hi = (text.strip() for text in part.partition("-"))
        hi = hi or lo
        if not (lo.isdecimal() and hi.isdecimal()):
            raise ValueError(f"--data {spec!r}: classes must look like 5-9 or 1,7")
        lo, hi = int(lo), int(hi)
        if max(lo, hi) > 9:  # checked before a range of that size is made
            raise ValueError(f"--data {spec!r}: digit classes are 0-9")
        if hi < lo:
            raise ValueError(f"--data {spec!r}: the range {part} runs backwards; write "
                             f"{hi}-{lo}")
        out.update(range(lo, hi + 1))
    if len(out) < 2:
        raise ValueError(f"--data {spec!r}: need at least 2 digit classes within 0-9")
    return sorted(out)


def _label_efficiency_model():
    from layerwise.limits import MAX_WIDTH, Choice, Int

    return {"arch": Choice(("mlp", "cnn")), "num_classes": Int(2, 10), "width": Int(1, MAX_WIDTH)}


def load_source(run_dir):
    """(build: () -> fresh model of the run's architecture, state dict, default head name)."""
    from layerwise.finetune.label_efficiency import Classifier
    from layerwise.nn.linear import Linear
    from layerwise.serialization import load
    from layerwise.train.checkpoint import load_run_weights, read_json
    from layerwise.errors import BadFileError
    from layerwise.limits import check_settings
    from layerwise.train.recipes import check_run_config

    config_path = os.path.join(run_dir, "config.json")
    config = read_json(config_path, "the run's config")
    weights = os.path.join(run_dir, "model.safetensors")
    if not os.path.isfile(weights):
        raise ValueError(f"{run_dir} has no model.safetensors: is the run finished?")
    if isinstance(config, dict) and isinstance(config.get("model"), dict) \
            and "arch" in config["model"]:
        spec = config["model"]
        check_settings(_label_efficiency_model(), spec, error=BadFileError,
                       where=f"{config_path} model")

        def build():
            return Classifier(spec["arch"], spec["num_classes"], spec["width"])
    else:
        recipe = check_run_config(config, config_path)  # before a crafted size is built
        if recipe.task.kind != "image":
            raise ValueError(f"{run_dir} is a {recipe.task.kind!r} run; finetune takes image "
                             f"classifier runs")
        if config["data"].get("source") == "user":
            raise ValueError(f"{run_dir} trained on {config['data'].get('path')!r}; finetune "
                             f"takes runs on the shipped digits or MNIST, whose other digits it "
                             f"fine-tunes on")

        def build():
            return recipe.build(config["hyperparameters"], 1, None).model
    model = load_run_weights(build(), weights)  # weights of another model fail here, not mid-way
    linears = [name for name, m in model.named_modules() if isinstance(m, Linear)]
    return build, load(weights), linears[-1] if linears else None


def run(args):
    from layerwise.errors import LayerwiseError

    try:
        return _run(args)
    except (ValueError, FileNotFoundError, OSError, LayerwiseError) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1


def _run(args):
    from layerwise.backend import xp
    from layerwise.data.digits import load_digits_5k
    from layerwise.finetune import label_efficiency as le
    from layerwise.finetune.source_data import image_hashes, source_training_hashes
    from layerwise.finetune.freeze import match_parameters
    from layerwise.serialization import save
    from layerwise.train.checkpoint import RunError, create_run_dir, read_json, write_json

    if not os.path.isdir(args.run):
        raise ValueError(f"RUN {args.run!r} is not a directory; pass a run directory such as "
                         f"runs/label-efficiency-...")
    classes = parse_classes(args.data)
    try:
        build, state, default_head = load_source(args.run)
    except RunError as err:
        raise ValueError(str(err)) from None
    head = args.head or default_head
    if args.freeze:
        match_parameters(build(), args.freeze)  # a pattern that matches nothing fails now
    images, labels = load_digits_5k()
    others = [c for c in range(10) if c not in classes]
    # The test images must be ones the source model never trained on, or the fine-tune's
    # accuracy measures memory: its training split, rebuilt as the run built it, by content.
    trained = source_training_hashes(args.run, read_json(
        os.path.join(args.run, "config.json"), "the run's config"))
    hashes = image_hashes(images)
    seen_in_source = xp.array([h in trained for h in hashes], dtype=bool)
    data = le.split_digits(images, labels, pretrain_classes=others, seen_by_source=seen_in_source,
                           pool_per_class=max(args.labels_per_class))
    test_indices, pool_indices = data["test_indices"], data["pool_indices"]
    overlap = sum(hashes[i] in trained for i in test_indices.tolist() + pool_indices.tolist())
    if overlap:  # split_digits keeps them out; this is the check that it did
        raise RuntimeError(f"{overlap} fine-tuning images are among the source run's training "
                           f"images")
    print(f"test: {len(test_indices)} images of {args.data}; labels drawn from "
          f"{len(pool_indices)} others; none of them among the {len(trained):,} distinct "
          f"images the source run trained on (by content hash)")
    target = xp.isin(labels, xp.asarray(classes))
    source_labels = int((seen_in_source & target).sum())
    if source_labels:
        print(f"note: the source run trained on {source_labels:,} labelled images of "
              f"{args.data}: the fine-tuned model's lead over scratch counts what it learned "
              f"from them, not from the few labels alone")
    # Made before the training, so that a taken --name fails first; removed if training fails.
    run_dir = create_run_dir(args.out, args.name or f"finetune-{time.strftime('%Y%m%d-%H%M%S')}",
                             explicit=args.name is not None)
    try:
        results, keep, seconds = _fine_tune(args, build, state, head, data, classes)
    except BaseException:
        os.rmdir(run_dir)
        raise
    save(keep.state_dict(), os.path.join(run_dir, "model.safetensors"),
         metadata={"source_run": os.path.abspath(args.run)})
    summary = le.write_report({"results": results, "arch": os.path.basename(args.run),
                               "seeds": args.seeds}, run_dir,
                              title=f"{args.data}: fine-tuned from {os.path.basename(args.run)}")
    config = {k: v for k, v in vars(args).items() if k != "handler"}
    config.update(source_run=os.path.abspath(args.run), classes=classes, head=head,
                  num_classes=len(classes))
    write_json(os.path.join(run_dir, "config.json"), config)
    write_json(os.path.join(run_dir, "metrics.json"), {
        "table": {str(n): row for n, row in summary.items()},
        "test_accuracy": summary[args.labels_per_class[-1]]["fine-tuned"]["mean"],
        "test_images": len(test_indices),
        "test_overlap_with_source_train": overlap,
        "pool_images": len(pool_indices),
        "source_trained_on_target_class_images": source_labels,
        "source_train_images": len(trained),
        "test_indices": test_indices.tolist(),  # into the shipped 5k digits
        "pool_indices": pool_indices.tolist(),
        "seconds": seconds})
    print(le.table_markdown(summary))
    print(f"run: {run_dir}")
    return 0


def _fine_tune(args, build, state, head, data, classes):
    """({N: {method: [accuracy per seed]}}, the model to keep, seconds)."""
    from layerwise.finetune import label_efficiency as le

    methods = ["fine-tuned"] + (["scratch"] if args.compare_scratch else [])
    results = {n: {m: [] for m in methods} for n in args.labels_per_class}
    keep, t0 = None, time.perf_counter()
    for n in args.labels_per_class:
        for seed in args.seeds:
            x, y = le.sample_per_class(*data["pool"], n, seed)
            for method in methods:
                model = le.adapt(build, state, x, y, len(classes), head=head,
                                 scratch=method == "scratch", freeze_patterns=args.freeze,
                                 features_lr_decay=args.features_lr_decay, lr=args.lr,
                                 epochs=args.epochs, min_steps=args.min_steps, seed=seed)
                acc = le.accuracy(model, *data["test"])
                results[n][method].append(acc)
                print(f"{n:4d}/class  seed {seed}  {method:10s}  test accuracy {acc:.4f}")
                if method == "fine-tuned" and seed == args.seeds[0]:
                    keep = model  # the largest N's wins: the loop ends on it
    return results, keep, round(time.perf_counter() - t0, 2)
