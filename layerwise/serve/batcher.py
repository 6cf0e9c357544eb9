"""Dynamic batching: requests queue and run together, one inference thread per model.

    batcher = Batcher(lambda xs: [model(x) for x in xs], max_batch=32, max_wait_ms=5)
    future = batcher.submit(x)           # a concurrent.futures.Future, from any thread
    y = await batcher.run(x)             # the same from asyncio (an ASGI handler)
    batcher.close()                      # answers every queued request, then stops the thread

A batch closes when it holds ``max_batch`` requests or when its oldest request has waited
``max_wait_ms``, whichever comes first: TorchServe's batchSize / maxBatchDelay, Triton's
dynamic batcher with max_queue_delay. Requests that queued while the model was busy are past
their wait already, so under load each batch takes what is queued without waiting.

One thread runs every batch of a model: the BLAS below already spreads one matmul over the
cores, and two batches of one model at once would only share them and thrash the caches.
The queue is bounded: past ``max_queue`` waiting requests ``submit`` raises QueueFullError
(an HTTP layer answers 503 with Retry-After) instead of holding memory without end. An
exception in the model reaches the callers of that batch only; the thread goes on.
"""

import asyncio
import logging
import math
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future
from dataclasses import dataclass, field

from layerwise.limits import MAX_BATCH_SIZE, MAX_BATCH_WAIT_MS, MAX_QUEUED_REQUESTS

_log = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """The batcher's queue holds ``max_queue`` requests: try again shortly."""

    retry_after_s = 1


class BatcherClosedError(RuntimeError):
    """The batcher is closing or closed: it takes no new requests."""


@dataclass
class BatchStats:
    """What a batcher has done: ``batches`` is the number of model calls."""

    requests: int = 0  # accepted by submit
    batches: int = 0  # calls of the model function
    items: int = 0  # requests run in those batches (cancelled ones are not run)
    failed_batches: int = 0
    cancelled: int = 0  # requests whose caller gave up before their batch ran
    sizes: Counter = field(default_factory=Counter)  # batch size -> how many batches

    @property
    def largest_batch(self):
        return max(self.sizes, default=0)


@dataclass
class _Job:
    item: object
    future: Future
    queued_at: float


class Batcher:
    """Runs ``run_batch(items) -> outputs`` (a list of the same length, in order) on batches
    of submitted items in one background thread.

    ``on_batch(size, seconds, error)``, if given, is called after every batch in that thread
    (metrics); ``name`` names the thread.
    """

    def __init__(self, run_batch, max_batch=32, max_wait_ms=5.0, max_queue=256,
                 name="model", on_batch=None):
        _check_count("max_batch", max_batch, MAX_BATCH_SIZE)
        _check_count("max_queue", max_queue, MAX_QUEUED_REQUESTS)
        if isinstance(max_wait_ms, bool) or not isinstance(max_wait_ms, (int, float)) or \
                not math.isfinite(max_wait_ms) or not 0 <= max_wait_ms <= MAX_BATCH_WAIT_MS:
            raise ValueError(f"max_wait_ms must be a number from 0 to {MAX_BATCH_WAIT_MS:g}, "
                             f"got {max_wait_ms!r}")
        self.run_batch = run_batch
        self.max_batch, self.max_queue = max_batch, max_queue
        self.max_wait_s = max_wait_ms / 1000
        self.on_batch = on_batch
        self._pending = deque()  # _Job, oldest first
        self._cond = threading.Condition()
        self._closing = False
        self._stats = BatchStats()
        self._thread = threading.Thread(target=self._loop, name=f"layerwise-serve-{name}",
                                        daemon=True)
        self._thread.start()

    # --- submitting -----------------------------------------------------------------------
    def submit(self, item):
        """A Future of ``item``'s output; QueueFullError when the queue is full."""
        return self.submit_many([item])[0]

    def submit_many(self, items):
        """Futures of ``items``' outputs, queued together or not at all (QueueFullError)."""
        items = list(items)
        with self._cond:
            if self._closing:
                raise BatcherClosedError("the model is shutting down and takes no new requests")
            if len(self._pending) + len(items) > self.max_queue:
                raise QueueFullError(f"the queue holds {len(self._pending)} of its "
                                     f"{self.max_queue} requests; {len(items)} more do not fit")
            now = time.monotonic()
            jobs = [_Job(item, Future(), now) for item in items]
            self._pending.extend(jobs)
            self._stats.requests += len(jobs)
            self._cond.notify()
        return [job.future for job in jobs]

    async def run(self, item):
        """``item``'s output, awaited without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(item))

    async def run_many(self, items):
        """The outputs of ``items`` in order; cancelling this cancels those not yet run."""
        futures = [asyncio.wrap_future(f) for f in self.submit_many(items)]
        try:
            return await asyncio.gather(*futures)
        finally:
            for future in futures:
                future.cancel()  # a no-op for those done: the rest need not run

    # --- state ----------------------------------------------------------------------------
    @property
    def queue_depth(self):
        """Requests waiting for a batch (not counting the batch running now)."""
        return len(self._pending)

    @property
    def closed(self):
        return self._closing

    def stats(self):
        """A copy of the counts so far (BatchStats)."""
        with self._cond:
            return BatchStats(self._stats.requests, self._stats.batches, self._stats.items,
                              self._stats.failed_batches, self._stats.cancelled,
                              Counter(self._stats.sizes))

    def close(self, drain=True, timeout=None):
        """Take no new requests; with ``drain`` run every queued one first, else fail them
        with BatcherClosedError. Waits up to ``timeout`` seconds (None: until done) for the
        thread; returns True when it has stopped."""
        with self._cond:
            self._closing = True
            dropped = [] if drain else list(self._pending)
            if not drain:
                self._pending.clear()
            self._cond.notify_all()
        for job in dropped:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(BatcherClosedError("the model shut down before this "
                                                            "request ran"))
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # --- the inference thread -------------------------------------------------------------
    def _loop(self):
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run(batch)

    def _next_batch(self):
        """Up to max_batch jobs, once full or once the oldest has waited max_wait; None when
        closing with nothing left."""
        with self._cond:
            while not self._pending and not self._closing:
                self._cond.wait()
            if not self._pending:
                return None
            deadline = self._pending[0].queued_at + self.max_wait_s
            while len(self._pending) < self.max_batch and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            size = min(self.max_batch, len(self._pending))
            return [self._pending.popleft() for _ in range(size)]

    def _run(self, batch):
        live = [job for job in batch if job.future.set_running_or_notify_cancel()]
        with self._cond:
            self._stats.cancelled += len(batch) - len(live)
        if not live:
            return
        started = time.perf_counter()
        error = None
        try:
            outputs = list(self.run_batch([job.item for job in live]))
            if len(outputs) != len(live):
                raise RuntimeError(f"run_batch returned {len(outputs)} outputs for a batch of "
                                   f"{len(live)}; it must return one per input, in order")
        except Exception as err:  # the callers of this batch get it; the thread goes on
            error = err
            for job in live:
                job.future.set_exception(err)
        else:
            for job, output in zip(live, outputs):
                job.future.set_result(output)
        seconds = time.perf_counter() - started
        with self._cond:
            self._stats.batches += 1
            self._stats.items += len(live)
            self._stats.failed_batches += error is not None
            self._stats.sizes[len(live)] += 1
        if self.on_batch is not None:
            try:
                self.on_batch(len(live), seconds, error)
            except Exception:  # an observer must not stop the thread every request waits on
                _log.exception("on_batch of the %s batcher failed", self._thread.name)


def _check_count(name, value, limit):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise ValueError(f"{name} must be an int from 1 to {limit:,}, got {value!r}")
