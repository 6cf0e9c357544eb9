"""Reference outputs, gradients and initial weights of PyTorch's ConvTranspose2d, for
tests/nn/test_conv_transpose.py.

Run with a Python that has torch (not a layerwise dependency):

    uv run --with /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl \\
        python scripts/torch_reference/conv_transpose.py

Each case writes tests/fixtures/torch/conv_transpose2d_<case>.safetensors holding
    - the module's state_dict (weight (in, out // groups, kH, kW), bias), unchanged;
    - "config/<option>": constructor options as int tensors, and "config/output_size" where
      forward was given one;
    - "input/x", "probe/out", "output/out", "grad/x", "grad/<param>": the input, the fixed
      weights of the scalar loss  loss = sum(out * probe), the output, and d loss / d input and
      every parameter.
The "init" file holds only the state_dict of a freshly built layer: PyTorch's initial
weights, whose range shows the fan_in it used.
"""

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "torch"

CASES = {
    # name: (options, input shape, output_size given to forward)
    "groups": (dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 1),
                    padding=(1, 0), output_padding=(1, 0), groups=2, dilation=(1, 2)),
               (2, 4, 5, 4), None),
    "unet": (dict(in_channels=8, out_channels=4, kernel_size=2, stride=2), (2, 8, 5, 6), None),
    "output_size": (dict(in_channels=3, out_channels=2, kernel_size=3, stride=2, padding=1,
                         bias=False), (2, 3, 4, 5), (8, 10)),
}


def _save(name, tensors):
    tensors = {k: v.detach().clone().contiguous() for k, v in tensors.items()}
    path = OUT / f"conv_transpose2d_{name}.safetensors"
    save_file(tensors, str(path))
    print(f"wrote {path.relative_to(OUT.parents[2])} ({path.stat().st_size} bytes)")


def case(name, options, shape, output_size, seed):
    torch.manual_seed(seed)
    conv = nn.ConvTranspose2d(**options)
    tensors = {k: v.clone() for k, v in conv.state_dict().items()}
    x = torch.randn(shape).requires_grad_()
    out = conv(x, output_size=output_size)
    probe = torch.randn(out.shape)
    (out * probe).sum().backward()
    tensors.update({"input/x": x, "output/out": out, "probe/out": probe, "grad/x": x.grad})
    for k, p in conv.named_parameters():
        tensors[f"grad/{k}"] = p.grad
    for key in ("kernel_size", "stride", "padding", "output_padding", "dilation"):
        tensors[f"config/{key}"] = torch.tensor(getattr(conv, key))
    tensors["config/channels"] = torch.tensor([conv.in_channels, conv.out_channels])
    tensors["config/groups"] = torch.tensor(conv.groups)
    tensors["config/bias"] = torch.tensor(int(conv.bias is not None))
    if output_size is not None:
        tensors["config/output_size"] = torch.tensor(output_size)
    _save(name, tensors)


def init_case(seed):
    """A layer whose in_channels // groups (8) and out_channels // groups (12) differ, so its
    weights' range tells which of them PyTorch's fan_in counts."""
    torch.manual_seed(seed)
    conv = nn.ConvTranspose2d(16, 24, kernel_size=3, groups=2)
    _save("init", dict(conv.state_dict()))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for seed, (name, (options, shape, output_size)) in enumerate(CASES.items()):
        case(name, options, shape, output_size, seed)
    init_case(seed=10)


if __name__ == "__main__":
    main()
