"""The duties: a model owes its users a look at whom it fails, how sure it is, what it costs.

Five checks that belong with any trained model, each a few lines of layerwise.audit or
layerwise.compress:
  1. whom it fails: a census income model (the UCI Adult table, 48,842 people) scored
     separately for every sex x race group, each error rate with its 95% interval, as Gender
     Shades did for face analysis: one overall accuracy hides the worst group;
  2. how sure it is: a digit classifier trained for many passes over its images says "99%"
     more often than it is right; temperature scaling (one number T, fitted on held-out
     images: softmax(logits / T)) brings its confidence nearer its accuracy without changing
     a single prediction;
  3. what it was never shown: random noise, and digits with their pixels shuffled, should get
     a lower confidence than digits; the AUROC (1: always lower, 0.5: no better than a coin)
     says how well confidence alone tells them apart;
  4. what it cost: the energy of its training (measured where the machine allows, else
     estimated) and the CO2 of that energy on the world's average grid;
  5. how small it can be: accuracy and file size after pruning the smallest weights to
     several sparsities (stored as sparse matrices) and after int8 quantization.

    uv run python examples/09_duties.py
    uv run python examples/09_duties.py --quick   # fewer people and digits, fewer steps

The picture: the reliability diagram before and after temperature scaling, accuracy against
file size after compression, and the error rate of each sex x race group with its interval.
"""

import tempfile
from pathlib import Path

import numpy as np

import layerwise as lw
from layerwise import audit, compress, nn
from layerwise.nn import functional as F
from tour import options, plt, save

quick, picture = options(__file__, __doc__)
lw.manual_seed(0)
rng = np.random.default_rng(0)
every = 8 if quick else 1  # quick: train on every 8th person and digit


def train(model, x, y, steps, batch_size=64):
    opt = lw.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        b = rng.integers(0, len(x), size=batch_size)
        loss = F.cross_entropy(model(lw.tensor(x[b])), lw.tensor(y[b]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def logits(model, x):
    with lw.no_grad():
        return model(lw.tensor(x)).numpy()


# --- 1. whom it fails: error rates by sex x race on the census ------------------------------
adult = lw.data.table_splits(lw.data.adult_path(), target="income", groups=["sex", "race"])
(x, y), (test_x, test_y) = ((t.numpy() for t in adult[s].tensors) for s in ("train", "test"))
census = train(nn.Sequential(nn.Linear(x.shape[1], 32), nn.ReLU(), nn.Linear(32, 2)),
               x[::every], y[::every], 100 if quick else 600, batch_size=256)
result = audit.disaggregate(test_y, logits(census, test_x).argmax(axis=1), adult.groups["test"])
by_cell = result["breakdowns"][2]  # sex, race, then sex x race
worst = next(c for c in by_cell["cells"] if c["label"] == by_cell["compare"]["error_rate"]["worst"])
print(f"overall error rate: {result['overall']['error_rate']['value']:.3f}")
print(f"worst group: {worst['label']} (n={worst['n']})")
print("worst group error rate: {value:.3f} (95% CI {ci[0]:.3f} to {ci[1]:.3f})".format(
    **worst["error_rate"]))
print(audit.headline(result))

# --- 2-4. a digit classifier: its confidence, the unknown, its energy ---------------------------
digits = lw.data.digits_splits(seed=0)
(x, y), (val_x, val_y), (test_x, test_y) = ((t.numpy() for t in digits[s].tensors)
                                            for s in ("train", "val", "test"))
mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
with audit.count_flops(mlp) as flops:  # one training step, forward and the backward it implies
    F.cross_entropy(mlp(lw.tensor(x[:64])), lw.tensor(y[:64]))
print(f"FLOPs per training step of 64 digits: {flops.total_flops}")
meter = audit.cost.EnergyMeter().start()
train(mlp, x[::every], y[::every], 150 if quick else 1500)
cost = audit.emissions_record(meter.stop())
print(f"training energy: {cost['energy_kwh'] * 3.6e6:.4g} J")
print(f"training CO2: {cost['emissions_kg'] * 1000:.4g} g")
print(f"grid intensity: {cost['grid_intensity_kg_per_kwh'] * 1000:g} g/kWh ({cost['country']})")
temperature = audit.fit_temperature(logits(mlp, val_x), val_y)
test_logits = logits(mlp, test_x)
before = audit.calibration_error(audit.softmax(test_logits), test_y)
after = audit.calibration_error(audit.softmax(test_logits, temperature), test_y)
print(f"fitted temperature: {temperature:.2f}")
print(f"ECE before temperature scaling: {before['ece']:.4f}")
print(f"ECE after temperature scaling: {after['ece']:.4f}")
unknown = {"noise": audit.uniform_noise_like(test_x, seed=0),  # images it was never shown:
           "shuffled digits": rng.permuted(test_x.reshape(len(test_x), -1), axis=1)}  # no shape
known = audit.max_softmax(test_logits)
for name, images in unknown.items():
    scores = audit.max_softmax(logits(mlp, images.reshape(test_x.shape)))
    print(f"OOD AUROC, digits vs {name} by max softmax: {audit.auroc(known, scores):.3f}")


# --- 5. compression: pruning to several sparsities, and int8 ----------------------------------
def file_kb(model, write):
    with tempfile.TemporaryDirectory() as folder:
        write(model, Path(folder) / "model.safetensors")
        return (Path(folder) / "model.safetensors").stat().st_size / 1e3


compressed = {"dense": mlp}
for s in (0.5, 0.8, 0.9, 0.95):  # the s smallest |weights| of all layers set to 0, kept as CSR
    compressed[f"{s:.0%} pruned"] = compress.to_sparse(compress.magnitude_prune(mlp, s).remove())
compressed["int8"] = compress.quantize_dynamic(mlp)
sizes, accs = {}, {}
for name, model in compressed.items():
    write = compress.save_quantized if name == "int8" else compress.save_sparse
    sizes[name] = file_kb(model, write)
    accs[name] = float((logits(model, test_x).argmax(axis=1) == test_y).mean())
    print(f"accuracy {name}: {accs[name]:.3f}")
    print(f"file size {name} (KB): {sizes[name]:.1f}")

fig, (rel, comp, groups) = plt.subplots(1, 3, figsize=(10, 4))
for stats, name in ((before, "as trained"), (after, f"T = {temperature:.2f}")):
    full = [b for b in stats["bins"] if b["count"]]
    rel.plot([b["confidence"] for b in full], [b["accuracy"] for b in full], "o-",
             label=f"{name}: ECE {stats['ece']:.3f}")
rel.plot([0, 1], [0, 1], "k:", linewidth=1)
rel.set(xlabel="confidence", ylabel="accuracy", title="Reliability (digits)")
rel.legend(fontsize=8, loc="upper left")
comp.plot([sizes[k] for k in accs if k != "int8"], [accs[k] for k in accs if k != "int8"], "o-",
          label="pruned (sparse file)")
comp.plot(sizes["int8"], accs["int8"], "s", color="tab:red", label="int8")
for k in accs:
    comp.annotate(k.replace(" pruned", ""), (sizes[k], accs[k]), fontsize=7)
comp.set(xlabel="file size (KB)", ylabel="test accuracy", title="Compression (digits)")
comp.legend(fontsize=8)
cells = sorted((c for c in by_cell["cells"] if not c["small"]),
               key=lambda c: c["error_rate"]["value"])
rates = np.array([c["error_rate"]["value"] for c in cells])
ci = np.array([c["error_rate"]["ci"] for c in cells])
groups.errorbar(rates, range(len(cells)), xerr=[rates - ci[:, 0], ci[:, 1] - rates], fmt="o",
                capsize=2, color="tab:red")
groups.set_yticks(range(len(cells)), [c["label"].replace("sex=", "").replace("race=", "")
                                      for c in cells], fontsize=7)
groups.axvline(result["overall"]["error_rate"]["value"], color="k", ls=":", label="everyone")
groups.legend(fontsize=8, loc="center right")
groups.yaxis.tick_right()  # the group names at the figure's edge, not between panels
groups.set(xlabel="error rate (95% CI)", title="Census: errors by group")
save(fig, picture)
