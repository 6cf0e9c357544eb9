"""Cost accounting: FLOPs against hand counts, energy and CO2e arithmetic, RAPL wrap-around,
the trainer callback's metrics and emissions.csv."""

import csv
import os
import warnings

import pytest

import layerwise as lw
from layerwise import nn
from layerwise.audit.cost import (
    ConstantPower, CostCallback, EnergyMeter, EstimatedCPU, RaplSource, count_flops,
    default_sources, emissions_record, format_table, grid_intensity, matmul_peak, profile_model,
)


def test_mlp_flops_match_hand_count():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    report = profile_model(model, lw.randn(2, 4))
    by = report.by_module()
    # Linear(4, 8) on 2 rows: 2*2*4*8 multiply-adds x2 + 2*8 bias adds
    assert by["0"]["forward_flops"] == 2 * 2 * 4 * 8 + 2 * 8
    # the input needs no gradient: dW (2*2*4*8) and db (2*8) only
    assert by["0"]["backward_flops"] == 2 * 2 * 4 * 8 + 2 * 8
    assert by["1"]["forward_flops"] == 2 * 8  # ReLU: one per element
    assert by["2"]["forward_flops"] == 2 * 2 * 8 * 3 + 2 * 3
    # dx and dW (two matmuls) + db
    assert by["2"]["backward_flops"] == 2 * (2 * 2 * 8 * 3) + 2 * 3
    assert by["0"]["params"] == 4 * 8 + 8 and by["2"]["params"] == 8 * 3 + 3
    assert report.summary()["params"] == model.num_parameters()
    assert "total" in format_table(report)


def test_cnn_flops_match_hand_count():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 10))
    report = profile_model(model, lw.randn(2, 1, 8, 8))
    by = report.by_module()
    conv_mm = 2 * (2 * 8 * 8 * 4) * (1 * 3 * 3)  # 2 x outputs x (C/g x KH x KW)
    assert by["0"]["forward_flops"] == conv_mm + 2 * 4 * 8 * 8
    assert by["0"]["backward_flops"] == conv_mm + 2 * 4 * 8 * 8  # dW + db, no dx
    assert by["3"]["forward_flops"] == 0  # Flatten moves data only
    assert by["4"]["forward_flops"] == 2 * 2 * 64 * 10 + 2 * 10
    # activations kept for backward: every op output that requires grad, float32
    assert by["0"]["activation_bytes"] == 2 * 4 * 8 * 8 * 4


def test_transposed_conv_flops_match_hand_count():
    # every input value is multiplied into (O/G) x KH x KW outputs: the conv's count turned over
    layer = nn.ConvTranspose2d(4, 6, 2, stride=2, groups=2)
    report = profile_model(layer, lw.randn(3, 4, 5, 5))
    by = report.by_module()
    products = 2 * (3 * 4 * 5 * 5) * (6 // 2) * (2 * 2)
    out_values = 3 * 6 * 10 * 10
    assert by[""]["forward_flops"] == products + out_values
    assert by[""]["backward_flops"] == products + out_values  # dW + db, no dx


def test_attention_flops_match_hand_count():
    b, t, e, h = 2, 5, 8, 2
    d = e // h
    mha = nn.MultiheadAttention(e, h, batch_first=True)
    x = lw.randn(b, t, e)
    with count_flops(mha) as report:
        mha(x, x, x, need_weights=False)
    table = report.by_op()
    scores = b * h * t * t
    # QK^T and PV, plus 6 per score (scale, softmax)
    assert table["SDPAttention"]["forward_flops"] == 2 * scores * d * 2 + 6 * scores
    # dV, dP (2 x scores x d each), softmax backward (3 / score), dQ and dK
    assert table["SDPAttention"]["backward_flops"] == (
        2 * scores * d * 2 + 3 * scores + 2 * 2 * scores * d)
    assert table["LinearFunction"]["forward_flops"] == (
        2 * b * t * e * 3 * e + b * t * 3 * e + 2 * b * t * e * e + b * t * e)


def test_lstm_flops_match_hand_count_in_either_layout():
    """One recurrent product per step (2 T B G H) plus ~1 per gate value, forward; the
    backward twice the products plus the gate values."""
    b, t, e, h = 3, 4, 5, 2
    g = 4 * h
    counts = []
    for batch_first in (True, False):
        lstm = nn.LSTM(e, h, batch_first=batch_first)
        x = lw.randn(*((b, t, e) if batch_first else (t, b, e)), requires_grad=True)
        with count_flops(lstm) as report:
            lstm(x)
        row = report.by_op()["LSTMFunction"]
        counts.append((row["forward_flops"], row["backward_flops"]))
    forward = 2 * t * b * g * h + t * b * g
    assert counts == [(forward, 2 * 2 * t * b * g * h + t * b * g)] * 2


def test_sdpa_flops_and_counter_restores_apply():
    from layerwise.autograd.function import Function
    before = Function.__dict__["apply"]
    q, k, v = (lw.randn(1, 3, 4, requires_grad=True) for _ in range(3))
    with count_flops() as report:
        nn.functional.scaled_dot_product_attention(q, k, v)
    assert Function.__dict__["apply"] is before
    rec = [r for r in report.ops if r.op == "SDPAttention"][0]
    scores = 1 * 3 * 3  # (B*H) x Tq x Tk
    assert rec.forward_flops == 2 * scores * 4 * 2 + 6 * scores


def test_mocked_100w_for_an_hour():
    now = [0.0]
    meter = EnergyMeter(sources=[ConstantPower(100.0, clock=lambda: now[0])],
                        clock=lambda: now[0]).start()
    now[0] = 3600.0
    record = emissions_record(meter.stop(), pue=1.5, intensity=400)
    assert record["it_energy_kwh"] == pytest.approx(0.1, abs=1e-15)
    assert record["energy_kwh"] == pytest.approx(0.15, abs=1e-15)
    assert record["emissions_kg"] == pytest.approx(0.06, abs=1e-15)
    assert record["components"]["cpu"]["method"] == "constant"
    assert record["components"]["cpu"]["power_w"] == pytest.approx(100.0)
    assert record["pue"] == 1.5 and record["grid_intensity_source"] == "user-supplied"


def test_grid_intensity_table_default_and_errors():
    assert grid_intensity()[0] == pytest.approx(0.481)
    assert "world average" in grid_intensity()[1]
    assert grid_intensity("fr")[0] == pytest.approx(0.056)
    # figures not checked against the cited source say so in every record that uses them
    assert "approximate" not in grid_intensity("FR")[1]
    assert "approximate" in grid_intensity("JP")[1]
    with pytest.raises(ValueError, match="'XX'"):
        grid_intensity("XX")
    with pytest.raises(ValueError, match="PUE"):
        emissions_record({"duration_s": 1, "components": {}}, pue=0.5)


def test_estimated_energy_is_flagged_in_the_record():
    clock, busy = [0.0], [0.0]
    est = EstimatedCPU(tdp_w=40, cpus=1, cpu_seconds=lambda: busy[0], clock=lambda: clock[0])
    meter = EnergyMeter(sources=[est], clock=lambda: clock[0]).start()
    clock[0], busy[0] = 90.0, 90.0  # one core flat out for 90 s: 40 W x 90 s = 3600 J
    record = emissions_record(meter.stop(), intensity=400)
    assert record["it_energy_kwh"] == pytest.approx(0.001)
    assert record["warnings"] == ["cpu energy is an estimate (estimate:tdp*utilisation): "
                                  "no meter was readable"]
    now = [0.0]
    measured = EnergyMeter(sources=[ConstantPower(5.0, clock=lambda: now[0])],
                           clock=lambda: now[0]).start()
    assert emissions_record(measured.stop())["warnings"] == []


def test_nvml_source_reads_millijoules_per_gpu(monkeypatch):
    import sys
    import types

    counters = {0: 1_000, 1: 50_000}  # millijoules since the driver loaded, per GPU
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetTotalEnergyConsumption=lambda h: counters[h])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    from layerwise.audit.cost import NvmlSource

    src = NvmlSource()
    counters[0] += 2_500
    counters[1] += 500
    assert src.joules() == pytest.approx(3.0)  # (2500 + 500) mJ over both GPUs
    assert src.component == "gpu" and src.method == "nvml"
    with pytest.warns(UserWarning):  # no RAPL under an empty directory: the CPU falls back
        sources = default_sources(rapl_root="/nonexistent")
    assert [s.method for s in sources] == ["estimate:tdp*utilisation", "nvml"]


def test_peak_memory_sees_a_large_allocation():
    import numpy as np

    from layerwise.audit.cost import peak_memory_bytes

    before = peak_memory_bytes()
    block = np.ones(before // 8 + 50_000_000 // 8)  # more than the peak so far, touched
    assert peak_memory_bytes() >= block.nbytes > before
    del block


def test_emissions_csv_uses_codecarbon_column_names():
    from layerwise.audit.cost.callback import CODECARBON_COLUMNS

    # the fields of codecarbon.output_methods.emissions_data.EmissionsData (CodeCarbon 3.x),
    # copied from its source: every shared column must be spelled the way CodeCarbon does
    codecarbon = {
        "timestamp", "project_name", "run_id", "experiment_id", "duration", "emissions",
        "emissions_rate", "cpu_utilization_percent", "ram_utilization_percent", "ram_used_gb",
        "cpu_power", "gpu_power", "ram_power", "cpu_energy", "gpu_energy", "ram_energy",
        "energy_consumed", "water_consumed", "country_name", "country_iso_code", "region",
        "cloud_provider", "cloud_region", "os", "python_version", "codecarbon_version",
        "cpu_count", "cpu_model", "gpu_count", "gpu_model", "longitude", "latitude",
        "ram_total_size", "tracking_mode", "on_cloud", "pue", "wue"}
    assert set(CODECARBON_COLUMNS) <= codecarbon


def _fake_rapl(root, energy, max_range):
    for i, (e, m) in enumerate(zip(energy, max_range)):
        d = root / f"intel-rapl:{i}"
        d.mkdir(exist_ok=True)
        (d / "energy_uj").write_text(f"{e}\n")
        (d / "max_energy_range_uj").write_text(f"{m}\n")
    sub = root / "intel-rapl:0:0"  # a subzone (core): must not be added to the package
    sub.mkdir(exist_ok=True)
    (sub / "energy_uj").write_text("5\n")
    (sub / "max_energy_range_uj").write_text("1000\n")


def test_rapl_wraparound_is_never_negative(tmp_path):
    _fake_rapl(tmp_path, [900_000, 10], [1_000_000, 1_000_000])
    src = RaplSource(tmp_path)
    assert len(src.domains) == 2
    _fake_rapl(tmp_path, [100_000, 20], [1_000_000, 1_000_000])  # domain 0 wrapped
    # (1e6 - 9e5) + 1e5 on domain 0, 10 on domain 1, in microjoules
    assert src.joules() == pytest.approx((200_000 + 10) / 1e6)
    _fake_rapl(tmp_path, [150_000, 30], [1_000_000, 1_000_000])
    assert src.joules() == pytest.approx((250_000 + 20) / 1e6)
    meter = EnergyMeter(sources=[RaplSource(tmp_path)]).start()
    _fake_rapl(tmp_path, [149_999, 30], [1_000_000, 1_000_000])  # a wrap by a full range
    reading = meter.stop()["components"]["cpu"]
    assert reading["joules"] > 0 and reading["method"] == "rapl"


def test_fallback_warns_and_names_the_estimate(tmp_path):
    with pytest.warns(UserWarning, match="estimate:tdp\\*utilisation"):
        sources = default_sources(rapl_root=tmp_path, tdp_w=50)
    assert sources[0].method == "estimate:tdp*utilisation"
    clock, busy = [0.0], [0.0]
    est = EstimatedCPU(tdp_w=50, cpus=2, cpu_seconds=lambda: busy[0], clock=lambda: clock[0])
    clock[0], busy[0] = 10.0, 5.0  # one of two cores busy half the time: 25% utilisation
    assert est.joules() == pytest.approx(50 * 0.25 * 10)


def test_matmul_peak_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = matmul_peak(n=64)
    assert os.path.isfile(tmp_path / "layerwise" / "matmul_peak.json")
    assert matmul_peak(n=64) == first and first > 0


def test_cost_callback_writes_metrics_and_emissions_csv(tmp_path, monkeypatch):
    from layerwise import optim
    from layerwise.data import DataLoader, TensorDataset
    from layerwise.train.trainer import Trainer
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    lw.manual_seed(0)
    x, y = lw.randn(32, 4), lw.tensor([i % 3 for i in range(32)])
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    cb = CostCallback(tmp_path, intensity=400, pue=1.5, sources=[ConstantPower(10.0)],
                      measure_peak=False)
    trainer = Trainer(model, optim.SGD(model.parameters(), lr=0.1),
                      train_loader=DataLoader(TensorDataset(x, y), batch_size=8), epochs=2,
                      callbacks=[cb], progress=False, verbose=False)
    trainer.fit()
    cost = cb.metrics["cost"]
    step = profile_model(model, x[:8], nn.functional.cross_entropy, y[:8]).summary()
    assert cost["step_forward_flops"] == step["forward_flops"]
    assert cost["train_flops"] == step["total_flops"] * 8  # 8 full steps of 8 samples
    assert cost["energy"]["components"]["cpu"]["method"] == "constant"
    with open(tmp_path / "emissions.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    assert float(rows[0]["energy_consumed"]) == pytest.approx(cost["energy"]["energy_kwh"])
    assert float(rows[0]["emissions"]) == pytest.approx(cost["energy"]["energy_kwh"] * 0.4)
    assert rows[0]["pue"] == "1.5" and rows[0]["layerwise_cpu_method"] == "constant"
    flat = cb.metrics
    assert flat["energy_kwh"] == cost["energy"]["energy_kwh"]
    assert flat["energy_method"] == "cpu: constant"
    assert flat["emissions_kg_co2e"] == pytest.approx(flat["energy_kwh"] * 0.4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the counter is off again: a normal forward works
        model(x)


def test_cost_callback_unpatches_when_the_first_step_fails(tmp_path):
    from layerwise import optim
    from layerwise.autograd.function import Function
    from layerwise.data import DataLoader, TensorDataset
    from layerwise.train.trainer import Trainer
    before = Function.__dict__["apply"]
    model = nn.Sequential(nn.Linear(4, 3))

    def bad_loss(outputs, targets):
        raise RuntimeError("boom")

    trainer = Trainer(model, optim.SGD(model.parameters(), lr=0.1), bad_loss,
                      train_loader=DataLoader(TensorDataset(lw.randn(8, 4),
                                                            lw.tensor([0] * 8)), batch_size=4),
                      epochs=1, callbacks=[CostCallback(sources=[ConstantPower(1.0)],
                                                        measure_peak=False)],
                      progress=False, verbose=False)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit()
    assert Function.__dict__["apply"] is before and trainer.loss_fn is bad_loss


def test_cost_state_carries_over_a_resume():
    class Clock:
        now = 0.0

    src = ConstantPower(50.0, clock=lambda: Clock.now)
    first = CostCallback(sources=[src], measure_peak=False)
    first.meter.start()
    first.t0, first.samples = 0.0, 96
    Clock.now = 36.0  # 50 W for 36 s = 1800 J
    state = first.state_dict()
    assert state["joules"] == {"cpu": pytest.approx(1800.0)} and state["samples"] == 96
    second = CostCallback(sources=[ConstantPower(50.0, clock=lambda: Clock.now)],
                          measure_peak=False)
    second.load_state_dict(state)
    assert second.state_dict()["joules"]["cpu"] == pytest.approx(1800.0)  # not started yet


def test_gpt_step_matches_the_palm_formula():
    """PaLM (appendix B) / nanoGPT: a training step costs 6 N per token for the weight
    matmuls plus 12 L H Q T per token for attention; without biases both parts are exact."""
    from layerwise.models.gpt import GPT, GPTConfig
    lw.manual_seed(0)
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, bias=False)
    model = GPT(cfg)
    b, t = 3, 8
    idx = lw.tensor([[i % 11 for i in range(t)]] * b)
    with count_flops(model) as report:
        model(idx, idx)
    ops = report.by_op()
    matmul = sum(ops[k]["forward_flops"] + ops[k]["backward_flops"]
                 for k in ("LinearFunction", "MatMul") if k in ops)
    weights = sum(m.weight.shape[0] * m.weight.shape[1] for _, m in model.named_modules()
                  if type(m).__name__ == "Linear")
    assert matmul == 6 * b * t * weights
    attn = ops["SDPAttention"]
    scores = b * cfg.n_head * t * t * cfg.n_layer
    hs = cfg.n_embd // cfg.n_head
    assert attn["forward_flops"] + attn["backward_flops"] - 9 * scores == (
        b * t * 12 * cfg.n_layer * cfg.n_head * hs * t)


@pytest.mark.parametrize("options, quoted", [({"country": "XX"}, "'XX'"),
                                             ({"intensity": -5}, "-5"),
                                             ({"pue": 0.5}, "0.5")])
def test_cost_callback_refuses_a_bad_grid_setting_when_built(options, quoted):
    from layerwise.audit.cost import CostCallback

    with pytest.raises(ValueError, match=quoted) as caught:
        CostCallback(None, **options)
    assert "\n" not in str(caught.value)
