"""The processes of a data-parallel job, over MPI (mpi4py): which one this is, and the
collective operations that the rest of layerwise needs, with PyTorch's names.

    lw.distributed.init()                      # under mpiexec: join the job; alone: a job of one
    lw.distributed.rank(), lw.distributed.world_size()
    lw.distributed.all_reduce(grad)            # in place: the sum over every rank, on every rank
    work = lw.distributed.all_reduce(bucket, async_op=True); ...; work.wait()

mpi4py initialises MPI when it is imported, so nothing imports it until ``init()`` (or the
first ``rank()``/``world_size()``) finds that an MPI launcher started this process (it sets
PMI_SIZE, OMPI_COMM_WORLD_SIZE, ...). A script run on its own is a job of one process: every
collective leaves its input as it is, so the same script runs alone or under mpiexec.

Every wait has a deadline, ``timeout`` seconds (60 by default; ``init(timeout=)`` or the
environment variable LAYERWISE_DIST_TIMEOUT): a rank that stops answering (hung, or on a
machine that went away) makes the others raise ``DistributedTimeout`` instead of waiting for
ever. mpiexec itself ends the whole job as soon as a rank exits with an error or is killed.
"""

import json
import os
import sys
import time

from layerwise.backend import xp
from layerwise.errors import LayerwiseError

DEFAULT_TIMEOUT = 60.0  # seconds: far above a step's allreduce, below a person's patience
TIMEOUT_VARIABLE = "LAYERWISE_DIST_TIMEOUT"
# What MPI launchers set in each process they start: the job's size (MPICH's Hydra and
# Slurm's PMI, Open MPI, MVAPICH), or only the rank (PMIx launchers).
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_RANK_ONLY_VARIABLES = ("PMIX_RANK",)
# How many of the job's processes run on this machine (Hydra, Open MPI).
_LOCAL_SIZE_VARIABLES = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE")
INSTALL_HINT = "`uv sync --extra mpi` (or `pip install layerwise[mpi]`)"
# Polling a request: MPICH moves a non-blocking collective on only inside MPI calls. For the
# first SPIN_SECONDS a wait tests without sleeping, yielding the core between tests (so that
# more ranks than cores still take turns); sleeping from the start made every allreduce of
# 16 KiB to 4 MiB on two ranks take 3-4 ms. A longer wait then sleeps, doubling the pause.
SPIN_SECONDS = 0.05
_FIRST_PAUSE, _LONGEST_PAUSE = 20e-6, 1e-3  # seconds between tests, doubling
_OPS = ("sum", "max", "min")


class DistributedError(LayerwiseError, RuntimeError):
    """The job cannot run as asked: MPI missing under mpiexec, ranks that disagree."""


class DistributedTimeout(DistributedError, TimeoutError):
    """The other ranks did not take part in a collective within the timeout."""


class _Job:
    """This process's place in the job: MPI's world communicator, or None when alone."""

    def __init__(self, comm=None, mpi=None):
        self.comm, self.mpi = comm, mpi
        self.rank = 0 if comm is None else comm.Get_rank()
        self.size = 1 if comm is None else comm.Get_size()


_job = None
_timeout = None


def launched():
    """Whether an MPI launcher started this process among more than one (its variables say
    so); nothing is imported."""
    for name in _SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value) > 1
    return any(name in os.environ for name in _RANK_ONLY_VARIABLES)


def init(timeout=None):
    """Join the job that mpiexec started, or be a job of one when no launcher started this
    process. Calling it again changes only the timeout. Returns the world size."""
    global _job
    if timeout is not None:
        set_timeout(timeout)
    if _job is not None:
        return _job.size
    if not launched():
        _job = _Job()
        return 1
    try:
        from mpi4py import MPI  # initialises MPI: the launcher has told it the job
    except ImportError:
        raise DistributedError(f"this process was started by an MPI launcher, but mpi4py is "
                               f"not installed; install it with {INSTALL_HINT}") from None
    _job = _Job(MPI.COMM_WORLD, MPI)
    return _job.size


def is_initialized():
    return _job is not None


def rank():
    """This process's rank, 0 to world_size() - 1 (0 alone); joins the job on first use."""
    return (_job or _joined()).rank


def world_size():
    """The number of processes in the job (1 alone); joins the job on first use."""
    return (_job or _joined()).size


def _joined():
    init()
    return _job


def local_size():
    """How many processes of the job run on this machine, as the launcher says (else all)."""
    for name in _LOCAL_SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return world_size()


def rank_label():
    """'rank R of N: ' to put before a message in a job of several processes, else ''."""
    if _job is None or _job.size == 1:
        return ""
    return f"rank {_job.rank} of {_job.size}: "


def timeout():
    """Seconds a collective waits for the other ranks before DistributedTimeout."""
    if _timeout is not None:
        return _timeout
    raw = os.environ.get(TIMEOUT_VARIABLE)
    if raw is None:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise DistributedError(f"{TIMEOUT_VARIABLE}={raw!r} is not a positive number of "
                               f"seconds; unset it for the default {DEFAULT_TIMEOUT:g}")
    return value


def set_timeout(seconds):
    global _timeout
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {seconds!r}")
    _timeout = float(seconds)


# --- collectives ----------------------------------------------------------------------------


class Work:
    """A collective under way (``async_op=True``): ``wait()`` for it, or ask
    ``is_completed()``, which also moves it on."""

    def __init__(self, requests, what):
        self.requests, self.what = requests, what

    def is_completed(self):
        return not self.requests or _job.mpi.Request.Testall(self.requests)

    def wait(self):
        if self.is_completed():
            return
        start = time.monotonic()
        spin_until, deadline = start + SPIN_SECONDS, start + timeout()
        while not self.is_completed():
            if time.monotonic() < spin_until:
                os.sched_yield()
                continue
            break
        pause = _FIRST_PAUSE
        while not self.is_completed():
            if time.monotonic() > deadline:
                raise DistributedTimeout(
                    f"the other ranks did not answer within {timeout():g} s "
                    f"({self.what}): one has stopped or hangs (the limit is "
                    f"{TIMEOUT_VARIABLE} or lw.distributed.init(timeout=))")
            time.sleep(pause)
            pause = min(2 * pause, _LONGEST_PAUSE)


def _finish(requests, what, async_op):
    work = Work(requests, what)
    if async_op:
        return work
    work.wait()
    return None


def _buffer(tensor, what):
    """The array behind ``tensor`` (a Tensor or array) that MPI reads and writes in place."""
    array = tensor if isinstance(tensor, xp.ndarray) else getattr(tensor, "data", None)
    if not isinstance(array, xp.ndarray) or not array.flags.c_contiguous \
            or not array.flags.writeable:
        raise ValueError(f"{what} needs a writeable, contiguous array or Tensor, got "
                         f"{type(tensor).__name__}")
    return array


def all_reduce(tensor, op="sum", async_op=False):
    """Replace ``tensor`` (a Tensor or array), in place, by its elementwise ``op`` ("sum",
    "max" or "min") over every rank. ``async_op``: return a Work to wait on instead."""
    if op not in _OPS:
        raise ValueError(f"op must be one of {', '.join(_OPS)}, got {op!r}")
    array = _buffer(tensor, "all_reduce")
    if world_size() == 1:
        return _finish([], "all_reduce", async_op)
    mpi = _job.mpi
    operation = {"sum": mpi.SUM, "max": mpi.MAX, "min": mpi.MIN}[op]
    request = _job.comm.Iallreduce(mpi.IN_PLACE, array, op=operation)
    return _finish([request], f"all_reduce of {array.size} values", async_op)


def broadcast(tensor, src=0, async_op=False):
    """Overwrite ``tensor``, in place, with rank ``src``'s on every rank."""
    array = _buffer(tensor, "broadcast")
    if world_size() == 1:
        return _finish([], "broadcast", async_op)
    request = _job.comm.Ibcast(array, root=src)
    return _finish([request], f"broadcast of {array.size} values", async_op)


def barrier():
    """Wait until every rank has reached its barrier()."""
    if world_size() > 1:
        _finish([_job.comm.Ibarrier()], "barrier", async_op=False)


def all_gather_json(value):
    """[each rank's ``value``], in rank order, on every rank: for small JSON-able state such
    as a random generator's (sent as JSON text: nothing is pickled)."""
    if world_size() == 1:
        return [json.loads(json.dumps(value))]
    data = xp.frombuffer(json.dumps(value).encode("utf-8"), dtype=xp.uint8)
    sizes = xp.empty(_job.size, dtype=xp.int64)
    _finish([_job.comm.Iallgather(xp.asarray([data.size], dtype=xp.int64), sizes)],
            "all_gather of sizes", async_op=False)
    starts = xp.concatenate([[0], xp.cumsum(sizes)[:-1]])
    joined = xp.empty(int(sizes.sum()), dtype=xp.uint8)
    message = [joined, (sizes.tolist(), starts.tolist()), _job.mpi.BYTE]
    _finish([_job.comm.Iallgatherv(data, message)], "all_gather", async_op=False)
    return [json.loads(joined[s:s + n].tobytes().decode("utf-8"))
            for s, n in zip(starts.tolist(), sizes.tolist())]


def broadcast_json(value, src=0):
    """Rank ``src``'s ``value`` (JSON-able) on every rank."""
    if world_size() == 1:
        return json.loads(json.dumps(value))
    data = json.dumps(value).encode("utf-8") if rank() == src else b""
    size = xp.asarray([len(data)], dtype=xp.int64)
    broadcast(size, src)
    buffer = xp.empty(int(size[0]), dtype=xp.uint8)
    if rank() == src:
        buffer[:] = xp.frombuffer(data, dtype=xp.uint8)
    broadcast(buffer, src)
    return json.loads(buffer.tobytes().decode("utf-8"))


def abort(code=1):
    """End every process of the job at once with exit status ``code`` (MPI_Abort): what a
    rank does after reporting an error, so that the others do not wait for it."""
    sys.stdout.flush()
    sys.stderr.flush()
    if _job is not None and _job.comm is not None and _job.size > 1:
        _job.comm.Abort(code)
    raise SystemExit(code)
