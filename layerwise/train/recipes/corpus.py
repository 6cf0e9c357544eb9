"""The text the language recipes train on: the Python documentation, or a user's text.

    record = corpus_record(hp)                   # the pydoc corpus of this Python
    record = corpus_record(hp, {"kind": "text", "path": "novel.txt"})   # train --data novel.txt
    text = checked_corpus(config)                # refuses a text that changed since the run

A run records where its text came from, its length and a SHA-256 of it; every later load
(resume, audit, report) reads the text again and refuses it when the hash differs. Both
sources are cut to their first ``corpus_chars`` characters when that is set (the tiny
recipes' 20,000), then split by position: the last ``val_fraction`` validates.
"""

import hashlib
import math
import platform
import warnings

from layerwise.data import TextFiles, python_docs_corpus
from layerwise.limits import shown
from layerwise.train.checkpoint import RunError

PYDOC_SOURCE = "pydoc_data.topics"


def _sha256(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _cut(text, hp):
    n = hp.get("corpus_chars")
    return text if n is None else text[: int(n)]


def corpus_text(hp):
    """The pydoc corpus, cut to its first ``corpus_chars`` characters when that is set."""
    return _cut(python_docs_corpus(), hp)


def corpus_record(hp, data=None):
    """The config's "data" entry. The pydoc corpus differs between Python versions, so the run
    records which one it used; a user's text (``data``: {"kind": "text", "path"}) is recorded
    by path, length and hash, all of the text, before ``corpus_chars`` cuts it."""
    if data is not None:
        with warnings.catch_warnings():  # skipped files are reported when the text is loaded
            warnings.simplefilter("ignore")
            corpus = TextFiles(data["path"])
        return {"source": "user", "kind": "text", "path": data["path"],
                "files": len(corpus.files), "chars": len(corpus.text), "sha256": corpus.sha256,
                "data_dir": None}
    text = corpus_text(hp)
    return {"source": PYDOC_SOURCE, "python": platform.python_version(),
            "chars": len(text), "sha256": _sha256(text), "data_dir": None}


def checked_corpus(config, quiet=False):
    """The text a run trains on, refusing one that differs from the text it was made with.
    ``quiet``: no warning about a folder's skipped files (a run that reported them already)."""
    hp, record = config["hyperparameters"], config["data"]
    if record.get("source") == "user":
        path, fingerprint = record.get("path"), record.get("sha256")
        if not isinstance(path, str) or not isinstance(fingerprint, str):
            raise RunError(f"the run's config.json: data.path = {shown(path)}, data.sha256 = "
                           f"{shown(fingerprint)}; expected the text's path and its SHA-256, "
                           f"as text")
        with warnings.catch_warnings():
            if quiet:
                warnings.simplefilter("ignore")
            corpus = TextFiles(path)  # a missing or unreadable text names its file itself
        if corpus.sha256 != fingerprint:
            then = record.get("chars")
            then = f"{then:,}" if isinstance(then, int) else repr(then)
            raise RunError(f"the text in {path!r} is not the one this run was made with "
                           f"({len(corpus.text):,} characters now, {then} then, and its "
                           f"SHA-256 differs); restore it, or train a new run on the text as "
                           f"it is")
        return _cut(corpus.text, hp)
    text = corpus_text(hp)
    if record.get("sha256") not in (None, _sha256(text)):
        raise RunError(f"this Python's documentation corpus ({platform.python_version()}, "
                       f"{len(text):,} characters) is not the one the run used (Python "
                       f"{record.get('python')}, {record.get('chars'):,} characters); "
                       "continue the run with that Python")
    return text


def split_text(text, val_fraction):
    """(train, val) text: the last ``val_fraction`` of the characters held out whole."""
    if not 0 < val_fraction < 1:
        raise RunError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    cut = int(len(text) * (1 - val_fraction))
    return text[:cut], text[cut:]


def corpus_name(config):
    """How a message names the run's text: the user's path, or the Python docs."""
    record = config["data"]
    if record.get("source") == "user":
        return repr(record.get("path"))
    return "the Python documentation corpus"


def min_chars(tokens, val_fraction):
    """The fewest characters whose split by ``split_text`` leaves at least ``tokens``
    characters in each part (each character one token, as with the char tokenizer)."""
    # Lower bounds of the answer (int() loses less than 1), then a search up from them.
    n = max(2 * tokens, math.floor((tokens - 1) / val_fraction),
            math.floor(tokens / (1 - val_fraction)))
    while True:
        cut = int(n * (1 - val_fraction))  # as split_text cuts
        if cut >= tokens and n - cut >= tokens:
            return n
        n += 1


def check_windows(config, n_chars, train_tokens, val_tokens):
    """RunError (one line) when either part of the text is shorter than one window of
    block_size + 1 tokens: the file, its length and what the recipe needs."""
    hp = config["hyperparameters"]
    block, fraction = hp["block_size"], hp["val_fraction"]
    need = block + 1
    if train_tokens >= need and val_tokens >= need:
        return
    cut = f" (its first {hp['corpus_chars']:,}: corpus_chars)" \
        if hp.get("corpus_chars") is not None and n_chars == hp["corpus_chars"] else ""
    unit = "characters" if hp["tokenizer"] == "char" else f"{hp['tokenizer']} tokens"
    if hp["tokenizer"] == "char":
        remedy = f"give at least {min_chars(need, fraction):,} characters"
    else:
        remedy = "give more text"
    short = [name for name, n in (("training", train_tokens), ("validation", val_tokens))
             if n < need]
    which = "both parts have" if len(short) == 2 else f"the {short[0]} part has"
    raise RunError(
        f"{corpus_name(config)} is too short for recipe {config['recipe']!r}: {n_chars:,} "
        f"characters{cut} split into {train_tokens:,} {unit} to train on and "
        f"{val_tokens:,} to validate on (the last {fraction * 100:g}%); {which} fewer than "
        f"block_size + 1 = {need:,}; {remedy}, or a smaller --set block_size=N")


def check_sequences(config, n_chars, train_sequences, val_sequences):
    """RunError (one line) when a part of the text gives no masked-LM sequence at all."""
    if train_sequences and val_sequences:
        return
    fraction = config["hyperparameters"]["val_fraction"]
    empty = "training" if not train_sequences else "validation"
    raise RunError(
        f"{corpus_name(config)} is too short for recipe {config['recipe']!r}: its {n_chars:,} "
        f"characters leave the {empty} part (the {'first' if empty == 'training' else 'last'} "
        f"{(1 - fraction if empty == 'training' else fraction) * 100:g}% of the text) without "
        f"a paragraph of text; give more text")
