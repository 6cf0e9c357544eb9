"""One seeded random generator for the whole library, with state that saves and restores.

Every random draw in layerwise (init, dropout, shuffling) comes from ``rng()``, so
``manual_seed(s)`` makes a run repeatable and a checkpoint can carry the generator's state.
"""

from layerwise.backend.numpy_backend import xp

_generator = xp.random.default_rng(0)


def rng():
    return _generator


def manual_seed(seed):
    """Reseed the global generator. Returns it, as torch.manual_seed does."""
    global _generator
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    _generator = xp.random.default_rng(seed)
    return _generator


def get_rng_state():
    """The generator's state as a JSON-serialisable dict."""
    return _generator.bit_generator.state


def set_rng_state(state):
    _generator.bit_generator.state = state
