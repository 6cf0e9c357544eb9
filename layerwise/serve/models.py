"""A finished run as a served model: what one request's input must be, and a batch's outputs.

    model = load_model("runs/cnn-20260101-120000")
    x = model.parse([[[0.0] * 28] * 28])        # one request's instance, checked -> (1, 28, 28)
    model.run_batch([x, x])                     # [{"label": "1", "probabilities": ...}, ...]

``parse`` runs on the request's thread and raises InputError (one line, an HTTP status) for
anything the model cannot take; ``run_batch`` runs on the model's inference thread on inputs
``parse`` accepted. Image and table runs are read with ``load_finished_run``; language and
BERT runs (``language.py``) with ``load_trained``, which does not rebuild their corpus.
"""

import os
from datetime import UTC, datetime

from layerwise.autograd import Tensor, no_grad
from layerwise.backend import xp
from layerwise.errors import RunError
from layerwise.serialization import file_sha256
from layerwise.serve.inputs import (
    InputError,
    kind_of,
    parse_image,
    table_category,
    table_number,
)
from layerwise.train.finished import FINAL_WEIGHTS, finished_config

_SHOWN_COLUMNS = 8  # column names quoted in an error before "..."


class ServedModel:
    """The interface the server uses. ``endpoint``: 'predict' (``parse`` + ``run_batch``) or
    'generate' (language.py); ``batchable``: whether several requests may share a batch."""

    kind = "model"
    endpoint = "predict"
    batchable = True

    def __init__(self, run_dir, config):
        self.run_dir = run_dir
        self.config = config
        self.version = run_version(run_dir, config)

    def describe(self):
        """What GET /v1/models says of the model (JSON-ready)."""
        return {"kind": self.kind, "endpoint": self.endpoint, "version": self.version,
                "input": self.input_spec()}

    def input_spec(self):
        raise NotImplementedError

    def parse(self, instance):
        raise NotImplementedError

    def run_batch(self, inputs):
        raise NotImplementedError

    def warm_up_input(self):
        """A valid input for the warm-up batch that runs before the model is ready."""
        raise NotImplementedError


def run_version(run_dir, config):
    """The version of a run: its directory name, recipe, the layerwise that trained it, when
    its final weights were written and their SHA-256 (two servers agree on a model iff the
    hashes do)."""
    weights = os.path.join(run_dir, FINAL_WEIGHTS)
    created = datetime.fromtimestamp(os.path.getmtime(weights), UTC)
    return {"run": os.path.basename(os.path.normpath(run_dir)), "recipe": config["recipe"],
            "layerwise": config.get("layerwise_version"),
            "created": created.isoformat(timespec="seconds"),
            "weights_sha256": file_sha256(weights)}


def class_predictions(logits, classes):
    """(B, K) logits -> one {"label", "index", "probability", "probabilities"} per row, the
    probabilities a float64 softmax keyed by class name."""
    z = logits.astype(xp.float64)
    probs = xp.exp(z - z.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)  # (B, K)
    out = []
    for row in probs.tolist():
        best = max(range(len(row)), key=row.__getitem__)
        out.append({"label": classes[best], "index": best, "probability": row[best],
                    "probabilities": dict(zip(classes, row))})
    return out


def _forward(model, batch):
    """model(batch) without a graph: (B, ...) float32 -> (B, K) array."""
    with no_grad():
        return model(Tensor(batch)).data


class ImageModel(ServedModel):
    """An image classifier run: instances are (C, H, W) floats in [0, 1] or encoded images."""

    kind = "image"

    def __init__(self, run):
        super().__init__(run.run_dir, run.config)
        self.model = run.model
        self.shape = tuple(int(n) for n in run.info["input_shape"])  # (C, H, W)
        self.classes = [str(c) for c in run.info["classes"]]

    def input_spec(self):
        return {"shape": list(self.shape), "values": "floats in [0, 1]",
                "encoded": '{"b64": "<base64 PNG or JPEG>"}', "classes": self.classes}

    def parse(self, instance):
        return parse_image(instance, self.shape)

    def run_batch(self, inputs):
        return class_predictions(_forward(self.model, xp.stack(inputs)), self.classes)

    def warm_up_input(self):
        return xp.zeros(self.shape, dtype=xp.float32)


class TableModel(ServedModel):
    """A table run: an instance is an object of column -> value, encoded with the statistics
    the run fitted on its training split; a category it never saw takes the '<other>' slot,
    null (or an empty cell's spelling, such as "NA") a missing value."""

    kind = "table"

    def __init__(self, run):
        from layerwise.data.table_encoding import NumericColumn, TableEncoder

        super().__init__(run.run_dir, run.config)
        self.model = run.model
        info = run.splits.info
        self.encoder = TableEncoder.from_description(info["columns"])
        if self.encoder.feature_names() != info["feature_names"]:  # describe() round trip
            raise RunError(f"{run.run_dir}: the table's encoder does not rebuild its "
                           f"{len(info['feature_names'])} features")
        self.numeric = {c.name for c in self.encoder.columns if isinstance(c, NumericColumn)}
        self.columns = [c.name for c in self.encoder.columns]
        # columns of the file that are not features: a row copied from it may hold them
        self.ignored = {info["target"], *info["groups"], *info["dropped"]} | (
            {info["split_column"]} if info.get("split_column") else set())
        self.task, self.target = info["task"], info["target"]
        self.classes = None if info["classes"] is None else [str(c) for c in info["classes"]]

    def input_spec(self):
        columns = {name: "number" if name in self.numeric else "text" for name in self.columns}
        spec = {"columns": columns, "task": self.task, "target": self.target}
        if self.classes is not None:
            spec["classes"] = self.classes
        return spec

    def parse(self, row):
        if not isinstance(row, dict):
            raise InputError(f"a table row is an object of column -> value, e.g. "
                             f"{{{self.columns[0]!r}: ...}}; got {kind_of(row)}")
        missing = [name for name in self.columns if name not in row]
        if missing:
            raise InputError(f"missing column{'s' if len(missing) > 1 else ''} "
                             f"{_names(missing)}; a row needs every feature column (null for "
                             f"a missing value)")
        unknown = [key for key in row if key not in self.columns and key not in self.ignored]
        if unknown:
            raise InputError(f"unknown column {_names(unknown)}; the model's columns are "
                             f"{_names(self.columns)}")
        parsed = {}
        for name in self.columns:
            if name in self.numeric:
                parsed[name] = xp.asarray([table_number(name, row[name])], dtype=xp.float64)
            else:
                parsed[name] = [table_category(name, row[name])]
        return self.encoder.encode(parsed, [0])[0]  # (F,) float32

    def run_batch(self, inputs):
        out = _forward(self.model, xp.stack(inputs))  # (B, K) or (B, 1)
        if self.classes is not None:
            return class_predictions(out, self.classes)
        return [{"value": float(v)} for v in out.reshape(-1).tolist()]

    def warm_up_input(self):
        row = {}
        for column in self.encoder.columns:
            if column.name in self.numeric:
                row[column.name] = column.median
            else:
                row[column.name] = column.categories[0] if column.categories else None
        return self.parse(row)


def _names(names):
    quoted = ", ".join(repr(n) for n in names[:_SHOWN_COLUMNS])
    return quoted + (f", ... ({len(names)} in all)" if len(names) > _SHOWN_COLUMNS else "")


# --- loading ----------------------------------------------------------------------------------

SERVED_KINDS = {"image": "image classifier", "table": "table model",
                "lm": "text generator", "mlm": "sentence embedder (BERT)"}


def check_run(run_dir):
    """(config, recipe) of a finished run of a kind the server can serve; a one-line
    RunError otherwise. Reads config.json only: cheap, so every run is checked before any
    model loads."""
    config, recipe, _ = finished_config(run_dir)
    if recipe.task.kind not in SERVED_KINDS:
        raise RunError(f"{run_dir}: a {recipe.name!r} run ({recipe.task.kind}) cannot be "
                       f"served; the server takes runs of: {', '.join(SERVED_KINDS.values())}")
    return config, recipe


def load_model(run_dir, max_new_tokens=None):
    """The ServedModel of a finished run. ``max_new_tokens``: the most tokens one request to a
    language model may ask for (language.DEFAULT_MAX_NEW_TOKENS when None)."""
    _, recipe = check_run(run_dir)
    kind = recipe.task.kind
    if kind in ("lm", "mlm"):
        from layerwise.serve.language import load_language_model

        return load_language_model(run_dir, kind, max_new_tokens)
    from layerwise.train.finished import load_finished_run

    run = load_finished_run(run_dir)
    return ImageModel(run) if kind == "image" else TableModel(run)

