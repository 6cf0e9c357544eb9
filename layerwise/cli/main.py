"""The ``layerwise`` command.

    layerwise train                          # the default recipe on the shipped digits
    layerwise train --model tiny --epochs 1  # another recipe, one setting changed
    layerwise train --resume runs/mlp-...    # continue an interrupted run exactly
    layerwise train --list                   # the recipes, one line each
    layerwise train --model gpt --tokenizer bpe --set n_layer=2   # a language model
    layerwise generate runs/gpt-... --prompt "The "               # continue a prompt

    layerwise train --model tiny --nproc 2   # data-parallel on 2 processes (MPI)

Mistakes a user can fix (a bad option, a missing directory, a damaged checkpoint, a full
disk) print one line ``error: ...`` on stderr and exit with 2 (usage) or 1 (anything else), no
traceback. Anything else is a bug: its traceback, a line asking to report it, and exit 3.
In a job of several processes (mpiexec), the line names the rank (``error: rank 1 of 2:
...``), and a rank that fails ends the whole job, so that the others do not wait for it.
"""

import argparse
import json
import os
import sys
import traceback
import warnings

from layerwise import distributed
from layerwise.cli.argtypes import (
    DEFAULT_IMAGE_SIZE, MAX_BATCH_SIZE, MAX_EPOCHS, MAX_GRID_INTENSITY, MAX_IMAGE_SIZE, MAX_PUE,
    MAX_SEED, MAX_TRAIN_STEPS, MIN_IMAGE_SIZE, MIN_PUE,
    country_code, float_in_range, int_in_range, positive_float,
)
from layerwise.cli.generate import add_generate_parser, generate
from layerwise.errors import LayerwiseError

MAX_PROCESSES = 1_024  # ranks --nproc starts on this machine
# Set by a user who chose the BLAS's thread count; otherwise each rank takes its share of the
# cores, as torchrun sets OMP_NUM_THREADS: two ranks each spinning two BLAS threads on two
# cores ran the tiny recipe's steps 7x slower.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

_RESUME_FORBIDS = ("model", "epochs", "batch_size", "lr", "seed", "data_dir", "name",
                   "tokenizer", "set", "data", "target", "group", "drop", "task", "image_size",
                   "intended_use", "intended_users")
# The recipe `--data PATH` trains when no --model is given, by what PATH holds.
DEFAULT_RECIPE_FOR = {"table": "tabular", "images": "cnn", "text": "gpt", "coco": "detect"}
# Options that only one kind of --data takes.
_TABLE_OPTIONS = ("target", "group", "drop", "task")
_IMAGE_OPTIONS = ("image_size",)
_KIND_NOUN = {"table": "a table", "images": "a folder of images", "text": "text",
              "coco": "a COCO annotation file"}


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line, not argparse's usage block: the usage is a --help away.
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


class UsageError(Exception):
    """A bad combination of options, found after parsing: exit code 2, like argparse's own."""


def _key_value(text):
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:  # not JSON (or an integer of thousands of digits)
        value = raw  # plain text: --set sample_prompt=def
    return key.strip(), value


def build_parser():
    parser = _Parser(prog="layerwise",
                     description="layerwise: deep learning from first principles.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    train = commands.add_parser(
        "train", help="train a recipe, or resume a run",
        description="Train a named recipe into runs/<name>/, or resume one.")
    train.add_argument("--model", metavar="NAME", help="recipe to train (default: mlp; see --list)")
    train.add_argument("--epochs", type=int_in_range(1, MAX_EPOCHS), metavar="N")
    train.add_argument("--batch-size", type=int_in_range(1, MAX_BATCH_SIZE), metavar="N")
    train.add_argument("--lr", type=positive_float, metavar="X", help="peak learning rate")
    train.add_argument("--seed", type=int_in_range(0, MAX_SEED), default=None, metavar="N",
                       help="seed for weights, split, shuffling, dropout (default: 0)")
    train.add_argument("--out", default="runs", metavar="DIR",
                       help="where run directories go (default: runs)")
    train.add_argument("--name", metavar="NAME", help="run directory name (default: RECIPE-TIME)")
    train.add_argument("--data-dir", metavar="DIR",
                       help="train on full MNIST from the IDX files in DIR, not the 5k digits")
    train.add_argument("--data", metavar="PATH",
                       help="train on your own data: a table (CSV, TSV, Parquet), a folder of "
                       "class subfolders of images, a text file or folder of them, a COCO "
                       "annotation file (instances_*.json, images beside it) for detect or "
                       "segment, or a shipped table by name (adult, diabetes, breast_cancer)")
    train.add_argument("--target", metavar="COL", help="tables: the column to predict")
    train.add_argument("--group", action="append", metavar="COL",
                       help="tables: a column of people's groups (sex, race, ...) for the "
                       "audit, not a feature; repeatable, intersections included")
    train.add_argument("--drop", action="append", metavar="COL",
                       help="tables: a column to leave out; repeatable")
    train.add_argument("--task", choices=("classification", "regression"),
                       help="tables: override the task read off the target's values")
    train.add_argument("--image-size", type=int_in_range(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE),
                       metavar="N", help="image folders and COCO files: resize every image to "
                       f"N x N (default: {DEFAULT_IMAGE_SIZE} for folders, the recipe's "
                       "image_size for COCO files)")
    train.add_argument("--intended-use", metavar="TEXT",
                       help="what the model is for and not for: the model card's intended use")
    train.add_argument("--intended-users", metavar="TEXT",
                       help="who the model is made for (e.g. 'students of this course'): the "
                       "model card says so beside the intended use")
    train.add_argument("--tokenizer", choices=("char", "bpe"),
                       help="text recipes: characters (default) or a byte-level BPE of 512 "
                       "tokens trained on the training text")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", type=_key_value,
                       help="set any hyperparameter of the recipe (VALUE read as JSON, else "
                       "as text), e.g. --set n_layer=2; repeatable")
    train.add_argument("--resume", metavar="RUN", help="continue the run in directory RUN "
                       "(or RUN under --out) from its last checkpoint")
    train.add_argument("--checkpoint-every", type=int_in_range(1, MAX_TRAIN_STEPS),
                       metavar="N", help="write the resume checkpoint every N steps "
                       "(default: at the end of each epoch)")
    train.add_argument("--nproc", type=int_in_range(1, MAX_PROCESSES), metavar="N",
                       help="train data-parallel on N processes of this machine, under the "
                       "environment's mpiexec (needs `uv sync --extra mpi`); --batch-size "
                       "stays the global batch")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.add_argument("--list", action="store_true", help="list the recipes and exit")
    train.add_argument("--allow-contamination", action="store_true",
                       help="train even when test examples are copied into the training split")
    train.add_argument("--no-card", action="store_true",
                       help="do not write the model card (card.html, card.json) at the end")
    train.add_argument("--country", type=country_code, metavar="CC",
                       help="grid intensity of this country (ISO code) for the CO2e estimate")
    train.add_argument("--grid-intensity", type=float_in_range(0, MAX_GRID_INTENSITY),
                       metavar="G", help="grid carbon intensity in gCO2e/kWh (overrides "
                       "--country)")
    train.add_argument("--pue", type=float_in_range(MIN_PUE, MAX_PUE), metavar="X",
                       help="data-centre power usage effectiveness, >= 1 (default: 1.0)")
    add_generate_parser(commands)
    # The other commands live in their own modules, each adding its parser with a handler.
    from layerwise.cli import (audit, audit_data, compress, cost, datasets, explain, finetune,
                               predict, report, serve)
    from layerwise.cli import export as export_command

    for module in (audit, audit_data, explain, report, cost, compress, finetune, datasets,
                   serve, export_command, predict):
        module.add_parser(commands)
    return parser


def main(argv=None):
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    args.argv = argv  # what --nproc runs again under mpiexec
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        status = _run_command(args)
    if status and distributed.is_initialized() and distributed.world_size() > 1:
        distributed.abort(status)  # the other ranks would wait for this one until the timeout
    return status


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    # A person reads "warning: ..." once, not Python's two lines with a source path.
    print(f"warning: {_one_line(message)}", file=sys.stderr)


def _run_command(args):
    try:
        if getattr(args, "handler", None) is not None:
            return args.handler(args)
        return generate(args, UsageError) if args.command == "generate" else _train(args)
    except UsageError as err:
        _error(f"{_one_line(err)} (see `layerwise {args.command} --help`)")
        return 2
    except LayerwiseError as err:
        _error(_one_line(err))
        return 1
    except BrokenPipeError:  # `layerwise ... | head`: the reader has gone, as with SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as err:  # a missing file, a permission, a full disk: the machine, not a bug
        _error(_os_error(err))
        return 1
    except MemoryError:
        _error("out of memory; try a smaller --batch-size or model")
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; continue with --resume", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print(f"layerwise {layerwise_version()}: this is a bug in layerwise, not in what you "
              f"typed; please report it with the command you ran", file=sys.stderr)
        return 3


def _error(message):
    print(f"error: {distributed.rank_label()}{message}", file=sys.stderr)


def _one_line(err):
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _os_error(err):
    where = err.filename if err.filename is not None else None
    reason = err.strerror or _one_line(err)
    return f"{where}: {reason}" if where is not None else reason


def layerwise_version():
    from layerwise import __version__

    return __version__


def _train(args):
    if args.nproc is not None and args.nproc > 1 and not distributed.launched():
        from layerwise.distributed.launch import run_under_mpiexec  # before the heavy imports

        return run_under_mpiexec(args.nproc, [sys.executable, "-m", "layerwise.cli", *args.argv])
    _join_the_job(args.nproc)
    from layerwise.train.checkpoint import read_json
    from layerwise.train.recipes import (
        DEFAULT_RECIPE, RECIPES, HyperparameterError, get_recipe,
    )
    from layerwise.audit.cost import run_cost_callback  # what each run costs, on record
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
        metrics = resume_run(run_dir, progress=progress, checkpoint_every=args.checkpoint_every,
                             callbacks=[run_cost_callback])
        recipe = get_recipe(read_json(os.path.join(run_dir, "config.json"), "config")["recipe"])
    else:
        user_data = _user_data(args)
        name = args.model
        if name is None:
            name = DEFAULT_RECIPE if user_data is None else DEFAULT_RECIPE_FOR[user_data["kind"]]
        if name not in RECIPES:
            raise UsageError(
                f"unknown model {name!r}; choose one of: {', '.join(sorted(RECIPES))}")
        recipe = RECIPES[name]
        if user_data is not None:
            _check_recipe_takes(recipe, user_data, RECIPES)
            print(f"data: {args.data} is {user_data['why']}: training {name!r}")
        overrides = _overrides(recipe, args)
        if user_data is not None and user_data["kind"] == "coco" and "image_size" in user_data:
            # the scene recipes' own setting, so that their checks (a multiple of 8 for the
            # detector) hold it before any image is read
            overrides["image_size"] = user_data.pop("image_size")
        try:  # every setting is checked here, before any data is read or directory made
            config = make_config(name, seed=0 if args.seed is None else args.seed,
                                 data_dir=args.data_dir, checkpoint_every=args.checkpoint_every,
                                 data=user_data and _without(user_data, "why"),
                                 intended_use=args.intended_use,
                                 intended_users=args.intended_users, **overrides)
        except HyperparameterError as err:
            given = {key for key, _ in args.set or ()}
            raise UsageError(f"--set {err}" if err.key in given else str(err)) from None
        config["cost"] = {"country": args.country, "grid_intensity": args.grid_intensity,
                          "pue": args.pue or 1.0}
        from layerwise.audit import refuse_contamination

        check = None if args.allow_contamination else refuse_contamination
        run_dir, metrics = start_run(config, out_dir=args.out, name=args.name, progress=progress,
                                     check_data=check, callbacks=[run_cost_callback])
    if distributed.rank() != 0:
        return 0  # rank 0 reports the run and writes its card
    print(f"run: {run_dir}")
    for line in recipe.task.summary(metrics):
        print(line)
    if not args.no_card:
        from layerwise.audit import write_model_card

        card = write_model_card(run_dir)
        print(f"model card: {os.path.join(run_dir, 'card.html')}")
        headline = card.get("disaggregated", {}).get("headline")
        if headline and card["disaggregated"].get("groups"):  # only for groups the user named
            print(headline)
    return 0


def _join_the_job(nproc):
    """Join the MPI job this process belongs to, if mpiexec started it; then only rank 0
    prints (the others' output and warnings would repeat it), and errors name the rank."""
    world = distributed.init()
    if nproc is not None and world != nproc:
        raise UsageError(f"--nproc {nproc} asks for {nproc} processes but mpiexec started "
                         f"{world}; give one of the two")
    if world > 1 and not any(name in os.environ for name in _THREAD_VARIABLES):
        from layerwise.backend import threads

        threads.limit_blas_threads(max(1, (os.cpu_count() or 1) // distributed.local_size()))
    if distributed.rank() != 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the rest of this process)
        warnings.simplefilter("ignore")


def _user_data(args):
    """The --data options as make_config takes them ({"kind", "path", ...}), or None; options
    that the data's kind does not take are refused before anything is read."""
    table_given = [f"--{k.replace('_', '-')}" for k in _TABLE_OPTIONS if getattr(args, k)]
    image_given = [f"--{k.replace('_', '-')}" for k in _IMAGE_OPTIONS
                   if getattr(args, k) is not None]
    if args.data is None:
        if table_given or image_given:
            raise UsageError(f"{_listed(table_given + image_given)} describe your own data; "
                             f"give the data with --data PATH")
        return None
    if args.data_dir is not None:
        raise UsageError("--data-dir (MNIST IDX files) and --data (your own data) are two "
                         "sources; give one")
    from layerwise.data.catalog import shipped_tables
    from layerwise.data.kinds import data_kind

    path, shipped = args.data, None
    if not os.path.exists(path) and path in shipped_tables():  # `--data adult`: a shipped table
        shipped = shipped_tables()[path]
        path = shipped["path"]
    kind, why = data_kind(path)
    if shipped is not None:
        why = f"the shipped table {args.data!r}, {why}"
    wrong = (image_given if kind not in ("images", "coco") else []) + \
        (table_given if kind != "table" else [])
    if wrong:
        raise UsageError(f"{_listed(wrong)} {'does' if len(wrong) == 1 else 'do'} not apply "
                         f"to {args.data!r}, which is {why} ({_KIND_NOUN[kind]})")
    data = {"kind": kind, "path": os.path.abspath(path), "why": why}
    if kind == "table":
        target = args.target if args.target is not None or shipped is None else shipped["target"]
        if target is None:
            raise UsageError(f"{args.data!r} is a table: name the column to predict with "
                             f"--target COL")
        data.update(target=target, groups=list(args.group or ()),
                    drop=list(args.drop or ()), task=args.task)
    if kind == "images":
        data["image_size"] = DEFAULT_IMAGE_SIZE if args.image_size is None else args.image_size
    if kind == "coco" and args.image_size is not None:
        data["image_size"] = args.image_size  # the recipe's image_size (see _train)
    return data


def _listed(options):
    return options[0] if len(options) == 1 else f"{', '.join(options[:-1])} and {options[-1]}"


def _without(mapping, key):
    return {k: v for k, v in mapping.items() if k != key}


def _check_recipe_takes(recipe, user_data, recipes):
    kind = user_data["kind"]
    if kind not in recipe.task.data_kinds:
        fits = sorted(n for n, r in recipes.items() if kind in r.task.data_kinds)
        raise UsageError(f"--model {recipe.name} does not train on {_KIND_NOUN[kind]} "
                         f"({user_data['path']} is {user_data['why']}); for "
                         f"{_KIND_NOUN[kind]} use one of: {', '.join(fits)}")


def _overrides(recipe, args):
    """The hyperparameters the options set; make_config holds them to the recipe's schema."""
    defaults = recipe.defaults
    if args.tokenizer is not None and "tokenizer" not in defaults:
        raise UsageError(f"--tokenizer is for the text recipes; {recipe.name!r} has no tokenizer")
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                 "tokenizer": args.tokenizer}
    for key, value in args.set or ():
        if key not in defaults:
            raise UsageError(f"--set {key}: recipe {recipe.name!r} has no hyperparameter {key!r}; "
                             f"it has {', '.join(sorted(defaults))}")
        default = defaults[key]
        # make_config skips None (keeps the default), so a null that should replace a value
        # would be dropped without a word.
        if value is None and default is not None:
            raise UsageError(f"--set {key}=null: {key} needs a value (default "
                             f"{json.dumps(default)}); use a recipe whose default you want")
        overrides[key] = value
    return overrides


if __name__ == "__main__":
    sys.exit(main())
