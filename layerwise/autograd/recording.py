"""The hooks ``lw.compile`` (compile.py) records a call through.

While a compiled function runs for the first time, ``active`` holds its recorder, and:
- ``Function.apply`` reports every op it runs (class, inputs, parameters, output);
- ``engine.backward`` reports the backward pass before running it;
- the functions marked ``@replayable`` (optimizer steps, zero_grad, gradient clipping, LR
  schedules: Python code that changes state between ops) report themselves as one call each,
  and what they run inside is not recorded op by op;
- ``unsupported(reason)`` raises for code a replay would get wrong.

``observer``, beside it, watches without capturing: while set, ``Function.apply`` calls
``observer(cls, inputs, params, out)`` after every op (the class that ran, a fast path or the
reference; the input Tensors; the parameters; the output Tensor), and so do the Tensor
comparisons, which are not Functions (ops/methods.py). ``lw.onnx.export`` records a model's
forward through it.

Outside a recording every hook is one ``is None`` test.
"""

import functools
from collections.abc import Iterator

active = None  # the recorder of the compiled call being captured, else None
observer = None  # a function told of every op that runs (see above), else None


def replayable(method):
    """Mark a function whose effect a replay must repeat by calling it again, with the same
    arguments, at the same point."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        recorder = active
        if recorder is None or recorder.paused:
            return method(*args, **kwargs)
        # an iterator argument (model.parameters()) would be spent after one call
        args = tuple(list(a) if isinstance(a, Iterator) else a for a in args)
        recorder.call(method, args, kwargs)
        recorder.paused = True  # its own ops are replayed by calling it, not one by one
        try:
            return method(*args, **kwargs)
        finally:
            recorder.paused = False
    return wrapper


def unsupported(reason):
    """Raise if a compiled function is being captured: ``reason`` says what a replay would
    skip and what to do instead."""
    if active is not None and not active.paused:
        raise NotImplementedError(f"lw.compile cannot capture this: {reason}")
