"""Several processes training one model: which process this is, the collectives between
them (over MPI, through mpi4py), and ``--nproc``'s launcher.

    import layerwise as lw
    lw.distributed.init()                   # under `mpiexec -n 4 python train.py`: rank 0-3
    model = lw.nn.parallel.DistributedDataParallel(model)
    sampler = lw.data.DistributedSampler(train_set)   # each rank its own share

Run alone (no mpiexec, or mpi4py not installed), the same script is a job of one process:
``rank()`` is 0, ``world_size()`` 1, and every collective leaves its input as it is.
Importing layerwise never imports mpi4py, whose import initialises MPI.
"""

from layerwise.distributed.comm import (
    DEFAULT_TIMEOUT, DistributedError, DistributedTimeout, Work, abort, all_gather_json,
    all_reduce, barrier, broadcast, broadcast_json, init, is_initialized, launched, local_size,
    rank,
    rank_label, set_timeout, timeout, world_size,
)

__all__ = [
    "DEFAULT_TIMEOUT", "DistributedError", "DistributedTimeout", "Work", "abort",
    "all_gather_json", "all_reduce", "barrier", "broadcast", "broadcast_json", "init",
    "is_initialized", "launched", "local_size", "rank", "rank_label", "set_timeout", "timeout",
    "world_size",
]
