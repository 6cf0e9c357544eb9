"""The contamination check of a table (layerwise.audit.table_checks, reached through
refuse_contamination): exact copies of records between splits, against hand-made splits whose
copies and file lines are known."""

import warnings

import numpy as np
import pytest

from layerwise.audit import ContaminationError, refuse_contamination
from layerwise.audit.table_checks import CHANCE_COPY_SHARE, table_copies
from layerwise.data import TableSplits, TensorDataset
from layerwise.train.recipes import TaskData


def hand_made(n_train=200, n_val=50, n_test=100, copies=(), seed=0, groups=True):
    """TableSplits of random rows; ``copies``: (test position, train position) pairs whose
    test row is set to the training row. File lines: train 2.., val 1002.., test 2002.."""
    rng = np.random.default_rng(seed)
    x = {name: rng.normal(size=(n, 4)).astype(np.float32)
         for name, n in (("train", n_train), ("val", n_val), ("test", n_test))}
    y = {name: rng.integers(0, 2, size=len(x[name])) for name in x}
    sex = {name: np.array(["f", "m"] * (len(x[name]) // 2)) for name in x}
    for j, i in copies:
        x["test"][j], y["test"][j], sex["test"][j] = x["train"][i], y["train"][i], sex["train"][i]
    first = {"train": 2, "val": 1002, "test": 2002}
    lines = {name: list(range(first[name], first[name] + len(x[name]))) for name in x}
    info = {"task": "classification", "classes": ["0", "1"], "feature_names": list("abcd")}
    return TableSplits({name: TensorDataset(x[name], y[name]) for name in x},
                       {name: {"sex": sex[name]} if groups else {} for name in x}, lines, info)


def test_a_test_split_copied_into_train_is_refused_in_one_line():
    splits = hand_made(copies=[(j, j) for j in range(20)])  # 20% of the test rows
    with pytest.raises(ContaminationError) as err:
        refuse_contamination(TaskData(splits, info={"kind": "table"}))
    message = str(err.value)
    assert "\n" not in message
    assert "20 of 100 test rows (20.00%)" in message
    assert "lines 2002, 2003, 2004, 2005, 2006, ..." in message
    assert "--allow-contamination" in message


def test_a_few_chance_copies_warn_once_and_are_recorded():
    data = TaskData(hand_made(copies=[(7, 3)]), info={"kind": "table"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = refuse_contamination(data)
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert "1 of 100 test rows (1.00%) are exact copies of train rows (lines 2009)" \
        in str(caught[0].message)
    record = data.info["split_copies"]
    assert record["copies"] == 1 and record["pairs"][0]["lines"] == [2009]
    assert report.pairs[0].rows == [7]


def test_the_threshold_is_a_share_of_the_split_and_strict():
    at = hand_made(n_test=100, copies=[(j, j) for j in range(int(CHANCE_COPY_SHARE * 100))])
    assert not table_copies(at).refused  # exactly 1%: still chance
    over = hand_made(n_test=100, copies=[(j, j) for j in range(int(CHANCE_COPY_SHARE * 100) + 1)])
    assert [p.other for p in table_copies(over).refused] == ["test"]


def test_a_record_differing_only_in_its_group_is_no_copy():
    splits = hand_made(copies=[(4, 10)])
    assert table_copies(splits).pairs[0].rows == [4]
    splits.groups["test"]["sex"][4] = "m" if splits.groups["train"]["sex"][10] == "f" else "f"
    assert table_copies(splits).pairs == []


def test_val_rows_in_train_and_test_rows_in_val_are_counted_too():
    splits = hand_made()
    splits["val"].tensors[0].data[3] = splits["train"].tensors[0].data[5]
    splits["val"].tensors[1].data[3] = splits["train"].tensors[1].data[5]
    splits.groups["val"]["sex"][3] = splits.groups["train"]["sex"][5]
    splits["test"].tensors[0].data[8] = splits["val"].tensors[0].data[0]
    splits["test"].tensors[1].data[8] = splits["val"].tensors[1].data[0]
    splits.groups["test"]["sex"][8] = splits.groups["val"]["sex"][0]
    found = {(p.other, p.into): p.lines for p in table_copies(splits).pairs}
    assert found == {("val", "train"): [1005], ("test", "val"): [2010]}


def test_rows_that_correlate_but_differ_are_no_copies_of_a_table():
    """The image check calls rows near copies when their values correlate (r > 0.989); a
    table's rows of a few standardised numbers do so without being the same record."""
    splits = hand_made()
    x_train = splits["train"].tensors[0].data
    splits["test"].tensors[0].data[:50] = 1.5 * x_train[:50] + 0.1  # r = 1, not equal
    data = TaskData(splits, info={"kind": "table"})
    refuse_contamination(data)  # no error
    assert data.info["split_copies"]["copies"] == 0
