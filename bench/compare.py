"""layerwise against PyTorch on the same CPU: one table of speed, matmul efficiency and memory.

    uv run --with /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl \\
        python bench/compare.py [mlp cnn gpt lstm] [--threads 2] [--aa]

For each workload, the training steps of both frameworks run interleaved in this process
(a few steps of one, a pause, a few of the other, ...; timing.py says why not single steps)
after a warm-up, and each is summarised by the mean of its fastest tenth of steps; batch-1
inference of the MLP and CNN is timed the same way, layerwise both eager and through
lw.compile (recorded once, replayed), against PyTorch eager.
Columns:
    ms/step      that statistic
    speed        PyTorch's time / layerwise's (above 1: layerwise is faster)
    % peak       the step's matmul FLOPs / its time / the matmul peak, where the peak is what
                 NumPy's BLAS reaches on the MLP step's own matrix products, timed as one more
                 contender in the workload's interleaving (shown in its own column)
    step MB      peak resident memory during 3 training steps minus the resident memory before
                 them (model and data built, and layerwise's compiled kernels loaded, a
                 one-time cost), each framework alone in a fresh process
--aa runs each framework against a second copy of itself instead: the ratios it prints show
how far apart two identical contenders read on this machine (they should be near 1.00).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from timing import interleaved, pin_threads  # noqa: E402
import workloads  # noqa: E402

# timed steps, and steps per turn of the interleaving (see timing.interleaved). 100 steps
# (60 of the GPT's) rather than 40: the statistic is then the mean of 10 steps, not 4, and
# twice as many turns give each contender more chances at the machine's fast spells.
STEPS = {"mlp": (200, 20), "cnn": (100, 5), "cnn-halves": (100, 5), "gpt": (60, 4),
         "gpt-halves": (60, 4), "lstm": (100, 5)}
INFERENCE_STEPS = (500, 50)


PEAK = "matmul peak"  # the contender that measures the peak beside each workload's steps


def matmul_peak_pass():
    """A zero-argument pass over NumPy's float32 GEMM on the MLP training step's products
    (MLP_FLOPS in all): timed as one more contender in each workload's interleaving, so that
    the peak is read in the same minutes, and the same slow spells, as the steps it divides:
    a peak taken once, in a fast spell, can put a step timed in a slow one at 55% of it where
    the same code reads 67-74% of a peak timed beside it."""
    import numpy as np

    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    x, h1, h2 = f(128, 784), f(128, 512), f(128, 512)
    w1, w2, w3 = f(512, 784), f(512, 512), f(10, 512)
    g3, g2, g1 = f(128, 10), f(128, 512), f(128, 512)
    products = [  # forward, then the weight and input gradients, as the step computes them
        (x, w1.T), (h1, w2.T), (h2, w3.T),
        (g3.T, h2), (g3, w3), (g2.T, h1), (g2, w2), (g1.T, x),
    ]

    def run():
        for a, b in products:
            a @ b
    return run


# --- peak memory, measured in a fresh process per framework ---------------------------------


def _resident_kb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def probe_memory(framework, name, threads, steps=3):
    """Run inside the child: build the step, reset the peak, step, report the peak's growth."""
    pin_threads(threads)
    if framework == "pytorch":
        import torch

        torch.set_num_threads(threads)
    if framework == "layerwise":  # loading numba and its kernels is a one-time cost, not a step's
        from layerwise.ops.fast.kernels import preload

        preload("float32")
    _, build_lw, build_torch = workloads.WORKLOADS[name]
    step = (build_lw if framework == "layerwise" else build_torch)()
    before = _resident_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current RSS
        f.write("5")
    for _ in range(steps):
        step()
    print(json.dumps({"mb": (_resident_kb("VmHWM") - before) / 1024}))


def step_memory_mb(framework, name, threads):
    if not Path("/proc/self/clear_refs").exists():
        return None  # not Linux: no way to reset the peak
    out = subprocess.run(
        [sys.executable, __file__, "--probe-memory", framework, name, "--threads", str(threads)],
        capture_output=True, text=True)
    if out.returncode != 0:
        print(f"  (memory probe of {framework} {name} failed: {out.stderr.strip()[-300:]})")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])["mb"]


# --- the table --------------------------------------------------------------------------------


def _fmt(value, spec):
    return "n/a" if value is None else format(value, spec)


def compare(names, threads, with_torch, aa):
    rows = []
    for name in names:
        title, build_lw, build_torch = workloads.WORKLOADS[name]
        if aa:
            steps = {"layerwise": build_lw(), "layerwise'": build_lw()}
            if with_torch:
                steps.update({"pytorch": build_torch(), "pytorch'": build_torch()})
        else:
            steps = {"layerwise": build_lw()}
            if with_torch:
                steps["pytorch"] = build_torch()
            steps[PEAK] = matmul_peak_pass()
        n_steps, block = STEPS[name]
        seconds = interleaved(steps, n_steps, warmup=3, block=block)
        memory = {} if aa else {fw: step_memory_mb(fw, name, threads) for fw in steps
                                if fw != PEAK}
        rows.append((name, title, seconds, memory))
        print(f"  timed {name}", file=sys.stderr)
    inference = []
    if not aa:
        for name, (title, make_model, shape) in workloads.INFERENCE.items():
            if name not in names:
                continue
            # eager, and recorded once and replayed by lw.compile (what a deployed batch-1
            # forward would use: its time is mostly Python around small products)
            fns = {"layerwise": workloads.infer_layerwise(make_model, shape),
                   "layerwise compiled": workloads.infer_layerwise(make_model, shape, True)}
            if with_torch:
                fns["pytorch"] = workloads.infer_pytorch(make_model, shape)
            n_steps, block = INFERENCE_STEPS
            inference.append((name, interleaved(fns, n_steps, warmup=20, block=block)))
    return rows, inference


def print_table(rows, inference, threads, aa):
    cpu = platform.processor() or platform.machine()
    print(f"\n{date.today()}, {os.cpu_count()} cores ({cpu}), float32, {threads} threads; "
          "matmul peak: NumPy GEMM on the MLP step's shapes, timed beside each workload\n")
    if aa:
        print("| workload | contender | ms/step | its twin | twin / contender |")
        print("|---|---|---:|---:|---:|")
        for name, _, s, _ in rows:
            for fw in ("layerwise", "pytorch"):
                if fw in s:
                    print(f"| {name} | {fw} | {s[fw] * 1e3:.2f} | {s[fw + chr(39)] * 1e3:.2f} | "
                          f"{s[fw + chr(39)] / s[fw]:.2f}x |")
        return
    print("| training step | layerwise ms | PyTorch ms | speed | matmul peak GFLOP/s | "
          "layerwise % peak | PyTorch % peak | layerwise step MB | PyTorch step MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, _, s, mem in rows:
        lw, pt = s["layerwise"], s.get("pytorch")
        flops = workloads.FLOPS[name] / 1e9
        peak = workloads.MLP_FLOPS / 1e9 / s[PEAK]
        print(f"| {name} | {lw * 1e3:.2f} | {_fmt(pt and pt * 1e3, '.2f')} | "
              f"{_fmt(pt and pt / lw, '.2f')}x | {peak:.0f} | {flops / lw / peak:.0%} | "
              f"{_fmt(pt and flops / pt / peak, '.0%')} | {_fmt(mem.get('layerwise'), '.1f')} | "
              f"{_fmt(mem.get('pytorch'), '.1f')} |")
    for name, s in inference:
        pt = s.get("pytorch")
        for contender, label in (("layerwise", ""), ("layerwise compiled", ", lw.compile")):
            lw = s[contender]
            print(f"| {name} inference, batch 1{label} | {lw * 1e3:.3f} | "
                  f"{_fmt(pt and pt * 1e3, '.3f')} | {_fmt(pt and pt / lw, '.2f')}x | | | | | |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", help=f"any of {', '.join(workloads.WORKLOADS)}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--aa", action="store_true", help="each framework against itself")
    parser.add_argument("--probe-memory", nargs=2, metavar=("FRAMEWORK", "WORKLOAD"),
                        help=argparse.SUPPRESS)  # internal: the child process of step_memory_mb
    args = parser.parse_args()
    if args.probe_memory:
        probe_memory(*args.probe_memory, args.threads)
        return
    unknown = [w for w in args.workloads if w not in workloads.WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {list(workloads.WORKLOADS)}")
    pin_threads(args.threads)
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
        print("torch is not installed: timing layerwise alone", file=sys.stderr)
    names = args.workloads or list(workloads.WORKLOADS)
    rows, inference = compare(names, args.threads, torch is not None, args.aa)
    print_table(rows, inference, args.threads, args.aa)


if __name__ == "__main__":
    main()
