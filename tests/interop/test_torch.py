"""State dicts between PyTorch and layerwise through safetensors (fixtures made with torch)."""

import os

import numpy as np
from safetensors.numpy import load_file, save_file

import layerwise as lw
from layerwise.interop import load_torch_safetensors, save_for_torch
from layerwise.models import GPT, GPTConfig, ResNet

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "torch",
                       "vision_resnet.safetensors")


def _resnet(ref):
    return ResNet(tuple(int(n) for n in ref["config/num_blocks"]),
                  tuple(int(c) for c in ref["config/channels"]),
                  in_channels=int(ref["config/in_channels"]),
                  num_classes=int(ref["config/num_classes"]))


def test_torch_resnet_state_dict_loads_unchanged_and_gives_torch_outputs(tmp_path):
    ref = load_file(FIXTURE)
    # torch's state_dict() at init, and after one training step (BatchNorm running stats
    # moved), each as safetensors.torch.save_file would write it
    save_file({k: v for k, v in ref.items() if "/" not in k}, tmp_path / "init.safetensors")
    save_file({k[len("after/"):]: v for k, v in ref.items() if k.startswith("after/")},
              tmp_path / "after.safetensors")
    model = _resnet(ref)
    missing, unexpected = load_torch_safetensors(model, tmp_path / "init.safetensors")
    assert missing == [] and unexpected == []
    out = model.train()(lw.tensor(ref["input/x"]))  # batch statistics
    np.testing.assert_allclose(out.detach().numpy(), ref["output/out"], atol=1e-5)
    load_torch_safetensors(model, tmp_path / "after.safetensors")
    with lw.no_grad():
        out = model.eval()(lw.tensor(ref["eval/x"]))  # running statistics
    np.testing.assert_allclose(out.numpy(), ref["eval/out"], atol=1e-5)


def test_save_for_torch_writes_every_key_with_its_own_memory(tmp_path):
    lw.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
    save_for_torch(model, tmp_path / "gpt.safetensors")
    plain = load_file(tmp_path / "gpt.safetensors")  # what safetensors.torch.load_file reads
    state = model.state_dict()
    assert sorted(plain) == sorted(state)  # tied lm_head.weight and wte.weight both present
    for k, v in state.items():
        assert plain[k].dtype == v.detach().numpy().dtype and plain[k].shape == v.shape
        np.testing.assert_array_equal(plain[k], v.detach().numpy())
    fresh = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8))
    load_torch_safetensors(fresh, tmp_path / "gpt.safetensors")
    ids = np.array([[1, 2, 3]])
    np.testing.assert_array_equal(fresh(ids)[0].detach().numpy(), model(ids)[0].detach().numpy())
