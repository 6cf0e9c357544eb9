"""The HTTP API of ``layerwise serve``: a Starlette (ASGI) app over the models' batchers.

    POST /v1/models/{name}/predict    {"instances": [INPUT, ...]} -> {"model", "predictions"}
    POST /v1/models/{name}/generate   {"prompt": "The ", ...}     -> {"model", "text", "seed"}
                                      with "stream": true, server-sent events instead
    GET  /v1/models, /v1/models/{name}  each model's state, kind, version and input
    GET  /livez, /readyz, /metrics      alive; ready (every model warm); Prometheus text

A mistake in a request is answered 4xx with {"error": "<one line>"}: 400 for a body that is
not JSON, 404 for an unknown model or path, 405 for a wrong method, 413 for a body over the
limit (by Content-Length before anything is read, else counted while reading), 422 for JSON
whose content the model cannot take (wrong shape, type, missing column or field). 503 with
Retry-After: a model still loading, a full queue, a server shutting down. The body is read as
JSON whatever its Content-Type says (``curl -d`` sends a form's type).
"""

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from layerwise.serve.batcher import BatcherClosedError, QueueFullError
from layerwise.serve.deployments import Deployments
from layerwise.serve.inputs import InputError, kind_of
from layerwise.serve.metrics import ServeMetrics

DEFAULT_MAX_BODY_BYTES = 10 * 2**20  # 10 MiB: a batch of a few hundred 224 x 224 images
# A body at least this big is parsed on a worker thread: parsing megabytes of JSON on the
# event loop would stall every other connection for that long.
PARSE_OFF_LOOP_BYTES = 256 * 2**10
RETRY_AFTER_S = 1
_DONE = object()  # ends a stream's queue

_log = logging.getLogger(__name__)


def create_app(models, *, max_batch=32, max_wait_ms=5.0, max_queue=256,
               max_body_bytes=DEFAULT_MAX_BODY_BYTES, max_new_tokens=None,
               before_warm_up=None, on_load_error=None):
    """The ASGI app serving ``models`` (name -> run directory or ServedModel). They load in
    the background once the app starts (its lifespan), so /livez answers at once and /readyz
    once all are warm; at shutdown every queued request is answered first.

    ``app.state.deployments`` holds the models and their batchers (``.batcher.stats()``).
    """
    metrics = ServeMetrics()
    deployments = Deployments(models, metrics, max_batch, max_wait_ms, max_queue,
                              max_new_tokens, before_warm_up, on_load_error)
    api = _Api(deployments, metrics, max_body_bytes, max_queue)

    @asynccontextmanager
    async def lifespan(app):
        deployments.start_loading()
        try:
            yield
        finally:  # after the server has answered its open connections
            await run_in_threadpool(deployments.close)

    routes = [
        Route("/livez", api.livez, methods=["GET"]),
        Route("/readyz", api.readyz, methods=["GET"]),
        Route("/metrics", api.prometheus, methods=["GET"]),
        Route("/v1/models", api.list_models, methods=["GET"]),
        Route("/v1/models/{name}", api.one_model, methods=["GET"]),
        Route("/v1/models/{name}/predict", api.predict, methods=["POST"]),
        Route("/v1/models/{name}/generate", api.generate, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: api.http_error})
    app.state.deployments = deployments
    app.state.metrics = metrics
    return app


def error_response(status, message, headers=None):
    headers = dict(headers or {})
    if status == 503:
        headers.setdefault("Retry-After", str(RETRY_AFTER_S))
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _Api:
    def __init__(self, deployments, metrics, max_body_bytes, max_instances):
        self.deployments, self.metrics = deployments, metrics
        self.max_body_bytes, self.max_instances = max_body_bytes, max_instances

    # --- health and listing ---------------------------------------------------------------
    async def livez(self, request):
        return self._answered("", "livez", time.perf_counter(), JSONResponse({"alive": True}))

    async def readyz(self, request):
        states = {name: d.state for name, d in self.deployments.by_name.items()}
        ready = self.deployments.ready
        response = JSONResponse({"ready": ready, "models": states},
                                status_code=200 if ready else 503)
        return self._answered("", "readyz", time.perf_counter(), response)

    async def prometheus(self, request):
        body, content_type = self.metrics.render()
        return Response(body, media_type=content_type)

    async def list_models(self, request):
        models = [d.describe() for d in self.deployments.by_name.values()]
        return self._answered("", "models", time.perf_counter(), JSONResponse({"models": models}))

    async def one_model(self, request):
        name = request.path_params["name"]
        deployment = self.deployments.by_name.get(name)
        if deployment is None:
            return error_response(404, f"no model {name!r}; this server has: "
                                       f"{', '.join(self.deployments.by_name)}")
        return JSONResponse(deployment.describe())

    async def http_error(self, request, exc):
        """A path or method the API does not have: JSON, like every other error."""
        reason = {404: f"no such path {request.url.path!r}; the API is under /v1/models",
                  405: f"{request.method} is not allowed on {request.url.path}"}
        response = error_response(exc.status_code, reason.get(exc.status_code, exc.detail),
                                  getattr(exc, "headers", None))
        return self._answered("", "other", time.perf_counter(), response)

    # --- inference ------------------------------------------------------------------------
    async def predict(self, request):
        started = time.perf_counter()
        name = request.path_params["name"]
        label = name if name in self.deployments.by_name else ""
        try:
            deployment = self.deployments.find(name, "predict")
            inputs = await self._parsed(request, lambda body: self._inputs(body, deployment))
            outputs = await deployment.batcher.run_many(inputs)
        except Exception as err:  # a request's mistake, a full queue or the model's failure
            response = self._failure(err, name)
        else:
            response = JSONResponse({"model": name, "predictions": outputs})
        return self._answered(label, "predict", started, response)

    async def generate(self, request):
        started = time.perf_counter()
        name = request.path_params["name"]
        label = name if name in self.deployments.by_name else ""
        try:
            deployment = self.deployments.find(name, "generate")
            job = await self._parsed(request, deployment.model.parse)
            if job.stream:
                return self._stream(deployment, job, label, started)
            text = await deployment.batcher.run(job)
        except Exception as err:  # as in predict: each answered by its status
            response = self._failure(err, name)
        else:
            response = JSONResponse({"model": name, "text": text, "seed": job.seed})
        return self._answered(label, "generate", started, response)

    def _stream(self, deployment, job, label, started):
        """Server-sent events: one {"text": piece} per piece as it is sampled, then an event
        'done' with the whole text and the seed (or 'error' with the reason)."""
        loop = asyncio.get_running_loop()
        pieces = asyncio.Queue()

        def put(item):  # from the inference thread
            try:
                loop.call_soon_threadsafe(pieces.put_nowait, item)
            except RuntimeError:  # the loop has closed: no one is listening any more
                pass

        job.emit = put
        future = deployment.batcher.submit(job)  # QueueFullError: answered 503 by the caller
        future.add_done_callback(lambda _: put(_DONE))

        async def events():
            status = 200
            try:
                while (piece := await pieces.get()) is not _DONE:
                    yield _event({"text": piece})
                error = future.exception() if not future.cancelled() else BatcherClosedError()
                if error is None:
                    yield _event({"text": future.result(), "seed": job.seed}, "done")
                else:
                    status = 500
                    yield _event({"error": _one_line(error)}, "error")
            finally:
                job.cancelled.set()  # a client that left stops the generation
                future.cancel()
                self.metrics.observe_request(label, "generate", status,
                                             time.perf_counter() - started)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    # --- helpers --------------------------------------------------------------------------
    async def _parsed(self, request, parse):
        """``parse(JSON body)``, the body read within the size limit."""
        body = await self._body(request)
        if len(body) >= PARSE_OFF_LOOP_BYTES:
            return await run_in_threadpool(lambda: parse(_json(body)))
        return parse(_json(body))

    async def _body(self, request):
        limit = self.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise InputError(f"the body is {int(declared):,} bytes; this server takes at most "
                             f"{limit:,} (--max-body-mb)", status=413)
        chunks, size = [], 0
        async for chunk in request.stream():  # counted too: a chunked body has no length
            size += len(chunk)
            if size > limit:
                raise InputError(f"the body is over {limit:,} bytes, the most this server "
                                 f"takes (--max-body-mb)", status=413)
            chunks.append(chunk)
        return b"".join(chunks)

    def _inputs(self, body, deployment):
        """The checked inputs of {"instances": [...]}."""
        if not isinstance(body, dict) or "instances" not in body:
            raise InputError('expected a JSON object {"instances": [INPUT, ...]}; got '
                             f"{kind_of(body)}" + (f" with keys {_keys(body)}"
                                                 if isinstance(body, dict) else ""))
        if set(body) != {"instances"}:
            extra = sorted(set(body) - {"instances"})
            raise InputError(f"unknown field {extra[0]!r}; the body is "
                             '{"instances": [INPUT, ...]} alone')
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise InputError(f"instances must be a non-empty list of inputs; got "
                             f"{kind_of(instances)}")
        if len(instances) > self.max_instances:
            raise InputError(f"instances holds {len(instances):,} inputs; at most "
                             f"{self.max_instances:,} per request (the server's --queue)",
                             status=413)
        model, inputs = deployment.model, []
        for i, instance in enumerate(instances):
            try:
                inputs.append(model.parse(instance))
            except InputError as err:
                where = f"instances[{i}]: " if len(instances) > 1 else ""
                raise InputError(f"{where}{err}", err.status) from None
        return inputs

    def _failure(self, err, name):
        if isinstance(err, InputError):
            return error_response(err.status, _one_line(err))
        if isinstance(err, QueueFullError):
            return error_response(503, f"model {name!r} is busy: {err}; retry after "
                                       f"{RETRY_AFTER_S} s")
        if isinstance(err, BatcherClosedError):
            return error_response(503, f"model {name!r}: {err}")
        if isinstance(err, ClientDisconnect):  # no one reads this answer: it is counted only
            return error_response(400, "the client disconnected before sending its body")
        _log.error("model %s failed on a batch", name, exc_info=err)
        return error_response(500, f"model {name!r} failed on this request's batch: "
                                   f"{type(err).__name__}: {_one_line(err)}")

    def _answered(self, label, endpoint, started, response):
        self.metrics.observe_request(label, endpoint, response.status_code,
                                     time.perf_counter() - started)
        return response


def _json(body):
    if not body.strip():
        raise InputError("the body is empty; expected JSON", status=400)
    try:
        return json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        raise InputError("the body's JSON is nested too deeply", status=400) from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, NaN
        raise InputError(f"the body is not JSON: {_one_line(err)}", status=400) from None


def _no_constant(name):
    raise ValueError(f"{name} is not JSON (JSON numbers are finite)")


def _event(data, name=None):
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {json.dumps(data)}\n\n"


def _one_line(err):
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _keys(body):
    keys = sorted(body)[:5]
    return ", ".join(repr(k) for k in keys) if keys else "none"
