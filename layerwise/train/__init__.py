"""Training: the Trainer loop, callbacks, run directories with resume checkpoints, recipes.

    from layerwise.train import Trainer, EarlyStopping
    trainer = Trainer(model, optimizer, F.cross_entropy, train_loader, val_loader, epochs=5,
                      callbacks=[EarlyStopping(patience=2)])
    history = trainer.fit()
"""

from layerwise.train.trainer import Trainer
from layerwise.train.callbacks import BestCheckpoint, Callback, EarlyStopping, HistoryLogger
from layerwise.train.checkpoint import (
    ResumeCheckpoint, RunError, create_run_dir, load_resume_state, save_resume_state,
)
from layerwise.train.recipes import RECIPES, Parts, Recipe, get_recipe, register
from layerwise.train.run import make_config, resume_run, start_run

__all__ = [
    "Trainer", "Callback", "EarlyStopping", "BestCheckpoint", "HistoryLogger",
    "ResumeCheckpoint", "RunError", "create_run_dir", "save_resume_state", "load_resume_state",
    "RECIPES", "Recipe", "Parts", "get_recipe", "register",
    "make_config", "start_run", "resume_run",
]
