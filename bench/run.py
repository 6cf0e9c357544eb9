"""Training steps of layerwise and PyTorch side by side: ms/step and the speed ratio.

    uv run --with /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl \
        python bench/run.py [mlp cnn gpt lstm] [--steps N] [--threads N]

Without torch installed, layerwise is timed alone.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from timing import interleaved, pin_threads, report  # noqa: E402
from workloads import MLP_FLOPS, WORKLOADS  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", help=f"any of {', '.join(WORKLOADS)} (default: all)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per framework")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)}")
    pin_threads(args.threads)
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
        print("torch is not installed: timing layerwise alone")

    for name in args.workloads or list(WORKLOADS):
        title, build_lw, build_torch = WORKLOADS[name]
        steps = {"layerwise": build_lw()}
        if torch is not None:
            steps["pytorch"] = build_torch()
        n_steps = args.steps or {"mlp": 200, "cnn": 40, "gpt": 20, "lstm": 40}[name]
        seconds = interleaved(steps, n_steps, warmup=3)
        report(f"{title}, float32, {args.threads} threads, {n_steps} steps", seconds)
        if name == "mlp":
            for fw, s in seconds.items():
                print(f"  {fw:<10} {MLP_FLOPS / s / 1e9:8.1f} GFLOP/s of matmul")


if __name__ == "__main__":
    main()
