"""The models of one server: each loaded, warmed up and given its Batcher, in the background.

A model is 'loading', then 'warming up' (one batch of a valid input runs, so the first real
request does not pay for first-call costs: weights paged in, kernels compiled, buffers
allocated), then 'ready'; or 'failed' with the one-line reason. The server is ready when
every model is.
"""

import logging
import os
import threading
from dataclasses import dataclass

from layerwise.serve.batcher import Batcher
from layerwise.serve.inputs import InputError
from layerwise.serve.models import ServedModel, load_model

LOADING, WARMING_UP, READY, FAILED = "loading", "warming up", "ready", "failed"

_log = logging.getLogger(__name__)


@dataclass
class Deployment:
    name: str
    source: object  # a run directory, or a ServedModel already built
    state: str = LOADING
    reason: str = None  # why it failed
    model: ServedModel = None
    batcher: Batcher = None

    def describe(self):
        out = {"name": self.name, "state": self.state}
        if self.model is not None:
            out.update(self.model.describe())
        else:
            out["run"] = os.fspath(self.source)
        if self.reason is not None:
            out["reason"] = self.reason
        return out


class Deployments:
    """Named models and their batchers. ``models``: name -> run directory or ServedModel.

    ``before_warm_up(name)`` runs just before a model's warm-up batch (a test holds it there
    to see /readyz answer 'not ready'); ``on_load_error(name, error)`` when one fails.
    """

    def __init__(self, models, metrics, max_batch=32, max_wait_ms=5.0, max_queue=256,
                 max_new_tokens=None, before_warm_up=None, on_load_error=None):
        self.by_name = {name: Deployment(name, source) for name, source in models.items()}
        self.metrics = metrics
        self.max_batch, self.max_wait_ms, self.max_queue = max_batch, max_wait_ms, max_queue
        self.max_new_tokens = max_new_tokens
        self.before_warm_up, self.on_load_error = before_warm_up, on_load_error
        self._stopping = threading.Event()
        self._loader = None
        for name in self.by_name:
            metrics.ready.labels(name).set(0)

    @property
    def ready(self):
        return all(d.state == READY for d in self.by_name.values())

    def start_loading(self):
        """Load every model in a background thread; returns at once."""
        self._loader = threading.Thread(target=self._load_all, name="layerwise-serve-loader",
                                        daemon=True)
        self._loader.start()

    def _load_all(self):
        for deployment in self.by_name.values():
            if self._stopping.is_set():
                return
            try:
                self._load(deployment)
            except Exception as err:  # one line in /readyz and /v1/models; the server decides
                deployment.state = FAILED
                deployment.reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
                _log.error("model %s failed to load: %s", deployment.name, deployment.reason)
                if self.on_load_error is not None:
                    self.on_load_error(deployment.name, err)

    def _load(self, deployment):
        source = deployment.source
        model = source if isinstance(source, ServedModel) else \
            load_model(source, self.max_new_tokens)
        deployment.model = model
        deployment.state = WARMING_UP
        if self.before_warm_up is not None:
            self.before_warm_up(deployment.name)
        model.run_batch([model.warm_up_input()])
        if self._stopping.is_set():  # the server shut down meanwhile: no thread to start
            return
        max_batch = self.max_batch if model.batchable else 1
        deployment.batcher = Batcher(model.run_batch, max_batch, self.max_wait_ms,
                                     self.max_queue, name=deployment.name,
                                     on_batch=self.metrics.batch_observer(deployment.name))
        self.metrics.watch(deployment.name, deployment.batcher)
        deployment.state = READY
        self.metrics.ready.labels(deployment.name).set(1)

    def find(self, name, endpoint):
        """The ready Deployment called ``name`` that answers ``endpoint``; InputError (404, or
        503 while it loads) otherwise."""
        deployment = self.by_name.get(name)
        if deployment is None:
            raise InputError(f"no model {name!r}; this server has: "
                             f"{', '.join(self.by_name)} (GET /v1/models)", status=404)
        if deployment.state == FAILED:
            raise InputError(f"model {name!r} failed to load: {deployment.reason}", status=503)
        if deployment.state != READY:
            raise InputError(f"model {name!r} is {deployment.state}; retry shortly (GET "
                             f"/readyz says when every model is ready)", status=503)
        if deployment.model.endpoint != endpoint:
            raise InputError(f"model {name!r} ({deployment.model.kind}) answers POST "
                             f"/v1/models/{name}/{deployment.model.endpoint}, not /{endpoint}",
                             status=404)
        return deployment

    def close(self, drain=True, timeout=None):
        """Stop loading; close every batcher, answering what is queued (``drain``)."""
        self._stopping.set()
        for deployment in self.by_name.values():
            if deployment.batcher is not None:
                deployment.batcher.close(drain=drain, timeout=timeout)
