"""A server's life: /readyz false until every model is warm, 503 with Retry-After when a
queue is full, and a shutdown that answers every queued request first."""

import threading
import time

from layerwise.serve import InputError, ServedModel
from tests.serve.client import IMAGE, TIMEOUT_S, get, post, predict, start, wait_ready


def test_readyz_is_false_until_every_model_has_run_its_warm_up_batch(runs):
    release = threading.Event()
    warming = threading.Event()

    def hold(name):
        warming.set()
        assert release.wait(TIMEOUT_S)

    server = start({"digits": runs["image"]}, before_warm_up=hold)
    try:
        assert get(server.port, "/livez") == (200, {"alive": True})
        assert warming.wait(TIMEOUT_S)
        status, body = get(server.port, "/readyz")
        assert (status, body) == (503, {"ready": False, "models": {"digits": "warming up"}})
        status, headers, answer = post(server.port, "/v1/models/digits/predict",
                                       {"instances": [IMAGE]})
        assert status == 503 and headers["retry-after"] == "1"
        assert "is warming up" in answer["error"]
        release.set()
        assert wait_ready(server.port) == {"ready": True, "models": {"digits": "ready"}}
        assert predict(server, "digits", [IMAGE])[0]["label"] in [str(d) for d in range(10)]
    finally:
        release.set()
        server.stop()


class SlowDoubler(ServedModel):
    """A model of a number that takes SECONDS a batch: long enough to stop the server while
    requests wait."""

    SECONDS = 0.15
    kind = "test"

    def __init__(self):
        self.version = {"run": "slow"}

    def input_spec(self):
        return {"number": "any"}

    def parse(self, instance):
        if isinstance(instance, bool) or not isinstance(instance, (int, float)):
            raise InputError("a number")
        return instance

    def run_batch(self, inputs):
        time.sleep(self.SECONDS)
        return [{"value": 2 * x} for x in inputs]

    def warm_up_input(self):
        return 0


def test_shutdown_answers_every_queued_request_first():
    server = start({"slow": SlowDoubler()}, max_batch=2, max_wait_ms=0)
    deployments = server.server.config.app.state.deployments
    wait_ready(server.port)
    answers = {}

    def client(k):
        answers[k] = post(server.port, "/v1/models/slow/predict", {"instances": [k]})

    threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    batcher = deployments.by_name["slow"].batcher
    deadline = time.monotonic() + TIMEOUT_S
    while batcher.stats().requests < 6 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert batcher.queue_depth >= 2  # some wait behind the running batch
    server.stop()
    for t in threads:
        t.join(TIMEOUT_S)
    assert {k: (a[0], a[2]) for k, a in answers.items()} == \
        {k: (200, {"model": "slow", "predictions": [{"value": 2 * k}]}) for k in range(6)}
    assert batcher.closed and batcher.stats().items == 6



class GatedDoubler(SlowDoubler):
    """Holds every batch while ``gate`` is closed (``started`` says one is held)."""

    def __init__(self):
        super().__init__()
        self.gate, self.started = threading.Event(), threading.Event()
        self.gate.set()  # open for the warm-up batch

    def run_batch(self, inputs):
        self.started.set()
        assert self.gate.wait(TIMEOUT_S)
        return [{"value": 2 * x} for x in inputs]


def test_a_full_queue_is_answered_503_with_retry_after():
    model = GatedDoubler()
    server = start({"gated": model}, max_batch=1, max_wait_ms=0, max_queue=2)
    try:
        wait_ready(server.port)
        model.gate.clear()
        model.started.clear()
        batcher = server.server.config.app.state.deployments.by_name["gated"].batcher
        answers = {}

        def client(k):
            answers[k] = post(server.port, "/v1/models/gated/predict", {"instances": [k]})

        threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
        threads[0].start()
        assert model.started.wait(TIMEOUT_S)  # the first is running, held at the gate
        for t in threads[1:]:
            t.start()
        deadline = time.monotonic() + TIMEOUT_S
        while batcher.queue_depth < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        status, headers, answer = post(server.port, "/v1/models/gated/predict",
                                       {"instances": [9]})
        assert status == 503 and headers["retry-after"] == "1"
        assert "model 'gated' is busy: the queue holds 2 of its 2 requests" in answer["error"]
        model.gate.set()
        for t in threads:
            t.join(TIMEOUT_S)
        assert {k: a[0] for k, a in answers.items()} == {0: 200, 1: 200, 2: 200}
    finally:
        model.gate.set()
        server.stop()

