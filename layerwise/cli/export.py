"""``layerwise export RUN --format onnx|safetensors``: a finished run's model for other tools.

    layerwise export runs/cnn-20260101-120000                      # RUN/model.onnx
    layerwise export runs/gpt-... --format safetensors --out gpt.safetensors

What the exported model computes, by the run's kind:
    images       images (batch, C, H, W) float32        -> probabilities (batch, classes)
    detection    images (batch, C, H, W) float32        -> maps (batch, classes + 4, H/4, W/4):
                                                           heatmap logits, box size, offset
    segmentation images (batch, C, H, W) float32        -> logits (batch, classes + 1, H, W)
    tables       features (batch, F) float32, encoded    -> probabilities (batch, classes),
                 as the run encoded its table               or prediction (batch, 1) in the
                                                            target's units (regression)
    language     token_ids (batch, sequence) int64       -> logits (batch, sequence, vocab)
The ONNX file is checked in onnxruntime against layerwise on an example when onnxruntime is
installed. An existing file is replaced only with --force.
"""

import json
import os

import numpy as np

from layerwise.errors import LayerwiseError

FORMATS = {"onnx": "model.onnx", "safetensors": "state_dict.safetensors"}
EXAMPLE_BATCH = 2  # rows of the example the model is traced on
EXAMPLE_TOKENS = 8  # tokens per row, when the model's context allows
_DYNAMIC_GROWTH = 2  # export traces the sequence this much longer than the example

SAFETENSORS_HELP = (
    "safetensors: the model's state dict as a plain safetensors file: one tensor per key, "
    "keys as PyTorch's state_dict() names them for the same architecture (module path and "
    "parameter, e.g. 0.weight, transformer.h.0.attn.c_attn.weight), tied weights written "
    "under each of their keys, and string metadata: format=pt, layerwise.recipe, "
    "layerwise.hyperparameters (JSON: the run's settings, which fix the architecture) and "
    "layerwise.io (JSON: the input and output the onnx form describes)")


def add_parser(subparsers):
    p = subparsers.add_parser(
        "export", help="write a finished run's model as ONNX or as a plain safetensors file",
        description="Write a finished run's model for other tools. onnx: image runs take "
                    "images (batch, C, H, W) float32 and give probabilities (detection runs: "
                    "heatmap, size and offset maps; segmentation runs: per-pixel logits); "
                    "table runs take "
                    "the encoded features (batch, F) and give probabilities (or the prediction "
                    "in the target's units); language runs take token_ids (batch, sequence) "
                    "int64 and give logits. " + SAFETENSORS_HELP + ".")
    p.add_argument("run", metavar="RUN", help="a finished run directory (or its name under "
                                              "runs/)")
    p.add_argument("--format", choices=tuple(FORMATS), default="onnx",
                   help="onnx: the forward as an ONNX graph (opset 17, dynamic batch, and "
                        "dynamic sequence for language models); safetensors: the weights "
                        "(default: onnx)")
    p.add_argument("--out", metavar="PATH",
                   help=f"where to write (default: RUN/{FORMATS['onnx']} or "
                        f"RUN/{FORMATS['safetensors']})")
    p.add_argument("--force", action="store_true", help="replace an existing file at the path")
    p.set_defaults(handler=run)
    return p


def run(args):
    from layerwise.cli.audit import resolve_run
    from layerwise.train.finished import load_finished_run

    run_dir = resolve_run(args.run, "runs")
    out = args.out or os.path.join(run_dir, FORMATS[args.format])
    check_output(out, run_dir, args.force)
    loaded = load_finished_run(run_dir)
    io = _interface(loaded)
    if args.format == "safetensors":
        _write_safetensors(loaded, io, out)
        print(f"wrote {out}: {len(loaded.model.state_dict())} tensors")
        return 0
    from layerwise import onnx
    from layerwise.serialization import write_bytes_atomic

    proto = onnx.to_onnx(io["fn"], io["example"], input_names=[io["input"]],
                         output_names=[io["output"]], dynamic_axes=io["dynamic_axes"],
                         module=loaded.model)
    write_bytes_atomic(out, proto.SerializeToString())
    print(f"wrote {out}: {io['input']} {_shown(io['input_shape'])} -> {io['output']} "
          f"{_shown(io['output_shape'])}, {len(proto.graph.node)} ONNX nodes")
    difference = _check_in_onnxruntime(out, io)
    if difference is not None:
        print(f"onnxruntime matches layerwise on the example: max |difference| "
              f"{difference:.2g}")
    return 0


def check_output(out, run_dir, force):
    """Refuse a path that is a folder, a file inside another run's directory, or an existing
    file without ``force``: one line each."""
    if os.path.isdir(out):
        raise LayerwiseError(f"--out {out} is a directory; give the path of the file to write")
    parent = os.path.dirname(os.path.abspath(out))
    from layerwise.train.rundir import is_run_dir

    if is_run_dir(parent) and os.path.realpath(parent) != os.path.realpath(run_dir):
        raise LayerwiseError(f"--out {out} is inside another run's directory ({parent}); write "
                             f"into {run_dir} or outside any run")
    if os.path.lexists(out) and not force:
        raise LayerwiseError(f"{out} already exists; pass --force to replace it, or --out "
                             "another path")


def _interface(loaded):
    """What the export takes and returns for this run: the function, an example, names."""
    model, info, rng = loaded.model, loaded.info, np.random.default_rng(0)
    model.eval()
    kind = loaded.kind
    if kind == "image":
        shape = tuple(info["input_shape"])
        example = rng.random((EXAMPLE_BATCH,) + shape, dtype=np.float32)
        return _classifier(model, example, "images", ["batch", *shape], info["num_classes"])
    if kind == "table":
        features = int(info["num_features"])
        example = rng.standard_normal((EXAMPLE_BATCH, features)).astype(np.float32)
        if info["task"] == "classification":
            return _classifier(model, example, "features", ["batch", features],
                               len(info["classes"]))
        return {"fn": model, "example": example, "input": "features", "output": "prediction",
                "input_shape": ["batch", features], "output_shape": ["batch", 1],
                "dtype": "float32", "dynamic_axes": None}
    if kind in ("detect", "segment"):
        return _scene_model(model, info, rng, kind)
    if kind in ("lm", "mlm"):
        vocab = int(info["vocab_size"])
        limit = _context_limit(model)
        dynamic = limit is None or limit >= 1 + _DYNAMIC_GROWTH
        length = EXAMPLE_TOKENS if limit is None else min(EXAMPLE_TOKENS,
                                                          limit - _DYNAMIC_GROWTH * dynamic)
        example = rng.integers(0, vocab, (EXAMPLE_BATCH, length)).astype(np.int64)

        def logits(ids):
            return model(ids)[0]  # (B, T, V); the loss and the recurrent state are left out

        sequence = "sequence" if dynamic else length
        return {"fn": logits, "example": example, "input": "token_ids", "output": "logits",
                "input_shape": ["batch", sequence], "output_shape": ["batch", sequence, vocab],
                "dtype": "int64",
                "dynamic_axes": {"token_ids": {1: "sequence"}} if dynamic else None}
    raise LayerwiseError(f"export knows image, scene, table and language runs; {loaded.run_dir} is a "
                         f"{loaded.recipe.name!r} run of kind {kind!r}")


def _scene_model(model, info, rng, kind):
    """A detector exports its maps joined in one tensor (heatmap logits, size, offset, as
    layerwise.train.recipes.scenes.joined_maps); a segmenter its per-pixel logits."""
    shape = tuple(info["input_shape"])
    example = rng.random((EXAMPLE_BATCH,) + shape, dtype=np.float32)
    classes, (_, height, width) = int(info["num_classes"]), shape
    if kind == "detect":
        from layerwise.models.detection import STRIDE
        from layerwise.train.recipes.scenes import joined_maps

        return {"fn": lambda images: joined_maps(model(images)), "example": example,
                "input": "images", "output": "maps", "input_shape": ["batch", *shape],
                "output_shape": ["batch", classes + 4, height // STRIDE, width // STRIDE],
                "dtype": "float32", "dynamic_axes": None}
    return {"fn": model, "example": example, "input": "images", "output": "logits",
            "input_shape": ["batch", *shape], "output_shape": ["batch", classes + 1, height, width],
            "dtype": "float32", "dynamic_axes": None}


def _classifier(model, example, input_name, input_shape, classes):
    from layerwise.ops.reduce import softmax

    def probabilities(x):
        return softmax(model(x), -1)  # (B, classes)

    return {"fn": probabilities, "example": example, "input": input_name,
            "output": "probabilities", "input_shape": input_shape,
            "output_shape": ["batch", classes], "dtype": "float32", "dynamic_axes": None}


def _context_limit(model):
    """The longest sequence the model takes, or None for no limit (an LSTM)."""
    config = getattr(model, "config", None)
    for name in ("block_size", "max_position_embeddings"):
        if hasattr(config, name):
            return int(getattr(config, name))
    return None


def _shown(shape):
    return "(" + ", ".join(map(str, shape)) + ")"


def _write_safetensors(loaded, io, out):
    from safetensors import numpy as safetensors_numpy

    from layerwise.serialization import write_bytes_atomic

    arrays = {key: tensor.data.copy(order="C") for key, tensor in
              loaded.model.state_dict().items()}  # a copy each: tied weights under each key
    description = {"input": io["input"], "input_shape": io["input_shape"],
                   "input_dtype": io["dtype"], "output": io["output"],
                   "output_shape": io["output_shape"]}
    if io["output"] == "probabilities":
        description["note"] = "the model's output is logits; probabilities are their softmax"
    metadata = {"format": "pt", "layerwise.recipe": loaded.recipe.name,
                "layerwise.hyperparameters": json.dumps(loaded.config["hyperparameters"],
                                                        sort_keys=True),
                "layerwise.io": json.dumps(description)}
    write_bytes_atomic(out, safetensors_numpy.save(arrays, metadata=metadata))


def _check_in_onnxruntime(path, io):
    """The largest difference between onnxruntime and layerwise on the example, or None when
    onnxruntime is not installed."""
    try:
        import onnxruntime
    except ModuleNotFoundError:
        return None
    from layerwise.autograd import Tensor, no_grad

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    with no_grad():
        expected = io["fn"](Tensor(io["example"])).data
    got = session.run(None, {io["input"]: io["example"]})[0]
    return float(np.abs(got.astype(np.float64) - expected).max())
