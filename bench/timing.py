"""Side-by-side timing: frameworks interleaved in short blocks of steps, so machine noise
falls on all.

Reported figure per framework: the mean of the fastest tenth of steps (robust to the
occasional step that the OS or another process slows down).
"""

import os
import sys
import time


def pin_threads(n):
    """Same thread count for every framework: BLAS pools and torch's intra-op pool."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(n))
    try:
        import threadpoolctl

        threadpoolctl.threadpool_limits(n)
    except ImportError:
        pass


def frameworks_on(threads, parser):
    """["layerwise"] plus "pytorch" when torch imports, every pool pinned to ``threads``."""
    if threads < 1:
        parser.error(f"--threads must be at least 1, got {threads}")
    pin_threads(threads)
    frameworks = ["layerwise"]
    try:
        import torch

        torch.set_num_threads(threads)
        frameworks.append("pytorch")
    except ImportError:
        print("torch is not installed: timing layerwise alone", file=sys.stderr)
    return frameworks


def fastest_tenth_mean(times):
    ordered = sorted(times)
    k = max(1, len(ordered) // 10)
    return sum(ordered[:k]) / k


def interleaved(steps_by_name, n_steps, warmup=5, block=5, gap=0.25):
    """Run each framework ``block`` steps per turn, turn after turn; return seconds per step.

    The pause between turns matters: after a matrix product OpenBLAS's worker threads spin
    for up to ~0.1 s (2^28 cycles) waiting for more work, and PyTorch's OpenMP threads spin
    briefly too. Alternating single steps, each framework's spinning threads eat into the
    other's next step: measured here, that made PyTorch's steps look 1.4-1.9x slower than
    they are. Blocks of steps keep each framework in its own steady state (its threads
    spinning between its own steps, as in real training); the ``gap`` lets the previous
    framework's threads go to sleep before the next one starts.
    """
    for step in steps_by_name.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in steps_by_name}
    while min(len(t) for t in times.values()) < n_steps:
        for name, step in steps_by_name.items():
            time.sleep(gap)
            step()  # the first step after a pause wakes sleeping threads: not counted
            for _ in range(block):
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    return {name: fastest_tenth_mean(t) for name, t in times.items()}


def report(title, seconds_by_name, baseline="pytorch"):
    print(f"\n{title}")
    base = seconds_by_name.get(baseline)
    for name, s in seconds_by_name.items():
        ratio = f"  speed vs {baseline}: {base / s:.2f}x" if base and name != baseline else ""
        print(f"  {name:<10} {s * 1e3:8.2f} ms/step{ratio}")
