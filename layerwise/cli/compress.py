"""``layerwise compress``: a trained run made smaller, written as a new run with a table.

    layerwise compress runs/cnn-... --prune 0.8 --finetune-epochs 3 --quantize int8 \
        --distill-into tiny --out runs/cnn-small
"""

import sys

from layerwise.cli.argtypes import MAX_EPOCHS, int_in_range, positive_float


def _fraction(text):
    import argparse
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1) (0.8 prunes 80%), got {text}")
    return value


def add_parser(subparsers):
    p = subparsers.add_parser(
        "compress", help="prune, distil and quantize a trained run into a new run",
        description="Distil (optional), prune with fine-tuning, quantize to int8; write the "
                    "result as a new run directory and print a before/after table.")
    p.add_argument("run", metavar="RUN", help="a finished image-classification run directory")
    p.add_argument("--out", required=True, metavar="DIR", help="the new run directory")
    p.add_argument("--prune", type=_fraction, metavar="F", help="fraction of weights to zero")
    p.add_argument("--prune-scope", choices=("global", "layer"), default="global")
    p.add_argument("--finetune-epochs", type=int_in_range(0, MAX_EPOCHS), default=0,
                   metavar="N",
                   help="epochs of fine-tuning with the pruning masks held (default: 0)")
    p.add_argument("--quantize", choices=("int8",), help="post-training static int8")
    p.add_argument("--distill-into", metavar="RECIPE", help="an image recipe to distil into")
    p.add_argument("--distill-epochs", type=int_in_range(1, MAX_EPOCHS), default=5,
                   metavar="N")
    p.add_argument("--temperature", type=positive_float, default=4.0, metavar="T")
    p.add_argument("--alpha", type=_fraction, default=0.9, metavar="A",
                   help="weight of the soft (teacher) loss (default: 0.9)")
    p.add_argument("--lr", type=positive_float, default=1e-3, metavar="X",
                   help="fine-tuning learning rate (distillation uses 3x)")
    p.add_argument("--no-card", action="store_true", help="do not write a model card")
    p.set_defaults(handler=run)


def run(args):
    from layerwise.compress.pipeline import compress_run, format_comparison
    from layerwise.train.checkpoint import RunError

    if not (args.prune or args.quantize or args.distill_into):
        print("error: nothing to do: give --prune, --quantize and/or --distill-into",
              file=sys.stderr)
        return 2
    try:
        result = compress_run(args.run, args.out, prune=args.prune, scope=args.prune_scope,
                              finetune_epochs=args.finetune_epochs, quantize=args.quantize,
                              distill_into=args.distill_into, distill_epochs=args.distill_epochs,
                              temperature=args.temperature, alpha=args.alpha, lr=args.lr)
    except RunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_comparison(result["before"], result["after"]))
    print(f"wrote {args.out}")
    if not args.no_card:
        _card(args.out)
    return 0


def _card(out_dir):
    try:
        from layerwise.audit.report import write_model_card
    except ImportError:
        return
    try:
        write_model_card(out_dir)
    except Exception as err:  # the card is a bonus: the compressed run is already written
        print(f"warning: no model card for {out_dir}: {type(err).__name__}: {err}",
              file=sys.stderr)
