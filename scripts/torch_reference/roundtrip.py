"""layerwise weights -> PyTorch: save with ``save_for_torch``, load with PyTorch's strict
``load_state_dict``, and compare the two frameworks' outputs on the same input.

    uv run --with <a local torch wheel> python scripts/torch_reference/roundtrip.py

The test suite checks the other direction against stored PyTorch fixtures; this direction
needs torch at run time, so it lives here. Prints one line per model and exits 1 on a mismatch.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "bench"), str(Path(__file__).parent)]

import layerwise as lw  # noqa: E402
from layerwise.interop.torch import save_for_torch  # noqa: E402
import workloads  # noqa: E402
from attention import GPT as TorchGPT  # noqa: E402


def compare(name, lw_model, torch_model, lw_forward, torch_forward, tol=1e-5):
    lw_model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = save_for_torch(lw_model, Path(tmp) / "model.safetensors")
        torch_model.load_state_dict(load_file(path), strict=True)
    torch_model.eval()
    with lw.no_grad(), torch.no_grad():
        ours, theirs = np.asarray(lw_forward(lw_model)), torch_forward(torch_model).numpy()
    diff = float(np.abs(ours - theirs).max())
    print(f"{name:<5} strict load ok, {ours.shape} outputs, max |diff| {diff:.2e}")
    return diff <= tol


def main():
    lw.manual_seed(0)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    image = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    tokens = rng.integers(0, 96, (2, 16))
    ok = [
        compare("cnn", workloads._cnn(lw.nn), workloads._cnn(torch.nn),
                lambda m: m(lw.tensor(image)).numpy(), lambda m: m(torch.from_numpy(image))),
        compare("gpt", lw.models.GPT(lw.models.GPTConfig(**workloads.GPT_SHAPE, dropout=0.0)),
                TorchGPT(**workloads.GPT_SHAPE),
                lambda m: m(lw.tensor(tokens))[0].numpy(),
                lambda m: m(torch.from_numpy(tokens), torch.from_numpy(tokens))[0]),
        compare("lstm", lw.nn.LSTM(28, 64, num_layers=2, batch_first=True),  # rows as steps
                torch.nn.LSTM(28, 64, num_layers=2, batch_first=True),
                lambda m: m(lw.tensor(image[:, 0]))[0].numpy(),
                lambda m: m(torch.from_numpy(image[:, 0]))[0]),
    ]
    sys.exit(0 if all(ok) else 1)


if __name__ == "__main__":
    main()
