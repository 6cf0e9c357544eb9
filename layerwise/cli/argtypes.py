"""Argument types for the ``layerwise`` command: each rejects a bad value with the reason.

argparse prefixes their messages with the option, e.g. "argument --epochs: must be >= 1".
"""

import argparse
import math


def _number(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if math.isnan(value):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    return value


def int_at_least(low):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            message = f"expected an integer >= {low}, got {text!r}"
            raise argparse.ArgumentTypeError(message) from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


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
