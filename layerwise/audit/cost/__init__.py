"""What training costs: FLOPs per layer and op, activation and peak memory, MFU against the
measured matmul peak, energy (RAPL, NVML, or an estimate), CO2e, and a trainer callback."""

from layerwise.audit.cost.callback import CostCallback, run_cost_callback, write_emissions_csv
from layerwise.audit.cost.carbon import (
    GRID_INTENSITY_G_PER_KWH, emissions_record, grid_intensity,
)
from layerwise.audit.cost.energy import (
    ConstantPower, EnergyMeter, EstimatedCPU, NvmlSource, RaplSource, default_sources,
)
from layerwise.audit.cost.flops import (
    FlopReport, OpRecord, count_flops, format_table, op_cost, profile_model,
)
from layerwise.audit.cost.peak import matmul_peak, measure_matmul_peak, mfu, peak_memory_bytes

__all__ = [
    "CostCallback", "run_cost_callback", "write_emissions_csv", "GRID_INTENSITY_G_PER_KWH", "emissions_record",
    "grid_intensity", "ConstantPower", "EnergyMeter", "EstimatedCPU", "NvmlSource",
    "RaplSource", "default_sources", "FlopReport", "OpRecord", "count_flops", "format_table",
    "op_cost", "profile_model", "matmul_peak", "measure_matmul_peak", "mfu", "peak_memory_bytes",
]
