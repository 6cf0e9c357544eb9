"""Serving load test: requests per second and p50/p99 latency of `layerwise serve`'s HTTP app.

    uv run python bench/serve.py                        # trains brief mlp and cnn runs first
    uv run python bench/serve.py --mlp runs/mlp-... --cnn runs/cnn-...
    uv run python bench/serve.py --quick                # a smoke run of seconds, not a measurement

For the MLP and the CNN image runs, each served alone on 127.0.0.1 (a free port) in three
ways: the app with dynamic batching (max batch 32, max wait 5 ms: `layerwise serve`'s
defaults), the app with batching off (max batch 1), and the same model exported to ONNX and
run by onnxruntime behind the same app and batcher (batching on). Each is loaded by 1, 8
and 64 clients, each client one keep-alive connection sending one digit image (JSON nested
lists, as a user would) and waiting for its answer before sending the next. A cell stops at
its request count or its time, whichever comes first; every request goes to 127.0.0.1 only.

The clients run in a child process (this script with --client), an asyncio loop over raw
sockets, so that the client's Python does not share the server's interpreter lock. Latency is
from the first byte sent to the whole answer read, on the client's clock. The runs' weights
are trained briefly (one epoch): serving speed depends on the architecture, not on accuracy.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time

CONCURRENCY = (1, 8, 64)
FULL = {"requests": 2_000, "seconds": 10.0}  # per cell, whichever ends it first
QUICK = {"requests": 8, "seconds": 0.5}
CLIENT_GRACE_S = 60.0  # past its time, a stuck cell is ended rather than waited on
BATCHED = {"max_batch": 32, "max_wait_ms": 5.0}
UNBATCHED = {"max_batch": 1, "max_wait_ms": 0.0}
QUEUE = 1_024  # above 64 clients' worth: the load test measures speed, not backpressure
HOST = "127.0.0.1"
COMPARED_IMAGES = 32  # test images on which onnxruntime's answers are checked against ours


# --- the client (child process) ---------------------------------------------------------------


async def _read_response(reader):
    """The status of one HTTP/1.1 response, its body read (by Content-Length) and dropped."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    status = int(status_line.split()[1])
    length, close = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            close = True
    await reader.readexactly(length)
    return status, close


async def load(port, path, body, clients, max_requests, max_seconds):
    """Latencies (s) of up to ``max_requests`` POSTs of ``body`` by ``clients`` connections
    within ``max_seconds``; (latencies, errors, wall seconds)."""
    request = (f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    latencies, errors = [], []
    budget = [max_requests]
    deadline = time.perf_counter() + max_seconds

    async def client():
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while budget[0] > 0 and time.perf_counter() < deadline:
                budget[0] -= 1
                started = time.perf_counter()
                writer.write(request)
                await writer.drain()
                status, close = await _read_response(reader)
                latencies.append(time.perf_counter() - started)
                if status != 200:
                    errors.append(status)
                if close:
                    writer.close()
                    reader, writer = await asyncio.open_connection(HOST, port)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(client() for _ in range(clients))),
                           max_seconds + CLIENT_GRACE_S)
    return latencies, errors, time.perf_counter() - started


async def _metrics_batches(port, model):
    """(inputs, model calls) so far, from the server's /metrics batch-size histogram."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(f"GET /metrics HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        await writer.drain()
        body = await _read_body(reader)
    finally:
        writer.close()
    values = {}
    for line in body.decode().splitlines():
        for key in ("sum", "count"):
            if line.startswith(f'layerwise_batch_size_{key}{{model="{model}"}}'):
                values[key] = float(line.rsplit(" ", 1)[1])
    return values.get("sum", 0.0), values.get("count", 0.0)


async def _read_body(reader):
    await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return await reader.readexactly(length)


async def load_levels(spec, body):
    """One result per concurrency level of ``spec``: latencies, errors, wall seconds and the
    batches the server formed meanwhile."""
    results = []
    for clients in spec["levels"]:
        items_before, calls_before = await _metrics_batches(spec["port"], spec["model"])
        latencies, errors, wall = await load(spec["port"], spec["path"], body, clients,
                                             max(spec["requests"], clients), spec["seconds"])
        items, calls = await _metrics_batches(spec["port"], spec["model"])
        results.append({"clients": clients, "latencies": latencies, "errors": errors,
                        "wall": wall, "items": items - items_before,
                        "calls": calls - calls_before})
    return results


def client_main(spec):
    spec = json.loads(spec)
    with open(spec["body"], "rb") as f:
        body = f.read()
    print(json.dumps(asyncio.run(load_levels(spec, body))))


def run_client(port, model, body_file, budget):
    """Every concurrency level against the server on ``port``, from a child process."""
    spec = {"port": port, "model": model, "path": f"/v1/models/{model}/predict",
            "body": body_file, "levels": list(CONCURRENCY), **budget}
    limit = len(CONCURRENCY) * (budget["seconds"] + CLIENT_GRACE_S) + CLIENT_GRACE_S
    done = subprocess.run([sys.executable, __file__, "--client", json.dumps(spec)],
                          capture_output=True, text=True, check=True, timeout=limit)
    return json.loads(done.stdout)


# --- the server side --------------------------------------------------------------------------


def train_run(recipe, out, quick):
    from layerwise.cli.main import main

    subset = "64" if quick else "1000"
    rc = main(["train", "--model", recipe, "--epochs", "1", "--set", f"train_subset={subset}",
               "--no-progress", "--no-card", "--out", out, "--name", recipe])
    if rc != 0:
        raise SystemExit(f"training the {recipe} run failed (exit {rc})")
    return os.path.join(out, recipe)


def onnx_model(served, workdir):
    """(a ServedModel running ``served``'s network in onnxruntime, None) or (None, why not)."""
    import numpy as np

    example = np.zeros((1, *served.shape), dtype=np.float32)
    path = os.path.join(workdir, f"{served.version['run']}.onnx")
    try:
        _export(served.model, example, path)
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as err:  # the exporter is reported, not debugged, here
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        return None, f"ONNX export failed ({type(err).__name__}: {reason})"
    return _onnx_class()(served, session), None


def max_difference(onnx, served, images):
    """The largest |p_onnxruntime - p_layerwise| over the classes of ``images``."""
    a = [p["probabilities"] for p in onnx.run_batch(list(images))]
    b = [p["probabilities"] for p in served.run_batch(list(images))]
    return max(abs(x[k] - y[k]) for x, y in zip(a, b) for k in x)


def _export(model, example, path):
    """``lw.onnx.export(model, example, path)`` (the tracing exporter) where the package is
    there, else the converter-based ``layerwise.interop.export_onnx``."""
    import importlib.util

    if importlib.util.find_spec("layerwise.onnx") is not None:
        from layerwise.onnx import export

        export(model, example, path)
    else:
        from layerwise.interop import export_onnx

        export_onnx(model, path, example)


def _onnx_class():
    """The ServedModel class running a network in onnxruntime (defined on first use: the
    client process never imports layerwise)."""
    from layerwise.serve.models import ImageModel, class_predictions

    class OnnxRuntimeModel(ImageModel):
        """An ImageModel whose batches run in onnxruntime: the same parsing and outputs."""

        def __init__(self, served, session):
            self.__dict__.update(served.__dict__)
            self.session = session
            self.input_name = session.get_inputs()[0].name
            self.dynamic_batch = not isinstance(session.get_inputs()[0].shape[0], int)

        def run_batch(self, inputs):
            import numpy as np

            batch = np.stack(inputs)  # (B, C, H, W)
            if self.dynamic_batch:
                logits = self.session.run(None, {self.input_name: batch})[0]
            else:  # exported for batch 1: one call per input
                logits = np.concatenate([self.session.run(None, {self.input_name: x[None]})[0]
                                         for x in batch])
            return class_predictions(logits, self.classes)

    return OnnxRuntimeModel


def measure(name, served, settings, body_file, budget):
    """Rows of one served model under one batching setting, one per concurrency level."""
    from layerwise.serve import ServerThread, create_app

    app = create_app({name: served}, max_queue=QUEUE, **settings)
    with ServerThread(app) as server:
        deployment = app.state.deployments.by_name[name]
        deadline = time.monotonic() + 60
        while not app.state.deployments.ready:
            if deployment.state == "failed" or time.monotonic() > deadline:
                raise SystemExit(f"{name} did not load: {deployment.reason}")
            time.sleep(0.01)
        return [_row(level) for level in run_client(server.port, name, body_file, budget)]


def _row(level):
    latencies = sorted(level["latencies"])
    n = len(latencies)

    def quantile(q):
        return latencies[min(n - 1, int(q * n))] * 1000 if n else float("nan")

    return {"clients": level["clients"], "requests": n, "errors": len(level["errors"]),
            "rps": n / level["wall"] if level["wall"] > 0 else float("nan"),
            "p50_ms": quantile(0.50), "p99_ms": quantile(0.99),
            "mean_batch": level["items"] / level["calls"] if level["calls"] else float("nan")}


def print_table(results, notes):
    print("| model | served by | clients | requests | req/s | p50 ms | p99 ms | mean batch |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for (model, way), rows in results.items():
        for r in rows:
            errors = f" ({r['errors']} errors)" if r["errors"] else ""
            print(f"| {model} | {way} | {r['clients']} | {r['requests']}{errors} | "
                  f"{r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                  f"{r['mean_batch']:.1f} |")
    for note in notes:
        print(note)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlp", metavar="RUN", help="a finished mlp run (default: train one)")
    parser.add_argument("--cnn", metavar="RUN", help="a finished cnn run (default: train one)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK['requests']} requests or {QUICK['seconds']:g} s a cell, "
                        "runs trained on 64 images: a smoke run, not a measurement")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="BLAS threads of the server (default: the BLAS's own choice)")
    parser.add_argument("--client", help=argparse.SUPPRESS)  # internal: the load generator
    args = parser.parse_args(argv)
    if args.client is not None:
        client_main(args.client)
        return 0
    if args.threads is not None:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)  # before layerwise brings in NumPy's BLAS
    budget = QUICK if args.quick else FULL
    from layerwise.serve import load_model
    from layerwise.train.finished import load_finished_run

    results, notes = {}, []
    with tempfile.TemporaryDirectory() as workdir:
        runs = {"mlp": args.mlp or train_run("mlp", workdir, args.quick),
                "cnn": args.cnn or train_run("cnn", workdir, args.quick)}
        for recipe, run_dir in runs.items():
            test = load_finished_run(run_dir).splits["test"]
            image = test[0][0].data if hasattr(test[0][0], "data") else test[0][0]
            body_file = os.path.join(workdir, f"{recipe}.json")
            with open(body_file, "w") as f:
                json.dump({"instances": [image.tolist()]}, f)
            served = load_model(run_dir)
            results[(recipe, "layerwise, batching on")] = measure(
                recipe, served, BATCHED, body_file, budget)
            results[(recipe, "layerwise, batching off")] = measure(
                recipe, served, UNBATCHED, body_file, budget)
            onnx, why_not = onnx_model(served, workdir)
            if onnx is None:
                notes.append(f"{recipe}, onnxruntime: not measured: {why_not}")
                continue
            images = [test[i][0].data if hasattr(test[i][0], "data") else test[i][0]
                      for i in range(min(len(test), COMPARED_IMAGES))]
            notes.append(f"{recipe}, onnxruntime: max |p - p_layerwise| "
                         f"{max_difference(onnx, served, images):.1e} over "
                         f"{len(images)} test images")
            if not onnx.dynamic_batch:
                notes.append(f"{recipe}, onnxruntime: the export has a fixed batch of 1, so "
                             f"each batch runs one session call per input")
            results[(recipe, "onnxruntime, batching on")] = measure(
                recipe, onnx, BATCHED, body_file, budget)
    print_table(results, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
