"""TextFiles: a user's text file or folder of text files, and the one-line refusals of bad ones.
The reference text is written out by hand; the hash is hashlib's over its UTF-8 bytes."""

import hashlib

import pytest

from layerwise.data import TextFiles
from layerwise.errors import BadFileError, LayerwiseError


def one_line(err):
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_one_file_is_read_whole(tmp_path):
    path = tmp_path / "novel.txt"
    path.write_text("Call me Ishmael.\n\nSome years ago\n", encoding="utf-8")
    corpus = TextFiles(path)
    assert corpus.text == "Call me Ishmael.\n\nSome years ago\n"
    assert corpus.files == [str(path)] and len(corpus) == 33
    assert corpus.sha256 == hashlib.sha256(corpus.text.encode("utf-8")).hexdigest()


def test_a_folder_is_joined_by_name_with_a_blank_line(tmp_path):
    (tmp_path / "b.md").write_text("# B\nsecond", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first ☃\n", encoding="utf-8")
    (tmp_path / "C.RST").write_text("third", encoding="utf-8")  # suffixes in any case
    (tmp_path / ".hidden.txt").write_text("not read", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deeper.txt").write_text("not read", encoding="utf-8")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    with pytest.warns(UserWarning, match=r"skipped 1 file\(s\) that are not text"):
        corpus = TextFiles(tmp_path)
    assert [p.rsplit("/", 1)[1] for p in corpus.files] == ["C.RST", "a.txt", "b.md"]
    assert corpus.text == "third\n\nfirst ☃\n\n\n# B\nsecond"


def test_line_endings_become_newlines_and_a_byte_order_mark_is_dropped(tmp_path):
    path = tmp_path / "dos.txt"
    path.write_bytes(b"\xef\xbb\xbfone\r\ntwo\rthree\n")
    assert TextFiles(path).text == "one\ntwo\nthree\n"


@pytest.mark.parametrize("content, words", [
    (b"caf\xe9 au lait", "not UTF-8 text: byte 3 (b'\\xe9 au'...) invalid continuation byte"),
    (b"\xff\xfeh\x00i\x00", "not UTF-8 text: byte 0"),  # UTF-16 with its byte-order mark
    (b"", "the text file is empty (0 bytes)"),
    (b" \n\t\n", "the text file is blank (4 bytes of white space)"),
])
def test_bad_files_are_named(tmp_path, content, words):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(BadFileError) as err:
        TextFiles(path)
    message = one_line(err)
    assert message.startswith(f"{path}: ") and words in message


def test_a_bad_file_inside_a_folder_is_named(tmp_path):
    (tmp_path / "a.txt").write_text("fine", encoding="utf-8")
    (tmp_path / "b.txt").write_bytes(b"ok then \x80")
    with pytest.raises(BadFileError) as err:
        TextFiles(tmp_path)
    assert one_line(err).startswith(f"{tmp_path / 'b.txt'}: not UTF-8 text: byte 8")


def test_folders_without_text(tmp_path):
    with pytest.raises(BadFileError) as err:
        TextFiles(tmp_path)
    assert "holds no files" in one_line(err)
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(BadFileError) as err:
        TextFiles(tmp_path)
    assert "holds no text files (.txt, .md, .rst, .text); it has 1 other file(s)" in one_line(err)
    with pytest.raises(BadFileError, match="does not exist"):
        TextFiles(tmp_path / "missing.txt")


def test_errors_are_layerwise_and_value_errors(tmp_path):
    (tmp_path / "e.txt").write_bytes(b"")
    with pytest.raises(LayerwiseError):
        TextFiles(tmp_path / "e.txt")
    with pytest.raises(ValueError):
        TextFiles(tmp_path / "e.txt")


def test_gzipped_text_is_decompressed_and_a_broken_one_named(tmp_path):
    import gzip

    (tmp_path / "a.md.gz").write_bytes(gzip.compress("zipped ☃\n".encode()))
    (tmp_path / "b.txt").write_text("plain", encoding="utf-8")
    assert TextFiles(tmp_path).text == "zipped ☃\n\n\nplain"
    (tmp_path / "a.md.gz").write_bytes(gzip.compress(b"text")[:-6])  # cut short
    with pytest.raises(BadFileError) as err:
        TextFiles(tmp_path)
    assert one_line(err).startswith(f"{tmp_path / 'a.md.gz'}: not a readable gzip file")
    (tmp_path / "a.md.gz").write_bytes(b"not gzip at all")
    with pytest.raises(BadFileError, match="a.md.gz: not a readable gzip file"):
        TextFiles(tmp_path)
