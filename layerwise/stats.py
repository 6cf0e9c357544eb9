"""Statistics that training and the audit both report: one implementation each.

    low, high = wilson_interval(correct, n)     # 95% interval of a proportion
"""

import math

from scipy.special import ndtri


def wilson_interval(successes, n, level=0.95):
    """Wilson score interval (Wilson 1927) of a proportion ``successes / n``: (low, high).

    low, high = (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), z the two-sided
    normal quantile of ``level``. Never of zero width for n >= 1: 0 of 10 gives (0, 0.278).
    """
    if isinstance(n, bool) or not float(n).is_integer() or n < 1:
        raise ValueError(f"wilson_interval needs n >= 1 trials, got n={n!r}")
    if not 0 <= successes <= n:
        raise ValueError(f"wilson_interval needs 0 <= successes <= n, got {successes!r} of {n}")
    if not 0 < level < 1:
        raise ValueError(f"wilson_interval needs 0 < level < 1, got level={level!r}")
    z = float(ndtri(0.5 + level / 2))
    p, n = successes / n, float(n)
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at p = 0 (or 1) the lower (upper) bound is 0 (1) exactly; spare it the rounding
    low = 0.0 if successes == 0 else float(center - half)
    high = 1.0 if successes == n else float(center + half)
    return (low, high)
