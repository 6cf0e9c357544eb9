"""NumPy as the array library. ``xp`` is used exactly like the numpy module."""

import numpy as xp
from scipy.special import erf  # NumPy has no erf; exact GELU needs it.

__all__ = ["xp", "erf"]
