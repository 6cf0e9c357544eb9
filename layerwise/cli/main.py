"""The ``layerwise`` command.

    layerwise train                          # the default recipe on the shipped digits
    layerwise train --model tiny --epochs 1  # another recipe, one setting changed
    layerwise train --resume runs/mlp-...    # continue an interrupted run exactly
    layerwise train --list                   # the recipes, one line each

Mistakes a user can fix (a bad option, a missing directory, a damaged checkpoint) print one
line ``error: ...`` on stderr and exit with 2 (usage) or 1 (anything else), no traceback.
Anything else is a bug and keeps its traceback.
"""

import argparse
import os
import sys

_RESUME_FORBIDS = ("model", "epochs", "batch_size", "lr", "seed", "data_dir", "name")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line, not argparse's usage block: the usage is a --help away.
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


class UsageError(Exception):
    """A bad combination of options, found after parsing: exit code 2, like argparse's own."""


def _int_at_least(low):
    # argparse prefixes these messages with "argument --epochs: ".
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            message = f"expected an integer >= {low}, got {text!r}"
            raise argparse.ArgumentTypeError(message) from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def build_parser():
    parser = _Parser(prog="layerwise",
                     description="layerwise: deep learning from first principles.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    train = commands.add_parser(
        "train", help="train a recipe, or resume a run",
        description="Train a named recipe into runs/<name>/, or resume one.")
    train.add_argument("--model", metavar="NAME", help="recipe to train (default: mlp; see --list)")
    train.add_argument("--epochs", type=_int_at_least(1), metavar="N")
    train.add_argument("--batch-size", type=_int_at_least(1), metavar="N")
    train.add_argument("--lr", type=_positive_float, metavar="X", help="peak learning rate")
    train.add_argument("--seed", type=_int_at_least(0), default=None, metavar="N",
                       help="seed for weights, split, shuffling, dropout (default: 0)")
    train.add_argument("--out", default="runs", metavar="DIR",
                       help="where run directories go (default: runs)")
    train.add_argument("--name", metavar="NAME", help="run directory name (default: RECIPE-TIME)")
    train.add_argument("--data-dir", metavar="DIR",
                       help="train on full MNIST from the IDX files in DIR, not the 5k digits")
    train.add_argument("--resume", metavar="RUN", help="continue the run in directory RUN "
                       "(or RUN under --out) from its last checkpoint")
    train.add_argument("--checkpoint-every", type=_int_at_least(1),
                       metavar="N", help="write the resume checkpoint every N steps "
                       "(default: at the end of each epoch)")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.add_argument("--list", action="store_true", help="list the recipes and exit")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    # Imported here so that `layerwise --help` and usage errors answer instantly.
    from layerwise.train.checkpoint import RunError

    try:
        return _train(args)
    except UsageError as err:
        print(f"error: {err} (see `layerwise {args.command} --help`)", file=sys.stderr)
        return 2
    except RunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; continue with --resume", file=sys.stderr)
        return 130


def _train(args):
    from layerwise.train.recipes import DEFAULT_RECIPE, RECIPES
    from layerwise.train.run import make_config, resume_run, start_run

    if args.list:
        width = max(map(len, RECIPES))
        for name, recipe in RECIPES.items():
            default = "  (default)" if name == DEFAULT_RECIPE else ""
            print(f"{name:<{width}}  {recipe.description}{default}")
        return 0
    progress = not args.no_progress

    if args.resume is not None:
        given = [f"--{k.replace('_', '-')}" for k in _RESUME_FORBIDS
                 if getattr(args, k) is not None]
        if given:
            raise UsageError(
                f"--resume continues a run with its saved settings; drop {', '.join(given)}")
        run_dir = args.resume
        if not os.path.isdir(run_dir) and os.path.isdir(os.path.join(args.out, run_dir)):
            run_dir = os.path.join(args.out, run_dir)
        metrics = resume_run(run_dir, progress=progress, checkpoint_every=args.checkpoint_every)
    else:
        recipe = args.model or DEFAULT_RECIPE
        if recipe not in RECIPES:
            raise UsageError(
                f"unknown model {recipe!r}; choose one of: {', '.join(sorted(RECIPES))}")
        config = make_config(recipe, seed=0 if args.seed is None else args.seed,
                             data_dir=args.data_dir, checkpoint_every=args.checkpoint_every,
                             epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
        run_dir, metrics = start_run(config, out_dir=args.out, name=args.name, progress=progress)
    print(f"run: {run_dir}")
    print(f"test accuracy: {metrics['test_accuracy']:.4f}  (val {metrics['val_accuracy']:.4f}, "
          f"{metrics['train_seconds']:.1f} s, {metrics['params']:,} parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
