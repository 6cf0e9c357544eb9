"""Energy used while a block of work runs: measured where the machine allows, else estimated.

Sources, in the order ``default_sources()`` tries them:
    rapl      Intel/AMD RAPL package counters, /sys/class/powercap/intel-rapl:N/energy_uj
              (microjoules, wrapping at max_energy_range_uj)
    nvml      NVIDIA's total-energy counter per GPU (millijoules), when pynvml imports and
              finds a GPU
    estimate  a device power (TDP, watts) times this process's CPU utilisation over the
              interval, the fallback when nothing above is readable; it warns, naming itself.

Every source is a component ('cpu', 'gpu') with a ``method``; a meter started and stopped
around the work returns joules per component and the method that produced each.
"""

import glob
import os
import time
import warnings

DEFAULT_CPU_TDP_W = 65.0  # a desktop CPU package; override with LAYERWISE_CPU_TDP_W or tdp_w=


class RaplSource:
    """Sum of the top-level RAPL package domains (their subzones, core/uncore/dram, are parts
    of the package figure on most CPUs, so adding them would count twice)."""

    component = "cpu"
    method = "rapl"

    def __init__(self, root="/sys/class/powercap"):
        self.domains = sorted(d for d in glob.glob(os.path.join(root, "intel-rapl:*"))
                              if os.path.basename(d).count(":") == 1)
        if not self.domains:
            raise OSError(f"no RAPL domains under {root}")
        self.ranges = [int(_read(os.path.join(d, "max_energy_range_uj"))) for d in self.domains]
        self.last = self._counters()  # raises PermissionError where energy_uj is root-only
        self.total_uj = 0

    def _counters(self):
        return [int(_read(os.path.join(d, "energy_uj"))) for d in self.domains]

    def joules(self):
        """Energy since construction; a counter that went down has wrapped past its range."""
        now = self._counters()
        for i, (before, after) in enumerate(zip(self.last, now)):
            self.total_uj += after - before if after >= before else after + self.ranges[i] - before
        self.last = now
        return self.total_uj / 1e6


class NvmlSource:
    component = "gpu"
    method = "nvml"

    def __init__(self):
        import pynvml  # optional: only on machines with NVIDIA's library

        pynvml.nvmlInit()
        self.nvml = pynvml
        count = pynvml.nvmlDeviceGetCount()
        if not count:
            raise OSError("NVML found no GPU")
        self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        self.start = self._millijoules()

    def _millijoules(self):
        return sum(self.nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self.handles)

    def joules(self):
        return (self._millijoules() - self.start) / 1e3


class EstimatedCPU:
    """power = tdp_w * utilisation, utilisation = process CPU seconds / (wall * cpus).

    ``cpu_seconds`` and ``clock`` are injectable so the arithmetic can be tested exactly.
    """

    component = "cpu"
    method = "estimate:tdp*utilisation"

    def __init__(self, tdp_w=None, cpus=None, cpu_seconds=None, clock=time.monotonic):
        self.tdp_w = float(tdp_w if tdp_w is not None else os.environ.get(
            "LAYERWISE_CPU_TDP_W", DEFAULT_CPU_TDP_W))
        self.cpus = cpus or os.cpu_count() or 1
        self.cpu_seconds = cpu_seconds or _process_cpu_seconds
        self.clock = clock
        self.t0, self.c0 = self.clock(), self.cpu_seconds()

    def joules(self):
        wall = self.clock() - self.t0
        busy = self.cpu_seconds() - self.c0
        utilisation = min(busy / (wall * self.cpus), 1.0) if wall > 0 else 0.0
        return self.tdp_w * utilisation * wall


class ConstantPower:
    """A fixed draw in watts: for a device known to run flat out, and for tests."""

    method = "constant"

    def __init__(self, watts, component="cpu", clock=time.monotonic):
        self.watts, self.component, self.clock = float(watts), component, clock
        self.t0 = clock()

    def joules(self):
        return self.watts * (self.clock() - self.t0)


def _read(path):
    with open(path, encoding="ascii") as f:
        return f.read().strip()


def _process_cpu_seconds():
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def default_sources(rapl_root="/sys/class/powercap", tdp_w=None):
    """RAPL for the CPU if readable, else the TDP estimate (with a warning); NVML if present."""
    sources = []
    try:
        sources.append(RaplSource(rapl_root))
    except (OSError, ValueError) as err:
        estimate = EstimatedCPU(tdp_w)
        warnings.warn(f"CPU energy: RAPL not readable ({err}); falling back to "
                      f"{estimate.method} with TDP {estimate.tdp_w:g} W "
                      "(set LAYERWISE_CPU_TDP_W for this machine)", stacklevel=2)
        sources.append(estimate)
    try:
        sources.append(NvmlSource())
    except Exception:  # no pynvml, no driver, no GPU: all mean "no GPU to measure"
        pass
    return sources


class EnergyMeter:
    """Joules per component between ``start()`` and ``stop()``.

        meter = EnergyMeter().start()
        ...work...
        result = meter.stop()   # {'duration_s', 'components': {'cpu': {'joules', 'method'}}}
    """

    def __init__(self, sources=None, clock=time.monotonic, **source_options):
        self.make_sources = (lambda: sources) if sources is not None else (
            lambda: default_sources(**source_options))
        self.clock = clock
        self.sources = None

    def start(self):
        self.sources = self.make_sources()
        self.t0 = self.clock()
        self.base = {id(s): s.joules() for s in self.sources}
        return self

    def read(self):
        if self.sources is None:
            raise RuntimeError("EnergyMeter.read() before start()")
        components = {}
        for s in self.sources:
            joules = s.joules() - self.base[id(s)]
            row = components.setdefault(s.component, {"joules": 0.0, "methods": []})
            row["joules"] += joules
            row["methods"].append(s.method)
        for row in components.values():
            row["method"] = "+".join(row.pop("methods"))
        return {"duration_s": self.clock() - self.t0, "components": components}

    stop = read
