"""Sentence search with a trained BERT run: embed a corpus once, then rank it by cosine.

    index = build_index("runs/bert-...", sentences)     # (N, H) unit rows, one per sentence
    for score, i, sentence in search(index, "how do I open a file", k=3): ...

A sentence's embedding is the mean of the encoder's last hidden states over its tokens
([CLS] ... [SEP], padding left out; a sentence longer than the encoder's max_len is encoded
in pieces and the mean taken over all of them), divided by its norm, as Sentence-BERT's mean pooling
(Reimers & Gurevych 2019). Raw BERT embeddings share one large common direction (all
cosines near 1; Ethayarajh 2019), so the index subtracts the corpus's mean embedding from
every vector, the corpus's and the query's, before the cosine (Mu & Viswanath 2018; the first
step of BERT-whitening, Su et al. 2021): only what sets a sentence apart is compared.
"""

import re
from dataclasses import dataclass

from layerwise.autograd import Tensor, no_grad
from layerwise.backend import xp
from layerwise.models.bert import nearest
from layerwise.train.recipes.language import load_trained
from layerwise.train.recipes.masked_lm import pack, token_ids


class Encoder:
    """Sentences -> L2-normalised embeddings (N, H), with a BERT run's encoder and tokenizer."""

    def __init__(self, bert, tokenizer, max_len):
        self.bert, self.tokenizer, self.max_len = bert, tokenizer, max_len
        self.bert.eval()

    @classmethod
    def from_run(cls, run_dir):
        trained = load_trained(run_dir, kinds=("mlm",))
        return cls(trained.model.bert, trained.tokenizer,
                   trained.config["hyperparameters"]["max_len"])

    def encode(self, sentences, batch_size=64):
        """(N, H) unit rows. A sentence longer than max_len - 2 tokens is cut into pieces
        that are encoded apart; its vector is the mean over the tokens of all its pieces."""
        if isinstance(sentences, str):
            raise TypeError("encode takes a list of sentences; wrap a single one in a list")
        size = self.max_len - 2
        pieces, owner = [], []
        for row, sentence in enumerate(sentences):
            ids = token_ids(self.tokenizer, sentence)
            for start in range(0, max(len(ids), 1), size):
                pieces.append(ids[start:start + size])
                owner.append(row)
        hidden_size = self.bert.config.hidden_size
        sums = xp.zeros((len(sentences), hidden_size), dtype=xp.float64)
        counts = xp.zeros(len(sentences))
        with no_grad():
            for start in range(0, len(pieces), batch_size):
                batch = pieces[start:start + batch_size]
                length = 2 + max(len(p) for p in batch)  # pad to the batch's longest piece
                ids, mask = pack(self.tokenizer, batch, length)  # (B, L), (B, L)
                hidden = self.bert(Tensor(ids), Tensor(mask))[0].data  # (B, L, H)
                rows = xp.asarray(owner[start:start + batch_size])
                xp.add.at(sums, rows, (hidden * mask[:, :, None]).sum(axis=1))  # (B, H)
                xp.add.at(counts, rows, mask.sum(axis=1))
        means = sums / xp.maximum(counts, 1)[:, None]  # (N, H): mean over every token
        norms = xp.maximum(xp.linalg.norm(means, axis=1, keepdims=True), 1e-12)
        return (means / norms).astype(xp.float32)


@dataclass
class SentenceIndex:
    sentences: list
    embeddings: object  # (N, H) xp array: the centred sentence embeddings
    mean: object  # (H,): what was subtracted (zeros when not centred)
    encoder: Encoder

    def embed(self, queries):
        """Queries -> (Q, H), centred like the corpus."""
        return self.encoder.encode(queries) - self.mean


def build_index(run, sentences, batch_size=64, center=True):
    """Embed ``sentences`` with ``run`` (a BERT run directory or an Encoder).

    ``center`` subtracts the mean embedding (see the module doc); it needs two sentences.
    """
    encoder = run if isinstance(run, Encoder) else Encoder.from_run(run)
    sentences = list(sentences)
    if not sentences:
        raise ValueError("build_index needs at least one sentence")
    embeddings = encoder.encode(sentences, batch_size)  # (N, H)
    mean = (embeddings.mean(axis=0) if center and len(sentences) > 1
            else xp.zeros(embeddings.shape[1], dtype=embeddings.dtype))
    return SentenceIndex(sentences, embeddings - mean, mean, encoder)


def search(index, query, k=5):
    """The ``k`` sentences most cosine-similar to ``query``: [(score, row, sentence)], best
    first (fewer when the index holds fewer than k)."""
    k = min(k, len(index.sentences))
    query_emb = index.embed([query])[0]  # (H,)
    scores, rows = nearest(query_emb, index.embeddings, k=k)
    return [(float(s), int(i), index.sentences[int(i)]) for s, i in zip(scores, rows)]


def corpus_sentences(text, min_chars=30, max_chars=200, limit=None):
    """Prose sentences of ``text`` (code lines and headings left out), whitespace collapsed.

    A sentence ends at '.', '!' or '?' before white space; one with characters typical of
    code or reST markup ('::', '>>>', '***', '===') is skipped.
    """
    out = []
    for paragraph in text.split("\n\n"):
        if paragraph.startswith(" ") or any(m in paragraph for m in ("::", ">>>", "***", "===")):
            continue  # indented code, examples, headings
        for sentence in re.split(r"(?<=[.!?])\s+", " ".join(paragraph.split())):
            if min_chars <= len(sentence) <= max_chars and sentence[0].isupper():
                out.append(sentence)
                if limit is not None and len(out) >= limit:
                    return out
    return out
