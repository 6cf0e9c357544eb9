"""A user's text for the language models: one text file, or a folder of them.

    corpus = TextFiles("novel.txt")          # .text: the file's text; .files: ['novel.txt']
    corpus = TextFiles("notes/")             # every .txt/.md/.rst/.text file, sorted by name
    corpus.sha256                            # what a run records, to refuse a changed text

A folder's text files (the suffixes of ``layerwise.data.kinds``, at its top level, hidden names
left out) are read in name order, each kept whole, and joined with a blank line between them
("\\n\\n"); other files are skipped with one warning that counts them. A ``.gz`` file (notes.md.gz)
is decompressed. Files are decoded as UTF-8 (a leading byte-order mark dropped) and line
endings made "\\n", as Python's text mode reads them. A file that is not UTF-8 is refused with
the byte offset of its first bad byte; an empty (or blank) file and a folder without text
files are refused too, each naming the file.
"""

import gzip
import hashlib
import os
import warnings
import zlib

from layerwise.data.kinds import TEXT_SUFFIXES, visible_names
from layerwise.errors import BadFileError
from layerwise.limits import MAX_CORPUS_CHARS

MAX_UTF8_BYTES_PER_CHAR = 4
SEPARATOR = "\n\n"  # a blank line between files: a paragraph break for BERT's pieces


def _is_text_name(name):
    base = name.lower()
    base = base.removesuffix(".gz")  # notes.md.gz: gzip-compressed text
    return os.path.splitext(base)[1] in TEXT_SUFFIXES


def _read_bytes(path):
    """The file's bytes, decompressed when its name ends in .gz; refused past the limit."""
    limit = MAX_CORPUS_CHARS * MAX_UTF8_BYTES_PER_CHAR
    if path.lower().endswith(".gz"):
        try:
            with gzip.open(path, "rb") as f:
                raw = f.read(limit + 1)
        except (OSError, EOFError, zlib.error) as err:  # not gzip, or cut short
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise BadFileError(f"{path}: not a readable gzip file ({reason}); give the text "
                               f"uncompressed, or gzip it again") from None
    else:
        with open(path, "rb") as f:
            raw = f.read(limit + 1)
    if len(raw) > limit:
        raise BadFileError(f"{path}: more than {limit:,} bytes, more text than "
                           f"MAX_CORPUS_CHARS = {MAX_CORPUS_CHARS:,} characters can hold; give "
                           f"a part of it")
    return raw


def text_file_names(path):
    """(text files, skipped files) of a folder, each sorted by name; BadFileError for a
    missing path, an empty folder or one without text files."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise BadFileError(f"text {path!r} does not exist")
    if os.path.isfile(path):
        return [path], []
    names = visible_names(os.listdir(path))
    files = [n for n in names if os.path.isfile(os.path.join(path, n))]
    if not files:
        raise BadFileError(f"text folder {path!r} holds no files; give text files "
                           f"({', '.join(TEXT_SUFFIXES)}) or one such file")
    texts = [os.path.join(path, n) for n in files if _is_text_name(n)]
    if not texts:
        raise BadFileError(f"text folder {path!r} holds no text files ({', '.join(TEXT_SUFFIXES)}"
                           f"); it has {len(files)} other file(s), e.g. {files[0]!r}")
    return texts, [os.path.join(path, n) for n in files if not _is_text_name(n)]


def read_text_file(path):
    """The text of one UTF-8 file with "\\n" line endings; BadFileError (one line, naming the
    file) for bytes that are not UTF-8, with their offset, or a file without text."""
    raw = _read_bytes(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        bad = raw[err.start:err.start + 4]
        raise BadFileError(f"{path}: not UTF-8 text: byte {err.start:,} ({bad!r}...) "
                           f"{err.reason}; save the file as UTF-8") from None
    if not text.strip():
        what = "empty (0 bytes)" if not raw else f"blank ({len(raw):,} bytes of white space)"
        raise BadFileError(f"{path}: the text file is {what}; give a file with text")
    return text.replace("\r\n", "\n").replace("\r", "\n")


class TextFiles:
    """The text of ``path``: a text file, or a folder's text files joined by blank lines.

    ``text``: the whole text; ``files``: the files read, in order; ``skipped``: the folder's
    files left out for their suffix; ``sha256``: SHA-256 (hex) of ``text`` as UTF-8.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self.files, self.skipped = text_file_names(self.path)
        if self.skipped:
            warnings.warn(f"{self.path}: skipped {len(self.skipped)} file(s) that are not text "
                          f"({'/'.join(TEXT_SUFFIXES)}), e.g. {self.skipped[0]!r}", stacklevel=2)
        self.text = SEPARATOR.join(read_text_file(f) for f in self.files)
        if len(self.text) > MAX_CORPUS_CHARS:
            raise BadFileError(f"{self.path}: {len(self.text):,} characters, more than "
                               f"MAX_CORPUS_CHARS = {MAX_CORPUS_CHARS:,}; give a part of it")
        self.sha256 = hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def __len__(self):
        return len(self.text)
