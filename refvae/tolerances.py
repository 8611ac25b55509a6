"""The one table of tolerances (SPEC section 6: a tolerance is data).

Tests, the command line and the reports read their tolerances from :data:`TOLERANCES`; each entry
carries the reason for its size. ``u = 2**-53`` is the unit roundoff of float64.

To change a tolerance, change it here and say why in ``reason``; never loosen one in a test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

U = 2.0 ** -53  #: unit roundoff of IEEE float64 (half the machine epsilon)
EPS = 2.0 ** -52  #: machine epsilon


@dataclass(frozen=True)
class Tolerance:
    """Relative and absolute tolerance with the reason for their size."""

    rtol: float
    atol: float
    reason: str

    def check(self, actual, expected):
        """True where ``|actual - expected| <= atol + rtol * |expected|`` (inf == inf of the same sign)."""
        actual = np.asarray(actual)
        expected = np.asarray(expected)
        same_inf = np.isinf(expected) & (actual == expected)
        with np.errstate(invalid="ignore"):
            ok = np.abs(actual - expected) <= self.atol + self.rtol * np.abs(expected)
        return ok | same_inf


TOLERANCES: dict[str, Tolerance] = {
    # ---------------------------------------------------------------- closed forms / primitives
    "closed_form_vs_scipy": Tolerance(
        rtol=64 * EPS, atol=64 * EPS,
        reason="two float64 evaluations of the same closed form (refvae vs scipy.stats) differ by the "
               "rounding of a few dozen operations; 64 eps covers L up to 64 summed terms"),
    "closed_form_vs_quadrature": Tolerance(
        rtol=1e-9, atol=1e-10,
        reason="scipy.integrate.quad with epsabs=epsrel=1e-12 on a 1-D integrand; its reported error "
               "estimate is below 1e-11, so 1e-9 leaves a factor 100 for the estimate's own error"),
    "primitive_vs_mpmath": Tolerance(
        rtol=4 * EPS, atol=0.0,
        reason="logsumexp/softplus/log_sigmoid are within a few ulp of the exact value (mpmath dps=50) "
               "on their whole domain; 4 eps = 8 u"),
    # ---------------------------------------------------------------- gradient checks
    "vjp_central_difference": Tolerance(
        rtol=1e-6, atol=0.0,
        reason="random-direction central difference with h = eps**(1/3) * scale: truncation O(h^2) "
               "~ 4e-11 * |f'''| and rounding O(eps |f| / h) ~ 3.7e-11 * |f| relative to the "
               "directional derivative; 1e-6 leaves room for |f|/|Df| ratios up to ~1e4 and still "
               "fails any formula error that changes the directional derivative by > 1e-6"),
    "vjp_richardson": Tolerance(
        rtol=1e-8, atol=0.0,
        reason="Richardson-extrapolated central difference (h and h/2), truncation O(h^4) with "
               "h = eps**(1/5) * scale; rounding ~ eps/h ~ 1.6e-13 relative"),
    "complex_step": Tolerance(
        rtol=1e-13, atol=0.0,
        reason="complex step Im f(x + i h u) / h with h = 1e-30 has no subtractive cancellation: "
               "the only error is the rounding of the analytic code path, a few hundred ulp at most"),
    # ---------------------------------------------------------------- mixture kernel
    "mixture_kernel_c": Tolerance(
        rtol=4.0, atol=0.0,
        reason="forward error bound |f_hat - f| <= c u (|f| + S), S the responsibility-weighted "
               "magnitude of the summands (refvae.mixture docstring); c = 4 is the guarantee"),
    "mixture_vs_twin": Tolerance(
        rtol=1e-13, atol=1e-13,
        reason="the Numba kernel and its NumPy twin sum the same terms in different orders (and the "
               "kernel compensates); both are within c u (|f|+S) of exact, so they agree to ~1e-14 "
               "relative to |f| + S for S up to ~100"),
    "mixture_vjp_vs_twin": Tolerance(
        rtol=1e-11, atol=1e-12,
        reason="gradient sums over B or K responsibility-weighted terms of either sign; summation "
               "order differs between kernel and twin, so agreement is relative to the sum of "
               "absolute values of the terms, ~1e-13 for the sizes tested; 1e-11 leaves a margin"),
}


def tolerance(name: str) -> Tolerance:
    """Look up a tolerance by name (``KeyError`` lists the known names)."""
    try:
        return TOLERANCES[name]
    except KeyError:
        raise KeyError(f"unknown tolerance {name!r}; known: {', '.join(sorted(TOLERANCES))}") from None
