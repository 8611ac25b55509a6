"""Hostile numerics at the edges of float64 (issue 13: items 2.4, 2.5, 2.9, 2.10 mixture part).

Every test carries ``@pytest.mark.hostile(cls, outcome)`` (tests/conftest.py). Exact values are
checked against mpmath at >= 200 bits (``refvae.tolerances`` entries name the bounds); named
errors are checked by exception type and a ``match=`` on the argument's name.
"""

import math

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refvae import gaussian, mixture
from refvae.mixture import (combine_partials, finalize_partials, mixture_log_prob,
                            mixture_log_prob_vjp, mixture_log_prob_vjp_numpy, mixture_partial)
from refvae.tolerances import tolerance

U = 2.0 ** -53
DBL_MAX = np.finfo(np.float64).max
TINY = 2.0 ** -1074

mpmath.mp.prec = 256


def _close(got, want, rtol, atol=4 * TINY):
    """|got - want| <= atol + rtol |want| elementwise (want an mpmath number or float)."""
    got = float(got)
    want_f = float(want)
    if math.isinf(want_f):
        return got == want_f
    return abs(mpmath.mpf(got) - want) <= atol + rtol * abs(want)


# =========================================================================== mixture VJP (item 1)

EXTREME_LOG_VARS = (-745.0, -720.0, -709.8, 700.0, 745.0, 800.0, 1400.0)
DIFFS = (0.0, 1e-200, 1e-100, 1e-10, 1.0, 1e10, 1e100, 1e200)


def _exact_single(diff, v, g=1.0):
    """Exact (t, dz, dmeans, dlog_vars, dlog_weights) for K = 1, L = 1 (r = 1), in mpmath."""
    d, v = mpmath.mpf(diff), mpmath.mpf(v)
    q = d * d * mpmath.exp(-v)
    t = -(mpmath.log(2 * mpmath.pi) + v + q) / 2
    ivd = d * mpmath.exp(-v)
    return t, -g * ivd, g * ivd, g * (q - 1) / 2, mpmath.mpf(g)


def _representable(x):
    return abs(x) <= DBL_MAX


_CASES = [(v, d) for v in EXTREME_LOG_VARS for d in DIFFS
          if all(_representable(x) for x in _exact_single(d, v))]


@pytest.mark.hostile("magnitude", "exact value")
@pytest.mark.parametrize("v,diff", _CASES)
@pytest.mark.parametrize("vjp", [mixture_log_prob_vjp, mixture_log_prob_vjp_numpy],
                         ids=["numba", "numpy-twin"])
def test_mixture_vjp_extreme_log_vars_exact(vjp, v, diff):
    """Mixture VJP at log-variances -745..1400 with z - mu from 0 to 1e200 against mpmath."""
    tol = tolerance("mixture_vjp_extreme_single")
    z = np.array([[0.25 + diff]]) if diff >= 1.0 else np.array([[diff]])
    mu = np.array([[0.25]]) if diff >= 1.0 else np.array([[0.0]])
    d = float(mpmath.mpf(z[0, 0]) - mpmath.mpf(mu[0, 0]))   # the exact difference of the inputs
    t, dz, dm, dv, dw = _exact_single(d, v)
    got = vjp(np.ones(1), z, mu, np.array([[v]]), np.zeros(1))
    for name, a, e in zip(("dz", "dmeans", "dlog_vars", "dlog_weights"), got, (dz, dm, dv, dw)):
        assert np.all(np.isfinite(a)), f"{name} = {a} (exact {float(e)!r})"
        assert _close(a.ravel()[0], e, tol.rtol), f"{name} = {a.ravel()[0]!r}, exact {float(e)!r}"
    f = mixture_log_prob(z, mu, np.array([[v]]), np.zeros(1))
    assert _close(f[0], t, tol.rtol)


@pytest.mark.hostile("magnitude", "exact value")
@pytest.mark.parametrize("v", [-1416.0, -1000.0, 1000.0, 1416.0])
def test_mixture_vjp_z_at_mean_exact_over_the_range(v):
    """z = mu at log-variances up to the documented limit +-1416: dlog_vars = -1/2, rest exact."""
    got = mixture_log_prob_vjp(np.ones(2), np.zeros((2, 3)), np.zeros((1, 3)), np.full((1, 3), v),
                               np.zeros(1))
    assert np.array_equal(got[0], np.zeros((2, 3))) and np.array_equal(got[1], np.zeros((1, 3)))
    assert np.array_equal(got[2], np.full((1, 3), -1.0)) and np.array_equal(got[3], [2.0])
    want = -1.5 * (math.log(2 * math.pi) + v)
    assert _close(mixture_log_prob(np.zeros((1, 3)), np.zeros((1, 3)), np.full((1, 3), v),
                                   np.zeros(1))[0], mpmath.mpf(want), 4 * U)


@pytest.mark.hostile("magnitude", "named error")
@pytest.mark.parametrize("v", [-1417.0, 1417.0, -1e300, 1e300])
@pytest.mark.parametrize("fn", ["forward", "vjp", "partial", "twin"])
def test_mixture_log_vars_beyond_limit_named_error(fn, v):
    """Mixture log-variances beyond +-1416 (variance outside float64): ValueError naming log_vars."""
    z, mu, lv, lw = np.zeros((1, 2)), np.zeros((2, 2)), np.array([[0.0, 0.0], [v, 0.0]]), np.zeros(2)
    call = {"forward": lambda: mixture_log_prob(z, mu, lv, lw),
            "vjp": lambda: mixture_log_prob_vjp(np.ones(1), z, mu, lv, lw),
            "partial": lambda: mixture_partial(z, mu, lv, lw),
            "twin": lambda: mixture_log_prob_vjp_numpy(np.ones(1), z, mu, lv, lw)}[fn]
    with pytest.raises(ValueError, match=r"log_vars must lie in \[-1416, 1416\].*index \(1, 0\)"):
        call()
