"""Serving finished runs: dynamic batching, the models' input checks and an HTTP app.

    from layerwise.serve import Batcher, load_model
    model = load_model("runs/mlp-20260101-120000")
    with Batcher(model.run_batch, max_batch=32, max_wait_ms=5) as batcher:
        prediction = batcher.submit(model.parse(image)).result()

    from layerwise.serve import create_app, ServerThread     # needs the `serve` extra
    with ServerThread(create_app({"mlp": "runs/mlp-20260101-120000"})) as server: ...

``Batcher``, the models and their input checks need only the core; ``create_app`` (Starlette,
prometheus-client) and ``ServerThread`` (uvicorn) need the ``serve`` extra
(``uv sync --extra serve`` or ``pip install layerwise[serve]``) and are imported on first use.
``layerwise serve RUN ...`` is the command. See README.md beside this file.
"""

from layerwise.serve.batcher import Batcher, BatcherClosedError, BatchStats, QueueFullError
from layerwise.serve.inputs import InputError
from layerwise.serve.models import ImageModel, ServedModel, TableModel, check_run, load_model

_NEEDS_EXTRA = {"create_app": "layerwise.serve.app", "ServerThread": "layerwise.serve.server"}
INSTALL_HINT = "install the serve extra: `uv sync --extra serve` or `pip install layerwise[serve]`"


def missing_serve_packages():
    """The packages of the ``serve`` extra that are not installed (import names)."""
    import importlib.util

    return [name for name in ("starlette", "uvicorn", "prometheus_client")
            if importlib.util.find_spec(name) is None]


def __getattr__(name):
    if name in _NEEDS_EXTRA:
        missing = missing_serve_packages()
        if missing:
            raise ImportError(f"layerwise.serve.{name} needs {', '.join(missing)}: "
                              f"{INSTALL_HINT}")
        import importlib

        return getattr(importlib.import_module(_NEEDS_EXTRA[name]), name)
    raise AttributeError(f"module 'layerwise.serve' has no attribute {name!r}")


__all__ = ["BatchStats", "Batcher", "BatcherClosedError", "ImageModel", "InputError",
           "QueueFullError", "ServedModel", "ServerThread", "TableModel", "check_run",
           "create_app", "load_model", "missing_serve_packages"]
