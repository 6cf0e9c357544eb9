"""A whole run from a config: data, recipe, Trainer, run directory, final weights and metrics.

    config = make_config("mlp", seed=0)
    run_dir, metrics = start_run(config, out_dir="runs")
    metrics = resume_run(run_dir)          # after an interruption: ends bit for bit the same

The config (saved as ``config.json``) is all a run depends on, so ``resume_run`` rebuilds
the identical model, loaders and schedule from it, then loads the resume checkpoint over them.
What the recipe's task saved beside it (a language model's ``tokenizer.json``) is read back,
not rebuilt.

A run ends in steps that can each be retried: training writes ``model.safetensors``, then
``trained.json`` (the training's own metrics: steps, seconds, cost); the task's finishing step
(test metrics, a language model's sample) follows and ``metrics.json`` is written last, as the
mark of a finished run, after which trained.json goes. If finishing fails, ``resume_run`` sees
trained.json and redoes only the finishing step from the saved weights. The whole time, the
process holds the run's lock (``run.lock``), so a second ``--resume`` is refused.

On several processes (MPI), each rank calls the same function; what differs between ranks
(rank 0 writes, the others train) is decided in ``layerwise.train.data_parallel``.
"""

import os
import time

import layerwise
from layerwise.backend import manual_seed
from layerwise.data.loader import inference_batch_size, sample_shape
from layerwise.serialization import load_with_metadata, save
from layerwise.train import data_parallel
from layerwise.train.callbacks import BestCheckpoint, EarlyStopping, HistoryLogger
from layerwise.train.checkpoint import (
    ResumeCheckpoint, RunError, create_run_dir, has_resume_state, read_json, write_json,
)
from layerwise.limits import MAX_INTENDED_USE_CHARS, Text, check_settings
from layerwise.train.recipes import (
    HyperparameterError, check_run_config, get_recipe, validate_hyperparameters,
)
from layerwise.train.rundir import RunLock, refuse_links, run_path
from layerwise.train.trainer import Trainer

FINAL_WEIGHTS = "model.safetensors"
TRAINED = "trained.json"
METRICS = "metrics.json"
_STATED = Text(1, MAX_INTENDED_USE_CHARS)  # the intended use and users a card states
# Files a run adds to rather than writes anew: a link there is refused before training.
_APPENDED = ("emissions.csv",)


def make_config(recipe_name, seed=0, data_dir=None, checkpoint_every=None, data=None,
                intended_use=None, intended_users=None, **overrides):
    """The recipe's defaults with ``overrides`` (None values ignored) applied.

    ``data``: a user's data, {"kind": "table" | "images" | "text", "path": ..., options}
    (``layerwise train --data``); ``intended_use``: what the model is for, and
    ``intended_users``: who it is made for, both for its card.
    """
    recipe = get_recipe(recipe_name)
    if data is not None and data.get("kind") not in recipe.task.data_kinds:
        raise RunError(f"recipe {recipe_name!r} does not train on {data.get('kind')!r} data; "
                       f"it takes {', '.join(recipe.task.data_kinds) or 'only its own data'}")
    hparams = dict(recipe.defaults)
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in hparams:
            raise ValueError(f"recipe {recipe_name!r} has no hyperparameter {key!r}; "
                             f"it has {sorted(hparams)}")
        hparams[key] = value
    validate_hyperparameters(recipe, hparams)  # before any data is loaded or directory made
    stated = {"intended_use": intended_use, "intended_users": intended_users}
    if intended_users is not None and intended_use is None:
        raise HyperparameterError("intended_users needs intended_use: say what the model is "
                                  "for as well as who it is for (--intended-use TEXT)")
    check_settings({k: _STATED for k, v in stated.items() if v is not None}, stated,
                   error=HyperparameterError, required=False)
    return {"recipe": recipe_name, "hyperparameters": hparams, "seed": seed,
            "data": recipe.task.data_record(hparams, data_dir, data),
            "checkpoint_every": checkpoint_every, "intended_use": intended_use,
            "intended_users": intended_users,
            "layerwise_version": layerwise.__version__}


def start_run(config, out_dir="runs", name=None, progress=True, verbose=True, check_data=None,
              callbacks=()):
    """Train a new run into a fresh directory; returns (run_dir, metrics), or (None, None) on
    the ranks other than 0 of a data-parallel run, which write nothing.

    ``check_data(data)`` runs before anything is written and may raise RunError (the CLI
    passes the contamination check of layerwise.audit, which train must not import).
    ``callbacks``: factories ``make(run_dir, config) -> Callback`` of what else the run records
    (the CLI passes layerwise.audit's cost callback); a callback's ``metrics`` dict, if it has
    one, goes into metrics.json. A resume must be given the same ones.
    """
    task = get_recipe(config["recipe"]).task
    # Load the data and build the model first, so that a bad --data-dir or hyperparameter
    # fails before a run directory is made.
    data = task.load(config)
    if check_data is not None:
        check_data(data)
    config = _settled(config, data)
    setup = _setup(config, data)
    if not data_parallel.writes_run():
        return None, _train(config, None, data, setup, None, progress, verbose, callbacks)
    default_name = f"{config['recipe']}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = create_run_dir(out_dir, name or default_name, explicit=name is not None)
    with RunLock(run_dir):
        write_json(os.path.join(run_dir, "config.json"), config)
        task.save(data, run_dir)
        return run_dir, _train(config, run_dir, data, setup, None, progress, verbose,
                               callbacks)


def resume_run(run_dir, progress=True, verbose=True, checkpoint_every=None, callbacks=()):
    """Continue an interrupted run from its last checkpoint; returns its metrics (None on the
    ranks other than 0 of a data-parallel run).

    ``callbacks``: the factories the run was started with (see ``start_run``).

    A run whose training ended but whose finishing step failed (no metrics.json) is not
    trained again: only the finishing step runs, from the saved weights.
    """
    if not os.path.isdir(run_dir):
        raise RunError(f"no run directory {run_dir!r} to resume")
    config_path = os.path.join(run_dir, "config.json")
    # A run whose saved settings meet the same schemas as a new run's, before it is locked
    # (and again once it is: another process may have written it in between).
    check_run_config(read_json(config_path, "the run's config"), config_path)
    with data_parallel.run_lock(run_dir):
        config = read_json(config_path, "the run's config")
        check_run_config(config, config_path)
        if os.path.isfile(os.path.join(run_dir, METRICS)):
            raise RunError(f"run {run_dir} already finished (it has {METRICS}); nothing to "
                           f"resume (`layerwise report {run_dir}` rewrites its model card)")
        if not has_resume_state(run_dir):
            raise RunError(
                f"{run_dir} has no resume checkpoint (last.json) yet; start a new run instead"
            )
        refuse_links(run_dir, _APPENDED)
        state = data_parallel.resume_state(run_dir)
        if checkpoint_every is not None:
            config = dict(config, checkpoint_every=checkpoint_every)
        data = get_recipe(config["recipe"]).task.load(config, run_dir)
        config = _settled(config, data)
        setup = _setup(config, data)
        return _train(config, run_dir, data, setup, state, progress, verbose, callbacks,
                      trained=_trained(run_dir, state))


def _trained(run_dir, state):
    """(final weights, training metrics) when training ended at the checkpoint's step and
    only the finishing step is left; None when there is training to do."""
    record_path = os.path.join(run_dir, TRAINED)
    if not os.path.isfile(record_path):
        return None
    record = read_json(record_path, "the metrics of the finished training")
    weights_path = run_path(run_dir, FINAL_WEIGHTS, run_dir)
    if (not isinstance(record, dict) or record.get("steps") != state["global_step"]
            or not os.path.isfile(weights_path)):
        return None  # not this checkpoint's end: train (again) from the checkpoint
    try:
        weights, metadata = load_with_metadata(weights_path)
    except (OSError, ValueError):
        return None  # damaged final weights: the checkpoint's training rewrites them
    if metadata.get("step") != state["global_step"]:
        return None
    return weights, record


def _settled(config, data):
    """The config with the hyperparameters its recipe leaves to the data chosen from it."""
    recipe = get_recipe(config["recipe"])
    hparams = recipe.task.settle_hyperparameters(dict(config["hyperparameters"]), data)
    validate_hyperparameters(recipe, hparams)
    return dict(config, hyperparameters=hparams)


def _setup(config, data):
    """(train loader, val loader, Parts), the model initialised from the config's seed."""
    recipe = get_recipe(config["recipe"])
    hp, seed = config["hyperparameters"], config["seed"]
    manual_seed(seed)  # the model's initial weights; a resumed run overwrites them
    # The loader's own generator; seed + 1 keeps its stream apart from the global one.
    train_loader = data_parallel.train_loader(data.splits["train"], hp["batch_size"], seed + 1)
    val_batch = (hp.get("eval_batch_size")
                 or inference_batch_size(sample_shape(data.splits["val"])))
    val_loader = data_parallel.eval_loader(data.splits["val"], val_batch)
    try:
        parts = recipe.build(hp, len(train_loader), data)
    except ValueError as err:  # a hyperparameter the model or optimizer refuses
        raise RunError(f"recipe {recipe.name!r} cannot be built with these hyperparameters: "
                       f"{err}") from None
    data_parallel.seed_rank_generator(seed)
    return train_loader, val_loader, parts


def _train(config, run_dir, data, setup, state, progress, verbose, callbacks=(), trained=None):
    """Train from ``state`` (None: from scratch), then finish the run. ``trained``: the final
    weights and training metrics of a run whose training already ended."""
    recipe = get_recipe(config["recipe"])
    hp = config["hyperparameters"]
    train_loader, val_loader, parts = setup

    writer = data_parallel.writes_run()  # the other ranks of a data-parallel run write nothing
    standard = [HistoryLogger(os.path.join(run_dir, "history.jsonl")),
                BestCheckpoint(os.path.join(run_dir, "best.safetensors"),
                               monitor=recipe.task.monitor)] if writer else []
    if hp.get("patience"):
        standard.append(EarlyStopping(monitor="val_loss", patience=hp["patience"]))
    recorders = [make(run_dir, config) for make in callbacks] if writer else []
    clock = ResumeCheckpoint(run_dir, every=config.get("checkpoint_every"), write=writer)
    ordered = standard + recorders + [clock]  # the checkpoint last: it saves what others decided
    trainer = Trainer(data_parallel.replicate(parts.model), parts.optimizer, parts.loss_fn,
                      train_loader, val_loader, epochs=hp["epochs"], scheduler=parts.scheduler,
                      callbacks=ordered, clip_grad_norm=parts.clip_grad_norm,
                      batch_transform=parts.batch_transform, progress=progress and writer,
                      verbose=verbose and writer, forward=parts.forward)
    if state is not None:
        try:
            trainer.load_state_dict(state)
        except (KeyError, ValueError, RuntimeError) as err:
            raise RunError(f"the checkpoint in {run_dir} does not fit its config: "
                           f"{str(err).splitlines()[0]}") from None

    if not writer:  # the other ranks train beside rank 0, which saves and finishes the run
        if trained is None:
            trainer.fit()
        return None
    if trained is None:
        trainer.fit()
        save(parts.model.state_dict(), os.path.join(run_dir, FINAL_WEIGHTS),
             metadata={"recipe": config["recipe"], "step": trainer.global_step,
                       "epoch": trainer.epoch})
        training = {"train_seconds": round(clock.seconds(), 3),
                    "params": parts.model.num_parameters(),
                    "epochs": trainer.epoch, "steps": trainer.global_step}
        for recorder in recorders:
            training.update(getattr(recorder, "metrics", None) or {})
        write_json(os.path.join(run_dir, TRAINED), training)  # training ended: not redone
    else:
        weights, training = trained
        try:
            parts.model.load_state_dict(weights)
        except (KeyError, ValueError, RuntimeError) as err:
            raise RunError(f"{os.path.join(run_dir, FINAL_WEIGHTS)} does not fit the run's "
                           f"config: {str(err).splitlines()[0]}") from None
    metrics = recipe.task.finish(trainer, parts, data, config, run_dir)
    metrics.update(training)
    write_json(os.path.join(run_dir, METRICS), metrics)  # the mark of a finished run
    os.remove(os.path.join(run_dir, TRAINED))  # all of it is in metrics.json now
    return metrics
