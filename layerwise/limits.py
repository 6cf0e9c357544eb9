"""Bounds on every count a user or a file can set, and the checks that hold values to them.

A count past these bounds cannot be right for a NumPy framework on one machine: refusing it
in one line before anything is allocated beats running out of memory minutes later, or
failing with a traceback when a run ends. The same checks serve the command's options
(``cli/argtypes``), each recipe's hyperparameters (a schema, key -> check, declared beside its
defaults and applied by ``make_config``) and configs read from files (a run's config.json,
a Hugging Face config.json, a model config dataclass).

    schema = {"epochs": Int(1, MAX_EPOCHS), "lr": Real(0, low_open=True)}
    check_settings(schema, {"epochs": 0, "lr": 1e-3})
    # SettingError: epochs must be >= 1, got 0
"""

import json
import math
from dataclasses import dataclass

from layerwise.errors import LayerwiseError

# --- bounds: far above any recipe here, far below what would exhaust a machine ---------------

MAX_EPOCHS = 10_000  # passes over the data
MAX_TRAIN_STEPS = 100_000_000  # optimizer steps (warm-up length, checkpoint interval)
MAX_BATCH_SIZE = 65_536  # examples in one batch
MAX_EXAMPLES = 100_000_000  # examples in a subset of a dataset
MAX_LAYERS = 1_024  # stacked layers of one model (GPT-3 has 96)
MAX_WIDTH = 65_536  # units of one layer, embedding width, heads (GPT-3: 12,288)
MAX_CONTEXT = 65_536  # tokens of context (block_size, max_len, positions)
MAX_VOCAB = 1_048_576  # tokens in a vocabulary (GPT-2: 50,257)
MAX_PARAMETERS = 2_000_000_000  # 8 GB of float32; GPT-2 XL (1.56e9) fits
MAX_NEW_TOKENS = 100_000  # tokens one generate call writes
MAX_CORPUS_CHARS = 1_000_000_000  # characters of training text
MAX_PROMPT_CHARS = 100_000  # characters of a prompt
MAX_SEED = 2**32 - 1  # the range every seeded library accepts
MAX_IMAGE_SHIFT = 27  # pixels: a 28 px digit shifted by 28 leaves the image
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 8, 1_024  # pixels a side of an image folder's resized images
DEFAULT_IMAGE_SIZE = 32  # CIFAR's size: small enough for a CPU, big enough to see objects
# Decoded pixels of an image folder, held in memory at once as float32: CIFAR-10's 60,000
# 32x32 RGB images take 0.74 GB; past this a folder needs a streaming loader, not this one.
MAX_IMAGE_FOLDER_BYTES = 2_000_000_000
MAX_INTENDED_USE_CHARS = 2_000  # of a model card's intended-use text: a paragraph or two
MAX_SHOWN_CHARS = 60  # of a bad value quoted in a message
MAX_BATCH_WAIT_MS = 60_000.0  # a served request's wait for its batch: longer is a mistake
MAX_QUEUED_REQUESTS = 10_000_000  # requests a served model may hold waiting for a batch


class SettingError(LayerwiseError, ValueError):
    """A setting outside its declared range or of the wrong type; ``key`` names it."""

    key = None


def shown(value):
    """A value as a message quotes it: JSON for numbers and lists, repr for text, cut short."""
    if isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = json.dumps(value)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 3] + "..."


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite(number):
    try:
        return math.isfinite(number)
    except OverflowError:  # an int past the largest float: no float setting can hold it
        return False


def _or_null(text, none):
    return f"{text}, or null ({none})" if none else text


# --- checks: each says what is right, and returns the problem with a value or None ------------


@dataclass(frozen=True)
class Int:
    """An integer in [low, high]; ``none`` says what null means where null is allowed."""

    low: int
    high: int
    none: str = None

    @property
    def expected(self):
        return _or_null(f"an integer from {self.low} to {self.high:,}", self.none)

    def problem(self, key, value):
        if value is None and self.none:
            return None
        if not _is_int(value):
            return f"{key}={json_or_repr(value)}: expected {self.expected}"
        if value < self.low:
            return f"{key} must be >= {self.low}, got {shown(value)}"
        if value > self.high:
            return f"{key} must be <= {self.high:,}, got {shown(value)}"
        return None


@dataclass(frozen=True)
class Real:
    """A finite number in the interval from ``low`` to ``high`` (None: unbounded above)."""

    low: float
    high: float = None
    low_open: bool = False
    high_open: bool = False
    none: str = None

    @property
    def interval(self):
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return (f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}"
                f"{')' if self.high_open else ']'}")

    @property
    def expected(self):
        return _or_null(f"a finite number {self.interval}", self.none)

    def problem(self, key, value):
        if value is None and self.none:
            return None
        if not _is_number(value):
            return f"{key}={json_or_repr(value)}: expected {self.expected}"
        below = value <= self.low if self.low_open else value < self.low
        above = self.high is not None and (value >= self.high if self.high_open
                                           else value > self.high)
        if not _is_finite(value) or below or above:
            return f"{key} must be a finite number {self.interval}, got {shown(value)}"
        return None


@dataclass(frozen=True)
class Choice:
    options: tuple

    @property
    def expected(self):
        return f"one of {', '.join(self.options)}"

    def problem(self, key, value):
        if value not in self.options or not isinstance(value, str):
            return f"{key} must be {self.expected}, got {shown(value)}"
        return None


@dataclass(frozen=True)
class Flag:
    expected = "true or false"

    def problem(self, key, value):
        if not isinstance(value, bool):
            return f"{key}={json_or_repr(value)}: expected {self.expected}"
        return None


@dataclass(frozen=True)
class Text:
    """A string of ``min_chars`` to ``max_chars`` characters."""

    min_chars: int = 1
    max_chars: int = MAX_PROMPT_CHARS

    @property
    def expected(self):
        return f"a text of {self.min_chars} to {self.max_chars:,} characters"

    def problem(self, key, value):
        if not isinstance(value, str) or not self.min_chars <= len(value) <= self.max_chars:
            return f"{key}={json_or_repr(value)}: expected {self.expected}"
        return None


@dataclass(frozen=True)
class IntList:
    """A list of at most ``max_len`` integers, each in [low, high]."""

    low: int
    high: int
    max_len: int

    @property
    def expected(self):
        return (f"a list of up to {self.max_len:,} integers from {self.low} to {self.high:,}, "
                f"e.g. [512, 256]")

    def problem(self, key, value):
        if not isinstance(value, list) or len(value) > self.max_len or \
                not all(_is_int(v) for v in value):
            return f"{key}={json_or_repr(value)}: expected {self.expected}"
        for v in value:
            if not self.low <= v <= self.high:
                return (f"{key}={json_or_repr(value)}: each entry must be from {self.low} to "
                        f"{self.high:,}, got {shown(v)}")
        return None


def json_or_repr(value):
    """A value as it was typed in JSON (--set n_layer="two", a config.json), cut short."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 3] + "..."


def check_settings(schema, values, error=SettingError, where=None, required=True):
    """Raise ``error`` (one line, naming the key and value) for the first value of ``values``
    that its check in ``schema`` refuses. A key of the schema missing from ``values`` is an
    error when ``required``, else skipped; keys the schema does not name are left alone."""
    prefix = f"{where}: " if where else ""
    if not isinstance(values, dict):
        _raise(error, f"{prefix}expected an object of settings, got {json_or_repr(values)}")
    for key, check in schema.items():
        if key not in values:
            if required:
                _raise(error, f"{prefix}{key} is missing; expected {check.expected}", key)
            continue
        problem = check.problem(key, values[key])
        if problem is not None:
            _raise(error, prefix + problem, key)


def _raise(error, message, key=None):
    err = error(message)
    err.key = key  # which setting, for a caller that names the option that set it
    raise err


def check_parameter_count(count, where, error=SettingError):
    """Refuse a model of more than MAX_PARAMETERS parameters, counted from its config alone."""
    if count > MAX_PARAMETERS:
        _raise(error, f"{where} would have {count:,} parameters, more than MAX_PARAMETERS="
                      f"{MAX_PARAMETERS:,} (8 GB of float32); use fewer or smaller layers")
