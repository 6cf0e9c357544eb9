"""Rows of a table found in two of its splits: the contamination check for tables.

    report = table_copies(splits)           # TableSplits: exact copies between the splits
    refuse_table_copies(task_data)          # warn or refuse, as ``layerwise train`` does

The near-copy measure of ``data_checks`` (the Pearson correlation of two rows' values, tuned
on digit images) means nothing for a table row of standardised numbers and one-hot flags: it
calls 6,754 of Adult's 16,281 test rows near copies of training rows. A table row is a record
of one person or thing, so only an exact copy is looked for: the same encoded features, the
same target and the same group labels (groups are not features, yet two people who differ
only in sex are not one record).

Exact copies also happen by chance: census-style records of a few coarse fields coincide for
distinct people. Adult's own files have 24 test rows (0.15%) that match a training row. So a
share of copies up to ``CHANCE_COPY_SHARE`` is warned about and recorded; more is refused.
"""

import warnings
from dataclasses import dataclass, field

import numpy as np

from layerwise.audit.data_checks import ContaminationError

# Above this share of a split's rows found in another split, the copies are not chance
# matches of distinct records but the same rows in both (Adult's files: 0.15% by chance).
CHANCE_COPY_SHARE = 0.01
# (the split whose rows are looked up, the split they are looked up in)
SPLIT_PAIRS = (("test", "train"), ("test", "val"), ("val", "train"))
SHOWN_LINES = 5  # file lines of copies quoted in a message


@dataclass
class SplitCopies:
    """The rows of split ``other`` that are exact copies of a row of split ``into``."""

    other: str
    into: str
    n_other: int
    rows: list  # positions in ``other``
    lines: list  # their lines in the file

    @property
    def share(self):
        return len(self.rows) / max(self.n_other, 1)

    def describe(self):
        shown = ", ".join(str(n) for n in self.lines[:SHOWN_LINES])
        more = ", ..." if len(self.lines) > SHOWN_LINES else ""
        return (f"{len(self.rows):,} of {self.n_other:,} {self.other} rows ({self.share:.2%}) "
                f"are exact copies of {self.into} rows (lines {shown}{more})")

    def to_dict(self):
        return {"other": self.other, "into": self.into, "n_other": self.n_other,
                "copies": len(self.rows), "share": self.share, "lines": self.lines}


@dataclass
class TableCopyReport:
    """Exact copies between each pair of SPLIT_PAIRS; ``refused`` those above the threshold."""

    threshold: float
    pairs: list = field(default_factory=list)  # SplitCopies with at least one copy

    @property
    def refused(self):
        return [p for p in self.pairs if p.share > self.threshold]

    def message(self):
        found = "; ".join(p.describe() for p in self.pairs)
        if self.refused:
            return (f"table: {found}; more than {self.threshold:.0%} is more than chance "
                    f"matches of distinct records explain: remove the copies, or pass "
                    f"--allow-contamination to train anyway")
        return (f"table: {found}; up to {self.threshold:.0%} is read as distinct records that "
                f"happen to match, so training goes on")

    def to_dict(self):
        return {"threshold": self.threshold, "copies": sum(len(p.rows) for p in self.pairs),
                "pairs": [p.to_dict() for p in self.pairs],
                "message": self.message() if self.pairs else None}


def is_table(data):
    """Whether ``data`` (a TaskData or a dict of splits) holds the splits of a table."""
    info = getattr(data, "info", None) or {}
    splits = getattr(data, "splits", data)
    return info.get("kind") == "table" or hasattr(splits, "feature_names")


def _row_keys(splits, name):
    """One hashable key per row of split ``name``: encoded features, target, group labels."""
    dataset = splits[name]
    x, y = (np.ascontiguousarray(t.data) for t in dataset.tensors[:2])
    x = x.reshape(len(x), -1)
    groups = getattr(splits, "groups", {}).get(name, {})
    labels = list(zip(*(np.asarray(g).tolist() for g in groups.values()))) or [()] * len(x)
    return [(x[i].tobytes(), y[i].tobytes(), labels[i]) for i in range(len(x))]


def table_copies(splits, threshold=CHANCE_COPY_SHARE):
    """The TableCopyReport of ``splits`` ({'train', 'val', 'test'}, a TableSplits or any dict
    of TensorDatasets; without ``lines``, a row's line is its position from 1)."""
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must be a share in [0, 1), got {threshold!r}")
    keys = {name: _row_keys(splits, name) for name in ("train", "val", "test") if name in splits}
    lines = getattr(splits, "lines", {})
    report = TableCopyReport(threshold)
    for other, into in SPLIT_PAIRS:
        if other not in keys or into not in keys:
            continue
        seen = set(keys[into])
        rows = [i for i, key in enumerate(keys[other]) if key in seen]
        if rows:
            where = lines.get(other) or list(range(1, len(keys[other]) + 1))
            report.pairs.append(SplitCopies(other, into, len(keys[other]), rows,
                                            [int(where[i]) for i in rows]))
    return report


def refuse_table_copies(data, threshold=CHANCE_COPY_SHARE):
    """Raise ContaminationError (one line) when a split holds more than ``threshold`` of
    another's rows; below it, warn in one line and record the report in ``data.info``
    ("split_copies", which the table task writes into metrics.json). Returns the report."""
    report = table_copies(getattr(data, "splits", data), threshold)
    if report.refused:
        raise ContaminationError(report.message())
    if report.pairs:
        warnings.warn(report.message(), stacklevel=2)
    info = getattr(data, "info", None)
    if isinstance(info, dict):
        info["split_copies"] = report.to_dict()
    return report
