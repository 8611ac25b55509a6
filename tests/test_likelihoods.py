"""Tests of refvae.likelihoods: categorical, Bernoulli and Gaussian decoders (SPEC section 2).

* VJPs w.r.t. the decoder outputs: random-direction central differences, Richardson, complex step;
* values against the definition by brute force in mpmath (dps=50, explicit probabilities),
  extreme logits (+-1e3, +-1e300) included: finite, no NaN, no clamping;
* the C-order reshape of the categorical logits, the Gaussian against scipy.stats;
* torch float64 autograd (``-m torch``); bad input; the checks reject wrong formulas.

Tolerances come from :data:`refvae.tolerances.TOLERANCES`.
"""

import warnings

import mpmath
import numpy as np
import pytest
import scipy.stats
from hypothesis import assume, example, given

from refvae.gradcheck import GradcheckError, check_vjp
from refvae.likelihoods import (LIKELIHOODS, bernoulli_log_prob, bernoulli_log_prob_vjp,
                                categorical_log_prob, categorical_log_prob_vjp, gaussian_log_prob,
                                gaussian_log_prob_vjp)
from refvae.tolerances import tolerance

from strategies import bernoulli_cases, categorical_cases, check_vjp_robust, gaussian_cases


def test_registry():
    assert tuple(LIKELIHOODS) == ("categorical", "bernoulli", "gaussian")
    assert all(LIKELIHOODS[name].name == name for name in LIKELIHOODS)


# =========================================================================== gradient checks

def _cat_fns(x, C):
    return (lambda a: categorical_log_prob(x, a, C),
            lambda g, a: (categorical_log_prob_vjp(g, x, a, C),))


def _bern_fns(x):
    return lambda a: bernoulli_log_prob(x, a), lambda g, a: (bernoulli_log_prob_vjp(g, x, a),)


def _gauss_fns(x):
    return (lambda m, v: gaussian_log_prob(x, m, v),
            lambda g, m, v: gaussian_log_prob_vjp(g, x, m, v))


@given(categorical_cases())
def test_categorical_vjp(case):
    """Central differences, logits in [-30, 30]."""
    x, logits, C = case
    f, vjp = _cat_fns(x, C)
    check_vjp_robust(f, vjp, (logits,), seed=0)


@given(categorical_cases(lo=-8.0, hi=8.0))
@example((np.array([[0.0, 2.0]]), np.array([[0.0, -19.0, -19.0, -19.0, -19.0, 0.0]]), 3))
def test_categorical_vjp_richardson(case):
    """Richardson, logits in [-8, 8] (and pinned examples).

    The check's step is h = eps**(1/5) * rms(logits): it grows with a common offset of the logits,
    to which log_softmax is blind (shift invariance), while the O(h**4) truncation does not
    shrink. At logits ~ 23 (h = 0.016) the truncation alone is ~1e-8 relative, the tolerance; with
    |logits| <= 8 it is below 1e-9. Central differences cover [-30, 30].

    The pinned example is a confident prediction, 1 - p_k = 1.1e-8: the VJP's entry at the observed
    value must be sum_{c != k} p_c (1 - p_k by subtraction has relative error 1e-8 and fails
    here) -- a regression test.
    """
    x, logits, C = case
    f, vjp = _cat_fns(x, C)
    check_vjp_robust(f, vjp, (logits,), seed=1, method="richardson")


@given(categorical_cases(lo=-2.0, hi=2.0))
def test_categorical_vjp_complex_step(case):
    """Complex step on logits in [-2, 2] only.

    The complex step differentiates the *forward's formula*. log_softmax at the row maximum k is
    (a_k - m) - log1p(s'), whose imaginary parts h u_k and h sum_c p_c u_c cancel to
    h (1 - p_k) u_k - ...: the rounding of the forward is amplified by 1 / (1 - p_k). So the
    complex step is cancellation-free only while no prediction is confident: with |a| <= 2 and
    C >= 2, 1 - p_k >= e^-4 / (1 + e^-4) = 0.018, an amplification below 60, i.e. below 1e-14
    relative, inside the complex_step tolerance. (At logits [0, -9, -9] the forward's complex step
    is off by 2.6e-13 while the VJP is exact to 2e-16 against mpmath.) C = 1 has p = 1 and a zero
    gradient, which both sides give exactly. The central and Richardson checks cover [-30, 30].
    """
    x, logits, C = case
    f, vjp = _cat_fns(x, C)
    check_vjp_robust(f, vjp, (logits,), seed=2, method="complex")


def test_categorical_vjp_vs_mpmath_confident():
    """The VJP g (onehot - softmax) at confident predictions, entry by entry against mpmath."""
    a = np.array([[0.0, -9.0, -9.0, -19.0, -19.0, 0.0, 40.0, 0.0, 0.0]])
    x = np.array([[0.0, 2.0, 0.0]])
    got = categorical_log_prob_vjp(np.ones(1), x, a, 3)[0]
    want = []
    with mpmath.workdps(50):
        for d in range(3):
            e = [mpmath.exp(mpmath.mpf(float(v))) for v in a[0, 3 * d:3 * d + 3]]
            want += [float((c == int(x[0, d])) - e[c] / mpmath.fsum(e)) for c in range(3)]
    assert tolerance("primitive_vs_mpmath").check(got, np.array(want)).all(), (got, want)


@given(bernoulli_cases())
def test_bernoulli_vjp(case):
    x, logits = case
    f, vjp = _bern_fns(x)
    check_vjp_robust(f, vjp, (logits,), seed=0)
    check_vjp_robust(f, vjp, (logits,), seed=1, method="richardson")
    check_vjp_robust(f, vjp, (logits,), seed=2, method="complex")


@given(gaussian_cases())
def test_gaussian_vjp(case):
    """Both log_var shapes: (D,) shared by the batch (its gradient is summed over b) and (B, D)."""
    x, mean, log_var = case
    f, vjp = _gauss_fns(x)
    check_vjp_robust(f, vjp, (mean, log_var), seed=0)
    check_vjp_robust(f, vjp, (mean, log_var), seed=1, method="richardson")
    dmean, dlog_var = vjp(np.ones(x.shape[0]), mean, log_var)
    assert dmean.shape == mean.shape and dlog_var.shape == log_var.shape


@given(gaussian_cases())
def test_gaussian_vjp_complex_step(case):
    """Complex step where no entry of dlog_var is a cancellation.

    dlog_var = (r^2 - 1) / 2 with r^2 = (x - mean)^2 e^{-log_var}; the VJP and the complex step of
    the forward -(log_var + r^2) / 2 both carry an absolute error of a few ulp of 1, which is
    relative 1 / |r^2 - 1| to the entry. With |r^2 - 1| >= 1e-2 that is below 1e-13 (the complex
    step tolerance); closer to 1 the point is left to the central and Richardson checks above.
    """
    x, mean, log_var = case
    r2 = (x - mean) ** 2 * np.exp(-np.broadcast_to(log_var, x.shape))
    assume(np.all(np.abs(r2 - 1) >= 1e-2))
    f, vjp = _gauss_fns(x)
    check_vjp_robust(f, vjp, (mean, log_var), seed=2, method="complex")


# =========================================================================== against the definition

def _mp_categorical(x, logits, C):
    """sum_d log p_d[x_d] with the explicit probability p_k = e^{a_k} / sum_c e^{a_c}
    = 1 / (1 + sum_{c != k} e^{a_c - a_k}), in mpmath (dps=50). The float64 logits are exact mpf
    values, the differences a_c - a_k are rounded to 166 bits, and mpmath's exponent range is
    unbounded (e^{-2e300} is a number, not 0). The log of p is taken as -log1p(s): with log(1 + s)
    any s < 1e-50 would be lost at this precision (e.g. logits [700, 0])."""
    B, D = x.shape
    a = logits.reshape(B, D, C)
    out = []
    with mpmath.workdps(50):
        for b in range(B):
            tot = mpmath.mpf(0)
            for d in range(D):
                k = int(x[b, d])
                ak = mpmath.mpf(float(a[b, d, k]))
                # log p = -log(1 + s), s = sum_{c != k} e^{a_c - a_k}; log1p keeps s << 1e-50
                s = mpmath.fsum(mpmath.exp(mpmath.mpf(float(a[b, d, c])) - ak) for c in range(C) if c != k)
                tot -= mpmath.log1p(s)
            out.append(float(tot))
    return np.array(out)


def _mp_bernoulli(x, logits):
    """sum_d x_d log p_d + (1 - x_d) log(1 - p_d), p = 1 / (1 + e^{-a}), 1 - p = 1 / (1 + e^{a}),
    in mpmath (dps=50), the logs as -log1p(e^{-+a}) so that p within 1e-50 of 1 is not rounded to 1
    (logits -700 with x = 0). A term whose weight is 0 is skipped."""
    out = []
    with mpmath.workdps(50):
        for xb, ab in zip(x, logits):
            tot = mpmath.mpf(0)
            for xd, ad in zip(xb, ab):
                A, X = mpmath.mpf(float(ad)), mpmath.mpf(float(xd))
                # log p = log(1 / (1 + e^{-a})) = -log1p(e^{-a}); log(1 - p) = -log1p(e^{a})
                if X != 0:
                    tot -= X * mpmath.log1p(mpmath.exp(-A))
                if X != 1:
                    tot -= (1 - X) * mpmath.log1p(mpmath.exp(A))
            out.append(float(tot))
    return np.array(out)


def _assert_close(actual, expected, tol, what):
    assert not np.any(np.isnan(actual)), f"{what}: NaN in {actual}"
    ok = tol.check(actual, expected)
    assert ok.all(), (f"{what}: {np.sum(~ok)} of {ok.size} rows off; first: {actual[~ok][0]!r} vs "
                      f"{expected[~ok][0]!r} (rtol {tol.rtol:.1e})")


@given(categorical_cases(extreme=True))
@example((np.array([[0.0, 1.0, 1.0]]),
          np.array([[1e300, -1e300, -1e300, 1e300, 1e3, -1e3, 0.1, -700.1, 0.0]]), 3))
@example((np.array([[0.0, 2.0]]), np.array([[40.0, 0.0, 0.0, -1e300, -1e300, 1e300]]), 3))
def test_categorical_vs_definition(case):
    x, logits, C = case
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no overflow / invalid warnings either
        got = categorical_log_prob(x, logits, C)
        grad = categorical_log_prob_vjp(np.ones(x.shape[0]), x, logits, C)
    _assert_close(got, _mp_categorical(x, logits, C), tolerance("likelihood_vs_mpmath"), "categorical")
    assert np.all(np.isfinite(grad))
    assert np.all(got <= 0)


@given(bernoulli_cases(extreme=True))
@example((np.array([[1.0, 0.0, 1.0, 0.0, 0.5]]), np.array([[1e300, 1e300, -1e300, -1e300, 1e300]])))
@example((np.array([[1.0, 0.0, 1.0, 0.0]]), np.array([[40.0, -40.0, 1e3, -1e3]])))
def test_bernoulli_vs_definition(case):
    x, logits = case
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = bernoulli_log_prob(x, logits)
        grad = bernoulli_log_prob_vjp(np.ones(x.shape[0]), x, logits)
    _assert_close(got, _mp_bernoulli(x, logits), tolerance("likelihood_vs_mpmath"), "bernoulli")
    assert np.all(np.isfinite(grad))
    assert np.all(got <= 0)


def test_no_clamping_at_extreme_logits():
    """A clamped probability (p = clip(sigmoid(a), 1e-7, 1 - 1e-7), softmax + 1e-10, ...) would give
    -16 or -23 here instead of the exact values."""
    np.testing.assert_array_equal(bernoulli_log_prob([[0.0], [1.0], [1.0]], [[1e300], [-1e3], [40.0]]),
                                  [-1e300, -1e3, bernoulli_log_prob([[1.0]], [[40.0]])[0]])
    assert bernoulli_log_prob([[1.0]], [[40.0]])[0] == -4.248354255291589e-18   # -log1p(e^-40)
    np.testing.assert_array_equal(categorical_log_prob([[1.0]], [[1e300, -1e300]], 2), [-2e300])
    np.testing.assert_array_equal(categorical_log_prob([[0.0]], [[1e300, -1e300]], 2), [0.0])


def test_vjp_exact_at_extremes():
    """Bernoulli: x sigma(-a) - (1 - x) sigma(a) keeps full relative accuracy where x - sigma(a)
    cancels; categorical: onehot - softmax is exact when one logit dominates."""
    tol = tolerance("primitive_vs_mpmath")
    got = bernoulli_log_prob_vjp(np.ones(4), [[1.0], [0.0], [1.0], [0.0]], [[40.0], [-40.0], [1e300], [-1e300]])
    with mpmath.workdps(50):
        s40 = float(1 / (1 + mpmath.exp(40)))
    assert tol.check(got[:, 0], [s40, -s40, 0.0, 0.0]).all(), got
    d = categorical_log_prob_vjp(np.array([2.0]), [[1.0, 0.0]], [[1e300, -1e300, -1e3, 1e3]], 2)
    np.testing.assert_array_equal(d, [[-2.0, 2.0, 2.0, -2.0]])   # g (onehot - softmax), softmax 0/1
    d = categorical_log_prob_vjp(np.array([2.0]), [[0.0, 1.0]], [[1e300, -1e300, -1e3, 1e3]], 2)
    np.testing.assert_array_equal(d, [[0.0, 0.0, 0.0, 0.0]])     # certain and right: no gradient


def test_categorical_reshape_is_c_order():
    """logits[b, d * C + c] is the logit of value c in dimension d (C order), not [b, c * D + d]."""
    rng = np.random.default_rng(0)
    B, D, C = 3, 4, 5
    logits = rng.standard_normal((B, D * C))
    x = rng.integers(0, C, (B, D)).astype(float)
    want = np.zeros(B)
    for b in range(B):
        for d in range(D):
            row = logits[b, d * C:(d + 1) * C]
            want[b] += row[int(x[b, d])] - np.log(np.sum(np.exp(row)))
    tol = tolerance("closed_form_vs_scipy")
    assert tol.check(categorical_log_prob(x, logits, C), want).all()
    f_order = logits.reshape(B, C, D).transpose(0, 2, 1).reshape(B, D * C)   # the wrong layout
    assert not tol.check(categorical_log_prob(x, f_order, C), want).all()


@given(gaussian_cases())
def test_gaussian_vs_scipy(case):
    x, mean, log_var = case
    want = scipy.stats.norm.logpdf(x, mean, np.exp(0.5 * np.broadcast_to(log_var, x.shape))).sum(axis=1)
    _assert_close(gaussian_log_prob(x, mean, log_var), want, tolerance("closed_form_vs_scipy"), "gaussian")


def test_gaussian_log_var_shapes_agree():
    rng = np.random.default_rng(0)
    x, mean, lv = rng.standard_normal((3, 4)), rng.standard_normal((3, 4)), rng.standard_normal(4)
    full = np.tile(lv, (3, 1))
    np.testing.assert_array_equal(gaussian_log_prob(x, mean, lv), gaussian_log_prob(x, mean, full))
    g = rng.standard_normal(3)
    dm1, dlv1 = gaussian_log_prob_vjp(g, x, mean, lv)
    dm2, dlv2 = gaussian_log_prob_vjp(g, x, mean, full)
    np.testing.assert_array_equal(dm1, dm2)
    assert dlv1.shape == (4,) and dlv2.shape == (3, 4)
    assert tolerance("closed_form_vs_scipy").check(dlv1, dlv2.sum(axis=0)).all()


# =========================================================================== the checks can fail

def test_checks_reject_wrong_formulas():
    rng = np.random.default_rng(3)
    B, D, C = 3, 4, 5
    x = rng.integers(0, C, (B, D)).astype(float)
    logits = rng.standard_normal((B, D * C)) * 3
    f, _ = _cat_fns(x, C)
    wrong_cat = {  # softmax without the onehot; g not applied per example; F-order reshape
        "dlogits = -g softmax": lambda g, a: (categorical_log_prob_vjp(g, x, a, C)
                                              - g[:, None] * np.eye(C)[x.astype(int)].reshape(B, D * C),),
        "sum(g) for every row": lambda g, a: (categorical_log_prob_vjp(np.full(B, g.sum()), x, a, C),),
    }
    for label, vjp in wrong_cat.items():
        assert not check_vjp(f, vjp, (logits,), rng=np.random.default_rng(0)).passed, label
        with pytest.raises(GradcheckError):
            check_vjp_robust(f, vjp, (logits,), seed=0, method="richardson")
    xb = rng.integers(0, 2, (B, D)).astype(float)
    fb, _ = _bern_fns(xb)
    wrong = lambda g, a: (g[:, None] * (xb - 1 / (1 + np.exp(a))),)   # noqa: E731  sigma(-a) for sigma(a)
    assert not check_vjp(fb, wrong, (logits[:, :D],), rng=np.random.default_rng(0)).passed
    # a likelihood that drops the normalising constant, or uses log_var as a log-sd, fails vs scipy
    xg, mg, lv = rng.standard_normal((B, D)), rng.standard_normal((B, D)), rng.standard_normal(D)
    want = scipy.stats.norm.logpdf(xg, mg, np.exp(0.5 * lv)).sum(axis=1)
    assert not tolerance("closed_form_vs_scipy").check(gaussian_log_prob(xg, mg, 2 * lv), want).all()
    # and the mpmath definition catches an answer off by one part in 1e14
    got = categorical_log_prob(x, logits, C)
    assert not tolerance("likelihood_vs_mpmath").check(got * (1 + 1e-14), _mp_categorical(x, logits, C)).all()


# =========================================================================== bad input

def test_categorical_bad_input():
    x, a = np.array([[0.0, 2.0]]), np.zeros((1, 6))
    for bad_x, msg in (([[0.0, 3.0]], r"^x must hold category indices in 0\.\.2"),
                       ([[-1.0, 0.0]], r"^x must hold category indices in 0\.\.2"),
                       ([[0.5, 1.0]], r"^x must hold integer category indices"),
                       ([[np.nan, 1.0]], r"^x must not contain NaN"),
                       ([[np.inf, 1.0]], r"^x must not contain NaN or inf"),
                       ([0.0, 1.0], r"^x must have 2 dimension")):
        with pytest.raises(ValueError, match=msg):
            categorical_log_prob(bad_x, a, 3)
        with pytest.raises(ValueError, match=msg):
            categorical_log_prob_vjp(np.ones(1), bad_x, a, 3)
    with pytest.raises(ValueError, match=r"^logits must have shape \(B, D\*C\) = \(1, 6\)"):
        categorical_log_prob(x, np.zeros((1, 5)), 3)
    with pytest.raises(ValueError, match=r"^logits must have shape"):
        categorical_log_prob(x, np.zeros((2, 6)), 3)
    for v in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match=r"^logits must not contain"):
            categorical_log_prob(x, np.array([[0, v, 0, 0, 0, 0]]), 3)
    with pytest.raises(ValueError, match=r"^num_vals must be >= 1"):
        categorical_log_prob(x, a, 0)
    with pytest.raises(TypeError, match=r"^num_vals must be an integer"):
        categorical_log_prob(x, a, 3.0)
    with pytest.raises(ValueError, match=r"^g must have shape \(1\)"):
        categorical_log_prob_vjp(np.ones(2), x, a, 3)
    with pytest.raises(ValueError, match=r"^g must not contain NaN"):
        categorical_log_prob_vjp(np.array([np.nan]), x, a, 3)


def test_bernoulli_bad_input():
    x, a = np.array([[0.0, 1.0]]), np.zeros((1, 2))
    for bad_x, msg in (([[0.0, 1.5]], r"^x must lie in \[0, 1\]"), ([[-0.1, 1.0]], r"^x must lie in \[0, 1\]"),
                       ([[np.nan, 1.0]], r"^x must not contain NaN")):
        with pytest.raises(ValueError, match=msg):
            bernoulli_log_prob(bad_x, a)
        with pytest.raises(ValueError, match=msg):
            bernoulli_log_prob_vjp(np.ones(1), bad_x, a)
    with pytest.raises(ValueError, match=r"^logits must have the shape of x \(1, 2\)"):
        bernoulli_log_prob(x, np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"^logits must not contain"):
        bernoulli_log_prob(x, [[0.0, np.inf]])
    with pytest.raises(ValueError, match=r"^g must have shape"):
        bernoulli_log_prob_vjp(np.ones((1, 1)), x, a)


def test_gaussian_bad_input():
    x, m = np.zeros((2, 3)), np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"^mean must have the shape of x \(2, 3\)"):
        gaussian_log_prob(x, np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ValueError, match=r"^log_var must have shape \(D,\) = \(3,\) or \(B, D\)"):
        gaussian_log_prob(x, m, np.zeros(2))
    with pytest.raises(ValueError, match=r"^log_var must have shape"):
        gaussian_log_prob(x, m, np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"^log_var must have (shape|1 or 2 dimension)"):
        gaussian_log_prob(x, m, 0.0)
    with pytest.raises(ValueError, match=r"^log_var must have 1 or 2 dimension"):
        gaussian_log_prob(x, m, np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match=r"^log_var must not contain"):
        gaussian_log_prob(x, m, [0.0, np.nan, 0.0])
    with pytest.raises(ValueError, match=r"^x must not contain"):
        gaussian_log_prob(np.full((2, 3), np.inf), m, np.zeros(3))
    with pytest.raises(ValueError, match=r"^g must have shape \(2\)"):
        gaussian_log_prob_vjp(np.ones(3), x, m, np.zeros(3))


# =========================================================================== torch float64

def _torch():
    return pytest.importorskip("torch", reason="torch is an optional dependency (pip install refvae[torch]); "
                                               "the float64 cross-checks against autograd are skipped")


def _assert_normwise(actual, expected, what):
    tol = tolerance("vs_torch_float64")
    err, scale = float(np.max(np.abs(actual - expected))), float(np.max(np.abs(expected)))
    assert err <= tol.rtol * scale, f"{what}: max abs err {err:.3e} > {tol.rtol:.0e} * {scale:.3e}"


@pytest.mark.torch
@given(categorical_cases(lo=-8.0, hi=8.0))
def test_categorical_vs_torch(case):
    torch = _torch()
    x, logits, C = case
    B, D = x.shape
    ta = torch.tensor(logits, requires_grad=True)
    tlp = torch.log_softmax(ta.view(B, D, C), dim=-1).gather(
        -1, torch.from_numpy(x.astype(np.int64))[..., None])[..., 0].sum(-1)
    g = np.random.default_rng(0).standard_normal(B)
    tlp.backward(torch.from_numpy(g))
    _assert_normwise(categorical_log_prob(x, logits, C), tlp.detach().numpy(), "categorical log p")
    _assert_normwise(categorical_log_prob_vjp(g, x, logits, C), ta.grad.numpy(), "categorical dlogits")


@pytest.mark.torch
@given(bernoulli_cases(lo=-5.0, hi=5.0))
def test_bernoulli_vs_torch(case):
    # |logits| <= 5: torch's gradient sigmoid(a) - x cancels for large a (at a = 30 with x = 1 it
    # keeps 3 digits), refvae's form does not; where they differ torch is the inaccurate one
    torch = _torch()
    x, logits = case
    ta = torch.tensor(logits, requires_grad=True)
    tlp = -torch.nn.functional.binary_cross_entropy_with_logits(ta, torch.from_numpy(x), reduction="none").sum(-1)
    g = np.random.default_rng(0).standard_normal(x.shape[0])
    tlp.backward(torch.from_numpy(g))
    _assert_normwise(bernoulli_log_prob(x, logits), tlp.detach().numpy(), "bernoulli log p")
    _assert_normwise(bernoulli_log_prob_vjp(g, x, logits), ta.grad.numpy(), "bernoulli dlogits")


@pytest.mark.torch
@given(gaussian_cases())
def test_gaussian_vs_torch(case):
    torch = _torch()
    x, mean, log_var = case
    tm, tv = torch.tensor(mean, requires_grad=True), torch.tensor(log_var, requires_grad=True)
    tlp = torch.distributions.Normal(tm, torch.exp(0.5 * tv)).log_prob(torch.from_numpy(x)).sum(-1)
    g = np.random.default_rng(0).standard_normal(x.shape[0])
    tlp.backward(torch.from_numpy(g))
    _assert_normwise(gaussian_log_prob(x, mean, log_var), tlp.detach().numpy(), "gaussian log p")
    dmean, dlog_var = gaussian_log_prob_vjp(g, x, mean, log_var)
    _assert_normwise(dmean, tm.grad.numpy(), "gaussian dmean")
    _assert_normwise(dlog_var, tv.grad.numpy(), "gaussian dlog_var")


# =========================================================================== the Likelihood protocol

from refvae import likelihoods  # noqa: E402
from refvae.likelihoods import (Bernoulli, Categorical, Gaussian, Likelihood,  # noqa: E402
                                make_likelihood, register_likelihood)


def _objects_and_data(rng, B=5, D=4, C=3):
    return [(Categorical(D, C), rng.integers(0, C, (B, D)).astype(float), 3.0 * rng.normal(size=(B, D * C)), {}),
            (Bernoulli(D), rng.uniform(size=(B, D)), 3.0 * rng.normal(size=(B, D)), {}),
            (Gaussian(D), rng.normal(size=(B, D)), rng.normal(size=(B, D)),
             {"decoder.log_var": 0.3 * rng.normal(size=D)}),
            (Gaussian(D, log_var=-0.5), rng.normal(size=(B, D)), rng.normal(size=(B, D)), {})]


def test_likelihood_objects_are_the_module_functions():
    """forward/backward/log_prob of each object give the bits of the public functions."""
    rng = np.random.default_rng(7)
    for lik, x, out, params in _objects_and_data(rng):
        g = rng.normal(size=x.shape[0])
        log_px, cache = lik.forward(params, lik.check_x(x), out)
        dout, grads = lik.backward(g, cache)
        if lik.name == "categorical":
            want = categorical_log_prob(x, out, lik.num_vals), categorical_log_prob_vjp(g, x, out, lik.num_vals), {}
        elif lik.name == "bernoulli":
            want = bernoulli_log_prob(x, out), bernoulli_log_prob_vjp(g, x, out), {}
        else:
            lv = params.get("decoder.log_var", np.full(x.shape[1], -0.5))
            dmean, dlv = gaussian_log_prob_vjp(g, x, out, lv)
            want = gaussian_log_prob(x, out, lv), dmean, ({"decoder.log_var": dlv} if params else {})
        assert np.array_equal(log_px, want[0]) and np.array_equal(lik.log_prob(params, x, out), want[0])
        assert np.array_equal(dout, want[1]) and dout.flags.c_contiguous and dout.dtype == np.float64
        assert list(grads) == list(want[2]) == list(lik.param_shapes)
        assert all(np.array_equal(grads[k], want[2][k]) for k in grads)
        assert out.shape[1] == lik.out_dim
        assert lik.mean(params, out).shape == x.shape
        assert lik.sample(params, out, np.random.default_rng(0)).shape == x.shape
        assert make_likelihood(**{"name": lik.name, "x_dim": lik.x_dim},
                               **{k: v for k, v in lik.config().items() if k != "name"}).config() == lik.config()


def test_make_likelihood_names_unknown_options_and_names():
    with pytest.raises(ValueError, match="unknown option.*'log_var'.*categorical likelihood; it takes num_vals"):
        make_likelihood("categorical", 3, num_vals=4, log_var=0.0)
    with pytest.raises(ValueError, match="it takes no options"):
        make_likelihood("bernoulli", 3, num_vals=4)
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'"):
        make_likelihood("poisson", 3)
    with pytest.raises(TypeError, match="num_vals must be an integer >= 2 for the categorical"):
        Categorical(3, None)


class ToyLaplace(Likelihood):
    """A likelihood from outside refvae: unit-scale Laplace around the decoder's D outputs,
    ln p(x|z) = sum_d [-ln 2 - |x_d - m_d|]."""

    name = "toy_laplace"

    def log_prob(self, params, x, out):
        return np.sum(-np.log(2.0) - np.abs(x - out), axis=1)

    def backward(self, g, cache):
        _, x, out = cache
        return np.ascontiguousarray(g[:, None] * np.sign(x - out)), {}

    def mean(self, params, out):
        return out

    def sample(self, params, out, rng):
        return out + rng.laplace(size=out.shape)


@pytest.fixture
def toy_laplace(monkeypatch):
    """ToyLaplace registered in a copy of the registry (the original is back after the test)."""
    monkeypatch.setattr(likelihoods, "LIKELIHOODS", dict(likelihoods.LIKELIHOODS))
    return register_likelihood(ToyLaplace)


def test_registered_likelihood_runs_in_the_vae(toy_laplace):
    """A likelihood registered from outside: the VAE builds, saves its config, samples, and its
    gradient passes the finite-difference check."""
    from refvae.gradcheck import check_vjp
    from refvae.vae import VAE
    assert list(likelihoods.LIKELIHOODS)[-1] == "toy_laplace" and "toy_laplace" not in LIKELIHOODS
    rng = np.random.default_rng(2)
    model = VAE(5, 2, (4,), "tanh", "toy_laplace", prior="mog", rng=rng)
    assert model.likelihood.name == "toy_laplace" and model.num_vals is None
    assert VAE.from_config(model.config()).config() == model.config()
    x, eps = rng.normal(size=(4, 5)), rng.standard_normal((4, 2))

    def f(params):
        return model.neg_elbo(x, eps, params=params).value

    def vjp(g, params):
        return {k: g * v for k, v in model.neg_elbo_and_grad(x, eps, params=params)[1].items()}

    report = check_vjp(f, vjp, dict(model.params), rng=rng)
    assert report.passed, str(report)
    assert model.sample(3, rng, mode="sample").shape == (3, 5)


def test_register_likelihood_refusals(toy_laplace):
    assert register_likelihood(ToyLaplace) is ToyLaplace        # the same class twice: fine
    with pytest.raises(TypeError, match="subclass of refvae.likelihoods.Likelihood"):
        register_likelihood(object)

    class Unnamed(Likelihood):
        pass

    with pytest.raises(ValueError, match="its own class attribute name"):
        register_likelihood(Unnamed)

    class Impostor(ToyLaplace):
        pass

    with pytest.raises(ValueError, match="'toy_laplace' is taken by ToyLaplace"):
        register_likelihood(Impostor)
    with pytest.raises(ValueError, match="'gaussian' is taken by Gaussian"):
        register_likelihood(type("G2", (Gaussian,), {}))
