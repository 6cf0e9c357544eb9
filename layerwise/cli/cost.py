"""``layerwise cost``: FLOPs, parameters and activation memory per layer of a run or recipe.

    layerwise cost runs/mlp-...           # the trained run's model, one training batch
    layerwise cost --model cnn            # a recipe's model, untrained (same FLOPs)
    layerwise cost --model gpt --top 10   # only the 10 costliest layers

Counts one training step at the recipe's batch size: the forward (with the loss) and the
backward it implies. A run that recorded its training cost also prints energy and CO2e.
"""

import json
import os
import sys

from layerwise.cli.argtypes import (
    MAX_BATCH_SIZE, MAX_GRID_INTENSITY, MAX_PUE, MIN_PUE, country_code, float_in_range,
    int_at_least, int_in_range,
)


def add_parser(subparsers):
    p = subparsers.add_parser(
        "cost", help="FLOPs, parameters and activation memory per layer",
        description="Print a per-layer table of FLOPs (forward and backward), parameters and "
                    "activation memory for one training step of a run or a recipe.")
    p.add_argument("run", nargs="?", metavar="RUN", help="a finished run directory")
    p.add_argument("--model", metavar="NAME", help="a recipe name instead of a run")
    p.add_argument("--batch-size", type=int_in_range(1, MAX_BATCH_SIZE), metavar="N",
                   help="batch size to count (default: the recipe's)")
    p.add_argument("--top", type=int_at_least(1), metavar="N",
                   help="show only the N layers with the most forward FLOPs")
    p.add_argument("--by-op", action="store_true", help="also print the totals per op type")
    p.add_argument("--json", action="store_true", help="print the totals as JSON instead")
    p.add_argument("--country", type=country_code, metavar="CC",
                   help="RUN: recompute CO2e for this country's grid (ISO code, e.g. FR)")
    p.add_argument("--grid-intensity", type=float_in_range(0, MAX_GRID_INTENSITY),
                   metavar="G",
                   help="RUN: recompute CO2e at G grams CO2e per kWh")
    p.add_argument("--pue", type=float_in_range(MIN_PUE, MAX_PUE), metavar="X",
                   help="RUN: recompute with this PUE")
    p.set_defaults(handler=run)


def _error(message, code=1):
    print(f"error: {message}", file=sys.stderr)
    return code


def run(args):
    from layerwise.audit.cost import count_flops, format_table
    from layerwise.data import DataLoader
    from layerwise.errors import LayerwiseError
    from layerwise.train.checkpoint import read_json
    from layerwise.train.recipes import check_run_config, get_recipe
    from layerwise.train.run import make_config

    if (args.run is None) == (args.model is None):
        return _error("give a run directory or --model NAME (one of them)", 2)
    try:
        if args.run is not None:
            if not os.path.isdir(args.run):
                return _error(f"no run directory {args.run!r}")
            path = os.path.join(args.run, "config.json")
            config = read_json(path, "the run's config")
            check_run_config(config, path)  # before a crafted size reaches the allocator
        else:
            config = make_config(args.model, seed=0)
        recipe = get_recipe(config["recipe"])
        hp = dict(config["hyperparameters"])
        data = recipe.task.load(config, args.run)
    except LayerwiseError as err:
        return _error(str(err))
    parts = recipe.build(hp, 1, data)
    model = parts.model
    if args.run is not None:
        from layerwise.train.checkpoint import load_run_weights

        load_run_weights(model, os.path.join(args.run, "model.safetensors"))
    batch = args.batch_size or hp.get("batch_size", 32)
    inputs, targets = next(iter(DataLoader(data.splits["train"], batch_size=batch)))
    model.train()
    forward = parts.forward or (lambda m, x: m(x))
    with count_flops(model) as report:
        parts.loss_fn(forward(model, inputs), targets)
    if args.json:
        print(json.dumps(dict(report.summary(), batch_size=batch, recipe=config["recipe"])))
        return 0
    print(f"{config['recipe']}: one training step at batch size {batch}")
    print(format_table(report, top=args.top))
    if args.by_op:
        print()
        print(format_op_table(report))
    if args.run is not None:
        try:
            _print_recorded(args.run, args.country, args.grid_intensity, args.pue)
        except ValueError as err:
            return _error(str(err))
    return 0


def format_op_table(report):
    lines = [f"{'op':<22}  {'calls':>6}  {'fwd FLOPs':>14}  {'bwd FLOPs':>14}"]
    for op, r in sorted(report.by_op().items(), key=lambda kv: -kv[1]["forward_flops"]):
        lines.append(f"{op:<22}  {r['calls']:>6}  {r['forward_flops']:>14,}  "
                     f"{r['backward_flops']:>14,}")
    return "\n".join(lines)


def _print_recorded(run_dir, country=None, intensity=None, pue=None):
    path = os.path.join(run_dir, "metrics.json")
    if not os.path.isfile(path):
        return
    from layerwise.train.checkpoint import RunError, read_json

    metrics = read_json(path, "the run's metrics")
    if not isinstance(metrics, dict):
        raise RunError(f"{path}: expected a JSON object, got {type(metrics).__name__}")
    if "energy_kwh" in metrics:
        print(f"recorded: {metrics.get('train_flops', 0):,} training FLOPs, "
              f"{metrics['energy_kwh']:.6f} kWh ({metrics.get('energy_method')}), "
              f"{metrics.get('emissions_kg_co2e', 0):.6f} kg CO2e "
              f"[{metrics.get('emissions_grid_intensity_source')}]")
    if country is None and intensity is None and pue is None:
        return
    from layerwise.audit.cost import emissions_record
    try:
        recorded = metrics["cost"]["energy"]
        reading = {"duration_s": float(recorded["duration_s"]),
                   "components": {k: {"joules": float(c["energy_kwh"]) * 3.6e6,
                                      "method": str(c["method"])}
                                  for k, c in recorded["components"].items()}}
        recorded_pue, recorded_country = recorded["pue"], recorded["country"]
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise RunError(f"{path} holds no usable energy record to recompute "
                       f"(cost.energy: {type(err).__name__} {err}); it was not written by "
                       f"`layerwise train`") from None
    again = emissions_record(reading, pue if pue is not None else recorded_pue,
                             country or (None if intensity is not None else recorded_country),
                             intensity)
    print(f"recomputed: {again['energy_kwh']:.6f} kWh at PUE {again['pue']:g}, "
          f"{again['emissions_kg']:.6f} kg CO2e [{again['grid_intensity_source']}]")
