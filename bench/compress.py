"""What compression buys on the digits: size, latency at batch 1 and 64, accuracy, agreement.

    uv run python bench/compress.py                 # trains the mlp recipe for --epochs first
    uv run python bench/compress.py --run runs/mlp-...   # or uses a finished image run
    uv run python bench/compress.py --threads 1

Each variant is measured the same way: the file it saves, its stored numbers (non-zero
ones too), the median of 30 forwards at batch 1 and at batch 64 (after a warm-up), test
accuracy and top-1 agreement with the original. Also times the int8 kernels against each
other and CSR against dense at several sparsities, to show where each is really faster.
"""

import argparse
import os
import sys
import tempfile
import time

THREADS = "1"
if "--threads" in sys.argv:
    THREADS = sys.argv[sys.argv.index("--threads") + 1]
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, THREADS)  # before numpy loads its BLAS

import layerwise as lw  # noqa: E402
from layerwise import optim  # noqa: E402
from layerwise.compress import (  # noqa: E402
    KeepPruned, count_nonzero, count_params, distill, latency_ms, load_run,
    magnitude_prune, predict, prune_units, quantize_dynamic, quantize_static, save_quantized,
    save_sparse, to_sparse,
)
from layerwise.data import DataLoader  # noqa: E402
from layerwise.nn import functional as F  # noqa: E402
from layerwise.train.recipes import get_recipe  # noqa: E402
from layerwise.train.run import make_config, start_run  # noqa: E402
from layerwise.train.trainer import Trainer  # noqa: E402


def row(name, model, data, ref, path, save_fn):
    save_fn(model, path)
    test = data.splits["test"]
    preds, labels = predict(model, test)
    x1 = next(iter(DataLoader(test, batch_size=1)))[0]
    x64 = next(iter(DataLoader(test, batch_size=64)))[0]
    return {"variant": name, "size_kib": os.path.getsize(path) / 1024,
            "params": count_params(model), "nonzero": count_nonzero(model),
            "b1_ms": latency_ms(model, x1, 30), "b64_ms": latency_ms(model, x64, 30),
            "accuracy": float((preds == labels).mean()),
            "agreement": float((preds == ref).mean())}


def dense_save(model, path):
    lw.save(model.state_dict(), path)


def finetune(pruned, data, epochs):
    loader = DataLoader(data.splits["train"], batch_size=64, shuffle=True, seed=1)
    Trainer(pruned, optim.AdamW(pruned.parameters(), lr=1e-3), F.cross_entropy, loader,
            epochs=epochs, callbacks=[KeepPruned(pruned)], progress=False, verbose=False).fit()
    model = pruned.remove()
    model.eval()
    return model


def kernels(model, data):
    """int8 'int' kernel vs 'dequant' vs float32, and CSR vs dense, per Linear-only model."""
    x = next(iter(DataLoader(data.splits["test"], batch_size=64)))[0]
    out = []
    for b in (1, 64):
        xb = lw.tensor(x.data[:b])
        t_float = latency_ms(model, xb, 30)
        t_deq = latency_ms(quantize_dynamic(model), xb, 30)
        t_int = latency_ms(quantize_dynamic(model, kernel="int"), xb, 30)
        out.append(f"batch {b:>2}: float32 {t_float:.3f} ms, int8 dequant+BLAS {t_deq:.3f} ms, "
                   f"int8 int32-matmul {t_int:.3f} ms")
    for s in (0.5, 0.8, 0.9, 0.95, 0.99):
        dense = magnitude_prune(model, s).remove()
        sparse = to_sparse(dense, min_sparsity=0.0)
        cells = []
        for b in (1, 64):
            xb = lw.tensor(x.data[:b])
            cells.append(f"b={b}: dense {latency_ms(dense, xb, 30):.3f} ms, "
                         f"CSR {latency_ms(sparse, xb, 30):.3f} ms")
        out.append(f"sparsity {s:.2f}: " + "; ".join(cells))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="a finished image run (default: train --recipe)")
    p.add_argument("--recipe", default="mlp")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--finetune-epochs", type=int, default=2)
    p.add_argument("--threads", default=THREADS)
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="lw-bench-compress-")
    t0 = time.time()
    run_dir = args.run
    if run_dir is None:
        run_dir, _ = start_run(make_config(args.recipe, seed=0, epochs=args.epochs),
                               out_dir=tmp, progress=False, verbose=False)
    model, config, data = load_run(run_dir)
    ref, _ = predict(model, data.splits["test"])
    path = lambda name: os.path.join(tmp, name + ".safetensors")  # noqa: E731
    calib = [b[0] for b, _ in zip(DataLoader(data.splits["train"], batch_size=64), range(4))]
    rows = [row("original float32", model, data, ref, path("orig"), dense_save)]
    for s in (0.5, 0.8, 0.9):
        pruned = magnitude_prune(model, s)
        rows.append(row(f"pruned {s:.0%}, no fine-tune", pruned.remove(), data, ref,
                        path(f"p{s}"), dense_save))
        tuned = finetune(magnitude_prune(model, s), data, args.finetune_epochs)
        rows.append(row(f"pruned {s:.0%} +{args.finetune_epochs} ep, dense", tuned, data, ref,
                        path(f"pt{s}"), dense_save))
        rows.append(row(f"pruned {s:.0%} +{args.finetune_epochs} ep, CSR", to_sparse(tuned, 0.0),
                        data, ref, path(f"ps{s}"), save_sparse))
    try:
        small = prune_units(model, 0.5)
        rows.append(row("structured 50% units", small, data, ref, path("su"), dense_save))
    except (TypeError, ValueError) as err:
        print(f"(structured pruning skipped: {err})")
    rows.append(row("int8 static (dequant kernel)", quantize_static(model, calib), data, ref,
                    path("q"), save_quantized))
    rows.append(row("int8 dynamic (dequant kernel)", quantize_dynamic(model), data, ref,
                    path("qd"), save_quantized))
    rows.append(row("int8 dynamic (int32 kernel)", quantize_dynamic(model, kernel="int"), data,
                    ref, path("qi"), save_quantized))
    student = get_recipe("tiny").build(make_config("tiny")["hyperparameters"], 1, data).model
    loader = DataLoader(data.splits["train"], batch_size=64, shuffle=True, seed=1)
    distill(model, student, loader, optim.AdamW(student.parameters(), lr=3e-3), epochs=4,
            temperature=4.0, alpha=0.9)
    rows.append(row("distilled into tiny (784-64-10)", student, data, ref, path("st"),
                    dense_save))

    print(f"{config['recipe']} run {run_dir}; {args.threads} BLAS thread(s); "
          f"{len(data.splits['test'])} test digits")
    head = (f"{'variant':<34} {'size KiB':>9} {'params':>9} {'non-zero':>9} {'b=1 ms':>8} "
            f"{'b=64 ms':>8} {'acc':>6} {'agree':>6}")
    print(head)
    for r in rows:
        print(f"{r['variant']:<34} {r['size_kib']:>9.1f} {r['params']:>9,} {r['nonzero']:>9,} "
              f"{r['b1_ms']:>8.3f} {r['b64_ms']:>8.3f} {r['accuracy']:>6.3f} "
              f"{r['agreement']:>6.3f}")
    if all(type(m).__name__ in ("Flatten", "Linear", "ReLU", "Dropout", "Sequential")
           for m in model.modules()):
        print("\nkernels:")
        for line in kernels(model, data):
            print("  " + line)
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
