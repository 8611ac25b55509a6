"""Shared hypothesis strategies.

Arrays are generated as float64, C-contiguous, with elements bounded so that the quantities under
test are finite; adversarial corners (K = 1, B = 1, -inf weights, huge spreads, tiny variances)
are pinned with ``@example`` in the tests themselves.
"""

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays


def floats(lo, hi):
    """Finite float64 in [lo, hi] (no NaN, no inf, no subnormal surprises)."""
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=64)


def float_arrays(shape, lo=-10.0, hi=10.0):
    """C-contiguous float64 array of the given shape with elements in [lo, hi]."""
    return arrays(np.float64, shape, elements=floats(lo, hi)).map(np.ascontiguousarray)


dims = st.integers(1, 6)             #: latent dimension L
small_counts = st.integers(1, 12)    #: B or K for property tests
log_vars_range = (-8.0, 8.0)          #: log-variances in property tests (adversarial tests go to +-60)
