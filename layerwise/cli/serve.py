"""``layerwise serve RUN [RUN ...]``: finished runs behind an HTTP API until Ctrl-C.

    layerwise serve runs/mlp-20260101-120000 runs/gpt-20260101-130000 --port 8000
    curl -s localhost:8000/v1/models/mlp-20260101-120000/predict -d '{"instances": [...]}'

Each model is named by its run directory. Every setting, every run's config and the address
are checked before any model loads; the models then load in the background while /livez
already answers, and /readyz says when all are warm (``layerwise.serve.app`` lists the API).
Needs the ``serve`` extra.
"""

import ipaddress
import os
import sys

from layerwise.cli.argtypes import MAX_BATCH_SIZE, MAX_NEW_TOKENS, float_in_range, int_in_range
from layerwise.errors import LayerwiseError
from layerwise.limits import MAX_BATCH_WAIT_MS, MAX_QUEUED_REQUESTS

MAX_PORT = 65_535
MAX_BODY_MB = 1_024.0  # a JSON body of a gigabyte is a mistake, whatever the model
DEFAULT_MAX_NEW_TOKENS = 512  # as layerwise.serve.language's default


def add_parser(commands):
    serve = commands.add_parser(
        "serve", help="serve finished runs over HTTP: predict, generate, metrics",
        description="Serve finished runs over HTTP (Starlette on uvicorn) with dynamic "
                    "batching, until Ctrl-C. Each model is named by its run directory.")
    serve.add_argument("runs", nargs="+", metavar="RUN",
                       help="a finished run directory (or its name under --out); several "
                       "are served side by side")
    serve.add_argument("--host", default="127.0.0.1", type=_host, metavar="ADDR",
                       help="address to listen on (default: 127.0.0.1, this machine only; "
                       "0.0.0.0 for every interface)")
    serve.add_argument("--port", type=int_in_range(0, MAX_PORT), default=8000, metavar="N",
                       help="port to listen on; 0 picks a free one (default: 8000)")
    serve.add_argument("--max-batch", type=int_in_range(1, MAX_BATCH_SIZE), default=32,
                       metavar="N", help="most inputs in one model call (default: 32; 1 "
                       "turns batching off)")
    serve.add_argument("--max-wait-ms", type=float_in_range(0, MAX_BATCH_WAIT_MS), default=5.0,
                       metavar="MS", help="longest an input waits for its batch to fill "
                       "(default: 5)")
    serve.add_argument("--queue", type=int_in_range(1, MAX_QUEUED_REQUESTS), default=256,
                       metavar="N", help="inputs a model holds waiting; past it requests get "
                       "503 with Retry-After (default: 256)")
    serve.add_argument("--max-body-mb", type=float_in_range(0.001, MAX_BODY_MB), default=10.0,
                       metavar="MB", help="largest request body in MiB (default: 10)")
    serve.add_argument("--max-new-tokens", type=int_in_range(1, MAX_NEW_TOKENS),
                       default=DEFAULT_MAX_NEW_TOKENS, metavar="N",
                       help=f"most tokens one generate request may ask for (default: "
                       f"{DEFAULT_MAX_NEW_TOKENS})")
    serve.add_argument("--out", default="runs", metavar="DIR",
                       help="where to look for a RUN given by name (default: runs)")
    serve.set_defaults(handler=serve_runs)


def _host(text):
    import argparse

    if text == "localhost":
        return "127.0.0.1"
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an IP address such as 127.0.0.1 or 0.0.0.0 "
                                         f"(or localhost), got {text!r}") from None


def serve_runs(args):
    from layerwise.serve import INSTALL_HINT, check_run, missing_serve_packages

    missing = missing_serve_packages()
    if missing:
        raise LayerwiseError(f"`layerwise serve` needs {', '.join(missing)}, which "
                             f"{'is' if len(missing) == 1 else 'are'} not installed; "
                             f"{INSTALL_HINT}")
    models = _named_runs(args.runs, args.out)
    for run_dir in models.values():
        check_run(run_dir)  # finished, and of a kind the server takes: before any loads
    from layerwise.serve.app import create_app
    from layerwise.serve.server import bind, make_server

    sock = bind(args.host, args.port)  # a port in use fails here, in one line
    failed = []

    def stop_on_failure(name, error):
        failed.append(error)
        server.should_exit = True

    app = create_app(models, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                     max_queue=args.queue, max_body_bytes=int(args.max_body_mb * 2**20),
                     max_new_tokens=args.max_new_tokens, on_load_error=stop_on_failure)
    server = make_server(app, log_level="info", access_log=True)
    host, port = sock.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    print(f"serving {', '.join(models)} on http://{shown_host}:{port} (loading; GET /readyz "
          f"says when ready; Ctrl-C stops after answering what is queued)", flush=True)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shut down gracefully, then passed the Ctrl-C on
        print("stopped", file=sys.stderr)
        return 130
    finally:
        sock.close()
    if failed:
        raise failed[0]
    return 0


def _named_runs(runs, out):
    """{model name: run directory}: each RUN as given, or under ``out``; two runs of one
    name are refused (the name is the URL's)."""
    from layerwise.cli.main import UsageError

    models = {}
    for run in runs:
        run_dir = run
        if not os.path.isdir(run_dir) and os.path.isdir(os.path.join(out, run_dir)):
            run_dir = os.path.join(out, run_dir)
        name = os.path.basename(os.path.normpath(run_dir))
        if name in models:
            raise UsageError(f"two runs are named {name!r} ({models[name]} and {run_dir}); a "
                           f"model is named by its run directory, so serve runs of different "
                           f"names")
        models[name] = run_dir
    return models
