"""Switching graph recording off (no_grad) and on (enable_grad)."""

import contextlib
import functools
import threading


class _State(threading.local):
    """Per thread, as in PyTorch: a ``no_grad`` block in one thread must not stop another
    thread's ops from recording (layerwise.parallel runs two halves of a batch in two)."""

    enabled = True  # every thread starts with grad mode on


state = _State()


def is_grad_enabled():
    return state.enabled


def set_grad_enabled(mode):
    state.enabled = bool(mode)


class _GradMode(contextlib.ContextDecorator):
    """Context manager and decorator that sets grad mode and restores the old one."""

    def __init__(self, mode):
        self.mode = mode

    def __enter__(self):
        self.previous, state.enabled = state.enabled, self.mode

    def __exit__(self, *exc):
        state.enabled = self.previous
        return False


def no_grad(fn=None):
    """``with lw.no_grad():`` or ``@lw.no_grad()``: ops inside record no graph."""
    if callable(fn):
        return functools.wraps(fn)(_GradMode(False)(fn))
    return _GradMode(False)


def enable_grad():
    return _GradMode(True)
