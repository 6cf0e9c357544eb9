"""Side-by-side timing: frameworks interleaved step by step, so machine noise falls on all.

Reported figure per framework: the mean of the fastest tenth of steps (robust to the
occasional step that the OS or another process slows down).
"""

import os
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


def fastest_tenth_mean(times):
    ordered = sorted(times)
    k = max(1, len(ordered) // 10)
    return sum(ordered[:k]) / k


def interleaved(steps_by_name, n_steps, warmup=5):
    """Run each framework's step once per round, round after round; return seconds per step."""
    for step in steps_by_name.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in steps_by_name}
    for _ in range(n_steps):
        for name, step in steps_by_name.items():
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
