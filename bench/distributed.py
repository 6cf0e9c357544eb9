"""Data-parallel training on MPI: steps/s with 1 and 2 ranks, the allreduce, and a model of 8-64.

    uv run python bench/distributed.py [mlp resnet8 gpt] [--steps 40] [--quick]

Two jobs (one rank alone, then two ranks under mpiexec), three measurements, two tables:
1. each workload of bench/models.py wrapped in nn.parallel.DistributedDataParallel, on one
   rank with two BLAS threads and on two ranks (``mpiexec -n 2``) with one thread each, the
   same global batch split between them: steps/s, and per step the time backward waited for
   allreduces at its end (exposed) against what the same allreduces take alone, so the part
   that overlapped backward is their difference;
2. in the two-rank job, a blocking Allreduce of 4 KiB to 32 MiB, fitted to t = a + b * bytes (least
   squares of the relative error);
3. a weak-scaling model for 8-64 ranks (each rank keeps the measured per-rank batch): a ring
   allreduce costs 2(N-1) latencies plus 2(N-1)/N of the bytes at the fitted bandwidth
   (two ranks on one machine: 2 * a/2 + bytes * b), the measured share of it overlaps
   backward, and the compute of a step is the two-rank step's.

The two ranks share this machine's memory, so the fitted bandwidth is shared memory's, not a
network's: the model shows how the buckets and the overlap scale, not a cluster's figures.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

WORKLOADS = ("mlp", "resnet8", "gpt")
SWEEP_BYTES = [4 << 10 << (2 * i) for i in range(7)]  # 4 KiB, 16 KiB, ..., 16 MiB
SWEEP_BYTES.append(32 << 20)
SWEEP_REPEATS = 20
MODELLED_RANKS = (2, 8, 16, 32, 64)
RESULT = "RESULT "  # the prefix of the JSON line a worker's rank 0 prints


# --- the worker: runs under mpiexec (or alone), rank 0 prints one JSON line ------------------


class _TimedWork:
    """An allreduce under way whose wait() is timed: what backward's end spent waiting."""

    waited = 0.0

    def __init__(self, work):
        self.work = work

    def is_completed(self):
        return self.work.is_completed()

    def wait(self):
        start = time.perf_counter()
        try:
            return self.work.wait()
        finally:
            _TimedWork.waited += time.perf_counter() - start


def _time_allreduce(dist, flat, repeats):
    """Median seconds of a blocking allreduce of ``flat`` (every rank calls it)."""
    times = []
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(flat)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _train_worker(names, steps, warmup, bucket_mb, quick):
    import numpy as np

    import layerwise as lw
    import models
    from layerwise import distributed as dist

    dist.init()
    rank, world = dist.rank(), dist.world_size()
    start_allreduce = dist.all_reduce
    results = {}
    for name in names:
        spec = models.SUITE[name]
        lw.manual_seed(0)
        model = lw.nn.parallel.DistributedDataParallel(spec.build(lw, lw.nn, lw.nn.functional),
                                                       bucket_cap_mb=bucket_mb)
        model.train()
        opt = spec.optimizer(lw, model.parameters())
        x, y = models._batch(spec, spec.input_shape, seed=0)
        share = len(x) // world  # this rank's part of the global batch
        x = lw.from_numpy(np.ascontiguousarray(x[rank * share:(rank + 1) * share]))
        y = lw.from_numpy(np.ascontiguousarray(y[rank * share:(rank + 1) * share]))

        def step():
            opt.zero_grad()
            logits = model(x)
            lw.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                           y.reshape(-1)).backward()
            opt.step()

        dist.all_reduce = lambda t, op="sum", async_op=False: (
            _TimedWork(start_allreduce(t, op, async_op)) if async_op
            else start_allreduce(t, op, async_op))
        for _ in range(warmup):
            step()
        step_times, waits = [], []
        for _ in range(steps):
            dist.barrier()
            _TimedWork.waited = 0.0
            begin = time.perf_counter()
            step()
            step_times.append(time.perf_counter() - begin)
            waits.append(_TimedWork.waited)
        dist.all_reduce = start_allreduce
        alone = sum(_time_allreduce(dist, b.flat, SWEEP_REPEATS) for b in model._bucket_list) \
            if world > 1 else 0.0
        results[name] = {
            "step_s": statistics.median(step_times), "wait_s": statistics.median(waits),
            "allreduce_alone_s": alone, "buckets": len(model._bucket_list),
            "grad_bytes": sum(b.flat.nbytes for b in model._bucket_list),
            "batch_per_rank": share}
    sweep = _sweep(dist, quick) if world > 1 else {}
    if rank == 0:
        print(RESULT + json.dumps({"ranks": world, "workloads": results, "sweep": sweep}),
              flush=True)


def _sweep(dist, quick):
    """{bytes: median seconds} of a blocking allreduce of each size (every rank calls it)."""
    import numpy as np

    sweep = {}
    for nbytes in SWEEP_BYTES[::3] if quick else SWEEP_BYTES:
        flat = np.ones(nbytes // 4, np.float32)
        sweep[nbytes] = _time_allreduce(dist, flat, 3 if quick else SWEEP_REPEATS)
    return sweep


# --- the parent: launches the workers and prints the tables ----------------------------------


def _run(command, ranks, threads):
    from layerwise.distributed.launch import find_mpiexec

    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    argv = [sys.executable, str(Path(__file__).resolve()), *command]
    if ranks > 1:
        mpiexec = find_mpiexec()
        if mpiexec is None:
            sys.exit("mpiexec not found: install the extra (uv sync --extra mpi)")
        argv = [mpiexec, "-n", str(ranks), *argv]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        sys.exit(f"`{' '.join(argv)}` failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(lines[-1][len(RESULT):])


def fit_latency_bandwidth(sweep):
    """(a seconds, b seconds per byte) of t = a + b * bytes, by least squares on the relative
    error: plain least squares lets the largest sizes set the line and can make a negative."""
    xs = [float(k) for k in sweep]
    ys = [sweep[k] for k in sweep]
    ws = [1 / y ** 2 for y in ys]  # each point's squared error relative to its own time
    sw = sum(ws)
    mx = sum(w * x for w, x in zip(ws, xs)) / sw
    my = sum(w * y for w, y in zip(ws, ys)) / sw
    b = sum(w * (x - mx) * (y - my) for w, x, y in zip(ws, xs, ys)) / \
        sum(w * (x - mx) ** 2 for w, x in zip(ws, xs))
    return my - b * mx, b


def ring_allreduce_seconds(nbytes, ranks, a, b):
    """A ring allreduce over ``ranks``: 2(N-1) steps of latency a/2 (two ranks take a: two
    steps) and 2(N-1)/N of the bytes at the fitted rate (two ranks: all of them once)."""
    return 2 * (ranks - 1) * (a / 2) + 2 * (ranks - 1) / ranks * nbytes * b


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", choices=[*WORKLOADS, []],
                        help=f"default: {' '.join(WORKLOADS)}")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="a few steps: proof it runs")
    parser.add_argument("--bucket-mb", type=float, default=25.0,
                        help="DistributedDataParallel's bucket_cap_mb (default: 25, PyTorch's)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.workloads = args.workloads or list(WORKLOADS)
    steps, warmup = (2, 1) if args.quick else (args.steps, 5)
    if args.worker:
        return _train_worker(args.workloads, steps, warmup, args.bucket_mb, args.quick)

    command = ["--worker", "--steps", str(steps), "--bucket-mb", str(args.bucket_mb),
               *args.workloads]
    if args.quick:
        command.append("--quick")
    one = _run(command, ranks=1, threads=2)["workloads"]
    both = _run(command, ranks=2, threads=1)
    two = both["workloads"]
    sweep = {int(k): v for k, v in both["sweep"].items()}
    a, b = fit_latency_bandwidth(sweep)

    print(f"# bench/distributed.py, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
          f"median of {steps} steps, buckets of {args.bucket_mb:g} MiB\n")
    print("| workload | 1 rank x 2 threads, steps/s | 2 ranks x 1 thread, steps/s | ratio | "
          "allreduce alone, ms/step | waited at backward's end, ms/step | overlapped |")
    print("|---|---|---|---|---|---|---|")
    for name in args.workloads:
        o, t = one[name], two[name]
        alone, wait = t["allreduce_alone_s"], t["wait_s"]
        overlap = max(0.0, 1 - wait / alone) if alone else 0.0
        print(f"| {name} ({t['grad_bytes'] / 2**20:.1f} MiB of gradients, {t['buckets']} "
              f"bucket(s)) | {1 / o['step_s']:.1f} | {1 / t['step_s']:.1f} | "
              f"{o['step_s'] / t['step_s']:.2f}x | {alone * 1e3:.2f} | {wait * 1e3:.2f} | "
              f"{overlap:.0%} |")
    print(f"\nAllreduce on 2 ranks: t = {a * 1e6:.0f} us + bytes / {1 / b / 1e9:.2f} GB/s "
          f"(" + ", ".join(f"{k >> 10} KiB {v * 1e3:.3f} ms" for k, v in sweep.items()) + ")\n")
    print("Weak scaling, modelled (each rank keeps the measured per-rank batch; ring "
          "allreduce; the measured overlap): efficiency = one rank's step without "
          "communication / the step with it")
    print("| workload | " + " | ".join(f"{n} ranks" for n in MODELLED_RANKS) + " |")
    print("|---|" + "---|" * len(MODELLED_RANKS))
    for name in args.workloads:
        t = two[name]
        alone = t["allreduce_alone_s"]
        overlap = max(0.0, 1 - t["wait_s"] / alone) if alone else 0.0
        compute = t["step_s"] - t["wait_s"]
        cells = []
        for n in MODELLED_RANKS:
            comm = ring_allreduce_seconds(t["grad_bytes"], n, a, b)
            cells.append(f"{compute / (compute + (1 - overlap) * comm):.0%}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
