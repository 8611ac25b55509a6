"""refvae.gaussian against scipy.stats, quadrature, Monte Carlo and mpmath; its VJPs against
finite differences and the complex step.

Tolerances come from ``refvae.tolerances``. A closed form that is a sum of terms of either sign
is compared relative to the *sum of the absolute values of its terms* (``scale`` below), the
natural size of its rounding error: ``|got - expected| <= atol + rtol * scale``.

Monte Carlo checks state their false-failure probability in the docstring: with the standard
error SE estimated from the samples, a check passes when ``|estimate - exact| <= k SE`` with
``k = tolerance("monte_carlo_k_sigma").k = 5``, i.e. ``P(|N(0,1)| > 5) = 5.7e-7`` per check
by the central limit theorem (fixed seeds, so a pass is reproducible). Each one also asserts that
an error of the size it is meant to catch would exceed the threshold by a wide margin.
"""

import math

import mpmath as mp
import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from scipy import integrate, stats

from refvae import gaussian as G
from refvae.gradcheck import check_vjp, check_vjp_complex
from refvae.tolerances import tolerance

from gradchecks import all_checks, checked
from strategies import broadcast_gaussian_args, float_arrays, log_vars_range

LOG_2PI = math.log(2 * math.pi)
K_SIGMA = tolerance("monte_carlo_k_sigma").k
P_FALSE = tolerance("monte_carlo_k_sigma").false_failure_probability   # P(|N(0,1)| > k) = 5.7e-7

QP = ("mu_q", "log_var_q", "mu_p", "log_var_p")
QP_LV = ("log_var_q", "log_var_p")



def assert_close(got, expected, scale, tol, what):
    """|got - expected| <= atol + rtol * scale, elementwise, with a readable failure."""
    got, expected, scale = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (got, expected, scale)))
    err = np.abs(got - expected)
    allowed = tol.atol + tol.rtol * scale
    bad = ~(err <= allowed)
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} entries fail; first at {i}: got "
                             f"{got[i]!r}, expected {expected[i]!r}, abs err {err[i]:.3e} > allowed "
                             f"{allowed[i]:.3e} (scale {scale[i]:.3e})")


def log_prob_scale(z, mu, log_var):
    r2 = (z - mu) ** 2 * np.exp(-log_var)
    return 0.5 * np.sum(LOG_2PI + np.abs(log_var) + r2, axis=-1)


def ce_scale(mu_q, log_var_q, mu_p, log_var_p):
    r2 = (mu_q - mu_p) ** 2 * np.exp(-log_var_p)
    return 0.5 * np.sum(LOG_2PI + np.abs(log_var_p) + np.exp(log_var_q - log_var_p) + r2, axis=-1)


def h_scale(log_var):
    return 0.5 * np.sum(LOG_2PI + 1 + np.abs(log_var), axis=-1)


# =========================================================================== closed forms vs scipy

@given(broadcast_gaussian_args(("z", "mu", "log_var"), ("log_var",)))
def test_log_prob_vs_scipy_norm(a):
    """Sum over L of scipy.stats.norm.logpdf (sd = exp(log_var / 2)), with broadcasting."""
    z, mu, lv = a["z"], a["mu"], a["log_var"]
    got = G.log_prob(z, mu, lv)
    expect = stats.norm.logpdf(z, mu, np.exp(0.5 * lv)).sum(-1)
    assert got.shape == np.broadcast_shapes(z.shape, mu.shape, lv.shape)[:-1]
    assert_close(got, expect, log_prob_scale(z, mu, lv), tolerance("closed_form_vs_scipy"), "log_prob")


@given(z=float_arrays((4, 3), -6, 6), mu=float_arrays((3,), -3, 3), lv=float_arrays((3,), *log_vars_range))
def test_log_prob_vs_scipy_multivariate_normal(z, mu, lv):
    """scipy.stats.multivariate_normal with covariance diag(exp(log_var)): a (B, L) batch of z
    against one (L,) mean, the case that catches a per-dimension vs joint mix-up."""
    got = G.log_prob(z, mu, lv)
    expect = stats.multivariate_normal(mean=mu, cov=np.diag(np.exp(lv))).logpdf(z)
    assert_close(got, expect, log_prob_scale(z, mu, lv), tolerance("closed_form_vs_scipy"), "log_prob")


@given(float_arrays(st.sampled_from([(3,), (2, 4), (3, 1, 2)]), *log_vars_range))
def test_entropy_vs_scipy(lv):
    got = G.entropy(lv)
    tol = tolerance("closed_form_vs_scipy")
    assert_close(got, stats.norm.entropy(scale=np.exp(0.5 * lv)).sum(-1), h_scale(lv), tol, "entropy")
    flat = lv.reshape(-1, lv.shape[-1])
    mvn = [stats.multivariate_normal(cov=np.diag(np.exp(v))).entropy() for v in flat]
    assert_close(got.reshape(-1), mvn, h_scale(flat), tol, "entropy vs multivariate_normal")


def test_log_prob_includes_all_constants():
    """At z = mu with log_var = 0 each dimension contributes exactly -ln(2 pi)/2 (no dropped constant)."""
    tol = tolerance("closed_form_vs_scipy")
    for L in (1, 2, 5):
        z = np.zeros(L)
        assert_close(G.log_prob(z, z, z), -0.5 * L * LOG_2PI, 0.5 * L * LOG_2PI, tol, f"L={L}")


# =========================================================================== vs quadrature

#: 1-D cases (mu_q, log_var_q, mu_p, log_var_p): equal, shifted, wide/narrow, extreme variances
QUAD_CASES = [(0.0, 0.0, 0.0, 0.0), (0.3, -1.2, -0.7, 0.8), (2.5, 1.5, -1.0, -0.5),
              (-4.0, -6.0, 1.0, 3.0), (1.0, 5.0, 0.0, -2.0), (0.0, 0.0, 0.0, 1e-6)]


def _quad_expectation(mu_q, lv_q, fn):
    """E_{N(mu_q, e^{lv_q})} fn(z) by adaptive quadrature in standardised coordinates (the tails
    beyond 20 sd carry less than 1e-88 of the mass)."""
    sd = math.exp(0.5 * lv_q)
    phi = lambda t: math.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)   # noqa: E731
    val, err = integrate.quad(lambda t: phi(t) * fn(mu_q + sd * t), -20, 20, points=[0.0],
                              epsabs=1e-12, epsrel=1e-12, limit=200)
    return val, err


def _ln_n(z, mu, lv):
    """Scalar log-density from the textbook form with sigma^2 (independent of refvae's code)."""
    var = math.exp(lv)
    return -0.5 * math.log(2 * math.pi * var) - (z - mu) ** 2 / (2 * var)


@pytest.mark.parametrize("case", QUAD_CASES)
def test_1d_closed_forms_vs_quadrature(case):
    """CE = -int q ln p, H = -int q ln q, KL = int q ln(q/p), each by scipy.integrate.quad."""
    mq, vq, mp_, vp = case
    tol = tolerance("closed_form_vs_quadrature")
    ce, e1 = _quad_expectation(mq, vq, lambda z: -_ln_n(z, mp_, vp))
    h, e2 = _quad_expectation(mq, vq, lambda z: -_ln_n(z, mq, vq))
    kl, e3 = _quad_expectation(mq, vq, lambda z: _ln_n(z, mq, vq) - _ln_n(z, mp_, vp))
    for val, err in ((ce, e1), (h, e2), (kl, e3)):   # the tolerance's premise: estimate 10x below it
        assert err < (tol.atol + tol.rtol * abs(val)) / 10, ("quadrature error estimate", val, err)
    args = [np.array([v]) for v in case]
    assert_close(G.cross_entropy(*args), ce, abs(ce), tol, "CE vs quad")
    assert_close(G.entropy(args[1]), h, abs(h), tol, "H vs quad")
    assert_close(G.kl(*args), kl, abs(kl), tol, "KL vs quad")


def test_2d_cross_entropy_and_entropy_vs_dblquad():
    """L = 2: CE and H as genuine 2-D integrals (scipy.integrate.dblquad over +-12 sd of q, tail
    mass < 1e-31), so the sum over dimensions of the closed form is checked, not assumed."""
    mq, vq = np.array([0.4, -1.1]), np.array([-0.6, 0.9])
    mp_, vp = np.array([-0.5, 0.7]), np.array([0.3, -0.4])
    sd = np.exp(0.5 * vq)
    tol = tolerance("closed_form_vs_quadrature")

    def expect2(fn):
        def integrand(t2, t1):
            z = mq + sd * np.array([t1, t2])
            return math.exp(-0.5 * (t1 * t1 + t2 * t2)) / (2 * math.pi) * fn(z)
        return integrate.dblquad(integrand, -12, 12, -12, 12, epsabs=1e-11, epsrel=1e-11)

    ce, e1 = expect2(lambda z: -sum(_ln_n(z[i], mp_[i], vp[i]) for i in range(2)))
    h, e2 = expect2(lambda z: -sum(_ln_n(z[i], mq[i], vq[i]) for i in range(2)))
    for val, err in ((ce, e1), (h, e2)):
        assert err < (tol.atol + tol.rtol * abs(val)) / 10, ("quadrature error estimate", val, err)
    assert_close(G.cross_entropy(mq, vq, mp_, vp), ce, abs(ce), tol, "CE vs dblquad")
    assert_close(G.entropy(vq), h, abs(h), tol, "H vs dblquad")


# =========================================================================== Monte Carlo

MC_N = 200_000
MC_Q = (np.array([0.5, -1.0, 2.0]), np.array([-1.3, 0.4, 1.1]))
MC_P = (np.array([0.0, 0.5, 1.0]), np.array([0.2, -0.8, 1.5]))


def mc_mean_check(values, exact):
    """(passed, estimate, SE, z-score) of the check |mean - exact| <= k SE."""
    est = float(np.mean(values))
    se = float(np.std(values, ddof=1) / math.sqrt(values.size))
    return abs(est - exact) <= K_SIGMA * se, est, se, (est - exact) / se


def test_cross_entropy_entropy_kl_vs_monte_carlo():
    """CE = E_q[-ln p(z)], H = E_q[-ln q(z)], KL = E_q[ln q - ln p] with z = reparameterize(eps).

    Seed 1234, n = 2e5, L = 3. Each of the 3 checks is |mean - exact| <= 5 SE, false-failure
    probability 5.7e-7 each, <= 1.8e-6 together (union bound; CLT for sums of quadratics of
    Gaussians, skewness / sqrt(n) ~ 1e-2, negligible at 5 sigma). Sensitivity: SE < 0.02 here
    (asserted), so a dropped -ln(2 pi)/2 per dimension (0.92 each, 2.76 in all) is > 100 SE away
    and the planted version is asserted to fail.
    """
    rng = np.random.default_rng(1234)
    eps = rng.standard_normal((MC_N, 3))
    z = G.reparameterize(*MC_Q, eps)
    lq, lp = G.log_prob(z, *MC_Q), G.log_prob(z, *MC_P)
    checks = {"CE": (-lp, G.cross_entropy(*MC_Q, *MC_P)), "H": (-lq, G.entropy(MC_Q[1])),
              "KL": (lq - lp, G.kl(*MC_Q, *MC_P))}
    for name, (vals, exact) in checks.items():
        ok, est, se, zs = mc_mean_check(vals, float(exact))
        assert ok, f"{name}: MC {est:.6f} +- {se:.2e}, closed form {float(exact):.6f}, z = {zs:.2f}"
        assert se < 0.02
    wrong_ce = float(G.cross_entropy(*MC_Q, *MC_P)) - 1.5 * LOG_2PI
    assert not mc_mean_check(-lp, wrong_ce)[0], "a CE without its ln(2 pi) constants must fail"


def sample_moments_check(reparam, mu, log_var, rng, n=MC_N):
    """Samples z = reparam(mu, log_var, eps), eps ~ N(0, I): per dimension the sample mean against
    mu (SE = s / sqrt n) and the sample variance against exp(log_var) (SE = sqrt((m4 - s^4) / n),
    m4 the sample fourth central moment). Returns (all passed, list of z-scores)."""
    eps = rng.standard_normal((n, mu.size))
    z = reparam(mu, log_var, eps)
    zs = []
    for l in range(mu.size):
        c = z[:, l] - z[:, l].mean()
        s2 = c @ c / (n - 1)
        m4 = np.mean(c ** 4)
        zs.append((z[:, l].mean() - mu[l]) / math.sqrt(s2 / n))
        zs.append((s2 - math.exp(log_var[l])) / math.sqrt((m4 - s2 * s2) / n))
    return all(abs(v) <= K_SIGMA for v in zs), zs


REPARAM_MU = np.array([0.5, -2.0, 3.0])
REPARAM_LV = np.array([-1.3, 0.7, 1.6])   # away from 0, where variance and sd coincide


def test_reparameterize_samples_have_mean_mu_and_variance_exp_log_var():
    """z = mu + exp(log_var / 2) eps has mean mu and variance exp(log_var).

    Seed 99, n = 2e5, L = 3: 6 checks at 5 SE, false-failure probability 5.7e-7 each, <= 3.5e-6
    together. Sensitivity: the relative SE of a variance is sqrt(2 / n) = 3.2e-3, so 5 SE is a
    1.6% change; using the variance as the sd (variance exp(2 log_var)) changes it by a factor
    e^{log_var}, at least e^{0.7} here, and fails by > 100 SE (asserted below).
    """
    ok, zs = sample_moments_check(G.reparameterize, REPARAM_MU, REPARAM_LV, np.random.default_rng(99))
    assert ok, f"z-scores (mean, var per dimension): {np.round(zs, 2)}"


def test_planted_variance_as_sd_bug_fails_the_moment_check():
    """Meta-test: the same check rejects mu + exp(log_var) * eps (log-variance used as log-sd)."""
    buggy = lambda mu, log_var, eps: mu + np.exp(log_var) * eps   # noqa: E731
    ok, zs = sample_moments_check(buggy, REPARAM_MU, REPARAM_LV, np.random.default_rng(99))
    assert not ok
    assert max(abs(v) for v in zs) > 20 * K_SIGMA


def test_reparameterized_samples_agree_with_log_prob():
    """Samples and density agree: E[-ln q(z)] over reparameterised z equals the entropy, where a
    sampler using the variance as the sd would be off by sum_l (e^{log_var_l} - 1) / 2 ~ 1.0.
    Seed 7, n = 2e5: false-failure probability 5.7e-7."""
    rng = np.random.default_rng(7)
    mu, lv = REPARAM_MU, REPARAM_LV
    z = G.reparameterize(mu, lv, rng.standard_normal((MC_N, 3)))
    ok, est, se, zs = mc_mean_check(-G.log_prob(z, mu, lv), float(G.entropy(lv)))
    assert ok, (est, se, zs)
    zb = mu + np.exp(lv) * rng.standard_normal((MC_N, 3))
    assert not mc_mean_check(-G.log_prob(zb, mu, lv), float(G.entropy(lv)))[0]


@pytest.mark.slow
def test_monte_carlo_large_sample():
    """n = 1e7 version of the CE check (SE ~ 7e-4): false-failure probability 5.7e-7."""
    rng = np.random.default_rng(4321)
    vals = np.concatenate([-G.log_prob(G.reparameterize(*MC_Q, rng.standard_normal((10 ** 6, 3))), *MC_P)
                           for _ in range(10)])
    ok, est, se, zs = mc_mean_check(vals, float(G.cross_entropy(*MC_Q, *MC_P)))
    assert ok, (est, se, zs)


# =========================================================================== properties

extreme_qp = broadcast_gaussian_args(QP, QP_LV, coord=(-20.0, 20.0), log_var=(-60.0, 60.0))


@given(extreme_qp)
def test_kl_nonnegative_and_zero_exactly_on_equal_arguments(a):
    q = (a["mu_q"], a["log_var_q"])
    with np.errstate(over="raise", invalid="raise", divide="raise"):   # underflow to 0 is fine
        kl = G.kl(*q, a["mu_p"], a["log_var_p"])
        same = G.kl(*q, *q)
    assert np.all(kl >= 0) and np.all(np.isfinite(kl))
    assert np.all(same == 0.0)


@given(broadcast_gaussian_args(QP, QP_LV))
def test_kl_is_ce_minus_h_and_gibbs(a):
    """KL = CE - H to rounding; CE >= H (Gibbs) up to the same rounding; CE[q||q] = H[q]."""
    args = [a[n] for n in QP]
    ce, h, kl = G.cross_entropy(*args), G.entropy(a["log_var_q"]), G.kl(*args)
    scale = ce_scale(*args) + h_scale(a["log_var_q"])
    tol = tolerance("closed_form_vs_scipy")
    assert_close(kl, ce - h, scale, tol, "KL vs CE - H")
    assert np.all(ce - h >= -(tol.atol + tol.rtol * scale)), "Gibbs' inequality violated"
    q = (a["mu_q"], a["log_var_q"])
    assert_close(G.cross_entropy(*q, *q), G.entropy(q[1]), ce_scale(*q, *q) + h_scale(q[1]), tol,
                 "CE[q||q] vs H[q]")


def mp_kl(mq, vq, mp_, vp):
    """KL from its definition in mpmath, from the exact float64 inputs: at dps=50, with the
    working precision of e^a - 1 - a raised by twice the binary exponent of a tiny a (its leading
    term a^2 / 2 is 2|log2 a| bits below the 1 it is computed next to)."""
    s = mp.mpf(0)
    with mp.workdps(50):
        for a, b, c, d in zip(mq, vq, mp_, vp):
            a, b, c, d = (mp.mpf(float(t)) for t in (a, b, c, d))
            x = b - d                                   # relative error < 1e-49
            extra = 2 * max(0, -int(mp.mag(x))) if x else 0
            with mp.workprec(mp.mp.prec + extra):
                s += (mp.exp(x) - 1 - x) + (a - c) ** 2 * mp.exp(-d)
        return float(s / 2)


@given(mq=float_arrays((3,), -3, 3), vp=float_arrays((3,), -5, 5),
       dlv=float_arrays((3,), -1e-3, 1e-3), dmu=float_arrays((3,), -1e-4, 1e-4))
@example(mq=np.zeros(3), vp=np.zeros(3), dlv=np.array([1e-9, -1e-12, 0.0]), dmu=np.zeros(3))
@example(mq=np.ones(3), vp=np.full(3, 2.0), dlv=np.array([0.49, -0.51, 0.5]), dmu=np.array([1e-8, 0, 0]))
def test_kl_vs_mpmath_near_equal(mq, vp, dlv, dmu):
    """Near-equal q and p, where CE - H cancels catastrophically: KL keeps full relative accuracy
    (tolerance kl_vs_mpmath, relative)."""
    vq, mp_ = vp + dlv, mq + dmu
    exact = mp_kl(mq, vq, mp_, vp)
    got = G.kl(mq, vq, mp_, vp)
    assert_close(got, exact, abs(exact), tolerance("kl_vs_mpmath"), "KL near equal")


def test_extreme_log_variances_do_not_overflow():
    """exp(log_var_q - log_var_p), never exp(log_var_q) / exp(log_var_p); r = (z - mu) e^{-v/2}."""
    big = np.array([700.0, 700.0])
    with np.errstate(all="raise"):
        ce = G.cross_entropy(np.zeros(2), big, np.ones(2), big)
        kl = G.kl(np.zeros(2), big, np.ones(2), big)
        lp = G.log_prob(np.zeros(2), np.zeros(2), -big)
    tol = tolerance("closed_form_vs_scipy")
    assert_close(ce, LOG_2PI + 700.0 + 1.0, LOG_2PI + 701.0, tol, "CE at log_var 700")
    assert_close(kl, math.exp(-700.0), math.exp(-700.0), tol, "KL at log_var 700")
    assert lp == -0.5 * 2 * (LOG_2PI - 700.0)


def test_broadcasting_matches_row_loop(rng):
    """A (B, L) z against one (L,) mu / log_var: the same as row by row, and gradients of the
    shared parameters are the sums of the per-row gradients."""
    B, L = 5, 3
    z, mu, lv = rng.normal(size=(B, L)), rng.normal(size=L), rng.normal(size=L)
    g = rng.normal(size=B)
    out = G.log_prob(z, mu, lv)
    assert out.shape == (B,)
    np.testing.assert_array_equal(out, [G.log_prob(z[b], mu, lv) for b in range(B)])
    dz, dmu, dlv = G.log_prob_vjp(g, z, mu, lv)
    assert dz.shape == (B, L) and dmu.shape == (L,) and dlv.shape == (L,)
    rows = [G.log_prob_vjp(g[b], z[b], mu, lv) for b in range(B)]
    tol = tolerance("closed_form_vs_scipy")
    np.testing.assert_array_equal(dz, np.stack([r[0] for r in rows]))
    for i, d in ((1, dmu), (2, dlv)):
        terms = np.stack([r[i] for r in rows])
        assert_close(d, terms.sum(0), np.abs(terms).sum(0), tol, "broadcast gradient")
    # KL of a batch of posteriors against N(0, I) given as (L,) zeros (vae.py's call)
    kl = G.kl(z, lv + 0 * z, np.zeros(L), np.zeros(L))
    np.testing.assert_array_equal(kl, [G.kl(z[b], lv, np.zeros(L), np.zeros(L)) for b in range(B)])
    # S samples per example: eps (S, B, L)
    eps = rng.normal(size=(4, B, L))
    zz = G.reparameterize(z, lv, eps)
    assert zz.shape == (4, B, L)
    dmu_r, dlv_r, deps = G.reparameterize_vjp(np.ones((4, B, L)), z, lv, eps)
    assert dmu_r.shape == (B, L) and dlv_r.shape == (L,) and deps.shape == (4, B, L)
    np.testing.assert_array_equal(dmu_r, np.full((B, L), 4.0))


# =========================================================================== VJPs

def _tuple_pair(f, vjp, names):
    return (lambda *xs: f(*xs)), (lambda g, *xs: vjp(g, *xs))


VJP_CASES = [
    ("log_prob", G.log_prob, G.log_prob_vjp, ("z", "mu", "log_var"), ("log_var",)),
    ("entropy", G.entropy, G.entropy_vjp, ("log_var",), ("log_var",)),
    ("cross_entropy", G.cross_entropy, G.cross_entropy_vjp, QP, QP_LV),
    ("kl", G.kl, G.kl_vjp, QP, QP_LV),
    ("reparameterize", G.reparameterize, G.reparameterize_vjp, ("mu", "log_var", "eps"), ("log_var",)),
]


@pytest.mark.parametrize("name, f, vjp, names, lv_names", VJP_CASES, ids=[c[0] for c in VJP_CASES])
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_vjps_gradcheck(name, f, vjp, names, lv_names, data, seed):
    """check_vjp (central and Richardson) and check_vjp_complex with respect to every input, on
    broadcasting shapes: each gradient must have its input's shape (the checker enforces it).

    Points where some input's gradient (for the checker's own cotangent) nearly vanishes are
    skipped here: a difference quotient there measures only its truncation error (h^2/6 times
    the third derivative), which the checker's allowance (relative to the derivative, plus
    rounding) does not cover: q = p for KL and CE, (z - mu)^2 = sigma^2 for log_prob in log_var.
    Those points are checked by the complex step, which has no truncation error, in
    ``test_vjps_at_stationary_points``.
    """
    a = data.draw(broadcast_gaussian_args(names, lv_names, coord=(-5.0, 5.0), log_var=(-4.0, 4.0)))
    args = tuple(a[n] for n in names)
    v = np.random.default_rng(seed).standard_normal(np.shape(f(*args)))   # the checker's first draw
    assume(all(np.linalg.norm(gr) > 1e-3 for gr in vjp(v, *args)))
    rng = np.random.default_rng(seed)
    all_checks(f, vjp, args, rng)
    grads = vjp(np.ones(np.shape(f(*args))), *args)
    assert len(grads) == len(args) and all(gr.shape == x.shape for gr, x in zip(grads, args))


STATIONARY = [
    ("kl q = p", G.kl, G.kl_vjp, (np.zeros((2, 3)), np.full(3, 0.5), np.zeros(3), np.full((2, 3), 0.5))),
    ("ce q = p", G.cross_entropy, G.cross_entropy_vjp, (np.ones(3), np.zeros(3), np.ones(3), np.zeros(3))),
    ("log_prob r^2 = 1", G.log_prob, G.log_prob_vjp, (np.ones((2, 2)), np.zeros(2), np.zeros(2))),
]


@pytest.mark.parametrize("case", STATIONARY, ids=[c[0] for c in STATIONARY])
def test_vjps_at_stationary_points(case, rng):
    """Zero gradients where the function is stationary, verified by the complex step: inputs with
    a nonzero gradient pass the usual check; for those whose analytic gradient is exactly 0 the
    complex-step estimate must be at the level of its O(h^2) truncation, |numeric| <= h = 1e-30
    (a wrong nonzero gradient would be O(1))."""
    _, f, vjp, args = case
    grads = vjp(np.ones(np.shape(f(*args))), *args)
    zero = [f"arg{i}" for i, gr in enumerate(grads) if np.all(gr == 0)]
    assert zero
    report = check_vjp_complex(f, vjp, args, rng=rng)
    for e in report.entries:
        if e.name in zero:
            assert e.analytic == 0.0 and abs(e.numeric) <= e.step, report
        else:
            assert e.passed, report


@pytest.mark.parametrize("name, f, vjp, names, lv_names", VJP_CASES, ids=[c[0] for c in VJP_CASES])
def test_vjps_at_wide_log_variances(name, f, vjp, names, lv_names, rng):
    """The full property-test range log_var in [-8, 8] (variance ratios up to e^16) at fixed points."""
    args = tuple(rng.uniform(-8, 8, size=(3, 2)) if n in lv_names else rng.normal(size=(3, 2)) * 3
                 for n in names)
    checked(f, vjp, args, rng, "central")
    checked(f, vjp, args, rng, "complex")


def test_planted_wrong_vjps_fail(rng):
    """Meta-test: the gradient checks reject a sign error in dlog_var and a variance-as-sd VJP."""
    z, mu, lv = rng.normal(size=(3, 2)), rng.normal(size=2), rng.normal(size=2)

    def wrong_log_prob_vjp(g, z, mu, log_var):
        dz, dmu, dlv = G.log_prob_vjp(g, z, mu, log_var)
        return dz, dmu, -dlv

    def wrong_reparam_vjp(g, mu, log_var, eps):
        dmu, _, deps = G.reparameterize_vjp(g, mu, log_var, eps)
        return dmu, (g * np.exp(log_var) * eps).sum(0), deps

    assert not check_vjp(G.log_prob, wrong_log_prob_vjp, (z, mu, lv), rng=rng).passed
    assert not check_vjp_complex(G.reparameterize, wrong_reparam_vjp, (mu, lv, z), rng=rng).passed


# =========================================================================== bad input

PUBLIC = [("log_prob", G.log_prob, ("z", "mu", "log_var")), ("entropy", G.entropy, ("log_var",)),
          ("cross_entropy", G.cross_entropy, QP), ("kl", G.kl, QP),
          ("reparameterize", G.reparameterize, ("mu", "log_var", "eps"))]
VJPS = {"log_prob": G.log_prob_vjp, "entropy": G.entropy_vjp, "cross_entropy": G.cross_entropy_vjp,
        "kl": G.kl_vjp, "reparameterize": G.reparameterize_vjp}


@pytest.mark.parametrize("fname, f, names", PUBLIC, ids=[p[0] for p in PUBLIC])
def test_bad_values_name_the_argument(fname, f, names):
    good = [np.zeros((2, 3)) for _ in names]
    for i, name in enumerate(names):
        pattern = rf"\b{name}\b"
        for bad_value, exc in ((np.nan, ValueError), (np.inf, ValueError), (-np.inf, ValueError)):
            args = list(good)
            args[i] = np.array([[0.0, bad_value, 0.0], [0.0, 0.0, 0.0]])
            with pytest.raises(exc, match=pattern):
                f(*args)
            g = np.ones((2, 3)) if fname == "reparameterize" else np.ones(2)
            with pytest.raises(exc, match=pattern):
                VJPS[fname](g, *args)
        for bad_value, exc in (("abc", TypeError), (np.array(["a", "b", "c"]), TypeError),
                               (np.zeros((2, 0)), ValueError), (1.5, ValueError)):
            args = list(good)
            args[i] = bad_value
            with pytest.raises(exc, match=pattern):
                f(*args)


@pytest.mark.parametrize("fname, f, names", [p for p in PUBLIC if len(p[2]) > 1],
                         ids=[p[0] for p in PUBLIC if len(p[2]) > 1])
def test_shape_errors_name_the_arguments(fname, f, names):
    args = [np.zeros((2, 3)) for _ in names]
    args[-1] = np.zeros((2, 4))                       # mismatched latent dimension
    with pytest.raises(ValueError, match=rf"{names[-1]}.*\(2, 4\)"):
        f(*args)
    args[-1] = np.zeros((4, 3))                       # leading axes 2 vs 4 do not broadcast
    with pytest.raises(ValueError, match=rf"broadcast.*{names[0]}.*{names[-1]}"):
        f(*args)


def test_cotangent_shape_is_checked():
    z = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"\bg\b"):
        G.log_prob_vjp(np.ones(3), z, z, z)
    with pytest.raises(ValueError, match=r"\bg\b"):
        G.reparameterize_vjp(np.ones(4), z, z, z)
    with pytest.raises(ValueError, match=r"\bg\b"):
        G.kl_vjp(np.array([np.nan] * 4), z, z, z, z)


def test_float32_is_upcast_and_output_is_float64():
    z = np.ones((2, 3), dtype=np.float32)
    assert G.log_prob(z, z, z).dtype == np.float64
    assert G.kl(z, z, z, z).dtype == np.float64


# =========================================================================== docstrings

@pytest.mark.parametrize("fname", ["log_prob", "entropy", "cross_entropy", "kl", "reparameterize"])
def test_docstring_sections_in_order(fname):
    doc = getattr(G, fname).__doc__
    pos = [doc.find(s) for s in ("Forward", "Backward", "Shapes", "Numerics", "References")]
    assert -1 not in pos and pos == sorted(pos), (fname, pos)
