"""Sentence search with a BERT run: embeddings against a NumPy recomputation, a sentence is its
own nearest neighbour, a paraphrase outranks an unrelated sentence; the example script."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from layerwise.train import RunError
from layerwise.train.search import Encoder, build_index, corpus_sentences, search

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "embedding_search.py"

SENTENCES = [
    "The for statement is used to iterate over the elements of a sequence.",
    "Dictionaries map keys to values and are written with curly braces.",
    "The import statement loads a module and binds it to a name.",
    "Floating point numbers are approximations of real numbers.",
    "An exception is raised when an error occurs in the program.",
]
PARAPHRASE = "A for statement iterates over the elements of the sequence."


def _example():
    spec = importlib.util.spec_from_file_location("embedding_search", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory):
    """The example's own on-the-spot training: a bert-tiny run."""
    return _example().train_tiny_encoder(str(tmp_path_factory.mktemp("bert")))


def test_embeddings_match_a_numpy_mean_pool(bert_run):
    encoder = Encoder.from_run(bert_run)
    short = ["The for statement.", "Dictionaries map keys.", "An exception."]  # < max_len
    got = encoder.encode(short, batch_size=2)  # batches padded to different lengths
    for row, sentence in enumerate(short):
        hidden = _hidden(encoder, encoder.tokenizer.encode(sentence))  # (T, H), no padding
        mean = hidden.mean(axis=0)
        np.testing.assert_allclose(got[row], mean / np.linalg.norm(mean), atol=1e-5)
    # A sentence longer than max_len: the mean over the tokens of its pieces.
    size = encoder.max_len - 2
    ids = encoder.tokenizer.encode(SENTENCES[0])
    assert len(ids) > 2 * size
    hidden = np.concatenate([_hidden(encoder, ids[i:i + size]) for i in range(0, len(ids), size)])
    mean = hidden.mean(axis=0)
    np.testing.assert_allclose(encoder.encode(SENTENCES[:1])[0], mean / np.linalg.norm(mean),
                               atol=1e-5)


def _hidden(encoder, ids):
    """Last hidden states (T, H) of [CLS] ids [SEP], float64."""
    from layerwise.autograd import Tensor
    from layerwise.train.recipes.masked_lm import special_ids

    sp = special_ids(encoder.tokenizer)
    seq = np.array([[sp["[CLS]"], *ids, sp["[SEP]"]]])
    return encoder.bert(Tensor(seq))[0].data[0].astype(np.float64)


def test_search_ranks_by_centred_cosine(bert_run):
    index = build_index(bert_run, SENTENCES)
    raw = index.encoder.encode(SENTENCES)
    np.testing.assert_allclose(index.mean, raw.mean(axis=0), atol=1e-6)
    query = index.encoder.encode([PARAPHRASE])[0] - index.mean
    cos = index.embeddings @ query / (np.linalg.norm(index.embeddings, axis=1)
                                      * np.linalg.norm(query))
    results = search(index, PARAPHRASE, k=5)
    assert [i for _, i, _ in results] == list(np.argsort(-cos, kind="stable"))
    np.testing.assert_allclose([s for s, _, _ in results], np.sort(cos)[::-1], atol=1e-5)
    assert [s for _, _, s in results] == [SENTENCES[i] for _, i, _ in results]


def test_a_sentence_is_its_own_nearest_neighbour_and_a_paraphrase_outranks_others(bert_run):
    index = build_index(bert_run, SENTENCES)
    for i, sentence in enumerate(SENTENCES):
        score, row, _ = search(index, sentence, k=1)[0]
        assert row == i and score == pytest.approx(1.0, abs=1e-5)
    ranked = [row for _, row, _ in search(index, PARAPHRASE, k=len(SENTENCES))]
    assert ranked[0] == 0, ranked  # the for statement sentence, sharing most words
    assert len(search(index, PARAPHRASE, k=50)) == len(SENTENCES)


def test_characters_outside_the_vocabulary_become_unk(bert_run):
    index = build_index(bert_run, SENTENCES)
    score, row, _ = search(index, SENTENCES[2].replace("import", "impört"), k=1)[0]
    assert row == 2


def test_search_needs_a_bert_run(tmp_path):
    import json

    (tmp_path / "config.json").write_text(json.dumps({"recipe": "gpt-tiny"}))
    with pytest.raises(RunError, match="holds a language model.*needs a masked-LM encoder.*bert"):
        build_index(str(tmp_path), SENTENCES)
    with pytest.raises(RunError, match="no run directory"):
        build_index(str(tmp_path / "missing"), SENTENCES)


def test_corpus_sentences_keeps_prose_and_drops_code():
    text = ("The \"assert\" statement\n**********************\n\n"
            "Assert statements are a convenient way to insert debugging assertions\ninto a "
            "program.  They are simple.\n\n   assert_stmt ::= \"assert\" expression\n\n"
            "The extended form is equivalent to the following code, which runs.\n\n"
            "   if __debug__:\n       raise AssertionError")
    assert corpus_sentences(text, min_chars=20) == [
        "Assert statements are a convenient way to insert debugging assertions into a program.",
        "The extended form is equivalent to the following code, which runs.",
    ]
    assert corpus_sentences(text, min_chars=20, limit=1) == corpus_sentences(text, 20)[:1]


def test_the_example_prints_the_neighbours(bert_run, capsys):
    code = _example().main([bert_run, "--query", PARAPHRASE, "-k", "3", "--sentences", "50"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"50 sentences indexed; nearest to {PARAPHRASE!r}:"
    scores = [float(line.split()[0]) for line in lines[1:]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
