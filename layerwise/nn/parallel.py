"""DistributedDataParallel: one replica of the model per process, gradients averaged over
all of them after each backward, as PyTorch's DDP and Horovod do it.

    lw.distributed.init()
    model = nn.parallel.DistributedDataParallel(build_model())
    for x, y in loader:                             # each rank its share (DistributedSampler)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()     # gradients averaged over the ranks
        optimizer.step()                            # the same step on every rank

How:
- At construction, rank 0's parameters and buffers are broadcast, so every replica starts
  equal (after checking that every rank built a model of the same names and shapes).
- The parameters that require grad are cut into buckets of about ``bucket_cap_mb`` MiB, in
  reverse order of ``module.parameters()``: roughly the order in which backward produces
  their gradients, output layer first.
- Each parameter's post-accumulate-grad hook (autograd/tensor.py) counts it ready in its
  bucket. A full bucket is copied into one flat array and its sum over the ranks starts at
  once (a non-blocking MPI Iallreduce), while backward goes on into the layers below.
  Buckets start in index order, which is the same on every rank, as MPI requires of
  collectives. MPICH moves a started collective on only inside MPI calls, so each hook also
  tests the one in flight.
- When backward ends (``autograd.queue_callback``), the buckets not started yet start (a
  parameter without a gradient on this rank counts zeros), all are waited for, and each
  ``.grad`` becomes the sum over the ranks divided by their number.
- ``no_sync()``: backward inside it only accumulates into ``.grad``, with no communication;
  the next backward outside averages the accumulated sums (gradient accumulation with one
  allreduce per optimizer step).
- In training, the buffers (batch norm's running statistics) are broadcast from rank 0 before
  each forward (PyTorch's ``broadcast_buffers=True``), so every replica holds rank 0's. Batch
  norm's batch statistics are each rank's own, as in PyTorch.
"""

import contextlib

from layerwise import distributed
from layerwise.autograd.engine import queue_callback
from layerwise.autograd.tensor import Tensor
from layerwise.backend import xp
from layerwise.nn.module import Module

BYTES_PER_MB = 2**20  # PyTorch's bucket_cap_mb counts MiB


class _Bucket:
    """Parameters whose gradients travel in one allreduce, and the flat array they travel in."""

    def __init__(self, params):
        self.params = params
        self.sizes = [p.data.size for p in params]
        self.starts = [sum(self.sizes[:i]) for i in range(len(params))]
        self.flat = xp.empty(sum(self.sizes), dtype=params[0].data.dtype)
        self.ready = 0      # parameters whose gradient this backward has produced
        self.work = None    # the allreduce under way


def _buckets(params, cap_bytes):
    """Consecutive groups of ``params`` of one dtype and at most ``cap_bytes`` each (a
    larger parameter gets a bucket of its own)."""
    buckets, current, size = [], [], 0
    for p in params:
        nbytes = p.data.nbytes
        if current and (size + nbytes > cap_bytes or p.data.dtype != current[0].data.dtype):
            buckets.append(_Bucket(current))
            current, size = [], 0
        current.append(p)
        size += nbytes
    if current:
        buckets.append(_Bucket(current))
    return buckets


class DistributedDataParallel(Module):
    """Wrap ``module`` so that backward averages its gradients over every rank of the job
    (``lw.distributed``). Forward is the module's; ``.module`` is the module itself, and
    ``state_dict()`` keys carry the prefix "module." as PyTorch's do (save
    ``ddp.module.state_dict()`` for weights that load without the wrapper)."""

    def __init__(self, module, bucket_cap_mb=25, broadcast_buffers=True):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel wraps an nn.Module, got "
                            f"{type(module).__name__}")
        if isinstance(bucket_cap_mb, bool) or not isinstance(bucket_cap_mb, (int, float)) \
                or not bucket_cap_mb > 0:
            raise ValueError(f"bucket_cap_mb must be a positive number of MiB, got "
                             f"{bucket_cap_mb!r}")
        self.module = module
        self.broadcast_buffers = bool(broadcast_buffers)
        self.bucket_cap_mb = bucket_cap_mb
        self._world = distributed.world_size()
        self._sync = True            # False inside no_sync()
        self._in_backward = False    # a backward pass has started buckets, not yet finished
        self._next = 0               # the first bucket not started in this backward
        trained = [p for p in module.parameters() if p.requires_grad]
        self._bucket_list = _buckets(trained[::-1], bucket_cap_mb * BYTES_PER_MB)
        if self._world == 1:
            return
        _check_same_model(module)
        _broadcast_from_rank0([t for _, t in _replicated(module)])
        for bucket in self._bucket_list:
            for p in bucket.params:
                p.register_post_accumulate_grad_hook(self._make_hook(bucket))

    def __getattr__(self, name):
        # Only for names the wrapper lacks: a recipe's forward reads model.config.
        module = self.__dict__.get("module")
        if module is None:
            raise AttributeError(name)
        return getattr(module, name)

    def forward(self, *args, **kwargs):
        if self._in_backward:
            raise RuntimeError("the previous backward stopped midway, so its gradients were "
                               "never averaged over the ranks; start the step again on every "
                               "rank after zero_grad()")
        if self.training and self.broadcast_buffers and self._world > 1:
            _broadcast_from_rank0(list(self.module.buffers()))
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self):
        """Backward inside only accumulates local gradients; the next one outside averages."""
        previous, self._sync = self._sync, False
        try:
            yield
        finally:
            self._sync = previous

    # --- during backward ----------------------------------------------------------------------
    def _make_hook(self, bucket):
        def hook(param):
            if not self._sync:
                return
            if not self._in_backward:
                self._in_backward = True
                queue_callback(self._finish_backward)
            bucket.ready += 1
            self._start_ready_buckets()
            self._move_on()
        return hook

    def _start_ready_buckets(self):
        buckets = self._bucket_list
        while self._next < len(buckets) and \
                buckets[self._next].ready == len(buckets[self._next].params):
            self._start(buckets[self._next])
            self._next += 1

    def _start(self, bucket):
        for p, start, size in zip(bucket.params, bucket.starts, bucket.sizes):
            part = bucket.flat[start:start + size]
            if p.grad is None:
                part[:] = 0  # no gradient here: it adds nothing to the other ranks' sum
            else:
                part[:] = p.grad.data.reshape(-1)
        bucket.work = distributed.all_reduce(bucket.flat, async_op=True)

    def _move_on(self):
        """Test the allreduces started, oldest first, up to the first still in flight:
        each test lets MPICH move them on while backward computes."""
        for bucket in self._bucket_list[:self._next]:
            if not bucket.work.is_completed():
                return

    def _finish_backward(self):
        while self._next < len(self._bucket_list):
            self._start(self._bucket_list[self._next])
            self._next += 1
        scale = 1.0 / self._world
        for bucket in self._bucket_list:
            bucket.work.wait()
            for p, start, size in zip(bucket.params, bucket.starts, bucket.sizes):
                total = bucket.flat[start:start + size].reshape(p.data.shape)
                if p.grad is None:
                    p.grad = Tensor(total * scale)
                else:
                    xp.multiply(total, scale, out=p.grad.data)
            bucket.ready, bucket.work = 0, None
        self._next, self._in_backward = 0, False


def _check_same_model(module):
    """A ValueError on every rank when the ranks built models of different parameter and
    buffer names, shapes or dtypes (a broadcast between them would mix up the weights)."""
    mine = [[name, list(t.shape), str(t.dtype)] for name, t in _replicated(module)]
    models = distributed.all_gather_json(mine)
    for r, theirs in enumerate(models[1:], start=1):
        if theirs != models[0]:
            differ = next(((a, b) for a, b in zip(models[0], theirs) if a != b),
                          (f"{len(models[0])} entries", f"{len(theirs)} entries"))
            raise ValueError(f"rank {r} built a different model from rank 0's ({differ[1]} "
                             f"where rank 0 has {differ[0]}); build the same model on every "
                             f"rank")


def _replicated(module):
    """(name, tensor) of what every replica must hold equal: parameters, then buffers."""
    return list(module.named_parameters()) + list(module.named_buffers())


def _broadcast_from_rank0(tensors):
    """Overwrite ``tensors`` on every rank with rank 0's, in place."""
    works = []
    for t in tensors:
        if not t.data.flags.c_contiguous or not t.data.flags.writeable:
            t.data = xp.ascontiguousarray(t.data).copy()
        works.append(distributed.broadcast(t.data, src=0, async_op=True))
    for work in works:
        work.wait()


__all__ = ["DistributedDataParallel"]
