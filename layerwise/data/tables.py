"""Tables a user brings: CSV or TSV (gzip or not) and Parquet, split and encoded for a model.

    splits = table_splits("adult.csv.gz", target="income", groups=["sex", "race"])
    x, y = splits["train"][0]             # features float32 (F,), label int64 ()
    splits.groups["test"]["sex"]          # each test example's group, for the audit
    splits.summary()                      # one line: the task, and why
    splits.describe()                     # classes, features, statistics, missing counts

The splits are TensorDatasets, as ``digits_splits`` returns, so the loaders, the trainer and
the audit's contamination and duplicate checks (``layerwise.audit.refuse_contamination``,
``find_duplicates``) take them unchanged. How columns become features, with statistics fitted
on the training split only, is in table_encoding.py.

CSV and TSV are read with the standard library's ``csv`` module; Parquet needs ``pyarrow``.
"""

import copy
import csv
import gzip
import io
import os
import zlib
from collections import Counter
from dataclasses import dataclass

from layerwise.backend import xp
from layerwise.data.dataset import TensorDataset, stratified_split
from layerwise.data.table_encoding import (
    MISSING_TOKENS,
    TableEncoder,
    TableError,
    infer_target,
    parse_columns,
    parse_numbers,
)
from layerwise.errors import BadFileError, LayerwiseError

_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"
_DELIMITER_BY_SUFFIX = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_SNIFF_DELIMITERS = ",\t;|"
_SNIFF_CHARS = 64 * 1024
_SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val",
                "dev": "val", "test": "test"}
MISSING_GROUP = "(missing)"
MAX_GROUP_VALUES = 12  # distinct numbers a group column may hold before it is cut into ranges
GROUP_RANGES = 4  # quartiles of the training split: equal shares of the people trained on  # the group label of an example whose group cell is empty


class MissingDependencyError(LayerwiseError, ImportError):
    """An optional package that this input needs is not installed (one line: how to add it)."""


@dataclass
class Table:
    """A table as read: column names, and each column's cells as stripped strings."""

    path: str
    columns: list
    cells: dict  # column name -> list of str, one per row
    lines: list = None  # the file line of each row (the header is line 1); None for Parquet

    def __len__(self):
        return len(self.cells[self.columns[0]]) if self.columns else 0

    def where(self, i):
        """Row ``i`` as a user finds it: 'line 7' in a text file, 'row 5' in Parquet."""
        return f"line {self.lines[i]}" if self.lines is not None else f"row {i + 1}"


def read_table(path):
    """The Table in ``path``: CSV or TSV by its suffix (or sniffed), gzip by content, Parquet.

    The first row must name the columns. Raises BadFileError, one line naming the file and
    the line, for an empty file, binary data, a header of numbers, duplicate or empty column
    names, a row with the wrong number of fields, and a file that is not a table.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:4] == _PARQUET_MAGIC or _suffix(path) in (".parquet", ".pq"):
        return _read_parquet(path)
    if raw[:2] == _GZIP_MAGIC:  # by content, so a gzip file without ".gz" reads too
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as err:
            raise BadFileError(f"{path}: gzip data is corrupt or truncated ({err})") from None
    if b"\x00" in raw:
        raise BadFileError(f"{path} holds binary data (a NUL byte at offset {raw.index(0)}), "
                           f"not a table; expected CSV or TSV text with a header row")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise BadFileError(f"{path} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset "
                           f"{err.start}); save the table as UTF-8 CSV or TSV") from None
    if not text.strip():
        raise BadFileError(f"{path} is empty; expected a header row naming the columns, "
                           f"then one row per example")
    return _parse_text(path, text)


def _suffix(path):
    return os.path.splitext(path.lower().removesuffix(".gz"))[1]


def _delimiter(path, text):
    delimiter = _DELIMITER_BY_SUFFIX.get(_suffix(path))
    first_line = text.lstrip("\r\n").split("\n", 1)[0]
    if delimiter is not None and delimiter in first_line:
        return delimiter
    sample = text[:_SNIFF_CHARS].rsplit("\n", 1)[0] if len(text) > _SNIFF_CHARS else text
    try:
        return csv.Sniffer().sniff(sample, delimiters=_SNIFF_DELIMITERS).delimiter
    except csv.Error:
        if delimiter is not None:
            return delimiter  # a one-column CSV is still a CSV
        raise BadFileError(
            f"{path} is not a table: its first line {first_line[:60]!r} has no ',', tab, ';' "
            f"or '|' between columns; expected CSV or TSV with a header row") from None


def _parse_text(path, text):
    delimiter = _delimiter(path, text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header, rows, lines = None, [], []
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # a blank line
            if header is None:
                header = _check_header(path, [cell.strip() for cell in row], reader.line_num)
                continue
            while len(row) > len(header) and not row[-1].strip():
                row.pop()  # a trailing delimiter, as some spreadsheets write
            if len(row) != len(header):
                raise BadFileError(
                    f"{path} line {reader.line_num}: {len(row)} fields, but the header names "
                    f"{len(header)} columns; every row needs one value per column (quote a "
                    f"value that contains {delimiter!r})")
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as err:
        raise BadFileError(f"{path} line {reader.line_num}: not valid CSV ({err})") from None
    if not rows:
        raise BadFileError(f"{path} has a header ({len(header)} columns: {', '.join(header)}) "
                           f"but no rows of data")
    # cells are stripped of the spaces around them: "a, b" reads as "a" and "b"
    cells = {name: list(map(str.strip, column)) for name, column in zip(header, zip(*rows))}
    return Table(path, header, cells, lines)


def _check_header(path, names, line):
    if all(_is_number(name) for name in names):
        raise BadFileError(f"{path} line {line}: the first row ({', '.join(names[:5])}) is all "
                           f"numbers, not column names; add a header row naming the columns")
    if "" in names:
        raise BadFileError(f"{path} line {line}: header column {names.index('') + 1} has no "
                           f"name; name every column")
    repeated = [name for name, n in Counter(names).items() if n > 1]
    if repeated:
        raise BadFileError(f"{path} line {line}: column '{repeated[0]}' is named more than "
                           f"once in the header; give each column its own name")
    return names


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def _read_parquet(path):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingDependencyError(
            f"{path} is a Parquet file, which needs pyarrow: install it (`uv add pyarrow` or "
            f"`pip install pyarrow`) or save the table as CSV") from None
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise BadFileError(f"{path} is not a readable Parquet file ({err})".replace("\n", " "))
    if table.num_rows == 0:
        raise BadFileError(f"{path} has columns ({', '.join(table.column_names)}) but no rows")
    cells = {name: ["" if v is None else str(v).strip() for v in table.column(name).to_pylist()]
             for name in table.column_names}
    return Table(path, list(table.column_names), cells)


# --- splits ---------------------------------------------------------------------------------


class TableSplits(dict):
    """{'train', 'val', 'test'} TensorDatasets of one table, and what a model and an audit need.

    ``groups[split][column]``: each example's group label (str) in that split, in dataset
    order; ``lines[split]``: each example's line (or row) in the file; ``feature_names``,
    ``task``, ``classes``; ``describe()`` for the statistics and the missing-value counts.
    """

    def __init__(self, datasets, groups, lines, info):
        super().__init__(datasets)
        self.groups = groups
        self.lines = lines
        self.info = info

    @property
    def task(self):
        return self.info["task"]  # "classification" or "regression"

    @property
    def classes(self):
        return self.info["classes"]  # class names in label order; None for regression

    @property
    def num_classes(self):
        return len(self.info["classes"]) if self.info["classes"] else None

    @property
    def feature_names(self):
        return self.info["feature_names"]

    @property
    def num_features(self):
        return len(self.info["feature_names"])

    def describe(self):
        """A JSON-ready dict: the task and why, classes, split sizes, each column's fitted
        statistics, and the missing values per column, overall and per split."""
        return copy.deepcopy(self.info)

    def summary(self):
        """One line: the file, the task and why, the features, the split sizes."""
        info = self.info
        task = info["task"]
        if task == "classification":
            shown = ", ".join(info["classes"][:5]) + (", ..." if len(info["classes"]) > 5 else "")
            task = f"classification of '{info['target']}' into {len(info['classes'])} classes " \
                   f"({shown})"
        else:
            task = f"regression of '{info['target']}'"
        sizes = "/".join(f"{n:,}" for n in info["rows_per_split"].values())
        return (f"{os.path.basename(info['path'])}: {task}, because {info['task_reason']}; "
                f"{len(info['feature_names'])} features from {len(info['columns'])} columns; "
                f"train/val/test {sizes} rows ({info['split_by']})")


def table_splits(path, target, groups=(), drop=(), task=None, seed=0, fractions=(0.8, 0.1, 0.1),
                 split_column="split", group_features=False):
    """{'train', 'val', 'test'} datasets of (features, target) from the table at ``path``.

    Features: every column but the target, ``drop``, ``split_column`` and (unless
    ``group_features``) the ``groups``; numeric ones standardised, categorical ones one-hot,
    missing values imputed and flagged, all fitted on the training split (table_encoding.py).
    The task is classification for a non-numeric target or one with few distinct values, else
    regression; ``task`` overrides it. Rows without a target are left out and counted.

    The split: when the file has a column ``split_column`` (values train, val, test; by default
    a column named "split", if there is one), its own; a missing val (or test) part is then
    drawn from its train rows. Otherwise a seeded split by ``fractions``, stratified by class
    for classification.
    """
    if isinstance(groups, str) or isinstance(drop, str):
        raise TypeError(f"groups and drop take lists of column names, got groups={groups!r}, "
                        f"drop={drop!r}; write groups=['sex'], not groups='sex'")
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3:
        raise ValueError(f"fractions must be (train, val, test), got {fractions}")
    table = read_table(path)
    groups, drop = list(groups), list(drop)
    if split_column not in (None, "split") and split_column not in table.columns:
        raise TableError(f"{path} has no column '{split_column}' (asked as split_column); its "
                         f"columns are: {', '.join(table.columns)}")
    split_column = split_column if split_column in table.columns else None  # "split": if any
    _check_names(table, target, groups, drop)

    have_target = [i for i, v in enumerate(table.cells[target]) if v not in MISSING_TOKENS]
    if not have_target:
        raise TableError(f"{path}: target column '{target}' is empty on all {len(table)} rows")
    target_values = [table.cells[target][i] for i in have_target]
    target_info = infer_target(target, target_values, task,
                               lambda i: f"{path} {table.where(have_target[i])}")
    labels = target_info.encode(target_values)

    features = [c for c in table.columns if c not in {target, split_column, *drop}
                and (group_features or c not in groups)]
    if not features:
        raise TableError(f"{path}: no feature columns left after the target '{target}', "
                         f"groups {groups} and drop {drop}; keep at least one column")
    for name in features + groups:
        if all(v in MISSING_TOKENS for v in table.cells[name]):
            raise TableError(f"{path}: column '{name}' is empty (missing) on all {len(table)} "
                             f"rows; drop it (drop=['{name}'], or --drop {name})")

    positions, split_by = _split(table, have_target, labels, target_info.task, split_column,
                                 fractions, seed)
    rows = {name: [have_target[p] for p in pos.tolist()] for name, pos in positions.items()}
    parsed = parse_columns(table.cells, features, lambda i: f"{path} {table.where(i)}")
    group_cut, group_ranges = {}, {}
    for g in groups:
        group_cut[g], edges = _group_labeller(g, table.cells[g], rows["train"],
                                              lambda i: f"{path} {table.where(i)}")
        if edges is not None:
            group_ranges[g] = edges
    encoder = TableEncoder.fit(parsed, rows["train"])
    datasets, group_labels, lines = {}, {}, {}
    for name, pos in positions.items():
        datasets[name] = TensorDataset(encoder.encode(parsed, rows[name]), labels[pos])
        group_labels[name] = {g: group_cut[g](rows[name]) for g in groups}
        lines[name] = [int(table.lines[i]) if table.lines else i + 1 for i in rows[name]]

    missing = {name: xp.asarray([v in MISSING_TOKENS for v in table.cells[name]])
               for name in table.columns}  # (rows,) bool per column
    info = {
        "path": path, "target": target, "task": target_info.task,
        "task_reason": target_info.reason, "classes": target_info.classes,
        "groups": groups, "group_ranges": group_ranges, "dropped": drop, "split_column": split_column, "split_by": split_by,
        "rows": len(table), "rows_without_target": len(table) - len(have_target),
        "rows_per_split": {name: len(r) for name, r in rows.items()},
        "feature_names": encoder.feature_names(), "columns": encoder.describe(),
        "missing": _missing_counts(missing, slice(None)),
        "missing_by_split": {name: _missing_counts(missing, r) for name, r in rows.items()},
    }
    if target_info.task == "classification":
        info["class_counts"] = {name: xp.bincount(labels[pos], minlength=len(
            target_info.classes)).tolist() for name, pos in positions.items()}
    else:
        train_y = labels[positions["train"]].astype(xp.float64)
        info["target_mean"], info["target_std"] = float(train_y.mean()), float(train_y.std())
    return TableSplits(datasets, group_labels, lines, info)


def _check_names(table, target, groups, drop):
    shown = ", ".join(table.columns)
    for role, names in (("target", [target]), ("group", groups), ("drop", drop)):
        for name in names:
            if name not in table.columns:
                raise TableError(f"{table.path} has no column '{name}' (asked as {role}); its "
                                 f"columns are: {shown}")
    if target in groups or target in drop:
        raise TableError(f"column '{target}' is the target, so it cannot also be a group or "
                         f"dropped; groups={groups}, drop={drop}")


def _group_label(value):
    return MISSING_GROUP if value in MISSING_TOKENS else value


def _group_labeller(name, cells, train_rows, where):
    """(rows -> group labels, the range edges or None) for one group column.

    A numeric column of more than MAX_GROUP_VALUES values (age in years) would make a group
    of every value, most of one or two people; it is cut at its training quartiles instead,
    into GROUP_RANGES ranges labelled '<28', '[28, 37)', ..., '>=48'.
    """
    numbers = parse_numbers(cells, name, where)
    present = None if numbers is None else numbers[~xp.isnan(numbers)]
    if present is None or len(xp.unique(present)) <= MAX_GROUP_VALUES:
        return (lambda rows: xp.asarray([_group_label(cells[i]) for i in rows])), None
    train = numbers[train_rows]
    edges = xp.unique(xp.quantile(train[~xp.isnan(train)], xp.linspace(0, 1, GROUP_RANGES + 1)
                                  [1:-1]))
    names = ([f"<{edges[0]:g}"] + [f"[{a:g}, {b:g})" for a, b in zip(edges[:-1], edges[1:])]
             + [f">={edges[-1]:g}"])

    def labels(rows):
        values = numbers[rows]
        out = xp.asarray(names, dtype=object)[xp.searchsorted(edges, values, side="right")]
        out[xp.isnan(values)] = MISSING_GROUP
        return out.astype(str)

    return labels, [float(e) for e in edges]


def _missing_counts(missing, rows):
    """{column: number of missing cells among ``rows``}, only the columns with any."""
    counts = {name: int(mask[rows].sum()) for name, mask in missing.items()}
    return {name: n for name, n in counts.items() if n}


def _split(table, have_target, labels, task, split_column, fractions, seed):
    """({'train', 'val', 'test'}: positions into ``have_target``), and how they were drawn."""
    strata = labels if task == "classification" else xp.zeros(len(labels), xp.int64)
    names = ("train", "val", "test")
    if split_column is None:
        parts = dict(zip(names, stratified_split(strata, fractions, seed=seed)))
        how = "stratified by class" if task == "classification" else "random"
        if task == "classification" and any(len(p) == 0 for p in parts.values()):
            # classes so small that each one's share of val or test rounds to 0 rows
            unstratified = xp.zeros(len(labels), xp.int64)
            parts = dict(zip(names, stratified_split(unstratified, fractions, seed=seed)))
            how = "random (too few rows per class to stratify)"
        split_by = f"{how}, seed {seed}, fractions {fractions}"
    else:
        parts = _split_from_column(table, have_target, strata, split_column, fractions, seed)
        split_by = f"column '{split_column}'"
    for name in names:
        if len(parts[name]) == 0:
            raise TableError(f"{table.path}: the {name} split is empty ({len(have_target)} rows "
                             f"with a target, split by {split_by}); give it more rows")
    return parts, split_by


def _split_from_column(table, have_target, strata, split_column, fractions, seed):
    marks = []
    for i in have_target:
        value = table.cells[split_column][i]
        mark = _SPLIT_NAMES.get(value.lower())
        if mark is None:
            raise TableError(
                f"{table.path} {table.where(i)}: column '{split_column}' holds '{value}'; "
                f"expected train, val or test (or pass split_column=None to split at random)")
        marks.append(mark)
    marks = xp.asarray(marks)
    parts = {name: xp.flatnonzero(marks == name) for name in ("train", "val", "test")}
    carve = [name for name in ("val", "test") if len(parts[name]) == 0]
    if carve and len(parts["train"]):
        # the parts the file leaves out come from its train rows, by their share of fractions
        share = dict(zip(("train", "val", "test"), fractions))
        wanted = ["train"] + carve
        total = sum(share[name] for name in wanted)
        pieces = stratified_split(strata[parts["train"]], [share[n] / total for n in wanted],
                                  seed=seed)
        train = parts["train"]
        for name, piece in zip(wanted, pieces):
            parts[name] = train[piece]
    return parts
