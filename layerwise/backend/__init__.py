"""The array backend: the one place in layerwise that names numpy (and, later, cupy).

Everything else talks to ``xp``, so swapping the array library is a change here only.
"""

from layerwise.backend.allocator import keep_freed_memory
from layerwise.backend.numpy_backend import (
    erf,
    strided_view,
    xp,
)
from layerwise.backend.random import (
    get_rng_state,
    manual_seed,
    rng,
    set_rng_state,
)
from layerwise.backend.dtypes import (
    bool_,
    default_float,
    float16,
    float32,
    float64,
    int32,
    int64,
    int8,
    uint8,
    is_floating,
    set_default_dtype,
    to_dtype,
)

keep_freed_memory()  # see allocator.py: page faults and munmap cost more than the ops

__all__ = [
    "xp", "erf", "strided_view", "rng", "manual_seed", "get_rng_state", "set_rng_state",
    "bool_", "float16", "float32", "float64", "int8", "int32", "int64", "uint8",
    "default_float", "set_default_dtype", "is_floating", "to_dtype",
]
