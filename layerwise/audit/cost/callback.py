"""CostCallback: what a training run cost, in FLOPs, seconds, memory, energy and CO2e.

    trainer = Trainer(..., callbacks=[CostCallback(run_dir, country="FR")])
    trainer.fit()
    metrics.update(cost.metrics)          # headline entries + the full record under 'cost'

It counts the FLOPs of the first training step exactly (forward, loss and the backward that
step implies; see flops.py: the backward is derived, not traced), and takes the run's total
as FLOPs per sample x samples trained (the last batch of an epoch may be short, so this is
exact only when batches are full). Validation passes are not counted. A resumed run
carries time, samples and joules over through state_dict.
Energy comes from an EnergyMeter around the whole fit; at the end it appends one row to
``emissions.csv`` in the run directory, under CodeCarbon's column names.
"""

import csv
import io
import os
import platform
import time

from layerwise import distributed
from layerwise.audit.cost.carbon import DEFAULT_PUE, emissions_record, grid_intensity
from layerwise.audit.cost.energy import EnergyMeter
from layerwise.audit.cost.flops import count_flops
from layerwise.audit.cost.peak import matmul_peak, mfu, peak_memory_bytes
from layerwise.serialization import write_bytes_atomic
from layerwise.train.callbacks import Callback
from layerwise.train.rundir import read_own_text

# CodeCarbon's emissions.csv columns whose meaning layerwise shares (units: s, kg, kg/s, W,
# kWh), then layerwise's own additions, prefixed so no CodeCarbon reader mistakes them.
CODECARBON_COLUMNS = [
    "timestamp", "project_name", "run_id", "duration", "emissions", "emissions_rate",
    "cpu_power", "gpu_power", "cpu_energy", "gpu_energy", "energy_consumed",
    "country_iso_code", "os", "python_version", "cpu_count", "pue",
]
EXTRA_COLUMNS = ["layerwise_cpu_method", "layerwise_gpu_method", "layerwise_grid_intensity",
                 "layerwise_grid_intensity_source", "layerwise_train_flops", "layerwise_mfu"]


class CostCallback(Callback):
    def __init__(self, run_dir=None, country=None, intensity=None, pue=DEFAULT_PUE,
                 sources=None, measure_peak=True, project_name="layerwise"):
        self.run_dir = run_dir
        grid_intensity(country, intensity)  # an unknown country fails now, not after training
        if not pue >= 1:
            raise ValueError(f"PUE is facility energy / IT energy, so >= 1; got {pue!r}")
        self.country, self.intensity, self.pue = country, intensity, pue
        self.meter = EnergyMeter(sources=sources)
        self.measure_peak = measure_peak
        self.project_name = project_name
        self.metrics = {}
        self._original = self._report = None
        self._prior = {"seconds": 0.0, "samples": 0, "joules": {}}  # before a resume

    def on_train_begin(self, trainer):
        self.meter.start()
        self.t0 = time.perf_counter()
        self.step0 = trainer.global_step
        self.samples = 0
        # Data-parallel (--nproc N): this callback runs on rank 0 alone, whose batch is 1/N
        # of the step's; every rank trains on as many samples.
        self.ranks = distributed.world_size()
        self._count_first_step(trainer)

    def _count_first_step(self, trainer):
        """Count FLOPs from the first forward until its loss is computed, then step aside.

        The counter wraps the trainer's forward and loss_fn rather than staying on from
        on_train_begin to on_batch_end, so an exception in between cannot leave
        Function.apply patched for the rest of the process.
        """
        original = self._original = (trainer.forward, trainer.loss_fn)
        counter = count_flops(trainer.model)

        def restore():
            trainer.forward, trainer.loss_fn = original
            self._original = None

        def forward(model, inputs):
            self._report = counter.__enter__()
            try:
                return original[0](model, inputs)
            except BaseException:
                counter.__exit__(None, None, None)
                restore()
                raise

        def loss_fn(outputs, targets):
            try:
                return original[1](outputs, targets)
            finally:
                counter.__exit__(None, None, None)
                restore()

        trainer.forward, trainer.loss_fn = forward, loss_fn

    def on_batch_end(self, trainer, logs):
        self.samples += _batch_size(trainer) * self.ranks

    def on_train_end(self, trainer):
        if self._original is not None:  # no batch ran: put the trainer back as it was
            trainer.forward, trainer.loss_fn = self._original
            self._original = None
        seconds = time.perf_counter() - self.t0 + self._prior["seconds"]
        reading = self.meter.stop()  # before the peak is measured: that is not training
        notes = _count_every_rank(reading)
        self.samples += self._prior["samples"]
        step = self._report.summary() if self._report is not None else {}
        steps = trainer.global_step - self.step0
        batch = _batch_size(trainer)
        per_sample = step.get("total_flops", 0) / batch if batch else 0
        total = int(round(per_sample * self.samples))
        peak = matmul_peak() if self.measure_peak else None
        for name, joules in self._prior["joules"].items():
            row = reading["components"].setdefault(name, {"joules": 0.0, "method": "resumed"})
            row["joules"] += joules
        reading["duration_s"] = seconds
        energy = emissions_record(reading, self.pue, self.country, self.intensity)
        cost = {
            "step_forward_flops": step.get("forward_flops"),
            "step_backward_flops": step.get("backward_flops"),
            "step_activation_bytes": step.get("activation_bytes"),
            "flops_per_sample": per_sample, "train_flops": total, "train_steps": steps,
            "train_samples": self.samples, "train_seconds": seconds,
            "peak_memory_bytes": peak_memory_bytes(),
            "matmul_peak_flops_per_s": peak,
            "mfu": mfu(total, seconds, peak) if peak else None,
            "energy": energy,
        }
        # Flat headline entries (the model card picks metrics.json keys by words such as
        # 'flop', 'energy', 'emission'), and the whole record under 'cost'.
        methods = ", ".join(f"{k}: {c['method']}" for k, c in energy["components"].items())
        self.metrics = {
            "train_flops": total, "train_flops_per_sample": per_sample,
            "train_flops_mfu": cost["mfu"], "train_peak_memory_bytes": cost["peak_memory_bytes"],
            "energy_kwh": energy["energy_kwh"], "energy_method": methods,
            "emissions_kg_co2e": energy["emissions_kg"], "emissions_pue": energy["pue"],
            "emissions_grid_intensity_kg_per_kwh": energy["grid_intensity_kg_per_kwh"],
            "emissions_grid_intensity_source": energy["grid_intensity_source"],
            "cost": cost,
        }
        if energy["warnings"] or notes:
            self.metrics["energy_warnings"] = "; ".join(energy["warnings"] + notes)
        if self.run_dir is not None:
            write_emissions_csv(os.path.join(self.run_dir, "emissions.csv"), cost,
                                self.project_name, os.path.basename(os.path.normpath(self.run_dir)))

    def state_dict(self):
        """Time, samples and joules so far, so a resumed run reports the whole run's cost."""
        if self.meter.sources is None:
            return dict(self._prior)
        reading = self.meter.read()
        joules = dict(self._prior["joules"])
        for name, c in reading["components"].items():
            joules[name] = joules.get(name, 0.0) + c["joules"]
        return {"seconds": time.perf_counter() - self.t0 + self._prior["seconds"],
                "samples": self.samples + self._prior["samples"], "joules": joules}

    def load_state_dict(self, state):
        self._prior = {"seconds": float(state["seconds"]), "samples": int(state["samples"]),
                       "joules": {k: float(v) for k, v in state["joules"].items()}}


def _batch_size(trainer):
    loader = getattr(trainer, "train_loader", None)
    return getattr(loader, "batch_size", 0) or 0


def write_emissions_csv(path, cost, project_name, run_id):
    """Add one row (and the header to a new or empty file), CodeCarbon's layout."""
    e = cost["energy"]
    comp = e["components"]
    duration = e["duration_s"]
    row = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"), "project_name": project_name,
        "run_id": run_id, "duration": duration, "emissions": e["emissions_kg"],
        "emissions_rate": e["emissions_kg"] / duration if duration > 0 else 0.0,
        "cpu_power": comp.get("cpu", {}).get("power_w", 0.0),
        "gpu_power": comp.get("gpu", {}).get("power_w", 0.0),
        "cpu_energy": comp.get("cpu", {}).get("energy_kwh", 0.0),
        "gpu_energy": comp.get("gpu", {}).get("energy_kwh", 0.0),
        "energy_consumed": e["energy_kwh"], "country_iso_code": e["country"],
        "os": platform.platform(), "python_version": platform.python_version(),
        "cpu_count": os.cpu_count(), "pue": e["pue"],
        "layerwise_cpu_method": comp.get("cpu", {}).get("method", ""),
        "layerwise_gpu_method": comp.get("gpu", {}).get("method", ""),
        "layerwise_grid_intensity": e["grid_intensity_kg_per_kwh"],
        "layerwise_grid_intensity_source": e["grid_intensity_source"],
        "layerwise_train_flops": cost.get("train_flops"), "layerwise_mfu": cost.get("mfu"),
    }
    # The file is small (a row per training session): rewrite it whole and atomically, so a
    # crash leaves no half row and a hard link to another file is broken, never written
    # through; read_own_text refuses a symbolic link.
    old = read_own_text(path)
    lines = io.StringIO(newline="")
    writer = csv.DictWriter(lines, fieldnames=CODECARBON_COLUMNS + EXTRA_COLUMNS)
    if not old:
        writer.writeheader()
    writer.writerow(row)
    write_bytes_atomic(path, (old + lines.getvalue()).encode("utf-8"))  # csv's own \r\n


def _count_every_rank(reading):
    """Scale rank 0's energy reading to the job's processes on this machine, in place; the
    notes that say how. A machine-wide meter (RAPL) already counts them; a per-process
    estimate counts rank 0 alone, and every rank does the same work. Other machines' energy
    is not read."""
    local, world = distributed.local_size(), distributed.world_size()
    if world == 1:
        return []
    notes = []
    for name, row in reading["components"].items():
        if row["method"].startswith("estimate"):
            row["joules"] *= local
            notes.append(f"{name} energy estimated in rank 0's process and multiplied by the "
                         f"{local} processes on its machine")
    if world > local:
        notes.append(f"energy of the {world - local} processes on other machines is not "
                     f"measured")
    return notes


def run_cost_callback(run_dir, config):
    """The CostCallback of a run from its config's "cost" entry: what ``start_run`` and
    ``resume_run`` take as ``callbacks=[run_cost_callback]`` (train does not import audit)."""
    options = config.get("cost") or {}
    return CostCallback(run_dir, country=options.get("country"),
                        intensity=options.get("grid_intensity"), pue=options.get("pue", 1.0))
