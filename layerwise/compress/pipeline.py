"""A trained run made smaller, step by step, with a before/after table.

    result = compress_run("runs/cnn-...", "runs/cnn-small", prune=0.8, finetune_epochs=3,
                          quantize="int8", distill_into="tiny")

Order: distil into the student (if any), prune it (and fine-tune with the masks held), then
quantize. Each row of the table is measured, not derived: size of the file written, stored
numbers, median latency at batch 1 and 64, test accuracy, top-1 agreement with the original.
"""

import os

from layerwise import optim
from layerwise.compress.distill import distill
from layerwise.compress.prune import KeepPruned, magnitude_prune, sparsity
from layerwise.compress.quantize import quantize_static, save_quantized
from layerwise.compress.runs import count_nonzero, count_params, latency_ms, load_run, predict
from layerwise.compress.sparse import save_sparse, to_sparse
from layerwise.data import DataLoader
from layerwise.nn import functional as F
from layerwise.serialization import save
from layerwise.train.checkpoint import RunError, write_json
from layerwise.train.recipes import get_recipe
from layerwise.train.trainer import Trainer

# Sparsity from which scipy's CSR product beat float32 BLAS for the digits MLP in
# bench/compress.py (batch 64, one thread: 0.8 -> 1.7 vs 1.4 ms, 0.9 -> 1.06 vs 1.39 ms);
# below it the pruned model runs dense.
SPARSE_FASTER_FROM = 0.9


def measure(model, data, reference_preds, path, latency_repeats=10):
    """One row of the table for ``model`` saved at ``path``."""
    test = data.splits["test"]
    preds, labels = predict(model, test)
    x1 = next(iter(DataLoader(test, batch_size=1)))[0]
    x64 = next(iter(DataLoader(test, batch_size=64)))[0]
    return {
        "size_bytes": os.path.getsize(path), "params": count_params(model),
        "nonzero": count_nonzero(model),
        "latency_ms_b1": latency_ms(model, x1, latency_repeats),
        "latency_ms_b64": latency_ms(model, x64, latency_repeats),
        "accuracy": float((preds == labels).mean()),
        "agreement": float((preds == reference_preds).mean()),
    }


def compress_run(run_dir, out_dir, prune=None, scope="global", finetune_epochs=0,
                 quantize=None, distill_into=None, distill_epochs=5, temperature=4.0,
                 alpha=0.9, lr=1e-3, calibration_batches=4, seed=0, log=print):
    teacher, config, data = load_run(run_dir)
    if get_recipe(config["recipe"]).task.kind != "image":
        raise RunError(f"compress works on image-classification runs; {run_dir} is a "
                       f"{get_recipe(config['recipe']).task.kind!r} run")
    if quantize not in (None, "int8"):
        raise RunError(f"--quantize supports 'int8', got {quantize!r}")
    if distill_into and get_recipe(distill_into).task.kind != "image":
        raise RunError(f"--distill-into needs an image recipe, {distill_into!r} is not")
    if os.path.exists(out_dir) and os.listdir(out_dir):
        raise RunError(f"output directory {out_dir!r} exists and is not empty; choose a new one")
    os.makedirs(out_dir, exist_ok=True)
    ref_preds, _ = predict(teacher, data.splits["test"])
    train = DataLoader(data.splits["train"], batch_size=64, shuffle=True, seed=seed + 1)
    steps, recipe_name, hp = [], config["recipe"], config["hyperparameters"]
    model = teacher

    if distill_into:
        student_recipe = get_recipe(distill_into)
        hp = dict(student_recipe.defaults)
        model = student_recipe.build(hp, len(train), data).model
        history = distill(teacher, model, train, optim.AdamW(model.parameters(), lr=lr * 3),
                          epochs=distill_epochs, temperature=temperature, alpha=alpha)
        recipe_name = distill_into
        steps.append({"step": "distill", "student": distill_into, "epochs": distill_epochs,
                      "temperature": temperature, "alpha": alpha, "losses": history})
        log(f"distilled into {distill_into}: loss {history[0]:.4f} -> {history[-1]:.4f}")

    if prune:
        pruned = magnitude_prune(model, prune, scope)
        if finetune_epochs:
            Trainer(pruned, optim.AdamW(pruned.parameters(), lr=lr), F.cross_entropy, train,
                    epochs=finetune_epochs, callbacks=[KeepPruned(pruned)], progress=False,
                    verbose=False).fit()
        model = pruned.remove()
        model.eval()
        steps.append({"step": "prune", "amount": prune, "scope": scope,
                      "finetune_epochs": finetune_epochs, "sparsity": sparsity(model)})
        log(f"pruned {prune:.0%} ({scope}), fine-tuned {finetune_epochs} epoch(s)")

    model.eval()
    float_path = os.path.join(out_dir, "model.safetensors")
    save(model.state_dict(), float_path, metadata={"recipe": recipe_name})
    final, final_path = model, float_path
    if prune and sparsity(model) >= 0.5:  # CSR (value + int32 column) is smaller past 50%
        sparse_path = os.path.join(out_dir, "model.sparse.safetensors")
        save_sparse(to_sparse(model, min_sparsity=0.5), sparse_path)
        final_path = sparse_path
        if sparsity(model) >= SPARSE_FASTER_FROM:
            final = to_sparse(model, min_sparsity=SPARSE_FASTER_FROM)
    if quantize:
        calib = [batch[0] for batch, _ in zip(DataLoader(data.splits["train"], batch_size=64),
                                              range(calibration_batches))]
        final = quantize_static(model, calib)
        final_path = os.path.join(out_dir, "model.int8.safetensors")
        save_quantized(final, final_path, metadata={"recipe": recipe_name})
        steps.append({"step": "quantize", "dtype": "int8", "weights": "per-channel symmetric",
                      "activations": f"static, {calibration_batches} calibration batches",
                      "kernel": "dequant (float32 BLAS; see quantize.py)"})
        log(f"quantized to int8 ({calibration_batches} calibration batches)")

    before = measure(teacher, data, ref_preds, os.path.join(run_dir, "model.safetensors"))
    after = measure(final, data, ref_preds, final_path)
    out_config = {"recipe": recipe_name, "hyperparameters": hp, "seed": config["seed"],
                  "data": config["data"], "compressed_from": os.path.abspath(run_dir),
                  "compression": steps, "final_model": os.path.basename(final_path)}
    write_json(os.path.join(out_dir, "config.json"), out_config)
    metrics = {"test_accuracy": after["accuracy"], "agreement_with_original": after["agreement"],
               "params": after["params"], "before": before, "after": after}
    write_json(os.path.join(out_dir, "metrics.json"), metrics)
    return {"before": before, "after": after, "steps": steps, "out_dir": out_dir}


def format_comparison(before, after):
    rows = [("size on disk", "size_bytes", lambda v: f"{v / 1024:,.1f} KiB"),
            ("parameters", "params", lambda v: f"{v:,}"),
            ("non-zero", "nonzero", lambda v: f"{v:,}"),
            ("latency b=1", "latency_ms_b1", lambda v: f"{v:.3f} ms"),
            ("latency b=64", "latency_ms_b64", lambda v: f"{v:.3f} ms"),
            ("test accuracy", "accuracy", lambda v: f"{v:.4f}"),
            ("agreement", "agreement", lambda v: f"{v:.4f}")]
    lines = [f"{'':<14}  {'before':>14}  {'after':>14}  {'after/before':>12}"]
    for label, key, fmt in rows:
        ratio = after[key] / before[key] if before[key] else float("nan")
        lines.append(f"{label:<14}  {fmt(before[key]):>14}  {fmt(after[key]):>14}  {ratio:>12.3f}")
    return "\n".join(lines)
