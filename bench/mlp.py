"""The MLP training step (784-512-512-10, batch 128, Adam, float32) in layerwise and PyTorch.

    uv run --with /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl python bench/mlp.py
(or any environment with both layerwise and torch installed). Without torch, layerwise alone is timed.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from timing import interleaved, pin_threads, report  # noqa: E402

SIZES, BATCH = (784, 512, 512, 10), 128


def layerwise_step():
    import numpy as np

    import layerwise as lw
    from layerwise import nn, optim
    import layerwise.nn.functional as F

    lw.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    opt = optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    x = lw.tensor(rng.standard_normal((BATCH, 784)).astype(np.float32))
    y = lw.tensor(rng.integers(0, 10, BATCH))

    def step():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    return step


def pytorch_step():
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
                                torch.nn.ReLU(), torch.nn.Linear(512, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(BATCH, 784), torch.randint(0, 10, (BATCH,))

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    pin_threads(args.threads)
    steps = {"layerwise": layerwise_step()}
    try:
        import torch

        torch.set_num_threads(args.threads)
        steps["pytorch"] = pytorch_step()
    except ImportError:
        print("torch is not installed: timing layerwise alone")
    flops = 6 * BATCH * sum(a * b for a, b in zip(SIZES, SIZES[1:]))  # forward 2x, backward 4x per MAC
    seconds = interleaved(steps, args.steps)
    report(f"MLP {'-'.join(map(str, SIZES))}, batch {BATCH}, Adam, float32, {args.threads} threads", seconds)
    for name, s in seconds.items():
        print(f"  {name:<10} {flops / s / 1e9:8.1f} GFLOP/s (matmul FLOPs of the step / time)")


if __name__ == "__main__":
    main()
