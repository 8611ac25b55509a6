"""Hostile numerics at the edges of float64 (issue 13: items 2.4, 2.5, 2.9, 2.10 mixture part).

Every test carries ``@pytest.mark.hostile(cls, outcome)`` (tests/conftest.py). Exact values are
checked against mpmath at >= 200 bits (``refvae.tolerances`` entries name the bounds); named
errors are checked by exception type and a ``match=`` on the argument's name.
"""

import math
import re

import mpmath
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from refvae import gaussian
from refvae.kernels import mixture
from refvae.kernels.mixture import (combine_partials, finalize_partials, mixture_log_prob,
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
    want = -mpmath.mpf(1.5) * (mpmath.log(2 * mpmath.pi) + v)   # exact, L = 3
    assert _close(mixture_log_prob(np.zeros((1, 3)), np.zeros((1, 3)), np.full((1, 3), v),
                                   np.zeros(1))[0], want,
                  tolerance("mixture_vjp_extreme_single").rtol)


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


# =========================================================================== log_prob passed to the VJP (item 5)

def _vjp_case(seed=0, B=5, K=4, L=3):
    r = np.random.default_rng(seed)
    return (r.standard_normal(B), r.standard_normal((B, L)), r.standard_normal((K, L)),
            r.uniform(-1, 1, (K, L)), np.log(r.dirichlet(np.ones(K))))


@pytest.mark.hostile("magnitude", "named error")
@pytest.mark.parametrize("how", ["+1", "-1", "+ln K + 1e-6", "-inf", "1e300", "-1e300", "row 3 + 1.5"])
def test_mixture_vjp_wrong_log_prob_named_error(how):
    """An ans (the forward's log_prob) outside [max_k t, max_k t + ln K] (off by 1, -inf, +-1e300) passed to the mixture VJP."""
    g, z, mu, lv, lw = _vjp_case()
    f = mixture_log_prob(z, mu, lv, lw)
    bad = {"+1": f + 1, "-1": f - 1, "+ln K + 1e-6": f + math.log(4) + 1e-6 + 1e-8 * abs(f),
           "-inf": np.full(5, -np.inf), "1e300": np.full(5, 1e300), "-1e300": np.full(5, -1e300),
           "row 3 + 1.5": f + np.array([0, 0, 0, 1.5, 0])}[how]
    with pytest.raises(ValueError, match=r"ans is not the forward.*ans\[\d\]"):
        mixture_log_prob_vjp(g, z, mu, lv, lw, ans=bad)


@pytest.mark.hostile("non-finite", "named error")
@pytest.mark.parametrize("value,shape", [(np.nan, 5), (np.inf, 5), (0.0, 4), (0.0, (5, 1))])
def test_mixture_vjp_log_prob_nan_inf_shape_named_error(value, shape):
    """ans (the forward's log_prob) with NaN, +inf or the wrong shape passed to the mixture VJP."""
    g, z, mu, lv, lw = _vjp_case()
    f = np.full(shape, value)
    with pytest.raises(ValueError, match="ans"):
        mixture_log_prob_vjp(g, z, mu, lv, lw, ans=f)


@pytest.mark.hostile("magnitude", "exact value")
@pytest.mark.parametrize("seed", range(4))
def test_mixture_vjp_correct_log_prob_accepted_same_bits(seed):
    """The forward's own log_prob as ans (and the twin's, and the sharded one) passes the check, same bits."""
    g, z, mu, lv, lw = _vjp_case(seed, B=40, K=300, L=4)
    lw[::7] = -np.inf
    z[3] = 1e3                                      # a row whose terms are all far in the tail
    f = mixture_log_prob(z, mu, lv, lw)
    want = mixture_log_prob_vjp(g, z, mu, lv, lw)
    for given_f in (f, mixture.mixture_log_prob_numpy(z, mu, lv, lw),
                    finalize_partials(*combine_partials([mixture_partial(z, mu[:150], lv[:150], lw[:150]),
                                                         mixture_partial(z, mu[150:], lv[150:], lw[150:])]))):
        got = mixture_log_prob_vjp(g, z, mu, lv, lw, ans=given_f)
        if given_f is f:
            assert all(np.array_equal(a, b) for a, b in zip(got, want))
        else:
            # another forward's rounding of f (|df| <= c u (|f| + S), 1e-10 on the far row) scales
            # row b's responsibilities by e^{-df_b}: the gradients move by at most that factor
            df = float(np.max(np.abs(given_f - f)))
            tol = tolerance("mixture_vjp_vs_twin")
            for a, b in zip(got, want):
                scale = np.max(np.abs(b))
                assert np.all(np.abs(a - b) <= (2 * df + tol.rtol) * scale + tol.atol)


@pytest.mark.hostile("non-finite", "exact value")
def test_mixture_vjp_log_prob_minus_inf_rows_accepted():
    """ans = -inf on rows whose terms are all -inf (all weights -inf) is the forward: zero gradients."""
    z, mu, lv = np.zeros((2, 2)), np.zeros((3, 2)), np.zeros((3, 2))
    lw = np.full(3, -np.inf)
    got = mixture_log_prob_vjp(np.ones(2), z, mu, lv, lw, ans=np.full(2, -np.inf))
    assert all(np.array_equal(a, np.zeros_like(a)) for a in got)
    with pytest.raises(ValueError, match=r"ans\[0\] = 0.0"):
        mixture_log_prob_vjp(np.ones(2), z, mu, lv, lw, ans=np.zeros(2))


# =========================================================================== partial combiners (item 4)

def _partial(seed=0):
    r = np.random.default_rng(seed)
    return mixture_partial(r.standard_normal((3, 2)), r.standard_normal((4, 2)), np.zeros((4, 2)),
                           np.full(4, -math.log(8)))


_P0 = _partial(0)
_P1 = _partial(1)


@pytest.mark.hostile("non-finite", "named error")
@pytest.mark.parametrize("m,s,match", [
    (np.array([np.nan, 0, 0]), np.ones(3), r"partials\[1\] m must not contain NaN"),
    (np.array([np.inf, 0, 0]), np.ones(3), r"partials\[1\] m must not contain NaN or \+inf"),
    (np.zeros(3), np.array([1.0, np.nan, 1.0]), r"partials\[1\] s must not contain NaN"),
    (np.zeros(3), np.array([1.0, np.inf, 1.0]), r"partials\[1\] s must not contain"),
    (np.zeros(3), np.array([1.0, -np.inf, 1.0]), r"partials\[1\] s must not contain"),
    (np.zeros(3), np.array([1.0, -2.0, 1.0]), r"partials\[1\] s must be >= 0.*index \(1,\)"),
    (np.zeros(3), np.array([1.0, 0.0, 1.0]), r"partials\[1\] s must be >= 0, and > 0 where"),
    (np.full(3, -np.inf), -np.ones(3), r"partials\[1\] s must be >= 0"),
])
def test_combine_partials_bad_values_named_error(m, s, match):
    """combine_partials with NaN/+inf m, non-finite or negative s, or s = 0 at a finite m."""
    with pytest.raises(ValueError, match=match):
        combine_partials([_P0, (m, s)])


@pytest.mark.hostile("shape", "named error")
@pytest.mark.parametrize("parts,exc,match", [
    ([], ValueError, "partials must contain at least one"),
    ([_P0, (np.zeros(4), np.ones(4))], ValueError, r"partials\[1\] has shape \(4,\)"),
    ([_P0, (np.zeros(3), np.ones(4))], ValueError, r"partials\[1\] m and partials\[1\] s must have the same shape"),
    ([_P0, (np.zeros(3),)], TypeError, r"partials\[1\] must be an \(m, s\) pair"),
    ([np.zeros(3)], TypeError, r"partials\[0\] must be an \(m, s\) pair"),
    ([_P0, "ms"], TypeError, r"partials\[1\] must be an \(m, s\) pair"),
    (5, TypeError, "partials must be a sequence"),
    ([_P0, (np.zeros(3), np.array(["a", "b", "c"]))], TypeError, r"partials\[1\] s must be an array"),
])
def test_combine_partials_bad_shapes_named_error(parts, exc, match):
    """combine_partials with mismatched shapes, non-pairs, an empty list or a non-sequence."""
    with pytest.raises(exc, match=match):
        combine_partials(parts)


@pytest.mark.hostile("non-finite", "exact value")
def test_combine_partials_empty_shard_and_finalize_exact():
    """An empty shard (m = -inf, s = 0) combines to the other shard exactly; all-empty gives -inf."""
    empty = (np.full(3, -np.inf), np.zeros(3))
    m, s = combine_partials([empty, _P0, empty])
    assert np.array_equal(m, _P0[0]) and np.array_equal(s, _P0[1])
    m, s = combine_partials([empty, empty])
    assert np.all(m == -np.inf) and np.all(s == 0)
    assert np.all(finalize_partials(m, s) == -np.inf)
    both = finalize_partials(*combine_partials([_P0, _P1]))
    assert np.all(np.isfinite(both))


@pytest.mark.hostile("non-finite", "named error")
@pytest.mark.parametrize("m,s,match", [
    (np.array([np.nan]), np.ones(1), r"^m must not contain NaN"),
    (np.array([np.inf]), np.ones(1), r"^m must not contain NaN or \+inf"),
    (np.zeros(1), np.array([np.nan]), r"^s must not contain NaN"),
    (np.zeros(1), np.array([-1.0]), r"^s must be >= 0"),
    (np.zeros(1), np.array([0.0]), r"^s must be >= 0, and > 0 where m is finite"),
    (np.zeros(2), np.ones(3), r"^m and s must have the same shape"),
])
def test_finalize_partials_bad_values_named_error(m, s, match):
    """finalize_partials with NaN/+inf m, NaN/negative s, s = 0 at finite m, mismatched shapes."""
    with pytest.raises(ValueError, match=match):
        finalize_partials(m, s)


# =========================================================================== train.fit gradients (item 2)

class _PoisonedGrad:
    """A quadratic toy model whose gradient of one parameter is ``bad`` from training step ``at``."""

    def __init__(self, name, bad, at, index):
        self.latent_dim = 2
        self.params = {"w": np.zeros(3), "a": np.zeros((2, 2))}
        self.name, self.bad, self.at, self.index = name, bad, at, index
        self.step = 0
        self.val_params = []

    def neg_elbo_and_grad(self, x, eps):
        self.step += 1
        grads = {"w": self.params["w"] - x.mean(0), "a": np.ones((2, 2)) * 0.1}
        if self.step >= self.at:
            grads[self.name] = grads[self.name].copy()
            grads[self.name][self.index] = self.bad
        return float(np.sum((self.params["w"] - x.mean(0)) ** 2)), grads

    def loss(self, x, eps):
        self.val_params.append({k: v.copy() for k, v in self.params.items()})
        return float(np.sum((self.params["w"] - x.mean(0)) ** 2)) + 10.0 / len(self.val_params)


@pytest.mark.hostile("non-finite", "clean stop")
@pytest.mark.parametrize("name,bad,at,index,where", [
    ("w", np.nan, 1, (1,), r"epoch 1, batch 1, step 1"),
    ("a", np.inf, 7, (1, 0), r"epoch 2, batch 2, step 7"),
    ("w", -np.inf, 11, (2,), r"epoch 3, batch 1, step 11"),
])
def test_fit_stops_at_first_non_finite_gradient(name, bad, at, index, where):
    """train.fit with a NaN/inf gradient entry: FloatingPointError naming parameter, epoch, step; best params restored."""
    from refvae.train import fit
    rng = np.random.default_rng(0)
    x_train, x_val = rng.normal(2.0, 1.0, (50, 3)), rng.normal(2.0, 1.0, (20, 3))
    model = _PoisonedGrad(name, bad, at, index)
    idx = re.escape(str(index))
    with pytest.raises(FloatingPointError,
                       match=rf"gradient of parameter '{name}' is -?(nan|inf) at index {idx} \({where}\)"):
        fit(model, x_train, x_val, rng=rng, batch_size=10, max_epochs=5, patience=5, quiet=True)
    assert all(np.all(np.isfinite(v)) for v in model.params.values())
    best = model.val_params[-1]  # validation losses decrease every epoch: the last one is the best
    for k in model.params:
        np.testing.assert_array_equal(model.params[k], best[k])


# =========================================================================== closed-form Gaussians (item 3)

_MP = mpmath.mpf


def _ln2pi():
    return mpmath.log(2 * mpmath.pi)


def _d(a, b):
    return _MP(float(a)) - _MP(float(b))


def _ex_log_prob(z, mu, v):
    """(value, scale, dz, dmu, dv, dv_scale) for L = 1, g = 1, exact in mpmath."""
    d, v = _d(z, mu), _MP(v)
    q = d * d * mpmath.exp(-v)
    val = -(_ln2pi() + v + q) / 2
    ivd = d * mpmath.exp(-v)
    return val, abs(_ln2pi() + v) / 2 + q / 2, -ivd, ivd, (q - 1) / 2, q / 2 + _MP(0.5)


def _ex_ce_kl(mq, vq, mp, vp):
    """exact CE, KL (with scales) and their gradients for L = 1, g = 1."""
    d, vq, vp = _d(mq, mp), _MP(vq), _MP(vp)
    a = vq - vp
    ratio = mpmath.exp(a)
    q = d * d * mpmath.exp(-vp)
    ivd = d * mpmath.exp(-vp)
    ce = (_ln2pi() + vp + ratio + q) / 2
    ce_scale = (abs(_ln2pi() + vp) + ratio + q) / 2
    kl = (mpmath.expm1(a) - a + q) / 2
    ce_grads = (ivd, ratio / 2, -ivd, (1 - ratio - q) / 2)
    kl_grads = (ivd, mpmath.expm1(a) / 2, -ivd, -(mpmath.expm1(a) + q) / 2)
    grad_scales = (abs(ivd), ratio / 2 + _MP(0.5), abs(ivd), (1 + ratio + q) / 2)
    return ce, ce_scale, kl, ce_grads, kl_grads, grad_scales


def _assert_exact(got, want, scale, what, rtol=None):
    """|got - want| <= rtol * scale (+ a few subnormal spacings); +-inf only if want is beyond range."""
    rtol = tolerance("gaussian_extreme_vs_mpmath").rtol if rtol is None else rtol
    got = float(np.asarray(got).ravel()[0])
    if abs(want) > DBL_MAX:
        assert got == (math.inf if want > 0 else -math.inf), f"{what}: {got!r}, exact {mpmath.nstr(want, 5)}"
        return
    assert math.isfinite(got), f"{what}: {got!r}, exact {float(want)!r}"
    err = abs(_MP(got) - want)
    assert err <= rtol * scale + 4 * TINY, f"{what}: {got!r}, exact {float(want)!r}, err {float(err):.3g}"


_LV = (-1e308, -1e5, -3000.0, -1500.0, -1420.0, -745.0, -720.0, -3.0, 0.5, 745.0, 1420.0, 1500.0,
       3000.0, 1e5, 1e308)
_DZ = ((0.0, 0.0), (1e-300, 0.0), (1e-10, 0.0), (1.5, -0.25), (1e10, 3.0), (1e300, -1e300),
       (1e308, -1e308))


@pytest.mark.hostile("magnitude", "exact value")
@pytest.mark.parametrize("v", _LV)
@pytest.mark.parametrize("z,mu", _DZ)
def test_gaussian_log_prob_and_vjp_extreme_exact(z, mu, v):
    """gaussian.log_prob and its VJP at log_var from -1e308 to 1e308 and z - mu up to 2e308 vs mpmath."""
    val, scale, dz, dmu, dv, dv_scale = _ex_log_prob(z, mu, v)
    _assert_exact(gaussian.log_prob([z], [mu], [v]), val, scale, "log_prob")
    gz, gmu, gv = gaussian.log_prob_vjp(1.0, [z], [mu], [v])
    _assert_exact(gz, dz, abs(dz), "dz")
    _assert_exact(gmu, dmu, abs(dmu), "dmu")
    _assert_exact(gv, dv, dv_scale, "dlog_var")
    # a zero cotangent gives zero gradients, never 0 * inf
    assert all(np.array_equal(a, [0.0]) for a in gaussian.log_prob_vjp(0.0, [z], [mu], [v]))


@pytest.mark.hostile("magnitude", "exact value")
@pytest.mark.parametrize("v", [[1e308, 1e308], [-1e308, -1e308], [1.7e308, -1.7e308], [1e308, 5e307, 5e307]])
def test_gaussian_entropy_huge_exact(v):
    """gaussian.entropy([1e308, 1e308]) and other sums that overflow term by term (exact ~1e308)."""
    want = mpmath.fsum((_ln2pi() + 1 + _MP(x)) / 2 for x in v)
    _assert_exact(gaussian.entropy(v), want, sum(abs(_ln2pi() + 1 + _MP(x)) / 2 for x in v), "entropy")
    assert np.array_equal(gaussian.entropy_vjp(1.0, v)[0], np.full(len(v), 0.5))


_VQP = ((0.0, 0.0), (-1e308, 1e308), (1e308, -1e308), (710.0, 0.0), (709.0, -1.2), (-1500.0, -1500.0),
        (3000.0, 1500.0), (-745.0, 745.0), (1e5, 1e5 - 700.0), (0.5, -1420.0), (-1e300, 1e300))


@pytest.mark.hostile("magnitude", "exact value")
@pytest.mark.parametrize("vq,vp", _VQP)
@pytest.mark.parametrize("mq,mp", ((0.0, 0.0), (1e-300, 0.0), (2.0, -1.0), (1e300, -1e300), (1e308, -1e308)))
def test_gaussian_cross_entropy_kl_and_vjps_extreme_exact(mq, mp, vq, vp):
    """gaussian.cross_entropy/kl and their VJPs at log-variances to +-1e308, mean gaps to 2e308, vs mpmath."""
    ce, ce_scale, kl, ce_g, kl_g, g_scales = _ex_ce_kl(mq, vq, mp, vp)
    args = ([mq], [vq], [mp], [vp])
    _assert_exact(gaussian.cross_entropy(*args), ce, ce_scale, "cross_entropy")
    _assert_exact(gaussian.kl(*args), kl, kl, "kl")
    for name, got, want, sc in zip(("dmu_q", "dlog_var_q", "dmu_p", "dlog_var_p"),
                                   gaussian.cross_entropy_vjp(1.0, *args), ce_g, g_scales):
        _assert_exact(got, want, sc, f"cross_entropy_vjp {name}")
    for name, got, want, sc in zip(("dmu_q", "dlog_var_q", "dmu_p", "dlog_var_p"),
                                   gaussian.kl_vjp(1.0, *args), kl_g, g_scales):
        _assert_exact(got, want, sc, f"kl_vjp {name}")
    assert all(np.array_equal(a, [0.0]) for a in gaussian.kl_vjp(0.0, *args))
    assert all(np.array_equal(a, [0.0]) for a in gaussian.cross_entropy_vjp(0.0, *args))


_REP = ((0.0, 1500.0, 0.0), (0.0, 1500.0, 1e-300), (1.0, -1500.0, 1e300), (-2.0, 3000.0, 1e-308),
        (0.0, -1e308, 1e308), (5.0, 1e308, 0.0), (1e308, -2.0, -1e308), (0.0, 10.0, 1e300),
        (0.0, 1500.0, 1.0), (0.0, 1e308, 1e-300), (1e308, 0.0, 1e308), (0.0, 1418.0, 1.0))


@pytest.mark.hostile("magnitude", "exact value")
@pytest.mark.parametrize("mu,v,eps", _REP)
def test_gaussian_reparameterize_extreme_exact_or_named_error(mu, v, eps):
    """reparameterize(mu, log_var, eps) at log_var to +-1e308, eps to 1e308: exact z, or ValueError on overflow."""
    sd_eps = mpmath.exp(_MP(v) / 2) * _MP(eps)
    z = _MP(mu) + sd_eps
    if abs(z) > DBL_MAX:
        with pytest.raises(ValueError, match=r"overflows float64.*log_var=.*eps="):
            gaussian.reparameterize([mu], [v], [eps])
    else:
        _assert_exact(gaussian.reparameterize([mu], [v], [eps]), z, abs(_MP(mu)) + abs(sd_eps), "z")
    deps, dlv = mpmath.exp(_MP(v) / 2), sd_eps / 2
    if abs(deps) > DBL_MAX or abs(dlv) > DBL_MAX:
        with pytest.raises(ValueError, match=r"the gradient d(eps|log_var) overflows.*log_var="):
            gaussian.reparameterize_vjp([1.0], [mu], [v], [eps])
    else:
        gmu, gv, ge = gaussian.reparameterize_vjp([1.0], [mu], [v], [eps])
        assert np.array_equal(gmu, [1.0])
        _assert_exact(gv, dlv, abs(dlv), "dlog_var")
        _assert_exact(ge, deps, abs(deps), "deps")


# =========================================================================== primitives (item 6)

from refvae import primitives as P  # noqa: E402

_any_float = st.floats(allow_nan=False, allow_infinity=True, width=64)
_finite_float = st.floats(allow_nan=False, allow_infinity=False, width=64)


def _mp_softplus(x):
    x = _MP(x)
    return x + mpmath.log1p(mpmath.exp(-x)) if x > 0 else mpmath.log1p(mpmath.exp(x))


def _mp_sigmoid(x):
    return 1 / (1 + mpmath.exp(-_MP(x)))


def _rel_ok(got, want, rtol):
    got = float(got)
    if mpmath.isinf(want) or abs(want) > DBL_MAX:
        return got == (math.inf if want > 0 else -math.inf)
    return abs(_MP(got) - want) <= rtol * abs(want) + 2 * TINY


@pytest.mark.hostile("magnitude", "exact value")
@settings(max_examples=200)
@given(x=_any_float)
def test_primitives_elementwise_whole_float_line_exact(x):
    """softplus/log_sigmoid/sigmoid (and VJPs at g = 1) at any float64 incl. +-inf, +-1e308, subnormals vs mpmath."""
    tol = tolerance("primitive_vs_mpmath").rtol
    with mpmath.workdps(60):
        for got, want in ((P.softplus([x])[0], _mp_softplus(x)),
                          (P.log_sigmoid([x])[0], -_mp_softplus(-x)),
                          (P.sigmoid([x])[0], _mp_sigmoid(x)),
                          (P.softplus_vjp([1.0], [x])[0][0], _mp_sigmoid(x)),
                          (P.log_sigmoid_vjp([1.0], [x])[0][0], _mp_sigmoid(-x))):
            assert _rel_ok(got, want, tol), (x, float(got), float(want))


@pytest.mark.hostile("magnitude", "exact value")
@settings(max_examples=150)
@given(row=st.lists(_any_float, min_size=1, max_size=5))
def test_logsumexp_whole_float_line_exact(row):
    """logsumexp of rows of any float64 (+-inf, +-1e308, subnormals, huge spreads) vs mpmath."""
    tol = tolerance("logsumexp_vs_mpmath_conditioned")
    got = float(P.logsumexp(np.array(row)))
    with mpmath.workdps(60):
        if any(v == math.inf for v in row):
            assert got == math.inf
            return
        fin = [_MP(v) for v in row if v != -math.inf]
        if not fin:
            assert got == -math.inf
            return
        want = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in fin))
        w = [mpmath.exp(v - want) for v in fin]
        scale = abs(want) + mpmath.fsum(wi * abs(v) for wi, v in zip(w, fin))
        assert abs(_MP(got) - want) <= tol.atol + tol.rtol * scale, (row, got, float(want))


@pytest.mark.hostile("magnitude", "exact value")
@settings(max_examples=150)
@given(row=st.lists(_any_float, min_size=1, max_size=5),
       g=st.lists(st.floats(-1e308, 1e308, width=64), min_size=5, max_size=5))
@example(row=[5e-324, -5e-324], g=[1e308] * 5)
@example(row=[0.0, 0.0, 1.0], g=[1e308, 1e308, -1e308, 0.0, 0.0])
@example(row=[0.0, -np.inf, 1e308], g=[1e308] * 5)
def test_primitive_vjps_finite_cotangents_never_nan(row, g):
    """logsumexp_vjp/log_softmax_vjp/softplus_vjp/log_sigmoid_vjp: any x, any finite g up to 1e308: no NaN, sums exact."""
    x = np.array(row)
    gx = np.array(g[:len(row)])
    outs = (P.logsumexp_vjp(gx[0], x)[0], P.log_softmax_vjp(gx, x)[0], P.softplus_vjp(gx, x)[0],
            P.log_sigmoid_vjp(gx, x)[0])
    for o in outs:
        assert not np.isnan(o).any(), (row, g, outs)
    # log_softmax_vjp: the exact |dx_j| = |g_j - p_j sum_k g_k| <= |g_j| + sum_k |g_k|: where that
    # bound is below the float maximum the result must be finite (a spurious overflow of the sum
    # of g gave -inf or NaN), and within it everywhere (checked scaled)
    n = len(row)
    sc = 2.0 ** -64
    bound = np.abs(gx) * sc + np.sum(np.abs(gx) * sc)
    # (where the bound itself reaches the float maximum an infinite result is within it: the exact
    # value can sit within an ulp of the overflow threshold, e.g. g = [2^1023 - 2^970, 2^1023])
    within = np.abs(outs[1]) * sc <= bound * (1 + 1e-14)
    assert np.all(within | (np.isinf(outs[1]) & (bound * (1 + 1e-14) >= DBL_MAX * sc))), (row, g, outs[1])
    ok = bound < DBL_MAX * sc / 1.01
    assert np.all(np.isfinite(outs[1][ok])), (row, g, outs[1])


@pytest.mark.hostile("non-finite", "named error")
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("fn", ["logsumexp_vjp", "log_softmax_vjp", "softplus_vjp", "log_sigmoid_vjp"])
def test_primitive_vjps_non_finite_cotangent_named_error(fn, bad):
    """Primitive VJPs with a NaN or +-inf cotangent g (no value: inf * 0, inf - inf): ValueError naming g."""
    x = np.array([[0.0, -np.inf, 3.0]])
    g = np.array([[1.0, bad, 2.0]]) if fn != "logsumexp_vjp" else np.array([bad])
    with pytest.raises(ValueError, match=r"^g must not contain NaN or inf"):
        getattr(P, fn)(g, x)


@pytest.mark.hostile("non-finite", "named error")
@pytest.mark.parametrize("fn", ["logsumexp", "log_softmax", "softplus", "log_sigmoid", "sigmoid"])
def test_primitives_nan_input_named_error(fn):
    """Primitives with NaN input: ValueError naming x and the index."""
    with pytest.raises(ValueError, match=r"^x must not contain NaN.*index \(1, 0\)"):
        getattr(P, fn)(np.array([[0.0], [np.nan]]))


@pytest.mark.hostile("shape", "named error")
@pytest.mark.parametrize("x", [np.zeros(0), np.zeros((2, 0)), np.zeros((0, 3))])
@pytest.mark.parametrize("fn", ["logsumexp", "log_softmax", "softplus", "log_sigmoid", "sigmoid"])
def test_primitives_empty_input_named_error(fn, x):
    """Primitives with an empty array: ValueError naming x."""
    with pytest.raises(ValueError, match=r"^x must not be empty"):
        getattr(P, fn)(x)


# =========================================================================== estimators (item 6)

from refvae import estimators as E  # noqa: E402
from refvae.vae import VAE  # noqa: E402


def _small_vae(prior="standard", likelihood="gaussian"):
    return VAE(3, 2, (4,), "tanh", likelihood, prior=prior, rng=np.random.default_rng(1))


_EST_CALLS = {
    "encode_all": lambda m, x, r: E.encode_all(m, x),
    "elbo_terms": lambda m, x, r: E.elbo_terms(m, x, r, 2),
    "conditional_entropy": lambda m, x, r: E.conditional_entropy(m, x),
    "cross_entropy": lambda m, x, r: E.cross_entropy(m, x, r, 2),
    "omega_decomposition": lambda m, x, r: E.omega_decomposition(m, x, r, 2),
    "aggregated_posterior_stats": lambda m, x, r: E.aggregated_posterior_stats(m, x, r, 2),
    "hole_metrics": lambda m, x, r: E.hole_metrics(m, x, r, 20),
    "log_likelihood": lambda m, x, r: E.log_likelihood(m, x, r, 10),
    "density_grid": lambda m, x, r: E.density_grid(m, x, 5),
}


def _values(out):
    vals = []
    if isinstance(out, dict):
        for v in out.values():
            vals += _values(v)
    elif isinstance(out, E.Estimate):
        vals += [out.value, out.se]
    elif isinstance(out, tuple):
        for v in out:
            vals += _values(v)
    else:
        vals += np.ravel(out).tolist()
    return vals


@pytest.mark.hostile("type", "named error")
@pytest.mark.parametrize("model", [None, "vae", 3])
@pytest.mark.parametrize("fn", sorted(_EST_CALLS))
def test_estimators_bad_model_named_error(fn, model):
    """Every estimator with model None, a string or a number: TypeError naming model."""
    with pytest.raises(TypeError, match=r"^model must be a refvae.vae.VAE"):
        _EST_CALLS[fn](model, np.zeros((4, 3)), np.random.default_rng(0))


@pytest.mark.hostile("non-finite", "named error")
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("fn", sorted(_EST_CALLS))
def test_estimators_non_finite_x_named_error(fn, bad):
    """Every estimator with NaN or +-inf in the data x: ValueError naming x and the index."""
    x = np.zeros((4, 3))
    x[2, 1] = bad
    with pytest.raises(ValueError, match=r"^x must not contain NaN or inf.*index \(2, 1\)"):
        _EST_CALLS[fn](_small_vae("mog"), x, np.random.default_rng(0))


@pytest.mark.hostile("shape", "named error")
@pytest.mark.parametrize("x", [np.zeros((0, 3)), np.zeros((4, 2)), np.zeros(3), np.zeros((2, 2, 3))])
@pytest.mark.parametrize("fn", sorted(_EST_CALLS))
def test_estimators_bad_x_shape_named_error(fn, x):
    """Every estimator with empty, mis-sized or mis-dimensioned x: ValueError naming x."""
    with pytest.raises(ValueError, match=r"^x must (have shape|not be empty)"):
        _EST_CALLS[fn](_small_vae("mog"), x, np.random.default_rng(0))


@pytest.mark.hostile("magnitude", "named error")
@settings(max_examples=25)
@given(scale=st.sampled_from([1e10, 1e100, 1e300, 1.7e308, -1e300, 5e-324, 1e-300, 1.0]),
       fn=st.sampled_from(sorted(_EST_CALLS)), prior=st.sampled_from(["standard", "mog"]),
       likelihood=st.sampled_from(["gaussian", "bernoulli"]))
def test_estimators_extreme_x_named_error_or_no_nan(scale, fn, prior, likelihood):
    """Every estimator with data of magnitude 5e-324..1.7e308: a ValueError naming x[n], or a result without NaN."""
    x = np.full((4, 3), scale)
    x[1] *= 0.5
    try:
        out = _EST_CALLS[fn](_small_vae(prior, likelihood), x, np.random.default_rng(0))
    except ValueError as exc:
        assert re.match(r"^(a draw from q\(z\|x\[\d\]\) overflows|the encoder's log_var for x\[\d\]|"
                        r"x must lie in \[0, 1\]|.* is undefined at x\[\d\])", str(exc)), str(exc)
        return
    assert not any(v != v for v in _values(out))


@pytest.mark.hostile("option", "named error")
@pytest.mark.parametrize("taus,exc,match", [
    (None, TypeError, r"^taus must be an array of real numbers"),
    ("0.1", TypeError, r"^taus must be an array of real numbers"),
    ((0.1, np.nan), ValueError, r"^taus must not contain NaN"),
    ((np.inf,), ValueError, r"^taus must not contain NaN or inf"),
    ((0.0,), ValueError, r"^taus must be positive"),
    ((-0.5, 0.1), ValueError, r"^taus must be positive"),
    ((), ValueError, r"^taus must not be empty"),
    (((0.1,),), ValueError, r"^taus must have 0 or 1 dimension"),
])
def test_hole_metrics_bad_taus_named_error(taus, exc, match):
    """hole_metrics with taus None, a string, NaN, inf, 0, negative, empty or nested: named error."""
    with pytest.raises(exc, match=match):
        E.hole_metrics(_small_vae("mog"), np.zeros((4, 3)), np.random.default_rng(0), 20, taus=taus)


@pytest.mark.hostile("type", "named error")
@pytest.mark.parametrize("fn", ["aggregated_posterior_stats", "hole_metrics", "density_grid"])
def test_estimators_bad_aggregated_named_error(fn):
    """aggregated that is not an aggregated posterior (a string): TypeError naming aggregated."""
    call = {"aggregated_posterior_stats": lambda m, r: E.aggregated_posterior_stats(m, np.zeros((4, 3)), r, 2, aggregated="q"),
            "hole_metrics": lambda m, r: E.hole_metrics(m, np.zeros((4, 3)), r, 20, aggregated="q"),
            "density_grid": lambda m, r: E.density_grid(m, None, 5, aggregated="q")}[fn]
    with pytest.raises(TypeError, match=r"^aggregated must be a refvae.priors.mixtures.AggregatedPosterior"):
        call(_small_vae("mog"), np.random.default_rng(0))


@pytest.mark.hostile("resources", "named error")
@pytest.mark.parametrize("fn,call", [
    ("elbo_terms", lambda m, r: E.elbo_terms(m, np.zeros((4, 3)), r, n_samples=10 ** 9)),
    ("cross_entropy", lambda m, r: E.cross_entropy(m, np.zeros((4, 3)), r, n_samples=10 ** 9)),
    ("aggregated_posterior_stats", lambda m, r: E.aggregated_posterior_stats(m, np.zeros((4, 3)), r, 10 ** 9)),
    ("hole_metrics", lambda m, r: E.hole_metrics(m, np.zeros((4, 3)), r, n_samples=10 ** 9)),
    ("density_grid", lambda m, r: E.density_grid(m, np.zeros((4, 3)), n=10 ** 5)),
])
def test_estimators_huge_sample_counts_named_error(fn, call):
    """Sample counts whose draws would need more than 2 GiB at once: ValueError naming the count, before allocating."""
    with pytest.raises(ValueError, match=r"^(n_samples|n) = \d+ needs .* more than"):
        call(_small_vae("mog"), np.random.default_rng(0))


@pytest.mark.hostile("non-finite", "exact value")
def test_log_likelihood_all_zero_weights_gives_minus_inf_not_nan():
    """log_likelihood when the decoder gives probability 0 at every draw: log_px = -inf, se = inf, ess = 0 (no NaN)."""
    model = _small_vae()
    real = model.decoder.log_prob

    def zero_prob(p, x, out):
        lp = real(p, x, out)
        return np.where(np.arange(len(lp)) >= 0, -np.inf, lp) if x[0, 0] == 7.0 else lp

    model.decoder.log_prob = zero_prob
    x = np.array([[0.1, 0.2, 0.3], [7.0, 0.0, 0.0]])
    out = E.log_likelihood(model, x, np.random.default_rng(0), n_samples=6, max_rows=4)
    assert np.isfinite(out["log_px"][0]) and np.isfinite(out["se"][0]) and out["ess"][0] > 0
    assert out["log_px"][1] == -np.inf and out["se"][1] == np.inf and out["ess"][1] == 0.0
    assert out["elbo"][1] == -np.inf
    assert out["mean"].value == -np.inf and not math.isnan(out["mean"].se)


@pytest.mark.hostile("shape", "exact value")
def test_single_value_estimate_has_infinite_not_nan_standard_error():
    """One Monte Carlo value (e.g. refvae stats --queries 1): se = inf (no spread to estimate), never NaN."""
    from refvae import estimators as E
    est = E._estimate(np.array([2.5]))
    assert est.value == 2.5 and est.se == math.inf and est.n == 1
    two = E._estimate(np.array([1.0, 3.0]))
    assert two.value == 2.0 and two.se == pytest.approx(1.0, rel=1e-15)   # std 1.414/sqrt(2)


_A = float(np.nextafter(2.0 ** 1023, 0))


@pytest.mark.hostile("magnitude", "exact value")
@pytest.mark.parametrize("row,g", [
    ([0.0, 0.0, 38.0], [_A, 2.0 ** 1023, 0.0]),     # sum g = 2^1024 - 2^970, the overflow midpoint
    ([0.0, 0.0, 39.0], [_A, 2.0 ** 1023, 0.0]),     # needs the low part of sum g (lo) in p_j * rest
    ([0.0, -10.0, 0.0], [1.5e308, -1.4e308, 1.5e308]),  # sum g finite, sum_{k != 1} g_k is not
])
def test_log_softmax_vjp_sum_of_g_at_the_overflow_threshold(row, g):
    """log_softmax_vjp where sum g, or a sum over k != j, reaches the float maximum while every
    exact dx_j is finite (it gave -inf): each entry within a few ulp of mpmath's, all finite."""
    import refvae.primitives as P
    x = np.array([row])
    (got,) = P.log_softmax_vjp(np.array([g]), x)
    mpmath.mp.prec = 200
    e = [mpmath.e ** mpmath.mpf(v) for v in row]
    p = [v / sum(e) for v in e]
    gs = [mpmath.mpf(v) for v in g]
    tol = tolerance("log_softmax_vjp_vs_mpmath")       # a few ulp of the natural scale
    for j in range(3):
        want = gs[j] - p[j] * sum(gs)
        scale = abs(gs[j]) * (1 - p[j]) + p[j] * abs(sum(gs) - gs[j])
        assert abs(mpmath.mpf(got[0, j]) - want) <= tol.rtol * scale, (j, got[0, j], want)
    assert np.all(np.isfinite(got))
