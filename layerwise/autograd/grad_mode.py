"""Switching graph recording off (no_grad) and on (enable_grad)."""

import contextlib
import functools

_enabled = True


def is_grad_enabled():
    return _enabled


def set_grad_enabled(mode):
    global _enabled
    _enabled = bool(mode)


class _GradMode(contextlib.ContextDecorator):
    """Context manager and decorator that sets grad mode and restores the old one."""

    def __init__(self, mode):
        self.mode = mode

    def __enter__(self):
        global _enabled
        self.previous, _enabled = _enabled, self.mode

    def __exit__(self, *exc):
        global _enabled
        _enabled = self.previous
        return False


def no_grad(fn=None):
    """``with lw.no_grad():`` or ``@lw.no_grad()``: ops inside record no graph."""
    if callable(fn):
        return functools.wraps(fn)(_GradMode(False)(fn))
    return _GradMode(False)


def enable_grad():
    return _GradMode(True)
