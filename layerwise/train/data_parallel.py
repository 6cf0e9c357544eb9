"""What a run does differently on several processes (``mpiexec -n N layerwise train`` or
``layerwise train --nproc N``): the one place the run asks which rank it is.

- Rank 0 owns the run directory: it alone creates, locks and writes it (config, history,
  checkpoints, final weights, metrics) and finishes the run (test metrics, a language model's
  sample) once training ends. The other ranks train and write nothing; on a resume they read
  the checkpoint after rank 0 has locked the run and completed any interrupted commit.
- The recipe's batch size is the global batch: each rank takes batch_size / N samples a step
  from its own share of the training data (DistributedSampler, reshuffled each epoch from the
  run's seed), and DistributedDataParallel averages the gradients, so a step learns from as
  many samples as on one process.
- Validation reads one share per rank (each sample once: ShardSampler) and the Trainer sums
  the counts over the ranks, so every rank sees the same val metrics and makes the same
  early-stopping decisions. The test set is scored by rank 0 alone when it finishes the run:
  once, at the end, when the other ranks have nothing left to do.
- Each rank draws dropout and augmentation from a generator of its own; rank 0 keeps the
  seed's stream, so a run on one process is unchanged. The resume checkpoint holds every
  rank's generator (Trainer.state_dict), so a resumed run ends as an uninterrupted one.
"""

import contextlib

from layerwise import distributed
from layerwise.backend import manual_seed, xp
from layerwise.data import DataLoader, DistributedSampler, ShardSampler
from layerwise.errors import RunError
from layerwise.nn.parallel import DistributedDataParallel
from layerwise.train.checkpoint import discard_uncommitted, load_resume_state
from layerwise.train.rundir import RunLock


def writes_run():
    """Whether this process writes the run directory: rank 0, or a process on its own."""
    return distributed.rank() == 0


def train_loader(dataset, batch_size, seed):
    """This rank's loader of the training data, ``batch_size`` samples a step in all."""
    world = distributed.world_size()
    if world == 1:
        return DataLoader(dataset, batch_size=batch_size, shuffle=True, seed=seed)
    if batch_size % world:
        raise RunError(f"batch_size {batch_size} does not split evenly over {world} processes; "
                       f"use a multiple of {world} (--batch-size is the global batch, and each "
                       f"process takes batch_size / {world})")
    return DataLoader(dataset, batch_size=batch_size // world,
                      sampler=DistributedSampler(dataset, shuffle=True, seed=seed))


def eval_loader(dataset, batch_size):
    """This rank's loader of evaluation data: its share, each sample once over the ranks."""
    if distributed.world_size() == 1:
        return DataLoader(dataset, batch_size=batch_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(dataset))


def seed_rank_generator(seed):
    """Give ranks other than 0 a generator of their own, derived from ``seed`` and the rank,
    once the model's initial weights are drawn."""
    rank = distributed.rank()
    if rank:
        manual_seed(int(xp.random.SeedSequence([seed, rank]).generate_state(1, xp.uint64)[0]))


def replicate(model):
    """The model to train: wrapped in DistributedDataParallel when there are several ranks."""
    return model if distributed.world_size() == 1 else DistributedDataParallel(model)


def run_lock(run_dir):
    """The run's lock, held by rank 0 alone (one job is one writer)."""
    return RunLock(run_dir) if writes_run() else contextlib.nullcontext()


def resume_state(run_dir):
    """The run's resume checkpoint: rank 0 loads it, completing an interrupted commit and
    removing what no commit refers to; the other ranks read it once it has."""
    if writes_run():
        state = load_resume_state(run_dir)
        discard_uncommitted(run_dir)
        distributed.barrier()
        return state
    distributed.barrier()
    return load_resume_state(run_dir)
