"""`layerwise datasets`: every data set that ships, with its source and licence, in one place."""

import pytest

from layerwise.cli.main import main
from layerwise.data.catalog import shipped_tables


def test_the_listing_names_every_data_set_with_its_source_and_licence(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ["digits", "digit-scenes", "python-docs", *shipped_tables()]:
        assert f"\n{name} (" in "\n" + out
    assert out.count("source:") == out.count("licence:") == 3 + len(shipped_tables())
    assert "adult (table, 48,842 rows)" in out and "CC BY 4.0" in out


def test_one_data_set_in_full_names_its_columns_and_file(capsys):
    assert main(["datasets", "adult"]) == 0
    out = capsys.readouterr().out
    assert "columns: age, workclass" in out and "adult.csv.gz" in out
    assert out.count("source:") == 1


@pytest.mark.parametrize("name", ["nope", "ADULT", ""])
def test_an_unknown_name_is_one_line_and_exit_2(capsys, name):
    assert main(["datasets", name]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and repr(name) in err and "adult" in err
