"""Text for the language models: a corpus that ships with Python, tokenizers, LM datasets.

The corpus is the Python documentation that every CPython carries in ``pydoc_data.topics``
(what ``help()`` shows): about 465,000 characters of English prose and code, no download.
"""

import json
from pathlib import Path

from layerwise import backend
from layerwise.backend import xp
from layerwise.autograd.tensor import Tensor
from layerwise.data.dataset import TensorDataset


def python_docs_corpus():
    """The pydoc topics joined in sorted-key order, so the text is the same on every run."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key].strip() for key in sorted(topics))


class CharTokenizer:
    """One token per character, over the characters seen when it was built."""

    kind = "char"

    def __init__(self, chars):
        self.chars = list(chars)
        self.index = {c: i for i, c in enumerate(self.chars)}
        if len(self.index) != len(self.chars):
            raise ValueError("CharTokenizer characters must be distinct")

    @classmethod
    def from_text(cls, text):
        return cls(sorted(set(text)))

    @property
    def vocab_size(self):
        return len(self.chars)

    def encode(self, text):
        try:
            return [self.index[c] for c in text]
        except KeyError as err:
            raise ValueError(f"character {err.args[0]!r} is not in this tokenizer's vocabulary of "
                             f"{self.vocab_size} characters") from None

    def decode(self, ids):
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside this tokenizer's vocabulary "
                             f"(ids 0-{self.vocab_size - 1})")
        return "".join(self.chars[i] for i in ids)

    def save(self, path):
        Path(path).write_text(json.dumps({"kind": self.kind, "chars": self.chars}, ensure_ascii=False))

    @classmethod
    def load(cls, path):
        return cls(json.loads(Path(path).read_text())["chars"])


class BPETokenizer:
    """Byte-level BPE (as GPT-2) trained with Hugging Face ``tokenizers`` on a corpus.

    Byte-level means any text encodes, with no unknown token; ``save`` writes the
    tokenizer's own ``tokenizer.json`` format, which HF tools read too.
    """

    kind = "bpe"

    def __init__(self, hf_tokenizer):
        self.hf = hf_tokenizer

    @classmethod
    def train(cls, text, vocab_size=512, min_frequency=2):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if vocab_size < 257:
            raise ValueError(f"byte-level BPE needs vocab_size >= 257 (256 bytes + merges), got {vocab_size}")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        chunk = 10_000  # the trainer takes an iterator of strings; chunks keep memory flat
        tok.train_from_iterator((text[i:i + chunk] for i in range(0, len(text), chunk)), trainer)
        return cls(tok)

    @property
    def vocab_size(self):
        return self.hf.get_vocab_size()

    def encode(self, text):
        return self.hf.encode(text).ids

    def decode(self, ids):
        return self.hf.decode([int(i) for i in ids])

    def save(self, path):
        self.hf.save(str(path))

    @classmethod
    def load(cls, path):
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)))


def save_tokenizer(tokenizer, path):
    tokenizer.save(path)


def load_tokenizer(path):
    """A tokenizer saved by either class; the file says which."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"tokenizer file {path} is not valid JSON: {err}") from None
    if isinstance(data, dict) and data.get("kind") == "char":
        chars = data.get("chars")
        if not (isinstance(chars, list) and chars
                and all(isinstance(c, str) and len(c) == 1 for c in chars)
                and len(set(chars)) == len(chars)):
            raise ValueError(f"tokenizer file {path}: 'chars' must be a non-empty list of "
                             f"distinct single characters")
        return CharTokenizer(chars)
    if isinstance(data, dict) and "model" in data:  # the HF tokenizers format
        try:
            return BPETokenizer.load(path)
        except Exception as err:  # tokenizers raises a bare Exception for a bad file
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"tokenizer file {path} is not a readable HF tokenizer: "
                             f"{reason}") from None
    raise ValueError(f"{path} is neither a layerwise char tokenizer nor an HF tokenizer.json")


def lm_splits(ids, block_size, val_fraction=0.1):
    """Next-token datasets from one token stream, split by position, not at random.

    The last ``val_fraction`` of the stream is held out whole, so no validation window
    overlaps a training window (random windows would leak text across the split).
    Each example is ``x = ids[s : s + T]``, ``y = ids[s + 1 : s + T + 1]`` over
    non-overlapping windows: (N, T) int64 pairs.
    """
    ids = xp.asarray(ids, dtype=backend.int64)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    cut = int(len(ids) * (1 - val_fraction))
    parts = {}
    for name, stream in (("train", ids[:cut]), ("val", ids[cut:])):
        n = (len(stream) - 1) // block_size
        if n < 1:
            raise ValueError(f"the {name} split has {len(stream)} tokens, fewer than block_size + 1 = "
                             f"{block_size + 1}; use a smaller block_size or more text")
        x = stream[: n * block_size].reshape(n, block_size)  # (N, T)
        y = stream[1: n * block_size + 1].reshape(n, block_size)  # (N, T), shifted by one
        parts[name] = TensorDataset(Tensor(x), Tensor(y))
    return parts
