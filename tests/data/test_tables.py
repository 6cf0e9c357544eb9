"""Tables a user brings (read_table, table_splits) and the tables that ship, from files the
tests write. Reference values are hand-computed or NumPy float64 over the raw values."""

import gzip
import importlib.util
import json
import os
import sys

import numpy as np
import pytest

from layerwise.data import (
    MissingDependencyError,
    TableError,
    adult_path,
    breast_cancer_path,
    diabetes_path,
    read_table,
    shipped_tables,
    table_splits,
)
from layerwise.errors import BadFileError, LayerwiseError


def write(tmp_path, name, text):
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return str(path)


def column(splits, split, feature):
    """The encoded values of one feature in one split, as float64."""
    x = splits[split].tensors[0].data
    return x[:, splits.feature_names.index(feature)].astype(np.float64)


def labelled_table(rows):
    """CSV text with columns x, color, y, split from (x, color, y, split) tuples."""
    return "x,color,y,split\n" + "".join(f"{x},{c},{y},{s}\n" for x, c, y, s in rows)


# Train rows x = 1, 2, 3, 6 (mean 3, population std sqrt(3.5), median 2.5); a test-only
# outlier 1000 must not move any of them.
TRAIN_VAL_TEST = [(1, "red", "a", "train"), (2, "blue", "b", "train"), (3, "red", "a", "train"),
                  (6, "blue", "b", "train"), (4, "red", "a", "val"), (5, "blue", "b", "val"),
                  (1000, "purple", "a", "test"), ("?", "", "b", "test")]


# --- reading ---------------------------------------------------------------------------------


def test_read_csv_strips_cells_keeps_quoted_commas_and_lines(tmp_path):
    path = write(tmp_path, "t.csv", 'name, note ,n\n\n"Doe, J", hi ,1\nRoe,"a\nb",2\n')
    table = read_table(path)
    assert table.columns == ["name", "note", "n"]
    assert table.cells == {"name": ["Doe, J", "Roe"], "note": ["hi", "a\nb"], "n": ["1", "2"]}
    assert table.lines == [3, 5]  # the blank line 2 is skipped; the quoted newline ends on 5


@pytest.mark.parametrize("name, text", [
    ("t.tsv", "a\tb\n1\t2\n3\t4\n"),
    ("t.tsv.gz", "a\tb\n1\t2\n3\t4\n"),
    ("t.csv.gz", "a,b\n1,2\n3,4\n"),
    ("t.txt", "a;b\n1;2\n3;4\n"),  # no known suffix: the delimiter is sniffed
    ("t.data", "a\tb\n1\t2\n3\t4\n"),
    ("t.csv", "a\tb\n1\t2\n3\t4\n"),  # named .csv but tab-separated
])
def test_read_tsv_gzip_and_sniffed_delimiters(tmp_path, name, text):
    table = read_table(write(tmp_path, name, text))
    assert table.cells == {"a": ["1", "3"], "b": ["2", "4"]}


def test_gzip_is_detected_by_content_not_name(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(gzip.compress(b"a,b\n1,2\n"))
    assert read_table(str(path)).cells == {"a": ["1"], "b": ["2"]}


def test_trailing_delimiter_on_every_row_is_tolerated(tmp_path):
    table = read_table(write(tmp_path, "t.csv", "a,b\n1,2,\n3,4,\n"))
    assert table.cells == {"a": ["1", "3"], "b": ["2", "4"]}


# --- encoding: statistics from the training split only -------------------------------------


def test_numeric_standardised_with_training_mean_and_std(tmp_path):
    splits = table_splits(write(tmp_path, "t.csv", labelled_table(TRAIN_VAL_TEST)), target="y")
    stats = splits.describe()["columns"]["x"]
    assert stats["mean"] == pytest.approx(3.0)
    assert stats["std"] == pytest.approx(np.sqrt(3.5))
    assert stats["median"] == pytest.approx(2.5)
    train = np.array([1.0, 2.0, 3.0, 6.0])
    np.testing.assert_allclose(column(splits, "train", "x"), (train - 3.0) / np.sqrt(3.5),
                               rtol=1e-6)
    np.testing.assert_allclose(column(splits, "val", "x"), (np.array([4.0, 5.0]) - 3.0)
                               / np.sqrt(3.5), rtol=1e-6)


def test_test_only_value_does_not_move_the_statistics(tmp_path):
    base = table_splits(write(tmp_path, "a.csv", labelled_table(TRAIN_VAL_TEST)), target="y")
    rows = [r if r[0] != 1000 else (-5e6, "green", "a", "test") for r in TRAIN_VAL_TEST]
    moved = table_splits(write(tmp_path, "b.csv", labelled_table(rows)), target="y")
    assert moved.describe()["columns"] == base.describe()["columns"]
    # the outlier is scaled by the training statistics, not clipped or refitted
    assert column(base, "test", "x")[0] == pytest.approx((1000 - 3.0) / np.sqrt(3.5), rel=1e-6)
    # ... and an all-data fit would have given a different mean
    assert np.mean([1, 2, 3, 6, 4, 5, 1000]) != pytest.approx(3.0)


def test_missing_numeric_gets_training_median_and_a_flag(tmp_path):
    splits = table_splits(write(tmp_path, "t.csv", labelled_table(TRAIN_VAL_TEST)), target="y")
    assert "x:missing" not in splits.feature_names  # no training value was missing
    # the missing test x is imputed with the training median 2.5
    assert column(splits, "test", "x")[1] == pytest.approx((2.5 - 3.0) / np.sqrt(3.5), rel=1e-6)
    rows = [(1, "r", "a", "train"), ("NA", "r", "b", "train"), (3, "r", "a", "train"),
            (10, "r", "b", "train"), ("", "r", "a", "val"), (7, "r", "b", "test")]
    splits = table_splits(write(tmp_path, "m.csv", labelled_table(rows)), target="y")
    stats = splits.describe()["columns"]["x"]
    assert (stats["mean"], stats["median"]) == (pytest.approx(14 / 3), 3.0)
    assert stats["std"] == pytest.approx(np.std([1.0, 3.0, 10.0]))
    np.testing.assert_array_equal(column(splits, "train", "x:missing"), [0, 1, 0, 0])
    np.testing.assert_array_equal(column(splits, "val", "x:missing"), [1])
    assert column(splits, "val", "x")[0] == pytest.approx((3.0 - 14 / 3) / stats["std"],
                                                          rel=1e-6)


def test_one_hot_with_unseen_category_in_other_and_missing_slot(tmp_path):
    splits = table_splits(write(tmp_path, "t.csv", labelled_table(TRAIN_VAL_TEST)), target="y")
    names = [f for f in splits.feature_names if f.startswith("color=")]
    # training categories (most frequent first, ties by name), then <other> and <missing>
    assert names == ["color=blue", "color=red", "color=<other>", "color=<missing>"]
    assert splits.describe()["columns"]["color"]["categories"] == ["blue", "red"]
    onehot = np.stack([column(splits, "test", n) for n in names], axis=1)
    np.testing.assert_array_equal(onehot, [[0, 0, 1, 0],    # "purple": never seen in train
                                           [0, 0, 0, 1]])   # "": missing
    train = np.stack([column(splits, "train", n) for n in names], axis=1)
    np.testing.assert_array_equal(train, [[0, 1, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0],
                                          [1, 0, 0, 0]])


def test_missing_counts_for_every_token_overall_and_per_split(tmp_path):
    rows = [(1, "", "a", "train"), ("?", "r", "b", "train"), ("NA", "g", "a", "train"),
            ("NaN", "?", "b", "train"), (2, "r", "a", "val"), (3, "NA", "b", "test")]
    splits = table_splits(write(tmp_path, "t.csv", labelled_table(rows)), target="y")
    info = splits.describe()
    assert info["missing"] == {"x": 3, "color": 3}
    assert info["missing_by_split"] == {"train": {"x": 3, "color": 2}, "val": {},
                                        "test": {"color": 1}}
    assert json.loads(json.dumps(info)) == info  # ready for a run record or a card


# --- task, target, groups and splits ---------------------------------------------------------


def make_rows(n_a=70, n_b=30):
    return [(i, ["u", "v", "w"][i % 3], "A" if i < n_a else "B", f"g{i % 2}")
            for i in range(n_a + n_b)]


def grouped_table(rows):
    return "x,c,y,sex\n" + "".join(f"{x},{c},{y},{g}\n" for x, c, y, g in rows)


def test_split_is_stratified_and_seeded(tmp_path):
    path = write(tmp_path, "t.csv", grouped_table(make_rows()))
    splits = table_splits(path, target="y")
    # 70 A and 30 B cut 0.8/0.1/0.1 within each class: A 56/7/7, B 24/3/3
    assert splits.describe()["class_counts"] == {"train": [56, 24], "val": [7, 3],
                                                 "test": [7, 3]}
    assert splits.describe()["rows_per_split"] == {"train": 80, "val": 10, "test": 10}
    again = table_splits(path, target="y", seed=0)
    other = table_splits(path, target="y", seed=1)
    assert again.lines == splits.lines
    assert other.lines["test"] != splits.lines["test"]
    every = sorted(splits.lines["train"] + splits.lines["val"] + splits.lines["test"])
    assert every == list(range(2, 102))  # disjoint, and every data line used once


def test_classification_keeps_class_names_in_order(tmp_path):
    splits = table_splits(write(tmp_path, "t.csv", grouped_table(make_rows())), target="y")
    assert (splits.task, splits.classes, splits.num_classes) == ("classification", ["A", "B"], 2)
    assert "not all numbers" in splits.summary()
    y = splits["train"].tensors[1].data
    assert y.dtype == np.int64 and set(y.tolist()) == {0, 1}
    # numeric classes sort by value, not as text ("2" before "10"), and "1.0" is "1"
    text = "x,y\n" + "".join(f"{i},{['10', '2', '1.0'][i % 3]}\n" for i in range(30))
    splits = table_splits(write(tmp_path, "n.csv", text), target="y")
    assert splits.classes == ["1", "2", "10"]
    assert "3 distinct values" in splits.summary()


def test_regression_inferred_from_many_numeric_values_and_task_overrides(tmp_path):
    text = "x,y\n" + "".join(f"{i},{i * 1.5}\n" for i in range(40))
    path = write(tmp_path, "r.csv", text)
    splits = table_splits(path, target="y")
    assert (splits.task, splits.classes, splits.num_classes) == ("regression", None, None)
    y = splits["train"].tensors[1].data
    assert y.dtype == np.float32
    lines = np.array(splits.lines["train"])
    np.testing.assert_allclose(y, (lines - 2) * 1.5)  # line 2 holds i = 0
    info = splits.describe()
    assert info["target_mean"] == pytest.approx(np.mean((lines - 2) * 1.5))
    assert info["target_std"] == pytest.approx(np.std((lines - 2) * 1.5))
    forced = table_splits(path, target="y", task="classification")
    assert forced.num_classes == 40  # one row per class: too few to stratify
    assert forced.describe()["split_by"].startswith("random (too few rows per class")
    assert forced.describe()["rows_per_split"] == {"train": 32, "val": 4, "test": 4}
    few = write(tmp_path, "f.csv", "x,y\n" + "".join(f"{i},{i % 3}\n" for i in range(30)))
    assert table_splits(few, target="y").task == "classification"
    assert table_splits(few, target="y", task="regression").task == "regression"


def test_groups_are_kept_out_of_features_and_returned_per_example(tmp_path):
    rows = make_rows()
    rows[5] = (5, "u", "A", "")  # a person whose group is not recorded
    path = write(tmp_path, "t.csv", grouped_table(rows))
    splits = table_splits(path, target="y", groups=["sex"])
    assert not any(f.startswith("sex") for f in splits.feature_names)
    by_line = {i + 2: g or "(missing)" for i, (_, _, _, g) in enumerate(rows)}
    for name in ("train", "val", "test"):
        got = splits.groups[name]["sex"].tolist()
        assert got == [by_line[line] for line in splits.lines[name]]
        assert len(got) == len(splits[name])
    with_groups = table_splits(path, target="y", groups=["sex"], group_features=True)
    assert "sex=g0" in with_groups.feature_names
    dropped = table_splits(path, target="y", drop=["c"])
    assert dropped.feature_names == ["x", "sex=g0", "sex=g1", "sex=<other>", "sex=<missing>"]


def test_rows_without_a_target_are_left_out_and_counted(tmp_path):
    rows = make_rows()
    rows[3] = (3, "u", "?", "g1")
    splits = table_splits(write(tmp_path, "t.csv", grouped_table(rows)), target="y")
    info = splits.describe()
    assert info["rows_without_target"] == 1 and sum(info["rows_per_split"].values()) == 99
    assert 5 not in splits.lines["train"] + splits.lines["val"] + splits.lines["test"]


def test_split_column_is_honoured_and_val_is_drawn_from_train(tmp_path):
    rows = [(i, "u", "A" if i % 4 else "B", "train" if i < 80 else "test") for i in range(100)]
    splits = table_splits(write(tmp_path, "t.csv", labelled_table(rows)), target="y")
    assert splits.lines["test"] == list(range(82, 102))
    # fractions (0.8, 0.1, 0.1): val takes 0.1 / 0.9 of the 80 train rows, stratified
    assert splits.describe()["rows_per_split"] == {"train": 71, "val": 9, "test": 20}
    assert "split" not in splits.feature_names
    assert splits.describe()["split_by"] == "column 'split'"
    ignored = table_splits(write(tmp_path, "t.csv", labelled_table(rows)), target="y",
                           split_column=None)
    assert ignored.describe()["rows_per_split"] == {"train": 80, "val": 10, "test": 10}


def test_audit_checks_find_a_row_copied_from_train_into_test(tmp_path):
    # The splits are TensorDatasets, so the audit's exact-copy and duplicate checks take them
    # as they take the digits. (Its near-copy test, a correlation across one row's values,
    # is built for images and flags distinct table rows, so it is left out here.)
    from layerwise.audit import check_contamination, find_duplicates

    def arrays(splits, name):
        return (t.data for t in splits[name].tensors)

    rows = [(i, "u" if i % 2 else "v", "A" if i % 3 else "B", "train" if i < 30 else "test")
            for i in range(40)]
    clean = table_splits(write(tmp_path, "c.csv", labelled_table(rows)), target="y")
    (x_train, _), (x_test, _) = arrays(clean, "train"), arrays(clean, "test")
    assert check_contamination(x_train, x_test, near=False).exact_pairs == []
    rows[35] = (7, rows[7][1], rows[7][2], "test")  # train row 7, again in test
    rows[12] = (7, rows[7][1], rows[7][2], "train")  # ... and twice in train
    leaky = table_splits(write(tmp_path, "l.csv", labelled_table(rows)), target="y")
    (x_train, y_train), (x_test, _) = arrays(leaky, "train"), arrays(leaky, "test")
    report = check_contamination(x_train, x_test, near=False)
    assert [(leaky.lines["train"][i], leaky.lines["test"][j])
            for i, j in report.exact_pairs] == [(9, 37)]
    groups = find_duplicates(x_train, y_train)["duplicate_groups"]
    assert [[leaky.lines["train"][i] for i in g] for g in groups] == [[9, 14]]


# --- bad input: one line naming the file, the row or the column ------------------------------


GOOD = "x,y\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(30))
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10"

BAD_FILES = [
    # (file name, content, table_splits kwargs, error class, substrings of the message)
    ("empty.csv", "", {}, BadFileError, ["empty.csv is empty", "header row"]),
    ("blank.csv", "\n  \n\n", {}, BadFileError, ["blank.csv is empty"]),
    ("header.csv", "x,y\n", {}, BadFileError, ["header.csv has a header", "x, y", "no rows"]),
    ("long.csv", "x,y\n1,a\n\n2,b,9\n", {}, BadFileError,
     ["long.csv line 4", "3 fields", "2 columns"]),
    ("short.csv", "x,y,z\n1,a,3\n2,b\n", {}, BadFileError,
     ["short.csv line 3", "2 fields", "3 columns"]),
    ("image.csv", PNG, {}, BadFileError, ["image.csv holds binary data", "not a table"]),
    ("prose.txt", "It was a bright cold day in April\nand the clocks were striking.\n", {},
     BadFileError, ["prose.txt is not a table", "It was a bright"]),
    ("latin1.csv", "x,y\n1,caf\xe9\n".encode("latin-1"), {}, BadFileError,
     ["latin1.csv is not UTF-8", "0xe9"]),
    ("broken.csv.gz", b"\x1f\x8b\x08\x00garbage", {}, BadFileError,
     ["broken.csv.gz: gzip data is corrupt"]),
    ("noheader.csv", "1,2\n3,4\n", {}, BadFileError,
     ["noheader.csv line 1", "all numbers", "add a header row"]),
    ("twice.csv", "x,x,y\n1,2,a\n", {}, BadFileError, ["twice.csv line 1", "'x'", "more than once"]),
    ("unnamed.csv", "x,,y\n1,2,a\n", {}, BadFileError, ["unnamed.csv line 1", "column 2"]),
    ("t.csv", GOOD, {"target": "income"}, TableError,
     ["t.csv has no column 'income'", "columns are: x, y"]),
    ("t.csv", GOOD, {"groups": ["race"]}, TableError, ["no column 'race'", "group"]),
    ("t.csv", GOOD, {"drop": ["zip"]}, TableError, ["no column 'zip'", "drop"]),
    ("t.csv", GOOD, {"groups": ["y"]}, TableError, ["'y' is the target"]),
    ("t.csv", GOOD, {"drop": ["x"]}, TableError, ["no feature columns left"]),
    ("one.csv", "x,y\n" + "".join(f"{i},yes\n" for i in range(10)), {}, TableError,
     ["target column 'y' has one value, 'yes'", "10 rows", "at least two"]),
    ("notarget.csv", "x,y\n1,?\n2,\n", {}, TableError,
     ["notarget.csv", "'y' is empty on all 2 rows"]),
    ("hole.csv", "x,z,y\n" + "".join(f"{i},?,{i % 2}\n" for i in range(10)), {}, TableError,
     ["hole.csv", "column 'z' is empty", "on all 10 rows", "drop"]),
    ("typo.csv", "x,y\n" + "".join(f"{i if i != 17 else 'l7'},{i % 2}\n" for i in range(40)), {},
     TableError, ["column 'x' holds numbers except 1 of 40", "'l7'", "typo.csv line 19"]),
    ("t.csv", GOOD, {"task": "regression"}, TableError,
     ["task='regression' needs a numeric target", "'a'", "t.csv line 2"]),
    ("t.csv", GOOD, {"task": "ranking"}, ValueError, ["'ranking'", "'classification'"]),
    ("s.csv", "x,y,split\n" + "".join(f"{i},{i % 2},{'train' if i else 'holdout'}\n"
                                      for i in range(20)), {}, TableError,
     ["s.csv line 2", "column 'split' holds 'holdout'", "train, val or test"]),
    ("tiny.csv", "x,y\n1,a\n2,b\n3,a\n", {}, TableError, ["tiny.csv", "split is empty"]),
    ("t.csv", GOOD, {"split_column": "fold"}, TableError,
     ["t.csv has no column 'fold'", "split_column", "columns are: x, y"]),
    ("t.csv", GOOD, {"groups": "y"}, TypeError, ["groups=['sex']"]),
    ("t.csv", GOOD, {"fractions": (0.9, 0.1)}, ValueError, ["(train, val, test)"]),
]


@pytest.mark.parametrize("name, content, kwargs, error, parts", BAD_FILES,
                         ids=[f"{b[0]}-{'-'.join(b[2])}" for b in BAD_FILES])
def test_bad_input_gets_a_one_line_error_naming_what_is_wrong(tmp_path, name, content, kwargs,
                                                              error, parts):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    kwargs = {"target": "y", **kwargs}
    with pytest.raises(error) as caught:
        table_splits(str(path), **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    if error in (BadFileError, TableError):
        assert isinstance(caught.value, LayerwiseError) and isinstance(caught.value, ValueError)


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_table(str(tmp_path / "nope.csv"))


def test_parquet_without_pyarrow_says_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow` fail
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    path = tmp_path / "t.parquet"
    path.write_bytes(b"PAR1" + b"\x00" * 16 + b"PAR1")
    with pytest.raises(MissingDependencyError) as caught:
        read_table(str(path))
    message = str(caught.value)
    assert "\n" not in message and "t.parquet" in message and "pip install pyarrow" in message
    assert isinstance(caught.value, LayerwiseError) and isinstance(caught.value, ImportError)


def test_parquet_reads_like_csv_when_pyarrow_is_installed(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = str(tmp_path / "t.parquet")
    pq.write_table(pa.table({"x": [1.5, None, 3.0], "y": ["a", "b", None]}), path)
    table = read_table(path)
    assert table.columns == ["x", "y"]
    assert table.cells == {"x": ["1.5", "", "3.0"], "y": ["a", "b", ""]}
    assert table.where(1) == "row 2"


# --- the shipped tables ----------------------------------------------------------------------


ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status",
                 "occupation", "relationship", "race", "sex", "capital_gain", "capital_loss",
                 "hours_per_week", "native_country", "income", "split"]


@pytest.fixture(scope="module")
def adult():
    return read_table(adult_path())


def test_adult_has_48842_people_its_columns_and_uci_split(adult):
    assert len(adult) == 48_842
    assert adult.columns == ADULT_COLUMNS
    splits = adult.cells["split"]
    # adult.names: "48842 instances ... (train=32561, test=16281)"
    assert (splits.count("train"), splits.count("test")) == (32_561, 16_281)
    income = adult.cells["income"]
    assert set(income) == {"<=50K", ">50K"}  # adult.test's trailing "." stripped
    # adult.names: 23.93% of adult.all earns >50K
    assert income.count(">50K") / len(income) == pytest.approx(0.2393, abs=5e-5)
    assert {adult.cells["sex"][0], adult.cells["race"][0], adult.cells["age"][0]} == \
        {"Male", "White", "39"}
    # unknowns ("?" at UCI) are empty cells, counted by UCI at 2,799 / 2,809 / 857
    for name, n in (("workclass", 2799), ("occupation", 2809), ("native_country", 857)):
        assert adult.cells[name].count("") == n


def test_adult_splits_keep_uci_test_set_and_groups():
    splits = table_splits(adult_path(), target="income", groups=["sex", "race"])
    info = splits.describe()
    assert splits.task == "classification" and splits.classes == ["<=50K", ">50K"]
    assert info["rows_per_split"]["test"] == 16_281
    assert info["rows_per_split"]["train"] + info["rows_per_split"]["val"] == 32_561
    assert info["missing"] == {"workclass": 2799, "occupation": 2809, "native_country": 857}
    assert set(splits.groups["test"]["sex"].tolist()) == {"Female", "Male"}
    assert len(set(splits.groups["test"]["race"].tolist())) == 5
    assert splits["train"].tensors[0].data.shape == (info["rows_per_split"]["train"],
                                                    splits.num_features)


def sklearn_data_file(name):
    """A file of scikit-learn's bundled data sets, found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None:
        pytest.skip("scikit-learn (the reference copy) is not installed")
    return os.path.join(spec.submodule_search_locations[0], "datasets", "data", name)


def numbers(table, names):
    return np.array([[float(v) for v in table.cells[c]] for c in names]).T  # (rows, columns)


def test_diabetes_matches_scikit_learn_raw_data():
    table = read_table(diabetes_path())
    assert table.columns == ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6",
                             "target"]
    assert len(table) == 442
    x = np.loadtxt(sklearn_data_file("diabetes_data_raw.csv.gz"))
    y = np.loadtxt(sklearn_data_file("diabetes_target.csv.gz"))
    np.testing.assert_array_equal(numbers(table, table.columns[:10]), x)
    np.testing.assert_array_equal(numbers(table, ["target"])[:, 0], y)
    assert table.cells["age"][0] == "59" and table.cells["target"][0] == "151"
    assert table_splits(diabetes_path(), target="target").task == "regression"


def test_breast_cancer_matches_scikit_learn():
    table = read_table(breast_cancer_path())
    assert len(table) == 569 and len(table.columns) == 31
    # the description: "field 0 is Mean Radius, field 10 is Radius SE, field 20 is Worst Radius"
    assert [table.columns[k] for k in (0, 10, 20, 29, 30)] == [
        "mean radius", "radius error", "worst radius", "worst fractal dimension", "diagnosis"]
    ref = np.loadtxt(sklearn_data_file("breast_cancer.csv"), delimiter=",", skiprows=1)
    np.testing.assert_array_equal(numbers(table, table.columns[:30]), ref[:, :30])
    names = ["malignant", "benign"]  # scikit-learn's target_names: label 0, label 1
    assert table.cells["diagnosis"] == [names[int(t)] for t in ref[:, 30]]
    assert table.cells["diagnosis"].count("malignant") == 212
    splits = table_splits(breast_cancer_path(), target="diagnosis")
    assert splits.classes == ["benign", "malignant"] and splits.num_features == 30


def test_shipped_tables_registry_describes_each_file():
    tables = shipped_tables()
    assert set(tables) == {"adult", "diabetes", "breast_cancer"}
    for name, entry in tables.items():
        table = read_table(entry["path"])
        assert (len(table), table.columns) == (entry["rows"], entry["columns"]), name
        assert entry["target"] in table.columns and set(entry["groups"]) <= set(table.columns)
        assert entry["licence"] and entry["source"] and entry["description"]
    assert tables["adult"]["licence"] == "CC BY 4.0"
    with open(tables["adult"]["licence_file"]) as f:
        text = f.read()
    assert "Becker" in text and "CC BY 4.0" in text and "BSD 3-Clause" in text
    with pytest.raises(ValueError, match="adult, diabetes, breast_cancer"):
        from layerwise.data import shipped_table_path
        shipped_table_path("iris")


def test_a_numeric_group_of_many_values_is_cut_at_its_training_quartiles(tmp_path):
    # train ages 20, 21, ..., 39 (quartiles 24.75, 29.5, 34.25 by linear interpolation);
    # the test ages fall on both sides of each edge, one is missing and one is past the range
    train = [(20 + i, i % 2, "train") for i in range(20)]
    test = [(24, 0, "test"), (25, 1, "test"), (30, 0, "test"), (35, 1, "test"), (90, 0, "test"),
            ("?", 1, "test"), (29, 0, "test"), (34, 1, "test")]
    val = [(22, 0, "val"), (38, 1, "val")]
    text = "age,sex,x,y,split\n" + "".join(f"{a},{s},{s},{s},{p}\n"
                                           for a, s, p in train + val + test)
    splits = table_splits(write(tmp_path, "t.csv", text), target="y", groups=["age", "sex"])
    assert splits.info["group_ranges"] == {"age": [24.75, 29.5, 34.25]}
    assert splits.groups["test"]["age"].tolist() == [
        "<24.75", "[24.75, 29.5)", "[29.5, 34.25)", ">=34.25", ">=34.25", "(missing)",
        "[24.75, 29.5)", "[29.5, 34.25)"]
    assert splits.groups["test"]["sex"].tolist() == ["0", "1", "0", "1", "0", "1", "0", "1"]
