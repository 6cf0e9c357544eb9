"""The Batcher alone, without HTTP: batches close by size and by time, outputs keep their
order, a full queue raises QueueFullError, close answers what is queued, and a model's
exception reaches only the callers of its batch."""

import asyncio
import threading
import time

import pytest

from layerwise.serve import Batcher, BatcherClosedError, QueueFullError

LONG_WAIT_MS = 10_000  # longer than any test: a batch that closes closed by size
TIMEOUT_S = 10


class Gate:
    """A model function that records its batches and, while closed, holds the first batch."""

    def __init__(self, closed=False):
        self.batches = []
        self.started = threading.Event()
        self.open = threading.Event()
        if not closed:
            self.open.set()

    def __call__(self, items):
        self.batches.append(list(items))
        self.started.set()
        assert self.open.wait(TIMEOUT_S)
        return [x * 10 for x in items]


def test_a_full_batch_runs_at_once_without_waiting_for_the_time_limit():
    gate = Gate()
    with Batcher(gate, max_batch=4, max_wait_ms=LONG_WAIT_MS) as batcher:
        started = time.monotonic()
        futures = batcher.submit_many(range(8))
        results = [f.result(TIMEOUT_S) for f in futures]
        elapsed = time.monotonic() - started
    assert results == [0, 10, 20, 30, 40, 50, 60, 70]
    assert gate.batches == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert elapsed < LONG_WAIT_MS / 1000 / 2
    stats = batcher.stats()
    assert (stats.requests, stats.batches, stats.items) == (8, 2, 8)
    assert stats.sizes == {4: 2} and stats.largest_batch == 4


def test_a_batch_that_does_not_fill_runs_once_its_oldest_request_has_waited():
    gate = Gate()
    wait_ms = 80
    with Batcher(gate, max_batch=100, max_wait_ms=wait_ms) as batcher:
        started = time.monotonic()
        first = batcher.submit("a")
        time.sleep(0.01)
        second = batcher.submit("b")
        assert first.result(TIMEOUT_S) == "a" * 10 and second.result(TIMEOUT_S) == "b" * 10
        elapsed = time.monotonic() - started
    assert gate.batches == [["a", "b"]]  # one batch: the second joined the first's wait
    assert elapsed >= wait_ms / 1000 * 0.9


def test_outputs_reach_their_own_callers_from_many_threads():
    with Batcher(lambda xs: [x * x for x in xs], max_batch=7, max_wait_ms=1) as batcher:
        results = {}

        def caller(k):
            results[k] = [batcher.submit(k * 100 + i).result(TIMEOUT_S) for i in range(20)]

        threads = [threading.Thread(target=caller, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT_S)
    for k in range(8):
        assert results[k] == [(k * 100 + i) ** 2 for i in range(20)]
    stats = batcher.stats()
    assert stats.items == 160 and stats.largest_batch <= 7


def test_a_full_queue_raises_queue_full_and_the_queued_requests_still_run():
    gate = Gate(closed=True)
    batcher = Batcher(gate, max_batch=1, max_wait_ms=0, max_queue=2)
    running = batcher.submit(1)
    assert gate.started.wait(TIMEOUT_S)  # taken off the queue: the model holds it
    queued = batcher.submit_many([2, 3])
    with pytest.raises(QueueFullError, match="holds 2 of its 2"):
        batcher.submit(4)
    with pytest.raises(QueueFullError):  # all or nothing: one place is not two
        batcher.submit_many([4, 5])
    assert batcher.queue_depth == 2
    gate.open.set()
    assert [f.result(TIMEOUT_S) for f in [running, *queued]] == [10, 20, 30]
    assert batcher.submit(4).result(TIMEOUT_S) == 40  # room again
    batcher.close()


def test_close_answers_every_queued_request_then_refuses_new_ones():
    gate = Gate(closed=True)
    batcher = Batcher(gate, max_batch=2, max_wait_ms=LONG_WAIT_MS)
    futures = batcher.submit_many(range(5))
    assert gate.started.wait(TIMEOUT_S)
    closer = threading.Thread(target=batcher.close)
    closer.start()
    time.sleep(0.05)
    assert closer.is_alive()  # close waits for the queue to drain
    with pytest.raises(BatcherClosedError):
        batcher.submit(9)
    gate.open.set()
    closer.join(TIMEOUT_S)
    assert not closer.is_alive()
    assert [f.result(0) for f in futures] == [0, 10, 20, 30, 40]
    # closing does not wait out max_wait for a batch to fill
    assert [len(b) for b in gate.batches] == [2, 2, 1]


def test_close_without_drain_fails_the_queued_requests():
    gate = Gate(closed=True)
    batcher = Batcher(gate, max_batch=1, max_wait_ms=0)
    running, *queued = batcher.submit_many([1, 2, 3])
    assert gate.started.wait(TIMEOUT_S)
    closer = threading.Thread(target=batcher.close, kwargs={"drain": False})
    closer.start()
    for future in queued:
        with pytest.raises(BatcherClosedError):
            future.result(TIMEOUT_S)
    gate.open.set()
    closer.join(TIMEOUT_S)
    assert running.result(0) == 10  # the batch already running finishes


def test_an_exception_in_the_model_reaches_only_its_batch():
    def model(items):
        if any(x < 0 for x in items):
            raise ValueError(f"negative input in {items}")
        return [x + 1 for x in items]

    with Batcher(model, max_batch=2, max_wait_ms=LONG_WAIT_MS) as batcher:
        futures = batcher.submit_many([1, -1, 2, 3])
        for future in futures[:2]:
            with pytest.raises(ValueError, match=r"negative input in \[1, -1\]"):
                future.result(TIMEOUT_S)
        assert [f.result(TIMEOUT_S) for f in futures[2:]] == [3, 4]
        assert batcher.submit_many([5, 6])[1].result(TIMEOUT_S) == 7  # the thread lives on
    stats = batcher.stats()
    assert (stats.batches, stats.failed_batches) == (3, 1)


def test_a_model_that_returns_the_wrong_number_of_outputs_fails_its_batch():
    with Batcher(lambda xs: xs[:-1], max_batch=2, max_wait_ms=LONG_WAIT_MS) as batcher:
        futures = batcher.submit_many([1, 2])
        with pytest.raises(RuntimeError, match="returned 1 outputs for a batch of 2"):
            futures[0].result(TIMEOUT_S)


def test_a_request_cancelled_before_its_batch_runs_is_skipped():
    gate = Gate(closed=True)
    with Batcher(gate, max_batch=1, max_wait_ms=0) as batcher:
        first, second, third = batcher.submit_many([1, 2, 3])
        assert gate.started.wait(TIMEOUT_S)
        assert second.cancel()
        gate.open.set()
        assert third.result(TIMEOUT_S) == 30 and first.result(0) == 10
    assert [b for b in gate.batches] == [[1], [3]]
    assert batcher.stats().cancelled == 1


def test_asyncio_callers_await_their_outputs_together():
    async def main(batcher):
        return await asyncio.gather(*(batcher.run(i) for i in range(10)),
                                    batcher.run_many([100, 101]))

    gate = Gate()
    with Batcher(gate, max_batch=16, max_wait_ms=50) as batcher:
        results = asyncio.run(main(batcher))
    assert results == [i * 10 for i in range(10)] + [[1000, 1010]]
    assert batcher.stats().batches < 12  # fewer model calls than requests


@pytest.mark.parametrize("setting, value, message", [
    ("max_batch", 0, "max_batch must be an int from 1"),
    ("max_batch", 2.5, "max_batch must be an int from 1"),
    ("max_queue", True, "max_queue must be an int from 1"),
    ("max_wait_ms", -1, "max_wait_ms must be a number from 0"),
    ("max_wait_ms", float("nan"), "max_wait_ms must be a number from 0"),
])
def test_bad_settings_are_refused_in_one_line(setting, value, message):
    with pytest.raises(ValueError, match=message) as err:
        Batcher(lambda xs: xs, **{setting: value})
    assert "\n" not in str(err.value) and repr(value) in str(err.value)
