"""Which implementation of an op runs: its reference Function, or a fast path registered for it.

Every op in ``layerwise/ops`` is a reference Function, written for reading. A fast path is a
subclass of one (in ``layerwise/ops/fast``) that overrides ``forward`` and ``backward`` with a
compiled kernel, another layout or a two-core split, and declares when it applies:

    @fast_path
    class ExactGeluFloat32(FastPath, GELU):
        kernels = ("gelu_erf_f32", "gelu_erf_backward_f32")   # None from numba: not available

        @classmethod
        def supports(cls, x, approximate="none", *, graph):   # what it computes correctly
            return x.dtype == xp.float32 and approximate == "none"

        @classmethod
        def worth_it(cls, x, approximate="none", *, graph):   # where it measured faster
            return x.size >= MIN_VALUES

Both predicates take the op's input arrays and parameters as ``forward`` does, and ``graph``:
whether a backward will run. ``choose``, called by ``Function.apply`` and nowhere else, returns
the first registered path that is available, supports the call and is worth it; otherwise the
reference. Tests run each path in turn against the reference with ``forced(path)``, which
skips ``worth_it`` (thresholds are about speed, not about correctness) but never ``supports``.
``choose`` costs a dict lookup for an op with no fast path.
"""

import threading
from contextlib import contextmanager

_paths = {}  # reference Function class -> [fast path classes], in registration order
_local = threading.local()  # .forced: None, REFERENCE or a fast path; .uses, .seen: see below
# How many forced() and traced() blocks are open, in any thread: while none is, choose skips
# the thread-local lookups (two per op call, ~10% of a batch-1 GPT forward).
_open_contexts = 0

REFERENCE = "reference"


def fast_path(path):
    """Class decorator: register ``path`` for the reference Function it derives from."""
    reference = path.reference()
    _paths.setdefault(reference, []).append(path)
    return path


def paths_of(reference):
    """The fast paths registered for ``reference``, in the order ``choose`` tries them."""
    return tuple(_paths.get(reference, ()))


def choose(reference, arrays, params, graph):
    """The class whose forward and backward run this call of ``reference``."""
    if _open_contexts:
        seen = getattr(_local, "seen", None)
        if seen is not None:
            seen.append((reference, arrays, params, graph))
        forced = getattr(_local, "forced", None)
        if forced is not None:
            return _forced_choice(forced, reference, arrays, params, graph)
    for path in _paths.get(reference, ()):
        if (path.available() and path.supports(*arrays, graph=graph, **params)
                and path.worth_it(*arrays, graph=graph, **params)):
            return path
    return reference


def _forced_choice(forced, reference, arrays, params, graph):
    if (forced == REFERENCE or forced.reference() is not reference
            or not forced.supports(*arrays, graph=graph, **params)):
        return reference
    _local.uses.count += 1
    return forced


class Uses:
    count = 0  # how many calls the forced path ran


@contextmanager
def forced(path):
    """In this thread, run every call of ``path``'s reference op that ``path`` supports through
    ``path``, whatever its thresholds say (or, with ``REFERENCE``, every op through its
    reference). Yields a ``Uses`` whose ``count`` says how many calls the path ran, so that a
    test can tell it was not testing the reference twice."""
    if path != REFERENCE and not path.available():
        raise RuntimeError(f"{path.__name__} is not available here (its kernels need numba)")
    global _open_contexts
    previous = getattr(_local, "forced", None), getattr(_local, "uses", None)
    _local.forced, _local.uses = path, Uses()
    _open_contexts += 1
    try:
        yield _local.uses
    finally:
        _open_contexts -= 1
        _local.forced, _local.uses = previous


@contextmanager
def traced():
    """Yields the list of calls ``choose`` was asked about in this thread: (reference, arrays,
    params, graph) each."""
    global _open_contexts
    previous = getattr(_local, "seen", None)
    _local.seen = []
    _open_contexts += 1
    try:
        yield _local.seen
    finally:
        _open_contexts -= 1
        _local.seen = previous
