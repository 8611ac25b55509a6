"""The one table of tolerances (SPEC section 6: a tolerance is data).

Tests, the command line and the reports read their tolerances from :data:`TOLERANCES`; each entry
carries the reason for its size. ``u = 2**-53`` is the unit roundoff of float64.

Every entry is of one *kind*, which says what its number means; each kind has its own accessors,
and the accessors of another kind raise ``TypeError`` (``tolerance("monte_carlo_k_sigma").rtol``
is an error, not 5.0):

- ``relabs`` (:class:`RelAbs`): ``|a - e| <= atol + rtol * scale``, the scale ``|e|`` unless the
  test names another; accessors ``rtol``, ``atol``, ``check``.
- ``rounding`` (:class:`Rounding`): ``|a - e| <= c u (S + |e|)``, a multiple c of the unit roundoff
  of the rounding's scale S; accessor ``c``.
- ``sigma`` (:class:`Sigma`): Monte Carlo, ``|estimate - exact| <= k SE + slack`` (k standard
  errors); accessors ``k``, ``slack``, ``false_failure_probability`` (``P(|N(0,1)| > k)``).
- ``pvalue`` (:class:`PValue`): a statistical test passes when its p-value is ``>= alpha`` (the
  false-failure probability); accessor ``alpha``.
- ``distance`` (:class:`Distance`): a distance a quantity is kept away from (not an error bound);
  accessor ``d``.
- ``estimate`` (:class:`EstimateMultiple`): ``error <= floor + factor * estimate`` for an error
  estimate the check computes itself; accessors ``factor``, ``floor``.

``entry.record()`` is the entry as the reports store it: ``kind``, the two numbers in the
``rtol``/``atol`` slots the report schema has always used (c, k, factor in ``rtol``; alpha, d,
slack, floor in ``atol``) and ``reason``.

To change a tolerance, change it here and say why in ``reason``; never loosen one in a test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np

U = 2.0 ** -53  #: unit roundoff of IEEE float64 (half the machine epsilon)
EPS = 2.0 ** -52  #: machine epsilon

#: accessor -> the kind that has it (asking an entry of another kind for it is a TypeError)
_ACCESSORS = {"rtol": "relabs", "atol": "relabs", "check": "relabs", "c": "rounding",
              "k": "sigma", "slack": "sigma", "false_failure_probability": "sigma",
              "alpha": "pvalue", "d": "distance", "factor": "estimate", "floor": "estimate"}


def _prose(text: str) -> str:
    """A reason written as an indented paragraph, as one line (single spaces)."""
    return " ".join(text.split())


@dataclass(frozen=True, kw_only=True)
class Tolerance:
    """One entry of :data:`TOLERANCES`: its number(s) (a subclass per kind) and the reason for their size."""

    reason: str
    kind: ClassVar[str] = ""
    #: which of this kind's numbers go in the report schema's (rtol, atol) slots (None: 0.0)
    _slots: ClassVar[tuple] = (None, None)

    def __getattr__(self, name):
        if name in _ACCESSORS:
            raise TypeError(f"a {self.kind!r} tolerance ({type(self).__name__}: {self.numbers()}) has "
                            f"no .{name}; that belongs to {_ACCESSORS[name]!r} tolerances")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def numbers(self) -> dict:
        """The entry's numbers by name, e.g. ``{'c': 4.0}``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "reason"}

    def record(self) -> dict:
        """``{'kind', 'rtol', 'atol', 'reason'}`` as report.json stores it (see the module docstring)."""
        rtol, atol = (0.0 if f is None else getattr(self, f) for f in self._slots)
        return {"kind": self.kind, "rtol": rtol, "atol": atol, "reason": self.reason}


@dataclass(frozen=True, kw_only=True)
class RelAbs(Tolerance):
    """Relative and absolute tolerance: ``|a - e| <= atol + rtol * scale``.

    The scale is ``|e|`` (as in :meth:`check`) unless the test names another: a sum of the terms'
    magnitudes, a row's or an array's largest entry.
    """

    rtol: float
    atol: float
    kind: ClassVar[str] = "relabs"
    _slots: ClassVar[tuple] = ("rtol", "atol")

    def check(self, actual, expected):
        """True where ``|actual - expected| <= atol + rtol * |expected|`` for a finite ``expected``, and
        where ``actual == expected`` for an infinite one (inf == inf of the same sign; the bound
        ``rtol * inf`` would admit any value)."""
        actual = np.asarray(actual)
        expected = np.asarray(expected)
        same_inf = np.isinf(expected) & (actual == expected)
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(expected) & (np.abs(actual - expected) <= self.atol + self.rtol * np.abs(expected))
        return ok | same_inf


@dataclass(frozen=True, kw_only=True)
class Rounding(Tolerance):
    """A multiple c of the unit roundoff: ``|a - e| <= c u (S + |e|)``.

    S is the scale of the rounding in the computation (the reason names it), u = 2^-53 in float64
    (2^-24 where a float32 profile is checked).
    """

    c: float
    kind: ClassVar[str] = "rounding"
    _slots: ClassVar[tuple] = ("c", None)


@dataclass(frozen=True, kw_only=True)
class Sigma(Tolerance):
    """Monte Carlo: ``|estimate - exact| <= k SE + slack``, k standard errors (SE from the samples).

    ``slack`` is an absolute allowance for a known bias of the estimator (0 for an unbiased one).
    """

    k: float
    slack: float = 0.0
    kind: ClassVar[str] = "sigma"
    _slots: ClassVar[tuple] = ("k", "slack")

    @property
    def false_failure_probability(self) -> float:
        """``P(|N(0, 1)| > k)``: the chance that a correct estimate fails (CLT, two-sided)."""
        return math.erfc(self.k / math.sqrt(2.0))


@dataclass(frozen=True, kw_only=True)
class PValue(Tolerance):
    """Significance level of a statistical test: it passes when ``p >= alpha``.

    alpha is the false-failure probability: the chance that a correct sampler fails the test.
    """

    alpha: float
    kind: ClassVar[str] = "pvalue"
    _slots: ClassVar[tuple] = (None, "alpha")


@dataclass(frozen=True, kw_only=True)
class Distance(Tolerance):
    """A distance d that a quantity is kept away from (a margin, not an error bound)."""

    d: float
    kind: ClassVar[str] = "distance"
    _slots: ClassVar[tuple] = (None, "d")


@dataclass(frozen=True, kw_only=True)
class EstimateMultiple(Tolerance):
    """``|error| <= floor + factor * estimate`` for an error estimate that the check computes.

    The check adds the bounds it computes itself (e.g. mass outside a box, rounding); ``factor``
    is the margin on the estimate, ``floor`` the absolute allowance.
    """

    factor: float
    floor: float
    kind: ClassVar[str] = "estimate"
    _slots: ClassVar[tuple] = ("factor", "floor")


#: kind -> class
KINDS = {cls.kind: cls for cls in (RelAbs, Rounding, Sigma, PValue, Distance, EstimateMultiple)}


TOLERANCES: dict[str, Tolerance] = {
    # ---------------------------------------------------------------- closed forms / primitives
    "closed_form_vs_scipy": RelAbs(
        rtol=64 * EPS, atol=64 * EPS,
        reason=_prose("""
            two float64 evaluations of the same closed form (refvae vs scipy.stats) differ by the rounding
            of a few dozen operations; 64 eps covers L up to 64 summed terms; relative to the value, with
            the same absolute floor where it is near 0
        """)),
    "closed_form_vs_quadrature": RelAbs(
        rtol=1e-9, atol=1e-10,
        reason=_prose("""
            scipy.integrate.quad with epsabs=epsrel=1e-12 on a 1-D integrand; its reported error estimate is
            below 1e-11, so 1e-9 relative leaves a factor 100 for the estimate's own error; 1e-10 absolute
            where the value is near 0
        """)),
    "log_softmax_vjp_vs_mpmath": RelAbs(
        rtol=4 * EPS, atol=0.0,
        reason=_prose("""
            log_softmax_vjp is g_j (1 - p_j) - p_j sum_{k != j} g_k with p_j from the exact shift x - max x,
            1 - p_j = -expm1(log p_j) and a compensated sum of g: each product is within a few ulp, so the
            error is a few ulp of the natural scale |g_j| (1 - p_j) + p_j |sum_{k != j} g_k|, applied as an
            absolute bound on that scale. The textbook g_j - p_j sum g fails it by 100% on a confident row
            (p_j = 1 - 1e-17)
        """)),
    "primitive_vs_mpmath": RelAbs(
        rtol=4 * EPS, atol=0.0,
        reason=_prose("""
            logsumexp/softplus/log_sigmoid are within a few ulp of the exact value (mpmath dps=50) on their
            whole domain; 4 eps = 8 u relative
        """)),
    # ---------------------------------------------------------------- gradient checks
    "vjp_central_difference": RelAbs(
        rtol=1e-6, atol=0.0,
        reason=_prose("""
            random-direction central difference with h = eps**(1/3) * scale: truncation O(h^2) ~ 4e-11 *
            |f'''| and rounding O(eps |f| / h) ~ 3.7e-11 * |f| relative to the directional derivative; 1e-6
            leaves room for |f|/|Df| ratios up to ~1e4 and still fails any formula error that changes the
            directional derivative by > 1e-6
        """)),
    "vjp_richardson": RelAbs(
        rtol=1e-8, atol=0.0,
        reason=_prose("""
            Richardson-extrapolated central difference (h and h/2), truncation O(h^4) with h = eps**(1/5) *
            scale; rounding ~ eps/h ~ 1.6e-13 relative
        """)),
    "complex_step": RelAbs(
        rtol=1e-13, atol=0.0,
        reason=_prose("""
            complex step Im f(x + i h u) / h with h = 1e-30 has no subtractive cancellation: the only error
            is the rounding of the analytic code path, a few hundred ulp at most; 1e-13 relative
        """)),
    # ---------------------------------------------------------------- mixture kernel
    "mixture_kernel_c": Rounding(
        c=4.0,
        reason=_prose("""
            forward error bound |f_hat - f| <= c u (|f| + S), S the responsibility-weighted magnitude of the
            summands (refvae.kernels.mixture docstring). Proven: c <= 26 (the a-priori worst case, derived
            in that docstring); tested: every case the tests generate (random, adversarial) must meet c = 4
            (this entry); observed: max c = 2.36 over the 58 mpmath cases of validation/kernel_accuracy.json
        """)),
    "mixture_vs_twin": RelAbs(
        rtol=1e-13, atol=1e-13,
        reason=_prose("""
            the Numba kernel and its NumPy twin sum the same terms in different orders (and the kernel
            compensates); both are within c u (|f|+S) of exact, so they agree to ~1e-14 relative to |f| + S
            for S up to ~100
        """)),
    "mixture_vjp_vs_twin": RelAbs(
        rtol=1e-11, atol=1e-12,
        reason=_prose("""
            gradient sums over B or K responsibility-weighted terms of either sign; summation order differs
            between kernel and twin, so agreement is relative to the sum of absolute values of the terms,
            ~1e-13 for the sizes tested; 1e-11 leaves a margin
        """)),
    # --- layers/likelihoods
    "likelihood_vs_mpmath": RelAbs(
        rtol=16 * EPS, atol=0.0,
        reason=_prose("""
            categorical/Bernoulli log-likelihood vs its definition in mpmath (dps=50): a sum of D <= 16
            non-positive terms, each log_softmax/log_sigmoid within a few ulp (no cancellation: both parts
            of each term are <= 0), so the relative error is at most (D + 8) u <= 12 eps; 16 eps fails any
            formula error larger than ~4e-15 relative
        """)),
    "categorical_kernel": RelAbs(
        rtol=16 * EPS, atol=4 * 2.0 ** -1074,
        reason=_prose("""
            the fused categorical kernel (refvae.kernels.rowkernels), entry by entry, against the NumPy path
            (primitives.log_softmax.unchecked / _softmax_weights) and against mpmath (dps=50): log_softmax and
            softmax of one row. Both paths use the same exact TwoSum shift; they differ in exp (libm vs
            NumPy's SIMD exp, each < 1 ulp) and in the order of the sum s' = sum_c exp(a_c - m) - 1
            (sequential vs pairwise). Kernel vs exact: each term <= 2 u, s' <= (C + 1) u relative, log1p,
            division and the two final roundings <= 3 u, no cancellation (both parts of (delta - log1p(s'))
            + gamma are <= 0): <= (C + 4) u = 10.5 eps for C <= 17; NumPy's own error adds <= (log2 C + 4)
            u; the VJP's observed entry sum_{c != k} p_c adds (C - 2) u (tests: C <= 8). Observed on random
            rows (C <= 40, logits up to ~1000): <= 5 ulp (log_softmax) and <= 6 ulp (softmax) vs NumPy, <= 4
            ulp vs mpmath, <= 1 ulp on the adversarial rows and VJP entries of tests/test_rowkernels.py; the
            former p = exp(log_softmax) is up to ~1000 ulp off for logits of size 30-300 and fails. atol = 4
            subnormal spacings for results below 2^-1022 (absolute precision only)
        """)),
    "activation_derivative_vs_mpmath": RelAbs(
        rtol=8 * EPS, atol=0.0,
        reason=_prose("""
            tanh' = sech^2 x from e = exp(-|x|) as (2e / (1 + e^2))^2, sigmoid' = sigmoid(x) sigmoid(-x),
            softplus' = sigmoid(x): at most ~5 roundings, doubled by the square, <= 10 u = 5 eps relative on
            the whole line (measured 2.8 eps); 1 - tanh^2 or 1 - sigmoid would fail this by orders of
            magnitude for |x| > 5
        """)),
    "vs_torch_float64": RelAbs(
        rtol=1e-12, atol=0.0,
        reason=_prose("""
            the same float64 formulas in refvae and torch autograd, normwise: max|a - e| <= rtol * max|e|
            per array. They differ in summation order (BLAS blocking) and in equivalent forms (tanh' = 1 -
            y^2 in torch vs sech^2 here; sigmoid(a) - x vs x sigmoid(-a) - (1 - x) sigmoid(a)), each a few
            hundred ulp at most for pre-activations of size <= 5; 1e-12 still fails any wrong term
        """)),
    # --- optim/data/io/train
    "optim_vs_exact": RelAbs(
        rtol=16 * EPS, atol=0.0,
        reason=_prose("""
            Adam/Adamax after each of 8 steps vs the textbook recurrences in mpmath (dps=50) from the same
            float64 inputs; element-wise error relative to the magnitude of the terms (tests/test_optim.py
            docstring: sum of |terms| for the first moment and the parameters, the latter times the
            condition number of PyTorch's float64 bias corrections 1 - beta**t). Each step rounds <= 6
            operations per element and old errors decay by beta < 1: <= 3 eps observed (15 seeds x 3
            hyper-parameter sets), <= 6.5 eps for beta1 < 0.5, where ATen's lerp uses 1 - (1 - beta1), which
            differs from beta1 by up to 1 u and compounds over t steps. 16 eps = 3.6e-15 still fails a
            misplaced eps or a missing bias correction
        """)),
    "optim_vs_torch": RelAbs(
        rtol=16 * EPS, atol=0.0,
        reason=_prose("""
            refvae Adam/Adamax vs torch.optim float64 (foreach=False) after each of 20 steps, element-wise
            relative to the magnitude of the terms as for optim_vs_exact. Same order of operations, but on
            FMA hardware torch's vectorised lerp_ and addcmul_ round once where NumPy rounds twice: <= 1 u
            per step of the terms' magnitude, damped by beta; <= 3.8 eps observed over 100 seeds x 3
            hyper-parameter sets
        """)),
    # --- mixture tests
    "mixture_vjp_vs_mpmath": Rounding(
        c=8.0,
        reason=_prose("""
            kernel gradient entries vs mpmath (dps >= 60), as a constant c_g in |err| <= c_g u (n A + W): A
            = sum of |terms| of the entry, n = number of terms summed (K for dz, B for the component
            gradients; recursive summation), W = sum of |term| (P_bk + |f_b| + S_b) where P_bk = |w_k| + 1/2
            sum_l (ln 2 pi + |v_kl| + q_bkl). Each term is g r_bk x and r_bk = exp(t_bk - f_b) inherits the
            absolute rounding error of t_bk (~ u P_bk per term of its sum over L <= 4 here) and of f_b (<= 4
            u (|f_b| + S_b) on every tested case, mixture_kernel_c; the proven bound is 26 u). Observed max
            3.9 on random inputs; 8 = 2x margin. A formula error changes entries by O(1) relative and fails
            it by > 10 orders of magnitude
        """)),
    "mixture_vjp_extreme_single": RelAbs(
        rtol=16 * U, atol=0.0,
        reason=_prose("""
            one component, one query (r = 1 exactly) at log-variances -745..1400 and z - mu up to 1e200, vs
            mpmath: each gradient is one product chain from a = sqrt(1/2) e^{-v/2} (<= 1 ulp exp, 1 rounding
            of sqrt(1/2), 1 product) and z - mu (<= 1 rounding): (z - mu) 2a a <= 6 u, w^2 - 1/2 <= 8 u
            relative; the forward f is within 4 u of |f| + S on every tested case (mixture_kernel_c; proven
            26 u) and S = |f| here. 16 u = 2x margin; the overflow or underflow of e^{-v} on its own (the
            defect) gives NaN, 0 or inf instead
        """)),
    # --- gaussian/primitives
    "gaussian_extreme_vs_mpmath": RelAbs(
        rtol=16 * U, atol=0.0,
        reason=_prose("""
            closed-form Gaussians (log_prob, entropy, cross_entropy, kl, reparameterize and their VJPs) at
            log-variances up to +-1e308 and differences up to 2e308 vs mpmath (256 bits), L = 1, relative to
            the sum of |terms| of each value: x exp(a) is one exp (<= 1 ulp) and one product for |a| <= 708,
            and four factors exp(a/4) (a/4 exact) and four products beyond (<= 8 u); v_q - v_p enters with
            its TwoSum error (else its rounding would cost |a| u); r^2/2, the halvings and the sum over L
            add a few u. Observed max 6.7 u over the grid of tests/test_hostile_numerics.py; 16 u = 2x
            margin. The defects (NaN, 0 or inf where the value is finite) fail it by orders of magnitude
        """)),
    "logsumexp_vs_mpmath_conditioned": RelAbs(
        rtol=4 * EPS, atol=4 * EPS,
        reason=_prose("""
            logsumexp vs mpmath (dps=50) on arbitrary rows, applied as |err| <= atol + rtol * (|f| + sum_k
            softmax_k |x_k|): the algorithm (exact shift by the maximum, expm1 for the maximal term, log1p)
            is backward stable, so its forward error is a few ulp of the condition-weighted magnitude sum_k
            softmax_k |x_k| plus < 1 ulp of log1p(s) <= ln n; the relative form fails only where f ~ 0 by
            cancellation (x = [-ln 2, -ln 2]). Observed <= 0.6 eps of that scale on random rows of length <=
            6 (2 eps relative)
        """)),
    "kl_vs_mpmath": RelAbs(
        rtol=16 * EPS, atol=16 * 2.0 ** -1074,
        reason=_prose("""
            diagonal-Gaussian KL vs mpmath (dps=50), relative: a sum over L <= 8 of non-negative terms (e^a
            - 1 - a by series or expm1, r^2 with r = (mu_q - mu_p) e^{-v_p/2}), each with <= 6 roundings and
            no cancellation, so <= (6 + L) u = 7 eps; observed 4.5 eps over 4000 random cases including
            near-equal arguments. CE - H computed as a difference is off by ~u |CE| / KL relative and fails
            this for KL < 1e-6 |CE|. atol = 16 subnormal spacings (2^-1074): for KL below 2^-1022 (e.g.
            log-variances differing by 1e-155) float64 has only absolute precision
        """)),
    "subnormal_spacing": RelAbs(
        rtol=0.0, atol=4 * 2.0 ** -1074,
        reason=_prose("""
            below 2^-1022 float64 numbers are spaced 2^-1074 = 4.9e-324 apart, so a result that is a few ulp
            right above the subnormal range is a few spacings right (not a few ulp relative) below it, e.g.
            log_softmax([125, -587, -587])[0] = -1.2e-309; tests accept a value that meets either this or
            their relative tolerance
        """)),
    "monte_carlo_k_sigma": Sigma(
        k=5.0,
        reason=_prose("""
            Monte Carlo checks pass when |estimate - exact| <= k * SE, k = 5 and SE the standard error
            estimated from the samples: by the CLT the false-failure probability is P(|N(0,1)| > 5) = 5.7e-7
            per check (<= 1e-6); the tests use >= 1e5 samples, so SE is ~1e-3 of the quantity's spread and
            the errors they target are >= 20 k SE
        """)),
    # --- mixture priors
    "mixture_prior_normalisation": RelAbs(
        rtol=0.0, atol=1e-6,
        reason=_prose("""
            |integral of an L = 2 mixture prior's density - 1| by the tensor-product trapezoid rule with
            step h <= min_k sigma_k / 2 on a box holding every component's mean +- 12 sd. Budget per
            Gaussian component (Poisson summation): lattice-sum error <= 2 exp(-2 pi^2 sigma^2 / h^2) <= 2
            exp(-8 pi^2) ~ 1e-34 per axis, plus the lattice points outside the box, <= 2 (Phi(-12) + h
            phi(12) / sigma) ~ 1e-32; a mixture's error is the weighted mean of its components'. Rounding of
            the ~1e5-term sum ~ 1e-14. Observed <= 5e-16; 1e-6 absolute is far below the factor sqrt(2 pi)
            of a dropped -1/2 ln 2 pi
        """)),
    "mixture_prior_vs_mpmath": RelAbs(
        rtol=32 * U, atol=0.0,
        reason=_prose("""
            |log p_hat - log p| <= rtol (|log p| + S) against the definition in mpmath (dps=50), S the
            responsibility-weighted magnitude of the summands (refvae.kernels.mixture). Budget: the kernel's
            4 u (|f| + S) as tested (mixture_kernel_c; with its proven worst case 26 u the budget would
            exceed 32 u) plus log_softmax's few-ulp error in each log-weight, which moves f by <= sum_k r_k
            |dw_k| <= 8 u S; 32 u leaves a factor > 2 (observed <= 1.5 u). A per-dimension mixture is off by
            O(0.1-1)
        """)),
    "mixture_prior_chi_square": PValue(
        alpha=1e-6,
        reason=_prose("""
            p-value threshold (false-failure probability) of the Pearson chi-square test of sampler vs
            density on 2-D cells with expected counts >= 20 (asymptotic chi-square law). With n = 20000
            samples a sampler using exp(log_var) as the sd (log_vars ~ -1..1) gives a p-value that
            underflows to 0
        """)),
    "mixture_prior_path_sum": RelAbs(
        rtol=1e-12, atol=1e-15,
        reason=_prose("""
            the VAE's encoder gradient vs the sum of its q(z|x) path and its VampPrior path, computed by
            separate runs: the same float64 terms, possibly associated differently; a few ulp of the
            summands' magnitude; 1e-12 relative, 1e-15 absolute
        """)),
    "mixture_prior_vs_torch": RelAbs(
        rtol=1e-11, atol=1e-12,
        reason=_prose("""
            the same prior in PyTorch float64 (torch.logsumexp over the explicit (B, K) terms, autograd
            gradients) vs refvae (streaming kernel, hand-written VJPs): different summation orders, each
            within a few hundred ulp of exact for these small sizes; 1e-11 relative, 1e-12 absolute
        """)),
    # --- flow prior
    "flow_inverse": RelAbs(
        rtol=1e-12, atol=0.0,
        reason=_prose("""
            RealNVP round trips f^-1(f(z)) and f(f^-1(u)), per row: max_l |a - e| <= rtol * max_l |e|. Each
            coupling's inverse recomputes s, t from z_a, which passes through unchanged, so the only error
            is the rounding of (z_b - t) e^-s and y_b e^s + t (a few ulp of |z_b| + |t|), amplified by at
            most e (the tanh-bounded scale) and by the MLPs' sensitivity per later coupling: the error
            behaves like eps |f(z)| ||J^-1|| / |z| (backward stable). Observed <= 3.3e-14 over 90 flows with
            weights 2x the PyTorch init (T = 3, L <= 5, hidden (16, 16), |f(z)| up to ~330): 30x margin.
            Flows scaled to |f(z)| ~ 1e4 (3x init, leaky_relu) reach ~6e-12 by conditioning alone; a wrong
            inverse is O(1) off
        """)),
    "flow_log_det_fd": RelAbs(
        rtol=0.0, atol=1e-6,
        reason=_prose("""
            log|det J| of the RealNVP map by central differences, column by column, h_j = eps**(1/3) max(1,
            |z_j|): each Jacobian entry is off by ~h^2 |f^(3)| / 6 + eps |f| / h ~ 4e-11 (|f^(3)| + |f|),
            and log|det| moves by tr(J^-1 dJ), at most ~ L cond(J) times the relative entry error. Observed
            <= 1.6e-9 (tanh MLPs, weights 2x init, cond(J) <= 190, L <= 5); 1e-6 leaves > 600x, while a
            log-det counted per dimension or with the wrong sign is off by |sum s| ~ 0.1-5
        """)),
    "flow_normalisation": RelAbs(
        rtol=0.0, atol=1e-6,
        reason=_prose("""
            |integral of the L = 2 flow density over a box - 1|. Budget: the mass outside the box, <=
            P(|u|_inf > 6) <= 4 Phi(-6) = 3.9e-9 for u ~ N(0, I) (the box contains f^-1([-6, 6]^2), by
            interval propagation through the inverse couplings), plus the trapezoid rule's error, estimated
            by |I_h - I_2h| (spectral convergence for a smooth integrand negligible on the boundary),
            observed ~1e-13. 1e-6 absolute is far above both and far below the O(0.1) mass error of a wrong
            log-determinant (0.81 and 2.9 observed)
        """)),

    # --- report identities
    "report_elbo_split": RelAbs(
        rtol=1e-12, atol=0.0,
        reason=_prose("""
            ELBO = RE + Omega over a data set (eqs. 4.33-4.35), with the three means taken over the same n =
            N S draws (estimators.elbo_terms): they differ only by rounding, the element-wise sum (<= u
            |elbo_i|) and numpy's pairwise means (<= ~(1 + log2 n) u mean|v|), at most ~64 u (mean|ln
            p(x|z)| + mean|omega_i|) for n <= 2**22; applied relative to |RE| + |Omega|, which for the
            digits models is within a small factor of those means (|omega_i| <~ |RE|), so 1e-12 is >= 10x
            the rounding bound and still fails a dropped or double-counted term, which is >= 1e-6 relative
        """)),
    "report_jensen": RelAbs(
        rtol=64 * EPS, atol=0.0,
        reason=_prose("""
            per test point, ln p_hat(x) = logsumexp_s lw_s - ln S >= mean_s lw_s holds exactly (Jensen /
            AM-GM, equality only if all S log-weights are equal); allowed violation 64 eps |mean_s lw_s|
            (relative) covers the rounding of the online log-sum-exp (a few u of |max lw| + ln S) and of the
            chunked sum of S <= 2**13 log-weights (<= (1 + log2 S) u mean|lw|); no statistical slack: a
            violation beyond it is a bug
        """)),
    "report_closed_form_rounding": Rounding(
        c=64.0,
        reason=_prose("""
            the report's H[q(z|x)] = mean_n 1/2 sum_l (ln 2 pi e + v_nl) in float64 against the same closed
            form evaluated again in numpy.longdouble (the identity row of tools.report.identity_checks),
            |a - e| <= c u scale with scale = mean_n 1/2 sum_l (ln 2 pi e + |v_nl|): each row's sum of L
            terms is off by <= L u of its absolute sum and numpy's pairwise mean over N rows by <= (1 +
            log2 N) u more, so <= (L + 1 + log2 N) u <= 44 u for L <= 16 and N <= 2**20 (the extended
            evaluation adds ~2**-64 relative); c = 64 leaves > 1.4x, while any error in the formula (a
            missing 1/2, ln 2 pi instead of ln 2 pi e, a dropped dimension) is >= 0.1 nats, > 1e13 u scale
        """)),
    "gradcheck_rounding": Rounding(
        c=64.0,
        reason=_prose("""
            the report's gradient check (tools.report.gradient_check.gradcheck_model) takes the rounding error
            of each evaluation of the batch-mean negative ELBO as delta = c u mag, mag = mean(|ln p(x|z)| + |ln
            p(z)| + |ln q(z|x)|) (the magnitude of the summed terms), so the Richardson quotient (4 D(h/2) -
            D(h)) / 3 carries at most 3 delta / h, and the analytic <g, u> at most c u sum |g u|; their sum is
            the rounding floor of the allowance (with the truncation bound (2 Delta / pi)^4 / 4 |D_R|, no
            relative tolerance). Each per-example term is a sum of D + 2 log-densities, each a few u of the
            magnitudes that feed it, and the batch mean adds (1 + log2 B) u; c = 64 covers that with the
            amplification of the 256-wide hidden layers. Observed: the largest |D_R - <g, u>| / allowed is
            0.031 over the 60 arrays of trained standard and flow models (L = 2), i.e. the rounding is <= 2 u
            mag; a planted 1% error in any parameter group is >= 1e4 times its group's smallest allowed /
            |<g, u>|
        """)),
    "gradcheck_kink_margin": Distance(
        d=1e-3,
        reason=_prose("""
            the report's gradient check prefers a batch where every pre-activation of a relu/leaky_relu layer
            is farther than the distance d = 1e-3 from its kink (tools.report.gradient_check.
            choose_gradcheck_batch). Derivation from the step: h = eps**(1/3) max(1, rms(W)) ~ 6.1e-6 moves a
            first-layer pre-activation by h |x . u_j| ~ h |x| |N(0,1)|, |x| ~ 50 for a digit (values 0..16 in
            64 pixels): ~3e-4 at one standard deviation, so beyond d a pre-activation keeps its side in most
            directions. It is a preference, not the guarantee: the check compares the sign of every such
            pre-activation at each of its four evaluation points with t = 0 and halves the step until none
            crosses (a crossing costs a larger rounding floor, never a wider allowance; a kink crossed at
            every step fails the entry)
        """)),
    "verify_golden": Rounding(
        c=64.0,
        reason=_prose("""
            c in the golden-case criterion |a - e| <= c u (S + |e|) + tiny per element (refvae.tools.golden,
            Tolerances), u = 2^-53 (float64 profile) or 2^-24 (float32), S the condition scale stored with
            the case: the RMS change of the element under random-sign relative perturbations of size 1 of
            every input, plus the parts' magnitude where an identity cancels (kl, neg_elbo, loss,
            grad.prior.logits). Derivation: rounding the inputs to u moves an element by ~u S / sqrt(3) (one
            standard deviation); each of the d <= 30 rounding stages between the inputs and the element adds
            as much, so ~u S sqrt(d / 3); 6 standard deviations (6 sqrt(10) ~ 19), x 2 for two
            implementations compared, x 1.7 for S estimated from 16 probes (an underestimate by more than
            1.7x has probability < 0.8% for Gaussian probe sums, chi-square with 16 dof, the worst case; it
            would still leave > 3 standard deviations) gives 64. Observed over the 18 committed cases: at
            most 0.33 c (PyTorch float64 and float32 adapters, examples/torch_adapter.py); every planted bug
            exceeds it by > 1e6 (tests/test_verify.py)
        """)),
    "blas_thread_count": RelAbs(
        rtol=64 * 2.0 ** -53, atol=0.0,
        reason=_prose("""
            loss and gradients of one VAE step computed with 1 and with 2 BLAS threads, per array relative
            to its largest |entry|. Numba's thread count never changes a bit (refvae's kernels fix their
            summation order); the BLAS's may: OpenBLAS's SkylakeX and Haswell kernels split a product over
            its output (bit-identical), its Nehalem kernels also over the inner dimension, and then the last
            bits move (measured: at most 4.7 u of the largest entry, (200, 64) batch, hidden (256, 256),
            five priors). 64 u leaves 13x margin; a wrong formula moves gradients by O(1)
        """)),
    "golden_regeneration": Rounding(
        c=32.0,
        reason=_prose("""
            a regenerated golden value may move by c u (S + |e|), u = 2^-53: refvae against refvae differs
            only in summation order (another BLAS blocks the matrix products differently), which is rounding
            of the kind S measures, at half the margin of verify_golden (one implementation, not two). On
            the same machine regeneration is bit-identical; anything beyond this is a changed formula, draw
            or configuration
        """)),
    "verify_gradient_float32": Sigma(
        k=8.0, slack=0.0,
        reason=_prose("""
            gradient check of a float32 implementation against its own float32 loss: per parameter, the
            slope at 0 of a degree-5 least-squares polynomial through the loss at 25 points in [-h, h]
            along u = g / rms(g) (and 13 points along a random u), h = 8 eps32**(1/3) max(1, rms(param))
            ~ 0.04, capped at half the step at which the case's first leaky-ReLU pre-activation (refvae's,
            linearised) reaches its kink (no kink inside the fit interval); it passes when |<g, u> - slope| <= k SE + 64 eps32 sum |g u|, SE the slope's
            standard error from the fit's residuals. The residuals are the loss's float32 rounding
            noise (about 0.5 eps32 |f| per evaluation, measured on the committed cases); the truncation
            of a degree-5 fit, O(h^6), is far below it. k = 8 is the two-sided 1e-6 quantile of Student's
            t with 19 degrees of freedom (7.07, rounded up): the false-failure probability per entry if
            the noise were independent. The old check (two central differences, floor 10 eps |f| / h)
            let relative errors up to 0.27 pass; along the gradient k SE / |<g, u>| (the resolution) is
            at most 4.4% on the 281 parameters of the 23 committed cases (the torch float32 adapter; worst
            prior.logits of gtm_vamp-gaussian), so a gradient off by 5% is caught on every parameter
            (the check reports its worst resolution)
        """)),
    "verify_normalisation": EstimateMultiple(
        factor=10.0, floor=1e-6,
        reason=_prose("""
            |integral of exp(prior_log_prob) over R^2 - 1| <= floor + factor |I_h - I_2h| + outside +
            rounding (refvae.tools.verify.check_normalisation): the trapezoid rule's error is below |I_h -
            I_2h| (spectral convergence for Gaussian mixtures; O(h^2), error ~ |I_h - I_2h| / 3, for
            leaky-ReLU flows), factor = 10 is the margin on that estimate, floor = 1e-6; outside <= 4
            Phi(-R) is the reference prior's mass outside the box (R = 10 sd, or f^-1([-7, 7]^2) for the
            flow: 5e-12); rounding = c u sum p |log p| h^2. Observed |I - 1| <= 2e-7 (float64 and float32
            PyTorch); a dropped -1/2 ln 2 pi gives 2 pi - 1, a log-det per dimension 0.48, with the wrong
            sign 0.50, unnormalised logits 0.9-1.8
        """)),
    "verify_chi_square": PValue(
        alpha=1e-6,
        reason=_prose("""
            p-value threshold (the false-failure probability) of the Pearson chi-square test of an adapter's
            prior_sample against its own density, 20000 draws over <= 64 cells with expected counts >= 20
            (asymptotic chi-square law; cell probabilities from the density grid, relative error O(h^2) <
            1e-3, which moves the statistic by < 1). The exp(log_var)-as-sd sampler gives statistics
            4000-18000 on 63 dof (p = 0)
        """)),
    "verify_nll": Sigma(
        k=5.0, slack=0.02,
        reason=_prose("""
            a reported NLL (batch mean) passes within k sqrt(2) se + slack of the exact -ln p(x) (2-D
            quadrature, converged to 1e-4 nats): k = 5 standard errors (CLT, two-sided false-failure
            probability 6e-7), se that of refvae's importance-sampled estimate with S = 20000 (0.002-0.013
            on the committed cases), sqrt(2) for an estimate of the same size on the adapter's side, slack =
            0.02 nats for the upward bias of an importance-sampled NLL with fewer proposals (var(w) / 2S).
            Observed |PyTorch - exact| <= 0.014; the expected negative ELBO is 0.16-10 nats above the NLL on
            every committed case
        """)),
}


def tolerance(name: str) -> Tolerance:
    """Look up a tolerance by name (``KeyError`` lists the known names); the entry's kind is its class."""
    try:
        return TOLERANCES[name]
    except KeyError:
        raise KeyError(f"unknown tolerance {name!r}; known: {', '.join(sorted(TOLERANCES))}") from None
