"""What kind of data a path holds, so that ``layerwise train --data PATH`` can pick the task.

    kind, reason = data_kind("adult.csv.gz")    # ("table", "a .csv file")
    kind, reason = data_kind("photos/")         # ("images", "3 class folders of images")
    kind, reason = data_kind("novel.txt")       # ("text", "a .txt file")
    kind, reason = data_kind("instances.json")  # ("coco", "a COCO annotation file (.json)")

Decided by names alone (suffixes, folder layout), before any file is read in full: the loader
of that kind then reads the data and names the file, line or column of anything wrong.
"""

import os

from layerwise.errors import BadFileError

TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".parquet", ".pq")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")
COCO_SUFFIXES = (".json",)  # a COCO-format annotation file (instances_*.json)
KINDS = ("table", "images", "text", "coco")


def _suffix(name):
    """The suffix that says what a file is: 'adult.csv.gz' -> '.csv'."""
    base = name.lower()
    if base.endswith(".gz"):
        base = base[:-3]
    return os.path.splitext(base)[1]


def visible_names(names):
    """The names of a folder listing a user sees (no dot files), sorted."""
    return sorted(n for n in names if not n.startswith("."))


def data_kind(path):
    """("table" | "images" | "text" | "coco", why in a few words) for ``path``; BadFileError (one
    line) for a path that does not exist, an empty folder, or one of no known kind."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise BadFileError(f"--data {path!r}: no such file or folder")
    if os.path.isfile(path):
        suffix = _suffix(os.path.basename(path))
        if suffix in TABLE_SUFFIXES:
            return "table", f"a {suffix} file"
        if suffix in TEXT_SUFFIXES:
            return "text", f"a {suffix} file"
        if suffix in COCO_SUFFIXES:
            return "coco", "a COCO annotation file (.json)"
        raise BadFileError(
            f"--data {path!r}: cannot tell what the file holds from {suffix or 'no suffix'!r}; "
            f"give a table ({', '.join(TABLE_SUFFIXES)}, optionally .gz), a text file "
            f"({', '.join(TEXT_SUFFIXES)}), a COCO annotation file (.json) or a folder")
    entries = visible_names(os.listdir(path))
    if not entries:
        raise BadFileError(f"--data {path!r}: the folder is empty; give one subfolder of "
                           f"images per class, or text files")
    folders = [e for e in entries if os.path.isdir(os.path.join(path, e))]
    texts = [e for e in entries if os.path.isfile(os.path.join(path, e))
             and _suffix(e) in TEXT_SUFFIXES]
    with_images = [f for f in folders if any(
        _suffix(n) in IMAGE_SUFFIXES for n in os.listdir(os.path.join(path, f)))]
    if with_images:
        return "images", f"{len(with_images)} class folders of images"
    if texts:
        return "text", f"a folder of {len(texts)} text files"
    raise BadFileError(
        f"--data {path!r}: the folder holds neither class subfolders of images "
        f"({', '.join(IMAGE_SUFFIXES)}) nor text files ({', '.join(TEXT_SUFFIXES)}); "
        f"it has {', '.join(entries[:5])}{', ...' if len(entries) > 5 else ''}")
