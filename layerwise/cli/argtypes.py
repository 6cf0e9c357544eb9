"""Argument types for the ``layerwise`` command: each rejects a bad value with the reason.

argparse prefixes their messages with the option, e.g. "argument --epochs: must be >= 1".
Every count has an upper bound too (``layerwise.limits`` for those a recipe or a model file
shares, the command's own below), so a typo such as ``--epochs 1000000000`` is refused in one
line at parse time instead of running for ever or exhausting memory.
"""

import argparse
import math

from layerwise.limits import (  # noqa: F401 (re-exported: the bounds the options use)
    DEFAULT_IMAGE_SIZE, MAX_BATCH_SIZE, MAX_EPOCHS, MAX_IMAGE_SIZE, MAX_NEW_TOKENS, MAX_SEED,
    MAX_TRAIN_STEPS, MAX_VOCAB, MIN_IMAGE_SIZE, shown,
)

MAX_ATTRIBUTION_STEPS = 10_000  # integrated-gradients steps (50 is the usual)
MAX_FOLDS = 100  # cross-validation folds
MAX_LABELS_PER_CLASS = 100_000  # labelled examples per class (full MNIST has ~6,000)
MIN_PUE, MAX_PUE = 1.0, 10.0  # facility / IT energy: >= 1 by definition; surveyed 1.1-2.5
MAX_GRID_INTENSITY = 2_000.0  # g CO2e / kWh (lignite plants emit ~1,200)


def _number(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if math.isnan(value):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    return value


def int_at_least(low):
    return int_in_range(low, None)


def int_in_range(low, high):
    """An integer in [low, high] (``high`` None: no upper bound): the lower bound says what
    makes sense, the upper what could not be meant."""
    expected = f"an integer >= {low}" if high is None else f"an integer from {low} to {high:,}"

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {shown(text)}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:,}, got {value}")
        return value

    return parse


def float_in_range(low, high):
    """A finite number in [low, high]."""
    def parse(text):
        value = _number(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a number from {low:g} to {high:g}, "
                                             f"got {text}")
        return value

    return parse


def country_code(text):
    """An ISO 3166 code with a grid intensity in the table the cost estimate reads."""
    from layerwise.audit.cost.carbon import GRID_INTENSITY_G_PER_KWH

    code = text.strip().upper()
    if code not in GRID_INTENSITY_G_PER_KWH:
        known = ", ".join(sorted(GRID_INTENSITY_G_PER_KWH))
        raise argparse.ArgumentTypeError(f"no grid intensity for country {text!r}; use one of "
                                         f"{known}, or give --grid-intensity G (g CO2e/kWh)")
    return code


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def temperature(text):
    value = _number(text)
    if value < 0 or value == math.inf:
        raise argparse.ArgumentTypeError(
            f"must be a finite number >= 0 (0 is greedy), got {text}")
    return value


def probability(text):
    """A top-p threshold: in (0, 1]."""
    value = _number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value
