"""Data checks for token sequences: held-out text copied from the training text.

    report = text_contamination(train_rows, held_out_rows, ngram=NGRAM)

A language-model run's splits are rows of token ids (N, T) cut from one text, so the image
checks (pixel standardising, class balance) do not apply. What does: whether a held-out
sequence also sits in the training split whole (an exact duplicate), and how much of it the
training text contains in pieces (n-gram overlap, as GPT-3's contamination study, Brown et
al. 2020, appendix C, with 13-word n-grams; here n tokens).

n-grams are compared by a 64-bit polynomial hash of their ids (one vectorised pass per
position of the window); two different n-grams share a hash with probability about
(number of n-grams)^2 / 2^64, under 1e-8 for the whole pydoc corpus.
"""

from dataclasses import dataclass, field

import numpy as np

from layerwise.audit.data_checks import content_hashes

# n-gram length in tokens, GPT-3's 13 (there in words). Measured on the tiny recipes' 20k
# characters (char tokens): 4.3% of the held-out 13-grams occur in the training text (8-grams:
# 22%, common phrases; 20-grams: 0.8%), and the only held-out pieces flagged are copies.
NGRAM = 13
# A held-out sequence counts as a near copy when at least this share of its n-grams occur in
# the training text: most of it could be read off training text, not just a phrase.
NEAR_OVERLAP = 0.8
_HASH_BASE = np.uint64(1_000_003)  # a prime above any vocabulary size here


def ngram_hashes(row, n):
    """Hashes (len(row) - n + 1,) uint64 of the n-grams of one row of token ids."""
    row = np.asarray(row, dtype=np.int64).astype(np.uint64)
    count = len(row) - n + 1
    if count < 1:
        return np.empty(0, np.uint64)
    h = np.zeros(count, np.uint64)
    with np.errstate(over="ignore"):  # arithmetic mod 2^64 is the hash
        for k in range(n):
            h = h * _HASH_BASE + row[k:k + count]
    return h


@dataclass
class TextContaminationReport:
    """Held-out sequences that the training split holds whole (exact) or mostly (near)."""

    other_name: str
    n_train: int
    n_other: int
    ngram: int
    near_overlap: float
    exact_pairs: list = field(default_factory=list)  # (train row, held-out row)
    near_rows: list = field(default_factory=list)  # (held-out row, share of its n-grams)
    ngram_share: float = 0.0  # of all held-out n-grams, the share found in training text

    @property
    def leaked(self):
        return sorted({j for _, j in self.exact_pairs} | {j for j, _ in self.near_rows})

    def to_dict(self):
        return {"other": self.other_name, "n_train": self.n_train, "n_other": self.n_other,
                "ngram": self.ngram, "near_overlap": self.near_overlap,
                "n_leaked": len(self.leaked),
                "exact_pairs": [[int(i), int(j)] for i, j in self.exact_pairs],
                "near_rows": [[int(j), round(float(s), 4)] for j, s in self.near_rows],
                "ngram_share_in_train": round(float(self.ngram_share), 6)}


def text_contamination(train_rows, other_rows, ngram=NGRAM, near_overlap=NEAR_OVERLAP,
                       other_name="val"):
    """Exact copies of ``other_rows`` in ``train_rows`` and the n-gram overlap of each.

    Rows are lists (or 2-D arrays) of token ids, padding already removed. A row shorter than
    ``ngram`` has no n-grams and can only be an exact copy.
    """
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1 token, got {ngram}")
    if not 0 < near_overlap <= 1:
        raise ValueError(f"near_overlap must be in (0, 1], got {near_overlap}")
    train_rows = [np.asarray(r, np.int64) for r in train_rows]
    other_rows = [np.asarray(r, np.int64) for r in other_rows]
    report = TextContaminationReport(other_name, len(train_rows), len(other_rows), ngram,
                                     near_overlap)
    seen = {}
    for i, h in enumerate(_row_hashes(train_rows)):
        seen.setdefault(h, i)
    exact = set()
    for j, h in enumerate(_row_hashes(other_rows)):
        if h in seen:
            report.exact_pairs.append((seen[h], j))
            exact.add(j)
    train_grams = np.unique(np.concatenate(
        [ngram_hashes(r, ngram) for r in train_rows] or [np.empty(0, np.uint64)]))
    found = total = 0
    for j, row in enumerate(other_rows):
        grams = ngram_hashes(row, ngram)
        if not len(grams):
            continue
        hits = int(np.isin(grams, train_grams).sum())
        found, total = found + hits, total + len(grams)
        share = hits / len(grams)
        if share >= near_overlap and j not in exact:
            report.near_rows.append((j, share))
    report.ngram_share = found / total if total else 0.0
    return report


def duplicate_rows(rows):
    """Groups of row indices with the same token sequence, within one split."""
    groups = {}
    for i, h in enumerate(_row_hashes([np.asarray(r, np.int64) for r in rows])):
        groups.setdefault(h, []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def split_rows(run):
    """{split name: list of token-id rows} of a language-model run, as the text each holds.

    Next-token splits: each window with its last target, the T + 1 tokens it covers.
    Masked-LM splits: each piece without [CLS], [SEP] and padding, the validation pieces
    with their masked tokens put back (the labels hold them), so that the text is compared,
    not the corruption drawn for it.
    """
    from layerwise.audit.report import split_arrays

    rows = {}
    for name, dataset in run.splits.items():
        x, y = split_arrays(dataset)
        if run.kind == "mlm":
            from layerwise.train.recipes.masked_lm import special_ids

            text = np.where(y >= 0, y, x) if name != "train" else x
            specials = np.array(list(special_ids(run.tokenizer).values()))
            rows[name] = [r[~np.isin(r, specials)] for r in text]
        else:
            rows[name] = list(np.concatenate([x, y[:, -1:]], axis=1))  # (N, T + 1)
    return rows


def _row_hashes(rows):
    # the length goes into the hash, so that no row equals another of a different length
    return [f"{content_hashes(r.reshape(1, -1))[0]}:{len(r)}" for r in rows]
