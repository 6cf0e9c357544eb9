import copy

import numpy as np
import pytest

import layerwise as lw
from layerwise import nn, optim
from layerwise.compress import (
    KeepPruned, Pruned, SparseLinear, gradual_prune, load_sparse_weights, magnitude_prune,
    predict, prune_units, save_sparse, sparsity, sparsity_schedule, to_sparse, unit_mask_model,
)
from layerwise.data import DataLoader, TensorDataset
from layerwise.train.trainer import Trainer


def _mlp():
    lw.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 12), nn.Tanh(),
                         nn.Linear(12, 3))


def test_global_magnitude_gives_exactly_half_zeros_and_keeps_the_largest():
    model = _mlp()
    pruned = magnitude_prune(model, 0.5)
    assert sparsity(pruned.model) == 0.5
    assert pruned.sparsity() == 0.5
    weights = np.concatenate([m.weight.data.ravel() for m in (model[0], model[2], model[4])])
    kept = np.concatenate([m.weight.data.ravel() for m in
                           (pruned.model[0], pruned.model[2], pruned.model[4])])
    threshold = np.sort(np.abs(weights))[len(weights) // 2 - 1]
    # every surviving weight is one of the larger half, unchanged
    assert np.all(np.abs(kept[kept != 0]) > threshold)
    assert np.array_equal(kept[kept != 0], weights[kept != 0])
    assert sparsity(model) == 0.0  # the original is untouched


def test_per_layer_scope_prunes_each_layer_equally():
    pruned = magnitude_prune(_mlp(), 0.25, scope="layer")
    for i, n in ((0, 160), (2, 192), (4, 36)):
        assert (pruned.model[i].weight.data == 0).sum() == round(0.25 * n)
    with pytest.raises(ValueError, match="1.5"):
        magnitude_prune(_mlp(), 1.5)
    with pytest.raises(ValueError, match="'rows'"):
        magnitude_prune(_mlp(), 0.5, scope="rows")


def _train(model, epochs, callbacks=()):
    lw.manual_seed(1)
    x = lw.randn(64, 10)
    y = lw.tensor([i % 3 for i in range(64)])
    Trainer(model, optim.Adam(model.parameters(), lr=1e-2),
            train_loader=DataLoader(TensorDataset(x, y), batch_size=16), epochs=epochs,
            callbacks=list(callbacks), progress=False, verbose=False).fit()


def test_masks_survive_fine_tuning_and_remove_is_permanent():
    pruned = magnitude_prune(_mlp(), 0.7)
    masks = {k: v.copy() for k, v in pruned.masks.items()}
    before = copy.deepcopy(pruned.model)
    _train(pruned, 2, [KeepPruned(pruned)])
    for name, mask in masks.items():
        w = pruned.model.get_submodule(name).weight.data
        assert np.all(w[mask == 0] == 0)  # pruned weights still zero
        moved = w[mask == 1] != before.get_submodule(name).weight.data[mask == 1]
        assert moved.mean() > 0.5  # the kept ones did train (dead ReLU units get no gradient)
    plain = pruned.remove()
    n = sum(m.size for m in masks.values())  # 388 weights: round(0.7 * 388) = 272 zeros
    assert not isinstance(plain, Pruned) and sparsity(plain) == round(0.7 * n) / n


def test_gradual_pruning_follows_the_cubic_schedule():
    assert sparsity_schedule(0.8, 4)[-1] == pytest.approx(0.8)
    assert sparsity_schedule(0.8, 2) == pytest.approx([0.8 * (1 - 0.5 ** 3), 0.8])
    seen = []

    def finetune(p):
        seen.append(p.sparsity())
        _train(p, 1, [KeepPruned(p)])

    pruned = gradual_prune(_mlp(), 0.8, 3, finetune)
    assert seen == pytest.approx(sparsity_schedule(0.8, 3), abs=2e-3)
    assert sparsity(pruned.model) == pytest.approx(0.8, abs=2e-3)


def test_half_pruned_digits_cnn_loses_at_most_one_point(digits, digits_cnn):
    data = digits["test"]
    before, labels = predict(digits_cnn, data)
    after, _ = predict(magnitude_prune(digits_cnn, 0.5), data)
    acc_before, acc_after = (before == labels).mean(), (after == labels).mean()
    assert acc_before >= 0.97  # the trained digits CNN, not a weak stand-in
    assert acc_after >= acc_before - 0.01


def test_structured_pruning_is_smaller_and_matches_the_masked_model(digits, digits_cnn):
    small = prune_units(digits_cnn, 0.5)
    masked = unit_mask_model(digits_cnn, 0.5)
    assert small[0].weight.shape == (16, 1, 3, 3) and small[3].weight.shape == (32, 16, 3, 3)
    assert small[7].weight.shape == (64, 32 * 49) and small[10].weight.shape == (10, 64)
    assert small.num_parameters() < digits_cnn.num_parameters() / 3
    x = digits["test"][0:50][0]
    np.testing.assert_allclose(small(x).data, masked(x).data, rtol=1e-5, atol=1e-5)
    mlp = _mlp()
    np.testing.assert_allclose(prune_units(mlp, 0.5)(lw.ones(2, 10)).data,
                               unit_mask_model(mlp, 0.5)(lw.ones(2, 10)).data, atol=1e-6)
    with pytest.raises(TypeError, match="Sequential"):
        prune_units(nn.Linear(2, 2), 0.5)


def test_sparse_inference_and_storage_match_dense(tmp_path):
    dense = magnitude_prune(_mlp(), 0.9).remove()
    sparse = to_sparse(dense, min_sparsity=0.5)
    assert all(isinstance(sparse[i], SparseLinear) for i in (0, 2, 4))
    x = lw.randn(5, 10)
    np.testing.assert_allclose(sparse(x).data, dense(x).data, rtol=1e-5, atol=1e-6)
    save_sparse(sparse, tmp_path / "s.safetensors")
    lw.save(dense.state_dict(), tmp_path / "d.safetensors")
    loaded = load_sparse_weights(tmp_path / "s.safetensors")
    for key, value in dense.state_dict().items():
        np.testing.assert_array_equal(loaded[key].data, value.data)
