"""What `layerwise train --data PATH` takes PATH to hold, from names alone."""

import pytest

from layerwise.data.kinds import data_kind
from layerwise.errors import BadFileError


@pytest.mark.parametrize("name, kind", [
    ("adult.csv", "table"), ("adult.CSV.gz", "table"), ("x.tsv", "table"), ("x.parquet", "table"),
    ("novel.txt", "text"), ("notes.md", "text"), ("docs.rst.gz", "text"),
])
def test_a_file_is_known_by_its_suffix(tmp_path, name, kind):
    path = tmp_path / name
    path.write_bytes(b"a,b\n1,2\n")
    assert data_kind(path)[0] == kind


def test_a_folder_of_class_folders_of_images_is_an_image_folder(tmp_path):
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "1.PNG").write_bytes(b"")
    (tmp_path / ".cache").mkdir()
    assert data_kind(tmp_path) == ("images", "2 class folders of images")


def test_a_folder_of_text_files_is_text(tmp_path):
    (tmp_path / "a.txt").write_text("one")
    (tmp_path / "b.md").write_text("two")
    assert data_kind(tmp_path) == ("text", "a folder of 2 text files")


@pytest.mark.parametrize("make, says", [
    (lambda p: p / "missing.csv", "no such file or folder"),
    (lambda p: (p / "e").mkdir() or p / "e", "the folder is empty"),
    (lambda p: (p / "w.bin").write_bytes(b"\0") and p / "w.bin", "cannot tell what the file holds "
                                                                 "from '.bin'"),
    (lambda p: (p / "noext").write_bytes(b"x") and p / "noext", "from 'no suffix'"),
    (lambda p: (p / "o").mkdir() or (p / "o" / "x.bin").write_bytes(b"x") and p / "o",
     "neither class subfolders of images"),
])
def test_what_is_no_known_kind_is_one_line_that_quotes_the_path(tmp_path, make, says):
    path = make(tmp_path)
    with pytest.raises(BadFileError) as err:
        data_kind(path)
    message = str(err.value)
    assert says in message and repr(str(path)) in message and "\n" not in message
