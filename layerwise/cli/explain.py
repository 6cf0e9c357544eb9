"""``layerwise explain RUN --index I``: saliency, integrated gradients and (for conv models)
Grad-CAM of test example I, written as PNG images; for a transformer language model, the
attention maps of every layer on validation sequence I.

    layerwise explain runs/cnn-20260101-120000 --index 7 --steps 50

Images go to RUN/explain/ (or --save-dir); the integrated-gradients completeness delta is
printed with the attribution. ``--layer NAME`` picks the conv layer for Grad-CAM.
"""

import base64
import os
import sys

import numpy as np

from layerwise.cli.argtypes import MAX_ATTRIBUTION_STEPS, int_in_range
from layerwise.cli.audit import resolve_run


def add_parser(subparsers):
    p = subparsers.add_parser(
        "explain", help="write explanation images for one test example of a run",
        description="Saliency, integrated gradients and Grad-CAM of one test example.")
    p.add_argument("run", metavar="RUN", help="the run directory (or its name under --out)")
    p.add_argument("--index", type=int, required=True, metavar="I",
                   help="index of the example in the run's test split")
    p.add_argument("--steps", type=int_in_range(1, MAX_ATTRIBUTION_STEPS), default=50,
                   metavar="N",
                   help="integrated-gradients steps (Gauss-Legendre nodes; default: 50)")
    p.add_argument("--target", type=int, metavar="C",
                   help="class to explain (default: the model's prediction)")
    p.add_argument("--layer", metavar="NAME",
                   help="the conv layer for Grad-CAM, by its module name (default: the last "
                        "Conv2d)")
    p.add_argument("--save-dir", metavar="DIR", help="where the PNGs go (default: RUN/explain)")
    p.add_argument("--out", default="runs", metavar="DIR",
                   help="where to look for RUN given by name (default: runs)")
    p.set_defaults(handler=run)
    return p


def _write_png(path, b64):
    from layerwise.serialization import write_bytes_atomic

    # Replaces whatever has the name (a link included) rather than writing through it.
    write_bytes_atomic(path, base64.b64decode(b64))


def run(args):
    from layerwise.audit import explain, plots
    from layerwise.audit.report import load_run, predict_logits, split_arrays
    from layerwise.train.checkpoint import RunError

    run_dir = resolve_run(args.run, args.out)
    if args.save_dir is not None and os.path.exists(args.save_dir) \
            and not os.path.isdir(args.save_dir):
        print(f"error: --save-dir {args.save_dir} is an existing file, not a directory; give "
              "a directory for the PNGs (it is made if missing)", file=sys.stderr)
        return 1
    try:
        loaded = load_run(run_dir)
    except RunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    save_dir = args.save_dir or os.path.join(run_dir, "explain")
    if loaded.kind == "table":
        print(f"error: explain draws maps over images and attention over text; {run_dir} is a "
              f"{loaded.recipe.name!r} run on a table, which has neither", file=sys.stderr)
        return 1
    if loaded.kind in ("detect", "segment"):
        print(f"error: explain draws saliency for image classifiers and attention for text; "
              f"{run_dir} is a {loaded.kind!r} run: `layerwise predict {run_dir} IMAGE` draws "
              f"its answer over an image, and its card shows test scenes", file=sys.stderr)
        return 1
    if loaded.kind != "image":
        for option, value in (("--target", args.target), ("--layer", args.layer)):
            if value is not None:  # attention maps have no class and no conv layer to pick
                print(f"error: {option} {value} is for image classifiers; {run_dir} is a "
                      f"{loaded.recipe.name!r} run, explained by its attention maps: drop "
                      f"{option}", file=sys.stderr)
                return 2
        return _explain_attention(loaded, args.index, save_dir)
    x_te, y_te = split_arrays(loaded.splits["test"])
    if not 0 <= args.index < len(x_te):
        print(f"error: --index {args.index} is outside the test split; use 0 to "
              f"{len(x_te) - 1}", file=sys.stderr)
        return 1
    if args.steps < 1:
        print(f"error: --steps must be >= 1, got {args.steps}", file=sys.stderr)
        return 2
    x = np.ascontiguousarray(x_te[args.index:args.index + 1])
    pred = int(predict_logits(loaded.model, x).argmax(1)[0])
    target = pred if args.target is None else args.target
    k = predict_logits(loaded.model, x).shape[1]
    if not 0 <= target < k:
        print(f"error: --target {target} is not a class; use 0 to {k - 1}", file=sys.stderr)
        return 1
    convs = [(n, m) for n, m in loaded.model.named_modules() if type(m).__name__ == "Conv2d"]
    if args.layer is not None and args.layer not in dict(convs):
        print(f"error: --layer {args.layer!r} is not a Conv2d of {loaded.recipe.name!r}; its "
              f"conv layers are {[n for n, _ in convs]}", file=sys.stderr)
        return 1
    os.makedirs(save_dir, exist_ok=True)
    title = f"#{args.index} y={int(y_te[args.index])} p={pred} explain {target}"
    sal = explain.saliency(loaded.model, x, target)
    attr, delta, f_diff = explain.integrated_gradients(loaded.model, x, target,
                                                       n_steps=args.steps)
    written = []
    for name, amap in (("saliency", sal), ("integrated_gradients", attr)):
        path = os.path.join(save_dir, f"{args.index}_{name}.png")
        _write_png(path, plots.image_grid([x[0]], [[amap[0]]], [title],
                                          row_labels=["input", name.replace("_", "\n")]))
        written.append(path)
    if convs:
        layer = args.layer if args.layer is not None else convs[-1][0]
        cam = explain.grad_cam(loaded.model, dict(convs)[layer], x, target)
        path = os.path.join(save_dir, f"{args.index}_grad_cam.png")
        _write_png(path, plots.image_grid([x[0]], [[cam[0]]], [title], cmap="jet",
                                          row_labels=["input", f"Grad-CAM\n{layer}"]))
        written.append(path)
    rel = abs(delta[0]) / max(abs(f_diff[0]), 1e-12)
    print(f"example {args.index}: label {int(y_te[args.index])}, predicted {pred}, explaining "
          f"class {target}")
    print(f"integrated gradients ({args.steps} steps): completeness delta {delta[0]:.3g} "
          f"({rel:.2%} of F(x) - F(baseline) = {f_diff[0]:.4g})")
    if convs:
        print(f"Grad-CAM of conv layer {layer!r}")
    for path in written:
        print(f"wrote {path}")
    return 0


def _explain_attention(loaded, index, save_dir):
    """Attention maps (mean over heads, one panel per layer) of validation sequence ``index``."""
    from layerwise.audit import explain, plots
    from layerwise.audit.report import attention_example, split_arrays
    from layerwise.autograd import Tensor

    modules = [m for _, m in loaded.model.named_modules() if hasattr(m, "store_attn_weights")]
    if not modules:
        print(f"error: explain needs an image classifier or a transformer; "
              f"{loaded.recipe.name!r} is a language model with no attention to show",
              file=sys.stderr)
        return 1
    x_val, _ = split_arrays(loaded.splits["val"])
    if not 0 <= index < len(x_val):
        print(f"error: --index {index} is outside the validation sequences; use 0 to "
              f"{len(x_val) - 1}", file=sys.stderr)
        return 1
    ids, tokens = attention_example(loaded, index)  # (1, T); a BERT piece without its padding
    maps = explain.attention_maps(loaded.model, Tensor(ids))
    os.makedirs(save_dir, exist_ok=True)
    path = os.path.join(save_dir, f"{index}_attention.png")
    _write_png(path, plots.attention_heatmaps(maps, tokens))
    print(f"validation sequence {index}: {len(tokens)} tokens, {len(maps)} attention layers")
    print(f"wrote {path}")
    return 0
