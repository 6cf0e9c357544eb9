"""BERT: Hugging Face parameter names, padding handled by the attention mask, the 80/10/10
masking rule, a tiny masked LM that learns, sentence embeddings for cosine search, and the
sequence classifier."""

import numpy as np
import pytest

import layerwise as lw
from layerwise.models.bert import (
    BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel, mask_tokens, mean_pool,
    nearest,
)
from layerwise.optim import AdamW

MASK, PAD, CLS = 1, 0, 2


def tiny_config(**overrides):
    cfg = dict(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=32, max_position_embeddings=24, hidden_dropout_prob=0.0,
               attention_probs_dropout_prob=0.0)
    cfg.update(overrides)
    return BertConfig(**cfg)


def test_hugging_face_names_and_ties():
    lw.manual_seed(0)
    model = BertForMaskedLM(tiny_config())
    keys = list(model.state_dict())
    for key in ["bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight",
                "bert.embeddings.token_type_embeddings.weight", "bert.embeddings.LayerNorm.weight",
                "bert.encoder.layer.1.attention.self.query.weight", "bert.encoder.layer.0.attention.self.value.bias",
                "bert.encoder.layer.0.attention.output.dense.weight", "bert.encoder.layer.0.attention.output.LayerNorm.bias",
                "bert.encoder.layer.0.intermediate.dense.weight", "bert.encoder.layer.0.output.dense.weight",
                "bert.encoder.layer.0.output.LayerNorm.weight", "cls.predictions.bias",
                "cls.predictions.transform.dense.weight", "cls.predictions.transform.LayerNorm.weight",
                "cls.predictions.decoder.weight", "cls.predictions.decoder.bias"]:
        assert key in keys, key
    assert not any(k.startswith("bert.pooler") for k in keys)
    head = model.cls.predictions
    assert head.decoder.weight is model.bert.embeddings.word_embeddings.weight and head.bias is head.decoder.bias
    assert model.bert.encoder.layer[0].output.dense.weight.shape == (16, 32)
    assert "pooler.dense.weight" in BertModel(tiny_config()).state_dict()
    np.testing.assert_array_equal(model.bert.embeddings.word_embeddings.weight.data[PAD], 0)


def test_padding_does_not_change_the_real_tokens():
    lw.manual_seed(1)
    model = BertModel(tiny_config()).eval()
    ids = np.array([[CLS, 5, 6, 7]])
    padded = np.array([[CLS, 5, 6, 7, PAD, PAD]])
    h1, p1 = model(lw.tensor(ids))
    h2, p2 = model(lw.tensor(padded), attention_mask=lw.tensor([[1, 1, 1, 1, 0, 0]]))
    np.testing.assert_allclose(h2.data[:, :4], h1.data, atol=1e-5)
    np.testing.assert_allclose(p2.data, p1.data, atol=1e-5)
    e1 = model.embed(lw.tensor(ids))
    e2 = model.embed(lw.tensor(padded), lw.tensor([[1, 1, 1, 1, 0, 0]]))
    np.testing.assert_allclose(e2.data, e1.data, atol=1e-5)


def test_mean_pool_matches_a_hand_average():
    hidden = lw.tensor(np.arange(24, dtype=np.float64).reshape(2, 3, 4))
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    got = mean_pool(hidden, lw.tensor(mask)).data
    np.testing.assert_allclose(got[0], (hidden.data[0, 0] + hidden.data[0, 1]) / 2)
    np.testing.assert_allclose(got[1], hidden.data[1, 0])


def test_mask_tokens_follows_the_80_10_10_rule():
    rng = np.random.default_rng(0)
    vocab = 50
    ids = rng.integers(3, vocab, size=(200, 100))
    ids[:, 0] = CLS
    attention = np.ones_like(ids)
    attention[:, 90:] = 0  # padding
    ids[:, 90:] = PAD
    inputs, labels = mask_tokens(lw.tensor(ids), MASK, vocab, prob=0.15, seed=3,
                                 special_token_ids=(CLS, PAD), attention_mask=lw.tensor(attention))
    inputs, labels = inputs.data, labels.data
    chosen = labels != -100
    np.testing.assert_array_equal(labels[chosen], ids[chosen])
    assert not chosen[:, 0].any() and not chosen[:, 90:].any()  # specials and padding never chosen
    np.testing.assert_array_equal(inputs[~chosen], ids[~chosen])
    n = chosen.sum()
    eligible = 200 * 89
    assert abs(n / eligible - 0.15) < 4 * np.sqrt(0.15 * 0.85 / eligible)
    masked = (inputs[chosen] == MASK).mean()
    kept = (inputs[chosen] == ids[chosen]).mean()
    random_other = 1 - masked - kept
    assert abs(masked - 0.8) < 0.02
    assert abs(kept - (0.1 + 0.1 / vocab)) < 0.015  # a random draw may land on the same token
    assert abs(random_other - (0.1 - 0.1 / vocab - 0.1 / vocab)) < 0.015
    again, _ = mask_tokens(lw.tensor(ids), MASK, vocab, prob=0.15, seed=3, special_token_ids=(CLS, PAD),
                           attention_mask=lw.tensor(attention))
    np.testing.assert_array_equal(again.data, inputs)
    other, _ = mask_tokens(lw.tensor(ids), MASK, vocab, prob=0.15, seed=4)
    assert not np.array_equal(other.data, inputs)
    with pytest.raises(ValueError, match="prob"):
        mask_tokens(lw.tensor(ids), MASK, vocab, prob=1.5)


def test_tiny_masked_lm_loss_decreases():
    lw.manual_seed(2)
    cfg = tiny_config(vocab_size=20)
    model = BertForMaskedLM(cfg)
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    # eight sentences with a fixed pattern: each token follows from its neighbours
    sentences = np.array([[CLS] + [3 + (i + s) % 17 for i in range(11)] for s in range(8)])
    losses = []
    for step in range(250):
        inputs, labels = mask_tokens(lw.tensor(sentences), MASK, cfg.vocab_size, prob=0.3, seed=step,
                                     special_token_ids=(CLS,))
        _, loss = model(inputs, labels=labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])


def test_embeddings_are_unit_norm_and_each_sentence_is_its_own_nearest_neighbour():
    lw.manual_seed(3)
    model = BertModel(tiny_config()).eval()
    rng = np.random.default_rng(3)
    ids = rng.integers(3, 40, size=(12, 9))
    ids[:, 0] = CLS
    mask = np.ones_like(ids)
    mask[::3, 6:] = 0
    for pooling in ("mean", "cls"):
        emb = model.embed(lw.tensor(ids), lw.tensor(mask), pooling=pooling)
        assert emb.shape == (12, 16)
        np.testing.assert_allclose(np.linalg.norm(emb.data, axis=1), 1, atol=1e-5)
        scores, idx = nearest(emb, emb, k=3)
        np.testing.assert_array_equal(idx[:, 0], np.arange(12))
        np.testing.assert_allclose(scores[:, 0], 1, atol=1e-5)
    # nearest against brute force on raw vectors
    q, c = rng.standard_normal((4, 5)), rng.standard_normal((30, 5))
    sims = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (c / np.linalg.norm(c, axis=1, keepdims=True)).T
    scores, idx = nearest(q, c, k=4)
    np.testing.assert_array_equal(idx, np.argsort(-sims, axis=1)[:, :4])
    np.testing.assert_allclose(scores, np.sort(sims, axis=1)[:, ::-1][:, :4])
    s1, i1 = nearest(q[0], c, k=2)
    assert i1.shape == (2,) and i1[0] == idx[0, 0]
    with pytest.raises(ValueError, match="k must be in"):
        nearest(q, c, k=31)


def test_sequence_classifier_learns_a_token_rule():
    lw.manual_seed(4)
    model = BertForSequenceClassification(tiny_config(num_labels=2))
    assert list(model.state_dict())[-2:] == ["classifier.weight", "classifier.bias"]
    rng = np.random.default_rng(4)
    ids = rng.integers(5, 40, size=(32, 8))
    ids[:, 0] = CLS
    labels = rng.integers(0, 2, 32)
    ids[labels == 1, 4] = 3  # class 1 contains token 3
    opt = AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(40):
        logits, loss = model(lw.tensor(ids), labels=lw.tensor(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert logits.shape == (32, 2)
    model.eval()
    assert (model(lw.tensor(ids))[0].data.argmax(1) == labels).mean() == 1.0


def test_errors():
    with pytest.raises(ValueError, match=r"hidden_size \(10\).*num_attention_heads \(3\)"):
        BertConfig(hidden_size=10, num_attention_heads=3)
    model = BertModel(tiny_config())
    with pytest.raises(ValueError, match="max_position_embeddings=24"):
        model(lw.zeros(1, 30).long())
    with pytest.raises(ValueError, match="attention_mask shape"):
        model(lw.zeros(1, 5).long(), attention_mask=lw.ones(1, 4).long())
    with pytest.raises(ValueError, match="pooling"):
        model.embed(lw.zeros(1, 5).long(), pooling="max")
