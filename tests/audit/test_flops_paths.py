"""The FLOP count is a function of the model and the input shapes alone: the same whichever
path ran (the attention's reference, its causal query blocks, its compiled float32 rows, or
the batch as two halves on two threads), equal to a count by hand."""

import numpy as np
from threadpoolctl import threadpool_limits

import layerwise as lw
from layerwise.audit.cost import count_flops
from layerwise.autograd import dispatch
from layerwise.models.gpt import GPT, GPTConfig
from layerwise.ops.fast import attention as fast

B, T, D, HEADS, VOCAB = 4, 16, 32, 4, 40


def _gpt_counts(path):
    """The count of one GPT training forward with every attention call run by ``path``, and
    how many calls it ran."""
    lw.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB, block_size=T, n_layer=2, n_head=HEADS, n_embd=D))
    model.train()
    ids = lw.tensor(np.arange(B * T).reshape(B, T) % VOCAB)
    with threadpool_limits(limits=2, user_api="blas"):  # the halves on two threads where they can
        with dispatch.forced(path) as uses, count_flops(model) as report:
            model(ids, targets=ids)
    return report, uses.count


def _block_hand_count():
    """(forward, backward) FLOPs of one transformer block on (B, T, D), input and every
    parameter needing a gradient; one multiply-add = 2 FLOPs."""
    rows, hs = B * T, D // HEADS
    scores = B * HEADS * T * T
    linear_mm = 2 * rows * (3 * D * D + D * D + 4 * D * D + 4 * D * D)  # qkv, proj, fc, proj
    biases = rows * (3 * D + D + 4 * D + D)
    fwd = (linear_mm + biases
           + 2 * scores * hs * 2 + 6 * scores  # QK^T, PV; scale and softmax
           + 2 * rows * D  # ln_1, ln_2: one per element
           + 2 * rows * D  # the two residual adds
           + rows * 4 * D)  # GELU
    bwd = (2 * linear_mm + biases  # dx and dW of every linear; db
           + 8 * scores * hs + 3 * scores  # dV, dP, dQ, dK; softmax backward
           + 2 * 3 * rows * D  # ln_1, ln_2: dx, dweight, dbias, each summed over the rows
           + 2 * 2 * rows * D  # the residual adds: both inputs
           + rows * 4 * D)  # GELU
    return fwd, bwd


def _block_totals(report, name):
    rows = [r for m, r in report.by_module().items() if m == name or m.startswith(name + ".")]
    return sum(r["forward_flops"] for r in rows), sum(r["backward_flops"] for r in rows)


def test_gpt_block_count_matches_hand_count_whichever_attention_path_ran():
    reference, _ = _gpt_counts(dispatch.REFERENCE)
    for path in (fast.AttentionInHalves, fast.CausalQueryBlocks, fast.CausalQueryBlocksFloat32,
                 fast.SoftmaxRowsFloat32):
        if not path.available():
            continue
        report, ran = _gpt_counts(path)
        assert ran == 2, path.__name__  # each block's attention ran through the path
        assert _figures(report) == _figures(reference), path.__name__
        assert report.summary() == reference.summary(), path.__name__
    by = reference.by_module()
    assert by["transformer.h.0.mlp.c_fc"]["forward_flops"] == \
        2 * B * T * D * 4 * D + B * T * 4 * D
    assert by["transformer.h.0.mlp.c_fc"]["backward_flops"] == \
        2 * (2 * B * T * D * 4 * D) + B * T * 4 * D
    for block in ("transformer.h.0", "transformer.h.1"):
        assert _block_totals(reference, block) == _block_hand_count()


def _figures(report):
    return {name: {k: v for k, v in row.items() if k != "ops"}
            for name, row in report.by_module().items()}


def test_counter_leaves_modules_and_apply_as_they_were():
    from layerwise.autograd.function import Function

    lw.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB, block_size=T, n_layer=1, n_head=HEADS, n_embd=D))
    own = model.lm_head.forward = lambda x: x @ model.lm_head.weight.T  # a user's own forward
    apply = Function.__dict__["apply"]
    ids = lw.tensor(np.zeros((2, T), np.int64))
    with count_flops(model) as report:
        model(ids)
    assert Function.__dict__["apply"] is apply
    from layerwise.nn import module as nn_module  # its global hooks are off again
    assert not nn_module._global_forward_pre_hooks and not nn_module._global_forward_hooks
    assert model.lm_head.__dict__["forward"] is own
    assert all("forward" not in m.__dict__ for m in model.modules() if m is not model.lm_head)
    # the user's forward ran (a MatMul, not the Linear's op) and was charged to lm_head
    assert report.by_module()["lm_head"]["forward_flops"] == 2 * 2 * T * D * VOCAB
