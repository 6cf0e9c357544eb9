"""Reference outputs and gradients of PyTorch's vision layers, for tests/nn/test_vision_layers.py
and tests/models/test_vision_models.py.

Run with a Python that has torch (not a layerwise dependency):

    uv run --group reference python scripts/torch_reference/vision.py

(or `uv run --with <a local torch wheel> python ...` where PyPI's CUDA build is unwanted)

Each case writes tests/fixtures/torch/vision_<case>.safetensors holding
    - the module's state_dict under its own keys (weight, bias, running_mean, ...), unchanged;
    - "config/<option>": constructor options as int tensors (padding="same" as config/same = 1);
    - "input/x", "probe/out", "output/out", "grad/x", "grad/<param>": the input, the fixed
      weights of the scalar loss  loss = sum(out * probe), the output, and d loss / d input and
      every parameter.
BatchNorm and ResNet files also hold the state after one training step ("after/<key>") and an
eval-mode forward on a second input ("eval/x", "eval/probe", "eval/out", "eval/grad_x").
"""

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

# torch warns that an even kernel with padding="same" needs a padded copy: expected here.
warnings.filterwarnings("ignore", message="Using padding='same'")

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "torch"


def _save(name, tensors):
    tensors = {k: v.detach().clone().contiguous() for k, v in tensors.items()}
    path = OUT / f"vision_{name}.safetensors"
    save_file(tensors, str(path))
    print(f"wrote {path.relative_to(OUT.parents[2])} ({path.stat().st_size} bytes)")


def _forward_backward(module, x):
    """out, probe and the gradients of sum(out * probe)."""
    x = x.clone().requires_grad_()
    out = module(x)
    probe = torch.randn(out.shape, dtype=out.dtype)
    (out * probe).sum().backward()
    tensors = {"input/x": x, "output/out": out, "probe/out": probe, "grad/x": x.grad}
    for k, p in module.named_parameters():
        tensors[f"grad/{k}"] = p.grad.clone()  # a later backward would accumulate into p.grad
    return tensors


# --- convolution ----------------------------------------------------------------------------

CONV_CASES = {
    # name: (options, input shape)
    "conv2d_groups": (dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 1),
                           padding=(1, 2), dilation=(1, 2), groups=2), (2, 4, 7, 6)),
    "conv2d_same": (dict(in_channels=3, out_channels=4, kernel_size=4, padding="same",
                         dilation=1, bias=False), (2, 3, 6, 5)),
    "conv2d_stride": (dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding=1),
                      (3, 2, 9, 8)),
}


def conv_case(name, options, shape, seed):
    torch.manual_seed(seed)
    conv = nn.Conv2d(**options)
    tensors = {k: v.clone() for k, v in conv.state_dict().items()}  # before any update
    tensors.update(_forward_backward(conv, torch.randn(shape)))
    for key in ("kernel_size", "stride", "dilation"):
        tensors[f"config/{key}"] = torch.tensor(conv.__dict__[key])
    tensors["config/channels"] = torch.tensor([conv.in_channels, conv.out_channels])
    tensors["config/groups"] = torch.tensor(conv.groups)
    tensors["config/bias"] = torch.tensor(int(conv.bias is not None))
    if options.get("padding") == "same":
        tensors["config/same"] = torch.tensor(1)
    else:
        tensors["config/padding"] = torch.tensor(conv.padding)
    _save(name, tensors)


# --- batch norm -----------------------------------------------------------------------------

def batchnorm_case(name, cls, shape, seed, momentum=0.1):
    """One training step from non-trivial running stats, then eval on a second input."""
    torch.manual_seed(seed)
    c = shape[1]
    bn = cls(c, momentum=momentum)
    with torch.no_grad():
        bn.weight.copy_(1 + 0.3 * torch.randn(c))
        bn.bias.copy_(0.3 * torch.randn(c))
        bn.running_mean.copy_(0.5 * torch.randn(c))
        bn.running_var.copy_(0.5 + torch.rand(c))
    tensors = {k: v.clone() for k, v in bn.state_dict().items()}  # before any update
    bn.train()
    tensors.update(_forward_backward(bn, 2 + 3 * torch.randn(shape)))  # mean 2, std 3
    for k, v in bn.state_dict().items():
        tensors[f"after/{k}"] = v
    bn.eval()
    x = torch.randn(shape).requires_grad_()
    out = bn(x)
    probe = torch.randn(out.shape)
    (out * probe).sum().backward()
    tensors.update({"eval/x": x, "eval/out": out, "eval/probe": probe, "eval/grad_x": x.grad})
    tensors["config/momentum_x1000"] = torch.tensor(int(momentum * 1000))
    _save(name, tensors)


# --- pooling and resampling -----------------------------------------------------------------

def pooling_case(seed):
    """Several functional ops on one input; each output's probe and input gradient."""
    torch.manual_seed(seed)
    x0 = torch.randn(2, 3, 7, 6)
    ops = {
        "maxpool_overlap": lambda x: nn.MaxPool2d(3, stride=2, padding=1)(x),
        "maxpool_ceil_dilated": lambda x: nn.MaxPool2d(2, stride=2, dilation=2, padding=1,
                                                       ceil_mode=True)(x),
        "avgpool_pad": lambda x: nn.AvgPool2d(3, stride=2, padding=1)(x),
        "avgpool_ceil_nopad": lambda x: nn.AvgPool2d(2, padding=1, ceil_mode=True,
                                                     count_include_pad=False)(x),
        "adaptive_3x4": lambda x: nn.AdaptiveAvgPool2d((3, 4))(x),
        "nearest_x2": lambda x: nn.Upsample(scale_factor=2, mode="nearest")(x),
        "nearest_size": lambda x: F.interpolate(x, size=(5, 10), mode="nearest"),
        "bilinear": lambda x: nn.Upsample(size=(9, 11), mode="bilinear", align_corners=False)(x),
        "bilinear_corners": lambda x: nn.Upsample(scale_factor=1.5, mode="bilinear",
                                                  align_corners=True)(x),
    }
    tensors = {"input/x": x0}
    for name, op in ops.items():
        x = x0.clone().requires_grad_()
        out = op(x)
        probe = torch.randn(out.shape)
        (out * probe).sum().backward()
        tensors.update({f"output/{name}": out, f"probe/{name}": probe, f"grad/{name}": x.grad})
    _, indices = F.max_pool2d(x0, 3, stride=2, padding=1, return_indices=True)
    tensors["output/maxpool_overlap_indices"] = indices
    _save("pooling", tensors)


# --- a small ResNet, built as layerwise.models.vision.ResNet is -------------------------------

class BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride,
                                                      bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet(nn.Module):
    def __init__(self, num_blocks, channels, in_channels, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0])
        self.relu = nn.ReLU()
        in_planes = channels[0]
        for i, (blocks, planes) in enumerate(zip(num_blocks, channels)):
            stage = [BasicBlock(in_planes, planes, 1 if i == 0 else 2)]
            stage += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
            in_planes = planes
        self.stages = len(channels)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(self.stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(self.avgpool(x).flatten(1))


def resnet_case(seed):
    """Train-mode forward/backward (batch statistics, running stats updated), then eval."""
    torch.manual_seed(seed)
    config = dict(num_blocks=(2, 1, 1), channels=(4, 8, 16), in_channels=1, num_classes=5)
    model = ResNet(**config)
    with torch.no_grad():  # non-trivial affine parameters, so a wrong mapping would show
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + 0.2 * torch.randn(m.num_features))
                m.bias.copy_(0.2 * torch.randn(m.num_features))
    tensors = {k: v.clone() for k, v in model.state_dict().items()}  # before any update
    model.train()
    tensors.update(_forward_backward(model, torch.randn(4, 1, 12, 12)))
    for k, v in model.state_dict().items():
        tensors[f"after/{k}"] = v
    model.eval()
    x = torch.randn(3, 1, 12, 12).requires_grad_()
    out = model(x)
    probe = torch.randn(out.shape)
    (out * probe).sum().backward()
    tensors.update({"eval/x": x, "eval/out": out, "eval/probe": probe, "eval/grad_x": x.grad})
    for key, value in config.items():
        tensors[f"config/{key}"] = torch.tensor(value)
    _save("resnet", tensors)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for seed, (name, (options, shape)) in enumerate(CONV_CASES.items()):
        conv_case(name, options, shape, seed)
    batchnorm_case("batchnorm2d", nn.BatchNorm2d, (4, 3, 5, 6), seed=10, momentum=0.2)
    batchnorm_case("batchnorm1d", nn.BatchNorm1d, (8, 4, 3), seed=11)
    pooling_case(seed=20)
    resnet_case(seed=30)


if __name__ == "__main__":
    main()
