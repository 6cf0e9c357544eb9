"""Columns of a table as numbers a model can read, with every statistic fitted on train only.

A column is numeric when every value that is present parses as a finite number; otherwise it
is categorical. Numeric columns are standardised, ``(x - mean) / std`` with the mean and the
population std of the training split's values; a missing value is replaced by the training
median and, when the training split has missing values in that column, flagged in an extra
0/1 column (``age:missing``), as scikit-learn's ``SimpleImputer(add_indicator=True)`` does.
Categorical columns are one-hot over the training split's categories, plus two slots that
every column gets: ``<other>`` for a value the training split never showed (or one beyond the
``MAX_CATEGORIES`` most frequent) and ``<missing>``.

Which kind a column is, and the target's classes, are read from every row of the file: they
describe the file, not the training split, so every split gets the same features and labels.
Host-side work on strings and lists; the arrays it returns are ``xp`` arrays.
"""

import math
from collections import Counter
from dataclasses import dataclass, field

from layerwise.backend import xp
from layerwise.errors import LayerwiseError

# The strings read as "no value" (pandas reads the same ones, less some rare spellings).
MISSING_TOKENS = frozenset({"", "?", "NA", "N/A", "NaN", "nan", "null", "NULL", "<NA>"})

# A numeric target with at most this many distinct values is read as classes (a 0/1 flag, a
# 1-5 rating); one with more (ages, prices, a disease score from 25 to 346) as regression.
# ``task=`` overrides it either way.
MAX_INFERRED_CLASSES = 20

# A column whose present values are at least this share numbers, but not all, is almost
# surely a numeric column with a typo; it is refused with the first odd value quoted rather
# than silently one-hot encoded into hundreds of categories.
TYPO_NUMERIC_SHARE = 0.95

# One-hot columns per categorical column at most (plus <other> and <missing>): the most
# frequent training categories are kept, the rest share <other>. An ID or free-text column
# would otherwise add one feature per row.
MAX_CATEGORIES = 100

OTHER, MISSING = "<other>", "<missing>"


class TableError(LayerwiseError, ValueError):
    """A table whose content cannot be used as asked: a missing or constant target, an empty
    column, a typo in a numeric column. One line naming the file, the column and the row."""


def is_missing(value):
    return value in MISSING_TOKENS


def parse_numbers(values, column, where):
    """float64 array (NaN where missing) when every present value is a finite number, else None.

    ``where(i)`` names row i in the file ("line 7") for the error raised when the column is
    mostly numbers with a few stray values (see ``TYPO_NUMERIC_SHARE``).
    """
    numbers, odd = [], []
    n_present = sum(1 for v in values if v not in MISSING_TOKENS)
    budget = int((1 - TYPO_NUMERIC_SHARE) * n_present)  # non-numbers a typo could explain
    for i, v in enumerate(values):
        if v in MISSING_TOKENS:
            numbers.append(math.nan)
            continue
        try:
            number = float(v)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            odd.append(i)
            if len(odd) > budget:
                return None  # plainly categorical
        numbers.append(number)
    if not odd:
        return xp.asarray(numbers, dtype=xp.float64)
    first = odd[0]
    raise TableError(
        f"column '{column}' holds numbers except {len(odd)} of {n_present} values, the first "
        f"'{values[first]}' ({where(first)}); correct it, leave the cell empty (or '?', 'NA') "
        f"for a missing value, or drop the column")


def _fmt_number(v):
    return str(int(v)) if float(v).is_integer() else repr(float(v))


@dataclass
class Target:
    """The target column: ``task``, the class names (classification), why that task."""

    name: str
    task: str
    reason: str
    classes: list = None  # class names in label order; None for regression
    numeric: bool = False

    def encode(self, values):
        """int64 labels (classification) or float32 values (regression), one per value."""
        if self.task == "regression":
            return xp.asarray([float(v) for v in values], dtype=xp.float32)
        if self.numeric:
            index = {float(name): k for k, name in enumerate(self.classes)}
            return xp.asarray([index[float(v)] for v in values], dtype=xp.int64)
        index = {name: k for k, name in enumerate(self.classes)}
        return xp.asarray([index[v] for v in values], dtype=xp.int64)


def infer_target(name, values, task, where):
    """The Target of a column's present values: classification or regression, with the reason."""
    if task not in (None, "classification", "regression"):
        raise ValueError(f"task must be 'classification', 'regression' or None (infer it from "
                         f"the target), got {task!r}")
    numbers = parse_numbers(values, name, where)
    distinct = sorted(set(numbers.tolist())) if numbers is not None else sorted(set(values))
    if len(distinct) < 2:
        shown = _fmt_number(distinct[0]) if numbers is not None else distinct[0]
        raise TableError(f"target column '{name}' has one value, '{shown}', on all "
                         f"{len(values)} rows; a model needs at least two classes (or, for "
                         f"regression, values that vary)")
    if task == "regression" and numbers is None:
        first = next(i for i, v in enumerate(values) if _not_a_number(v))
        raise TableError(f"task='regression' needs a numeric target, but column '{name}' "
                         f"holds '{values[first]}' ({where(first)}); pass task='classification'"
                         f" or choose a numeric target")
    if task is None:
        if numbers is None:
            task, reason = "classification", "its values are not all numbers"
        elif len(distinct) <= MAX_INFERRED_CLASSES:
            task, reason = "classification", (f"it has {len(distinct)} distinct values (at most "
                                              f"{MAX_INFERRED_CLASSES} are read as classes)")
        else:
            task, reason = "regression", (f"it is numeric with {len(distinct)} distinct values "
                                          f"(more than {MAX_INFERRED_CLASSES})")
    else:
        reason = f"task={task!r} was asked for"
    if task == "regression":
        return Target(name, task, reason, numeric=True)
    classes = [_fmt_number(v) for v in distinct] if numbers is not None else distinct
    return Target(name, task, reason, classes=classes, numeric=numbers is not None)


def _not_a_number(v):
    try:
        return not math.isfinite(float(v))
    except ValueError:
        return True


@dataclass
class NumericColumn:
    name: str
    mean: float
    std: float
    median: float
    indicator: bool  # the training split has missing values here: add a was-missing column

    def feature_names(self):
        return [self.name] + ([f"{self.name}:missing"] if self.indicator else [])

    def encode(self, numbers):
        """(N, 1 or 2) float32: the standardised value (missing -> training median), flag."""
        missing = xp.isnan(numbers)
        filled = xp.where(missing, self.median, numbers)
        cols = [(filled - self.mean) / self.std]
        if self.indicator:
            cols.append(missing.astype(xp.float64))
        return xp.stack(cols, axis=1).astype(xp.float32)

    def describe(self):
        return {"kind": "numeric", "mean": self.mean, "std": self.std, "median": self.median,
                "missing_indicator": self.indicator}


def fit_numeric(name, train_numbers):
    present = train_numbers[~xp.isnan(train_numbers)]
    if present.size == 0:  # no training value to learn from: the column is a constant 0
        return NumericColumn(name, 0.0, 1.0, 0.0, indicator=True)
    std = float(present.std())
    # a constant column stays constant (0) rather than dividing by zero
    return NumericColumn(name, float(present.mean()), std if std > 0 else 1.0,
                         float(xp.median(present)), indicator=present.size < train_numbers.size)


@dataclass
class CategoricalColumn:
    name: str
    categories: list  # training categories, most frequent first (ties by name)
    n_other_in_train: int = 0  # training values beyond MAX_CATEGORIES, sent to <other>

    def feature_names(self):
        return [f"{self.name}={c}" for c in self.categories + [OTHER, MISSING]]

    def encode(self, values):
        """(N, K + 2) float32 one-hot: K training categories, then <other>, then <missing>."""
        k = len(self.categories)
        index = {c: j for j, c in enumerate(self.categories)}
        slots = [k + 1 if v in MISSING_TOKENS else index.get(v, k) for v in values]
        out = xp.zeros((len(values), k + 2), dtype=xp.float32)
        out[xp.arange(len(values)), xp.asarray(slots, dtype=xp.int64)] = 1.0
        return out

    def describe(self):
        return {"kind": "categorical", "categories": list(self.categories),
                "other_in_train": self.n_other_in_train}


def fit_categorical(name, train_values):
    counts = Counter(v for v in train_values if v not in MISSING_TOKENS)
    ranked = sorted(counts, key=lambda c: (-counts[c], c))
    kept = ranked[:MAX_CATEGORIES]
    return CategoricalColumn(name, kept, sum(counts[c] for c in ranked[MAX_CATEGORIES:]))


def parse_columns(cells, names, where):
    """{name: float64 array (NaN where missing) for a numeric column, else its list of str}."""
    parsed = {}
    for name in names:
        numbers = parse_numbers(cells[name], name, where)
        parsed[name] = cells[name] if numbers is None else numbers
    return parsed


@dataclass
class TableEncoder:
    """The fitted columns, in file order; ``encode`` turns rows into a (N, F) float32 array.

    Both take the columns as ``parse_columns`` returns them, and row indices into them.
    """

    columns: list = field(default_factory=list)  # NumericColumn / CategoricalColumn

    @classmethod
    def fit(cls, parsed, train_rows):
        """Fit each column of ``parsed`` on the rows ``train_rows`` only."""
        encoder = cls()
        for name, values in parsed.items():
            if isinstance(values, list):
                encoder.columns.append(fit_categorical(name, [values[i] for i in train_rows]))
            else:
                encoder.columns.append(fit_numeric(name, values[train_rows]))
        return encoder

    def feature_names(self):
        return [f for column in self.columns for f in column.feature_names()]

    def encode(self, parsed, rows):
        """(len(rows), F) float32 features of ``rows``."""
        parts = []
        for column in self.columns:
            values = parsed[column.name]
            if isinstance(column, NumericColumn):
                parts.append(column.encode(values[rows]))
            else:
                parts.append(column.encode([values[i] for i in rows]))
        return xp.concatenate(parts, axis=1)

    def describe(self):
        return {column.name: column.describe() for column in self.columns}

    @classmethod
    def from_description(cls, described):
        """The encoder that ``describe()`` wrote, rebuilt (a served run encodes a request's
        row with the statistics its training split fitted)."""
        columns = []
        for name, column in described.items():
            if column["kind"] == "numeric":
                columns.append(NumericColumn(name, column["mean"], column["std"],
                                             column["median"], column["missing_indicator"]))
            else:
                columns.append(CategoricalColumn(name, list(column["categories"]),
                                                 column["other_in_train"]))
        return cls(columns)
