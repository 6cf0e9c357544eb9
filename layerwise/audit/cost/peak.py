"""The machine's measured matmul peak (for model FLOP utilisation) and the process's peak memory.

MFU = achieved FLOP/s of training / the FLOP/s the device reaches on a large float32 matmul
(PaLM, Chowdhery et al. 2022, appendix B, uses the vendor's peak; a CPU has no trustworthy
vendor figure, so the peak is measured once per machine and cached as JSON under
$XDG_CACHE_HOME/layerwise (default ~/.cache/layerwise)).
"""

import json
import os
import platform
import resource
import sys
import time

from layerwise.backend import xp


def cache_dir():
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "layerwise")


def _machine_key(dtype_name, n):
    return (f"{platform.node()}|{platform.machine()}|cpus={os.cpu_count()}|"
            f"numpy={xp.__version__}|{dtype_name}|n={n}")


def measure_matmul_peak(n=1024, repeats=5, dtype="float32"):
    """Best FLOP/s over ``repeats`` n x n x n matmuls (2 n^3 FLOPs each)."""
    a = xp.random.default_rng(0).standard_normal((n, n)).astype(dtype)
    b = xp.random.default_rng(1).standard_normal((n, n)).astype(dtype)
    a @ b  # warm up: thread pool start, page faults
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def matmul_peak(n=1024, dtype="float32", refresh=False):
    """The cached peak FLOP/s for this machine, measuring it the first time."""
    path = os.path.join(cache_dir(), "matmul_peak.json")
    key = _machine_key(dtype, n)
    try:
        with open(path, encoding="utf-8") as f:
            cache = json.load(f)
    except (OSError, ValueError):
        cache = {}
    if not refresh and key in cache:
        return float(cache[key]["flops_per_s"])
    peak = measure_matmul_peak(n, dtype=dtype)
    cache[key] = {"flops_per_s": peak, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(cache, f, indent=1)
    os.replace(tmp, path)
    return peak


def peak_memory_bytes():
    """The process's peak resident set size (ru_maxrss: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def mfu(flops, seconds, peak_flops_per_s):
    """Model FLOP utilisation: achieved FLOP/s over the measured peak."""
    if seconds <= 0 or peak_flops_per_s <= 0:
        return 0.0
    return flops / seconds / peak_flops_per_s
