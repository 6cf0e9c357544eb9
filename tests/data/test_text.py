"""The shipped text corpus, both tokenizers and the language-model splits."""

import numpy as np
import pytest

from layerwise.data import (
    BPETokenizer, CharTokenizer, lm_splits, load_tokenizer, python_docs_corpus,
)


def test_corpus_ships_with_python_and_is_stable():
    text = python_docs_corpus()
    assert len(text) > 100_000 and "def " in text and "class" in text
    assert python_docs_corpus() == text


def test_char_tokenizer_round_trip_and_save(tmp_path):
    tok = CharTokenizer.from_text("hello world")
    assert tok.vocab_size == 8
    assert tok.decode(tok.encode("low")) == "low"
    assert tok.encode("he") == [tok.chars.index("h"), tok.chars.index("e")]
    tok.save(tmp_path / "t.json")
    again = load_tokenizer(tmp_path / "t.json")
    assert isinstance(again, CharTokenizer) and again.chars == tok.chars
    with pytest.raises(ValueError, match="'z' is not in this tokenizer's vocabulary of 8"):
        tok.encode("z")


def test_bpe_tokenizer_compresses_round_trips_and_reloads(tmp_path):
    text = python_docs_corpus()[:60_000]
    tok = BPETokenizer.train(text, vocab_size=400)
    assert tok.vocab_size == 400
    sample = text[1000:3000]
    ids = tok.encode(sample)
    assert tok.decode(ids) == sample
    assert len(ids) < 0.6 * len(sample)  # merges make tokens longer than one byte
    assert tok.decode(tok.encode("naïve ∑ unicode")) == "naïve ∑ unicode"  # byte-level: nothing unknown
    tok.save(tmp_path / "tokenizer.json")
    again = load_tokenizer(tmp_path / "tokenizer.json")
    assert isinstance(again, BPETokenizer) and again.encode(sample) == ids
    with pytest.raises(ValueError, match="vocab_size >= 257"):
        BPETokenizer.train(text, vocab_size=100)


def test_lm_splits_are_shifted_windows_with_a_positional_holdout():
    ids = np.arange(105)
    parts = lm_splits(ids, block_size=4, val_fraction=0.2)
    x, y = (t.numpy() for t in parts["train"].tensors)
    assert x.shape == (20, 4)  # 84 train tokens -> 83 usable -> 20 windows
    np.testing.assert_array_equal(x[1], [4, 5, 6, 7])
    np.testing.assert_array_equal(y, x + 1)
    vx, _ = (t.numpy() for t in parts["val"].tensors)
    assert vx.min() >= 84  # validation comes after every training token
    with pytest.raises(ValueError, match="fewer than block_size"):
        lm_splits(np.arange(10), block_size=16)


@pytest.mark.parametrize("bad_id", [3, -1, 10**6])
def test_char_tokenizer_decode_refuses_ids_outside_its_vocabulary(bad_id):
    tokenizer = CharTokenizer("abc")
    with pytest.raises(ValueError, match=rf"^token id {bad_id} is outside .*ids 0-2\)$"):
        tokenizer.decode([0, bad_id])
