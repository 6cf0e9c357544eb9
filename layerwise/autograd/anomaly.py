"""Finding the op that first produced a NaN or Inf.

Off by default because checking every output costs a pass over it. Under
``detect_anomaly()`` each op's forward output and each backward gradient is checked, and
the first non-finite one raises an error naming the op (``FloatingPointError``).
"""

import contextlib

from layerwise.backend import xp

_enabled = False


def is_anomaly_enabled():
    return _enabled


@contextlib.contextmanager
def detect_anomaly():
    global _enabled
    previous, _enabled = _enabled, True
    try:
        yield
    finally:
        _enabled = previous


def check_finite(array, op, stage):
    if array is not None and array.dtype.kind == "f" and not xp.isfinite(array).all():
        bad = "NaN" if xp.isnan(array).any() else "Inf"
        raise FloatingPointError(
            f"{bad} appeared in the {stage} of {op} (output shape {tuple(array.shape)})"
        )
