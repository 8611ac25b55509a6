r"""Tests of the streaming mixture log-sum-exp kernel, ``refvae.kernels.mixture``.

The kernel computes, for queries z (B, L) and K diagonal Gaussian components,

    f_b = log sum_k exp(t_bk),   t_bk = w_k - 1/2 sum_l [ln 2 pi + v_kl + (z_bl - mu_kl)^2 e^{-v_kl}],

with log-weights w used as given (unnormalised). What is checked, and against what:

* **The definition, exactly** (``tests/mpmath_oracle.py``, mpmath at >= 200 bits, dps >= 60): the
  forward error bound ``|f_hat - f| <= c u (|f| + S)`` with ``c = tolerance("mixture_kernel_c").c``,
  u = 2^-53 and S the responsibility-weighted magnitude of the summands (kernel docstring), on a
  fixed seeded batch of random and adversarial inputs. ``test_record_kernel_accuracy`` writes the
  largest observed c to ``validation/kernel_accuracy.json``. The VJP is checked entry by entry
  against exact gradients (tolerance ``mixture_vjp_vs_mpmath``).
* **The NumPy twin** (``mixture_log_prob_numpy``, ``mixture_log_prob_vjp_numpy``), on
  hypothesis-generated inputs (B, K in 1..12, L in 1..6) and on fixed sizes that straddle the
  kernel's tiles of ``TILE = 128`` components, blocks of ``QUERY_BLOCK = 16`` queries and groups
  of four dimensions in the quadratic form (L mod 4 = 0, 1, 2, 3)
  (tolerances ``mixture_vs_twin``, ``mixture_vjp_vs_twin``).
* **Adversarial inputs**: -inf log-weights (first, in the middle, a whole tile, all of them),
  log-weights at +-1e300, log-variances in [-60, 60], queries so far away that every naive exp
  underflows, z ~ mu ~ 1e154 (where the expanded "GEMM" quadratic is NaN), huge K L with tiny
  variances, K = 1 (equal to a single Gaussian: refvae.gaussian and scipy.stats), B = 1.
* **Properties**: shift of all log-weights, ``None`` = -ln K, permutation and splitting of
  components, sharded evaluation (``mixture_partial`` / ``combine_partials`` /
  ``finalize_partials``).
* **Gradients**: ``check_vjp`` (central and Richardson) on the Numba VJP, ``check_vjp_complex`` on
  the twin, Numba VJP = twin VJP.
* **Determinism** (repeated calls, 1 vs 2 threads: bit-identical) and **input validation**
  (ValueError naming the argument).
* **Meta-tests**: a per-dimension mixture and a mixture without the -1/2 ln 2 pi constants are
  caught by the same checks (so the checks can fail).

Bugs found while writing these tests are kept as regression tests named after the bug (the end of
the file).

Numba compilation happens once, in the module-scoped warm-up fixture; hypothesis runs with
``deadline=None`` (tests/conftest.py) so that no compile is ever charged to an example.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import warnings
from functools import lru_cache
from pathlib import Path

import mpmath
import numba
import numpy as np
import pytest
import scipy
import scipy.special
import scipy.stats
from hypothesis import example, given, settings
from hypothesis import strategies as st

import mpmath_oracle as oracle
import refvae
from refvae.kernels import mixture as mx
from refvae.gradcheck import check_vjp, check_vjp_complex
from refvae.kernels.mixture import (QUERY_BLOCK, TILE, combine_partials, finalize_partials, mixture_log_prob,
                            mixture_log_prob_numpy, mixture_log_prob_vjp, mixture_log_prob_vjp_numpy,
                            mixture_partial)
from refvae.tolerances import U, tolerance
from strategies import (float_arrays, floats, mixture_inputs, mixture_vjp_coord, mixture_vjp_log_var,
                        mixture_vjp_weights)

LN_2PI = math.log(2.0 * math.pi)
C_BOUND = tolerance("mixture_kernel_c").c             # the tested constant c (= 4; proven c <= 26)
C_GRAD = tolerance("mixture_vjp_vs_mpmath").c         # the gradient constant c_g
REPO_ROOT = Path(__file__).resolve().parents[1]
ACCURACY_JSON = REPO_ROOT / "validation" / "kernel_accuracy.json"
SEED = 20261125

assert TILE == 128 and QUERY_BLOCK == 16, "the fixed sizes below are chosen around these values"

# The NumPy twin evaluates log(0) (then discards it) on rows whose terms are all -inf.
pytestmark = pytest.mark.filterwarnings("ignore:divide by zero encountered in log:RuntimeWarning")


# =========================================================================== warm-up

@pytest.fixture(scope="module", autouse=True)
def warm_up_kernels():
    """Compile every Numba kernel once (forward, both VJP kernels, tiling) before any test runs.

    All kernel arguments are C-contiguous float64 (the public functions normalise them), so one
    compilation per kernel serves every test; hypothesis deadlines are off anyway (conftest).
    """
    rng = np.random.default_rng(0)
    z, m, v = rng.normal(size=(9, 2)), rng.normal(size=(130, 2)), rng.normal(size=(130, 2))
    w = np.where(np.arange(130) % 7 == 0, -np.inf, rng.normal(size=130))
    mixture_log_prob(z, m, v, w)
    mixture_log_prob_vjp(np.ones(9), z, m, v, w)
    mixture_partial(z, m, v, w)
    yield


# =========================================================================== helpers

def _assert_within(actual, expected, allowed, what):
    """Assert |actual - expected| <= allowed elementwise (-inf == -inf counts as equal).

    On failure the message gives the number of failing entries, the worst one (index, values,
    error, allowed, error/allowed) and the max abs/rel error.
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    allowed = np.broadcast_to(np.asarray(allowed, dtype=np.float64), expected.shape)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    same_inf = np.isinf(expected) & (actual == expected)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.where(same_inf, 0.0, np.abs(actual - expected))
    ok = err <= allowed                       # NaN anywhere -> not ok
    if not ok.all():
        bad = ~ok
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN slices in the summary
            ratio = np.where(bad, err / allowed, -np.inf)
            ratio = np.where(np.isnan(ratio), np.inf, ratio)
            i = np.unravel_index(int(np.argmax(ratio)), expected.shape)
            rel = err / np.abs(expected)
            max_abs, max_rel = np.nanmax(err), np.nanmax(rel)
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} entries outside the bound; worst at {i}: "
            f"actual={actual[i]!r} expected={expected[i]!r} err={err[i]:.3e} allowed={allowed[i]:.3e} "
            f"(x{ratio[i]:.3g}); max abs err {max_abs:.3e}, max rel err {max_rel:.3e}")


def float_terms(z, means, log_vars, log_weights=None, *, chunk=2 ** 21):
    """Float64 reference quantities (NumPy broadcast, chunked over queries).

    Returns ``f`` (B,), ``S`` (B,), ``r`` (B, K), ``P`` (B, K) with
    ``P_bk = |w_k| + 1/2 sum_l (ln 2 pi + |v_kl| + q_bkl)``, ``q = (z - mu)^2 e^{-v}``, and
    ``S_b = sum_k r_bk P_bk``. Used only as *scales* of error bounds (their own rounding is
    irrelevant there), and to compute the responsibilities for gradient scales.
    """
    z, means, log_vars, w = mx.check_mixture_args(z, means, log_vars, log_weights)
    B, L = z.shape
    K = means.shape[0]
    step = max(1, chunk // max(1, K * L))
    half_inv_sd = np.exp(-0.5 * log_vars)
    cabs = 0.5 * np.sum(LN_2PI + np.abs(log_vars), axis=1)
    const = w - 0.5 * np.sum(LN_2PI + log_vars, axis=1)
    f = np.empty(B)
    S = np.empty(B)
    r = np.empty((B, K))
    P = np.empty((B, K))
    live = w > -np.inf
    for b0 in range(0, B, step):
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            y = (z[b0:b0 + step, None, :] - means[None]) * half_inv_sd[None]
            q = 0.5 * np.sum(y * y, axis=2)
            t = np.where(live[None], const[None] - q, -np.inf)
            fb = scipy.special.logsumexp(t, axis=1) if K else np.full(len(t), -np.inf)
            fin = np.isfinite(fb)
            rb = np.where(fin[:, None], np.exp(t - np.where(fin, fb, 0.0)[:, None]), 0.0)
            Pb = np.where(live[None], np.abs(w)[None] + cabs[None] + q, np.inf)
            Sb = np.sum(np.where(rb > 0, rb * Pb, 0.0), axis=1)
        f[b0:b0 + step] = fb
        S[b0:b0 + step] = Sb
        r[b0:b0 + step] = rb
        P[b0:b0 + step] = Pb
    return f, S, r, P


def error_scale(z, means, log_vars, log_weights=None):
    """``|f| + S`` per query (0 where f = -inf): the scale of the kernel's forward error bound."""
    f, S, _, _ = float_terms(z, means, log_vars, log_weights)
    return np.where(np.isfinite(f), np.abs(f) + S, 0.0)


def check_against_twin(fn, z, means, log_vars, log_weights=None):
    """``fn`` (a forward implementation) against the NumPy twin, tolerance ``mixture_vs_twin``.

    ``|fn - twin| <= atol + rtol (|f| + S)``: both engines are within ``c u (|f| + S)`` of the exact
    value, so the entry (stated relative to |f| + S) applies at every magnitude.
    """
    tol = tolerance("mixture_vs_twin")
    got = fn(z, means, log_vars, log_weights)
    want = mixture_log_prob_numpy(z, means, log_vars, log_weights)
    _assert_within(got, want, tol.atol + tol.rtol * error_scale(z, means, log_vars, log_weights),
                   f"{getattr(fn, '__name__', fn)} vs NumPy twin")


def observed_c(fn, z, means, log_vars, log_weights=None, *, exact=None, rows=None):
    """Per query, ``|f_hat - f| / (u (|f| + S))`` with f and S exact (mpmath); the error is taken in
    mpmath (f_hat converted exactly), so the rounding of f to float64 is not charged to the kernel.

    0 where both are -inf; inf where exactly one is -inf or f_hat is NaN. ``rows`` restricts the
    exact evaluation to some queries (the kernel's result for a query does not depend on the others).
    """
    got = np.asarray(fn(z, means, log_vars, log_weights), dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    if rows is not None:
        got, z = got[list(rows)], z[list(rows)]
    if exact is None:
        exact = oracle.exact_mixture(z, means, log_vars, log_weights)
    out = np.empty(len(got))
    with mpmath.workprec(exact.prec):
        for b, (fh, f, S) in enumerate(zip(got, exact.f, exact.S)):
            if np.isnan(fh):
                out[b] = np.inf
            elif f == -mpmath.inf or fh == -np.inf:
                out[b] = 0.0 if (f == -mpmath.inf and fh == -np.inf) else np.inf
            else:
                out[b] = float(abs(mpmath.mpf(float(fh)) - f) / (U * (abs(f) + S)))
    return out


def check_error_bound(fn, z, means, log_vars, log_weights=None, *, exact=None, rows=None, what=""):
    """Assert ``|f_hat - f| <= c u (|f| + S)`` against mpmath; returns the observed c per query."""
    c = observed_c(fn, z, means, log_vars, log_weights, exact=exact, rows=rows)
    assert np.all(c <= C_BOUND), (
        f"{what or getattr(fn, '__name__', fn)}: forward error bound violated, observed c = "
        f"{np.max(c):.3g} > {C_BOUND} at query {int(np.argmax(c))} (all: {np.round(c, 3).tolist()})")
    return c


def vjp_abs_scales(g, z, means, log_vars, log_weights=None, *, chunk=2 ** 20):
    """Sum of the absolute values of the terms of every gradient entry (float64, chunked over queries).

    Returns ``(scales, n, M)``: ``scales`` = (dz, dmeans, dlog_vars, dlog_weights)-shaped arrays of
    ``sum |g_b r_bk x|``; ``n = max(B, K)`` (the most terms any entry sums); ``M`` the largest
    ``P_bk + |f_b| + S_b`` over (query, component) pairs with r_bk > 0 (see ``check_vjp_vs_twin``).
    """
    z, means, log_vars, w = mx.check_mixture_args(z, means, log_vars, log_weights)
    g = np.asarray(g, dtype=np.float64)
    f, S, r, P = float_terms(z, means, log_vars, w)
    B, L = z.shape
    K = means.shape[0]
    inv = np.exp(-log_vars)
    a_dz = np.zeros((B, L))
    a_dm = np.zeros((K, L))
    a_dv = np.zeros((K, L))
    step = max(1, chunk // max(1, K * L))
    with np.errstate(over="ignore", invalid="ignore"):
        pair = r > 0
        M = float(np.max(np.where(pair, P + (np.abs(f) + S)[:, None], 0.0), initial=0.0))
        gr = np.abs(g[:, None] * r)                                        # (B, K)
        for b0 in range(0, B, step):
            sl = slice(b0, b0 + step)
            diff = z[sl, None, :] - means[None]                            # (b, K, L)
            live = pair[sl, :, None]
            ivd = np.where(live, np.abs(diff * inv[None]), 0.0)
            dvt = np.where(live, np.abs(0.5 * (diff * diff * inv[None] - 1.0)), 0.0)
            a_dz[sl] = np.einsum("bk,bkl->bl", gr[sl], ivd)
            a_dm += np.einsum("bk,bkl->kl", gr[sl], ivd)
            a_dv += np.einsum("bk,bkl->kl", gr[sl], dvt)
    return (a_dz, a_dm, a_dv, gr.sum(axis=0)), max(B, K), M


def _assert_vjp_close(got, want, scales, what):
    tol = tolerance("mixture_vjp_vs_twin")
    for name, a, e, s in zip(("dz", "dmeans", "dlog_vars", "dlog_weights"), got, want, scales):
        assert np.all(np.isfinite(a)), f"{what} {name}: non-finite gradient"
        _assert_within(a, e, tol.atol + tol.rtol * s, f"{what} {name}")


def check_vjp_vs_twin(g, z, means, log_vars, log_weights=None):
    """Numba VJP against the twin's, tolerance ``mixture_vjp_vs_twin``, entry by entry relative to
    the sum of the absolute values of the entry's terms (computed here in float64).

    The table entry is stated for moderate magnitudes: the difference of two engines is at most
    ``2 c_g u (n + M)`` times that sum, with M the largest ``P_bk + |f_b| + S_b`` over the live
    (query, component) pairs and n the number of summed terms (``mixture_vjp_vs_mpmath``). This
    helper asserts that premise, ``2 c_g u (n + M) <= rtol``, before using the entry.
    """
    scales, n, M = vjp_abs_scales(g, z, means, log_vars, log_weights)
    assert 2 * C_GRAD * U * (n + M) <= tolerance("mixture_vjp_vs_twin").rtol, (
        f"inputs too large for the mixture_vjp_vs_twin entry: n + M = {n + M:.3g}")
    _assert_vjp_close(mixture_log_prob_vjp(g, z, means, log_vars, log_weights),
                      mixture_log_prob_vjp_numpy(g, z, means, log_vars, log_weights), scales,
                      "Numba vs twin:")


def check_vjp_vs_exact(g, z, means, log_vars, log_weights=None, *, what=""):
    """Numba VJP against mpmath gradients, entry by entry, tolerance ``mixture_vjp_vs_mpmath``:
    ``|err| <= c_g u (n A + W)`` (A = sum of |terms|, W = the same weighted by P + |f| + S)."""
    got = mixture_log_prob_vjp(g, z, means, log_vars, log_weights)
    ex = oracle.exact_vjp(g, z, means, log_vars, log_weights)
    B, K = np.shape(z)[0], np.shape(means)[0]
    for name, a, e, A, W, n in zip(
            ("dz", "dmeans", "dlog_vars", "dlog_weights"), got,
            (ex.dz, ex.dmeans, ex.dlog_vars, ex.dlog_weights),
            (ex.dz_abs, ex.dmeans_abs, ex.dlog_vars_abs, ex.dlog_weights_abs),
            (ex.dz_w, ex.dmeans_w, ex.dlog_vars_w, ex.dlog_weights_w), (K, B, B, B)):
        _assert_within(a, e, C_GRAD * U * (n * A + W), f"{what} {name} vs mpmath")
    return got, ex


def _numba_f(z, means, log_vars, log_weights):
    return mixture_log_prob(z, means, log_vars, log_weights)


def _numba_vjp(g, z, means, log_vars, log_weights):
    return mixture_log_prob_vjp(g, z, means, log_vars, log_weights)


def _twin_f(z, means, log_vars, log_weights):
    return mixture_log_prob_numpy(z, means, log_vars, log_weights)


def _twin_vjp(g, z, means, log_vars, log_weights):
    return mixture_log_prob_vjp_numpy(g, z, means, log_vars, log_weights)


def _random_case(rng, B, K, L, *, coord=1.0, lv=(-1.0, 1.0), wscale=1.0, dead=0.0, none=False):
    z = rng.normal(size=(B, L)) * coord
    means = rng.normal(size=(K, L)) * coord
    log_vars = rng.uniform(*lv, size=(K, L))
    if none:
        return z, means, log_vars, None
    w = rng.normal(size=K) * wscale
    if dead:
        w = np.where(rng.uniform(size=K) < dead, -np.inf, w)
    return z, means, log_vars, w


# =========================================================================== adversarial cases
# Each builder returns (z, means, log_vars, log_weights) from a fixed seed. They are used by the
# individual adversarial tests, by the hypothesis examples and by the accuracy record.

def _case_neg_inf_weights():
    """-inf log-weights first, in the middle, last (K = 9, B = 11)."""
    z, m, v, w = _random_case(np.random.default_rng(1), 11, 9, 3)
    w[[0, 1, 4, 8]] = -np.inf
    return z, m, v, w


def _case_neg_inf_tile():
    """K = 300 (3 tiles) with the whole second tile and the tail switched off, B = 13."""
    z, m, v, w = _random_case(np.random.default_rng(2), 13, 300, 2)
    w[TILE:2 * TILE] = -np.inf
    w[290:] = -np.inf
    return z, m, v, w


def _case_all_neg_inf():
    z, m, v, _ = _random_case(np.random.default_rng(3), 9, 130, 3)
    return z, m, v, np.full(130, -np.inf)


def _case_weights_pm_1e300():
    """One log-weight +1e300, the others -1e300 (and one -inf): used as given, f ~ 1e300."""
    z, m, v, _ = _random_case(np.random.default_rng(4), 5, 5, 3)
    return z, m, v, np.array([-1e300, 1e300, -1e300, -np.inf, -1e300])


def _case_weights_all_minus_1e300():
    z, m, v, _ = _random_case(np.random.default_rng(5), 5, 4, 3)
    return z, m, v, np.array([-1e300, -1e300, -1e300, -1e300])


def _case_log_var_pm_60():
    """log_vars uniform in [-60, 60]; queries at +-1 sd of random components and at random."""
    rng = np.random.default_rng(6)
    K, L = 7, 4
    m = rng.normal(size=(K, L)) * 3
    v = rng.uniform(-60, 60, size=(K, L))
    v[0] = -60.0
    v[1] = 60.0
    pick = rng.integers(0, K, size=6)
    z = np.vstack([m[pick] + rng.choice([-1.0, 1.0], size=(6, L)) * np.exp(0.5 * v[pick]),
                   m[:2], rng.normal(size=(3, L)) * 3])
    return z, m, v, rng.normal(size=K)


def _case_far_query():
    """Queries ~1e3 and ~1e100 away from every component: every exp(t) underflows (t ~ -1e6 and
    ~ -1e200), yet f is finite."""
    rng = np.random.default_rng(7)
    z, m, v, w = _random_case(rng, 2, 6, 3)
    far = np.array([[1e3, -1e3, 1e3], [-1e3, 2e3, 5e2], [1e100, 1e100, -1e100], [0.0, 0.0, 3e150]])
    return np.vstack([far, z]), m, v, w


def _case_z_mu_1e154():
    """z ~ mu ~ 1e154 (L = 8): the expanded quadratic z^2 - 2 z mu + mu^2 overflows (NaN), the
    direct (z - mu)^2 is exact. Component 0 sits exactly on query 0 (f ~ -8.45), component 1 is
    3 ulp away in each coordinate with variance ulp^2, component 2 is 1e140 away."""
    L = 8
    base = 1e154 * (1.0 + 1e-3 * np.arange(L))
    ulp = np.spacing(base)
    m = np.vstack([base, base + 3 * ulp, base - 1e140])
    v = np.vstack([np.zeros(L), 2 * np.log(ulp), np.zeros(L)])
    z = np.vstack([base, base + ulp, base + 3 * ulp])
    return z, m, v, None


def _case_huge_kl_tiny_var(K=600, L=32, B=3, seed=8):
    """K L = 19200 with log_vars in [-60, -50] (sd ~ 1e-12): only the component a query sits on
    contributes; almost every exp is skipped."""
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(K, L))
    v = rng.uniform(-60, -50, size=(K, L))
    pick = np.linspace(0, K - 1, B).astype(int)
    z = m[pick] + rng.normal(size=(B, L)) * np.exp(0.5 * v[pick])
    return z, m, v, None


def _case_k1():
    rng = np.random.default_rng(9)
    return rng.normal(size=(10, 5)), rng.normal(size=(1, 5)), rng.uniform(-3, 3, size=(1, 5)), np.array([0.7])


def _case_b1_tiles():
    """B = 1 against K = 300 (three tiles, the last partial)."""
    return _random_case(np.random.default_rng(10), 1, 300, 4, coord=1.5, lv=(-2, 2), wscale=3)


def _case_tile_and_block_edges():
    """B = 17 (one full block of 16 + 1) and K = 129 (one full tile + 1)."""
    return _random_case(np.random.default_rng(11), 17, 129, 2, coord=2.0, lv=(-3, 3), wscale=2)


def _case_f_near_zero():
    """Log-weights that cancel the normalising constants, so f ~ 0 while S ~ 1e2 (K = 3, L = 6)."""
    rng = np.random.default_rng(12)
    L = 6
    m = rng.normal(size=(3, L))
    v = rng.uniform(-8, 8, size=(3, L))
    w = 0.5 * np.sum(LN_2PI + v, axis=1) - np.log(3.0)
    z = m + 1e-3 * rng.normal(size=(3, L)) * np.exp(0.5 * v)
    return z, m, v, w


def _case_equal_components():
    """K = 257 identical components with weights -ln K: f = log N(z | mu, v) (Kahan sum of 257 equal
    terms, rounding of ln K)."""
    rng = np.random.default_rng(13)
    mu, v = rng.normal(size=(1, 3)), rng.uniform(-1, 1, size=(1, 3))
    return rng.normal(size=(4, 3)), np.repeat(mu, 257, 0), np.repeat(v, 257, 0), None


def _case_lazy_reference_moves():
    """K = 1000 with log-weights increasing by 0.05 per component: the running reference m moves
    at every tile (rescaling path); then the same components in decreasing order."""
    rng = np.random.default_rng(14)
    z, m, v, _ = _random_case(rng, 3, 1000, 2)
    w = 0.05 * np.arange(1000)
    return np.vstack([z, z]), np.vstack([m, m[::-1]]), np.vstack([v, v[::-1]]), np.concatenate([w, w[::-1]])


def _case_skip_threshold():
    """One dominant component and 129 whose terms sit at the exp-skip threshold -(ln K + 40) +- 1."""
    rng = np.random.default_rng(15)
    K = 130
    m = np.zeros((K, 2))
    v = np.zeros((K, 2))
    w = np.concatenate([[0.0], -(math.log(K) + 40.0) + rng.uniform(-1, 1, K - 1)])
    return rng.normal(size=(3, 2)) * 0.1, m, v, w


def _case_b50_k300_l16():
    """The fixed size B = 50, K = 300, L = 16 (exact values on 6 of the rows, see ROWS)."""
    return _random_case(np.random.default_rng(16), 50, 300, 16, coord=1.0, lv=(-1, 1), wscale=2,
                        dead=0.05)


ADVERSARIAL = {
    "neg_inf_weights": _case_neg_inf_weights,
    "neg_inf_whole_tile": _case_neg_inf_tile,
    "all_neg_inf": _case_all_neg_inf,
    "weights_pm_1e300": _case_weights_pm_1e300,
    "weights_all_minus_1e300": _case_weights_all_minus_1e300,
    "log_var_pm_60": _case_log_var_pm_60,
    "far_query_underflow": _case_far_query,
    "z_mu_1e154": _case_z_mu_1e154,
    "huge_KL_tiny_var": _case_huge_kl_tiny_var,
    "K_1": _case_k1,
    "B_1_three_tiles": _case_b1_tiles,
    "B9_K129_edges": _case_tile_and_block_edges,
    "f_near_zero": _case_f_near_zero,
    "257_equal_components": _case_equal_components,
    "lazy_reference_moves": _case_lazy_reference_moves,
    "skip_threshold": _case_skip_threshold,
    "B50_K300_L16": _case_b50_k300_l16,
}
ROWS = {"B50_K300_L16": (0, 7, 8, 23, 40, 49)}


@lru_cache(maxsize=None)
def adversarial_exact(name):
    """(inputs, exact values) of an adversarial case, computed once per session."""
    case = ADVERSARIAL[name]()
    z = case[0] if name not in ROWS else case[0][list(ROWS[name])]
    return case, oracle.exact_mixture(z, *case[1:])


def _random_batch(seed=SEED, n=40):
    """The fixed seeded batch of random cases of the accuracy record (B <= 8, K <= 40, L <= 16)."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        B, K, L = int(rng.integers(1, 9)), int(rng.integers(1, 41)), int(rng.integers(1, 17))
        coord = float(rng.choice([0.3, 1.0, 3.0, 10.0]))
        lv = (-8.0, 8.0) if i % 3 == 0 else (-2.0, 2.0)
        cases.append((f"random_{i:02d}", _random_case(rng, B, K, L, coord=coord, lv=lv,
                                                       wscale=float(rng.choice([0.1, 1.0, 10.0])),
                                                       dead=0.2 if i % 4 == 1 else 0.0, none=i % 5 == 2)))
    return cases


# =========================================================================== against the twin

_E = np.random.default_rng(99)
_EX_12 = (_E.normal(size=(12, 6)) * 3, _E.normal(size=(12, 6)) * 3, _E.uniform(-8, 8, (12, 6)),
          _E.normal(size=12) * 5)


@given(mixture_inputs())
@example((np.array([[0.3]]), np.array([[-0.2]]), np.array([[0.5]]), None))            # B = K = L = 1
@example((np.array([[0.3]]), np.array([[-0.2]]), np.array([[0.5]]), np.array([-np.inf])))
@example(_case_neg_inf_weights())
@example(_case_all_neg_inf())
@example(_case_weights_pm_1e300())
@example(_case_log_var_pm_60())
@example(_case_far_query())
@example(_case_k1())
@example(_EX_12)
def test_forward_matches_twin(inputs):
    """Numba forward = NumPy twin within ``mixture_vs_twin`` (relative to |f| + S)."""
    check_against_twin(mixture_log_prob, *inputs)


@given(mixture_inputs(coord=mixture_vjp_coord, log_var=mixture_vjp_log_var, weights=mixture_vjp_weights),
       st.data())
@example(_case_neg_inf_weights(), None)
@example(_case_all_neg_inf(), None)
@example(_case_k1(), None)
def test_vjp_matches_twin(inputs, data):
    """Numba VJP = NumPy twin's VJP within ``mixture_vjp_vs_twin``, every input, every entry."""
    B = inputs[0].shape[0]
    g = (data.draw(float_arrays((B,), -2.0, 2.0)) if data is not None
         else np.linspace(-1.5, 1.0, B))
    check_vjp_vs_twin(g, *inputs)


# L = 1..7 and 16 cover every remainder L mod 4 of the quadratic's groups of four dimensions
FIXED_SIZES = [(1, 1, 1), (1, 300, 16), (50, 1, 16), (16, 128, 3), (17, 129, 3), (15, 127, 4),
               (33, 257, 5), (32, 256, 2), (50, 300, 16), (8, 128, 6), (9, 129, 7), (40, 200, 7)]


@pytest.mark.parametrize("B,K,L", FIXED_SIZES)
@pytest.mark.parametrize("weights", ["given", "none", "dead"])
def test_fixed_sizes_match_twin(B, K, L, weights):
    """Sizes at and around the kernel's tile (128), query block (16) and dimension groups (4),
    forward and VJP."""
    rng = np.random.default_rng(B * 100003 + K * 101 + L)
    case = _random_case(rng, B, K, L, coord=1.0, lv=(-1.5, 1.5), wscale=2.0,
                        dead=0.3 if weights == "dead" else 0.0, none=weights == "none")
    check_against_twin(mixture_log_prob, *case)
    check_vjp_vs_twin(rng.normal(size=B), *case)


# =========================================================================== against mpmath

@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_error_bound(name):
    """Every adversarial case within ``c u (|f| + S)`` of the exact value (mpmath)."""
    case, exact = adversarial_exact(name)
    check_error_bound(mixture_log_prob, *case, exact=exact, rows=ROWS.get(name), what=name)
    f = mixture_log_prob(*case)
    assert not np.any(np.isnan(f))


def test_record_kernel_accuracy():
    """THE accuracy record: the largest observed c over a fixed seeded batch of random and adversarial
    cases, asserted <= c (= 4); with ``REFVAE_RECORD_ACCURACY=1`` in the environment it is also
    written to ``validation/kernel_accuracy.json`` (otherwise a test run leaves the checkout alone).

    Cases: 40 random (seed SEED; B <= 8, K <= 40, L <= 16; coordinates of scale 0.3..10;
    log-variances in [-8, 8] or [-2, 2]; some -inf and some None log-weights) and every case of
    ``ADVERSARIAL``, and the regression case that once violated the bound.
    """
    per_case = []
    for name, case in _random_batch():
        c = observed_c(mixture_log_prob, *case)
        per_case.append({"name": name, "kind": "random", "B": case[0].shape[0], "K": case[1].shape[0],
                         "L": case[0].shape[1], "max_c": float(np.max(c))})
    for name in sorted(ADVERSARIAL):
        case, exact = adversarial_exact(name)
        c = observed_c(mixture_log_prob, *case, exact=exact, rows=ROWS.get(name))
        per_case.append({"name": name, "kind": "adversarial", "B": case[0].shape[0],
                         "K": case[1].shape[0], "L": case[0].shape[1], "max_c": float(np.max(c))})
    c = observed_c(mixture_log_prob, *_violation_rounding_accumulation())
    per_case.append({"name": "regression_rounding_accumulation_L16", "kind": "adversarial", "B": 1,
                     "K": 1, "L": 16, "max_c": float(np.max(c))})
    known = [{"name": name, "observed_c": float(np.max(observed_c(mixture_log_prob, *b())))}
             for name, b in KNOWN_VIOLATIONS.items()]
    worst = max(per_case, key=lambda r: r["max_c"])
    record = {
        "what": "forward error of refvae.kernels.mixture.mixture_log_prob: max over queries of "
                "|f_hat - f| / (u (|f| + S)), u = 2**-53, f and S exact (mpmath)",
        "max_c": worst["max_c"],
        "worst_case": worst["name"],
        "c_allowed": C_BOUND,
        "n_cases": len(per_case),
        "n_random": sum(r["kind"] == "random" for r in per_case),
        "n_adversarial": sum(r["kind"] == "adversarial" for r in per_case),
        "seed": SEED,
        "oracle": f"mpmath {mpmath.__version__}, >= 200 bits (dps >= {oracle.DPS_MIN}), raised with the "
                  "exponent range of the inputs (tests/mpmath_oracle.py)",
        "cases": per_case,
        "known_violations": known,
        "provenance": _provenance(),
    }
    if os.environ.get("REFVAE_RECORD_ACCURACY") == "1":   # a test run never edits the checkout
        ACCURACY_JSON.parent.mkdir(parents=True, exist_ok=True)
        ACCURACY_JSON.write_text(json.dumps(record, indent=2) + "\n")
    assert worst["max_c"] <= C_BOUND, f"observed c = {worst['max_c']:.3g} in {worst['name']} > {C_BOUND}"


def _provenance():
    return {"refvae": refvae.__version__, "git_revision": _git_revision(), "numpy": np.__version__,
            "numba": numba.__version__, "scipy": scipy.__version__, "mpmath": mpmath.__version__,
            "python": sys.version.split()[0], "platform": platform.platform(),
            "machine": platform.machine(), "numba_threads": numba.get_num_threads(),
            "tolerances": {"mixture_kernel_c": C_BOUND}}


def _git_revision():
    """The checked-out commit, read from .git files (None if unavailable)."""
    try:
        git = REPO_ROOT / ".git"
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.split(None, 1)[1]
        if (git / ref).exists():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return None


@pytest.mark.parametrize("case_id", range(5))
def test_vjp_matches_mpmath(case_id):
    """Gradient entries vs exact (mpmath) gradients, ``mixture_vjp_vs_mpmath``: small cases with
    -inf weights, K = 1, B = 1, spread log-variances and distant queries."""
    rng = np.random.default_rng(500 + case_id)
    if case_id == 0:
        case = _random_case(rng, 5, 7, 3, coord=1.0, lv=(-2, 2), wscale=1.0)
    elif case_id == 1:
        case = _random_case(rng, 4, 6, 2, coord=2.0, lv=(-4, 4), wscale=3.0)
        case[3][[0, 3]] = -np.inf
    elif case_id == 2:
        case = _random_case(rng, 6, 1, 4, coord=1.0, lv=(-1, 1))
    elif case_id == 3:
        case = _random_case(rng, 1, 9, 3, coord=1.5, lv=(-3, 3), none=True)
    else:
        z, m, v, w = _random_case(rng, 3, 4, 2, coord=1.0, lv=(-1, 1))
        case = (np.vstack([z, [[30.0, -25.0]]]), m, v, w)   # one query with t ~ -1e3 for every k
    check_vjp_vs_exact(rng.normal(size=case[0].shape[0]), *case, what=f"case {case_id}")


# =========================================================================== adversarial behaviour

def test_neg_inf_weights_contribute_nothing_and_get_zero_gradient():
    """Switched-off components (first, middle, last; a whole tile; the tail) change nothing: the result
    equals the mixture of the live components, their gradient entries are exactly 0, no NaN."""
    for z, m, v, w in (_case_neg_inf_weights(), _case_neg_inf_tile()):
        live = w > -np.inf
        f = mixture_log_prob(z, m, v, w)
        f_live = mixture_log_prob(z, m[live], v[live], w[live])
        scale = error_scale(z, m, v, w)
        _assert_within(f, f_live, 2 * C_BOUND * U * scale, "with -inf components vs live only")
        g = np.random.default_rng(0).normal(size=len(z))
        dz, dm, dv, dw = mixture_log_prob_vjp(g, z, m, v, w)
        for a in (dz, dm, dv, dw):
            assert np.all(np.isfinite(a))
        assert np.all(dm[~live] == 0.0) and np.all(dv[~live] == 0.0) and np.all(dw[~live] == 0.0)
        live_case = (z, m[live], v[live], w[live])
        _assert_vjp_close((dz, dm[live], dv[live], dw[live]), mixture_log_prob_vjp(g, *live_case),
                          vjp_abs_scales(g, *live_case)[0], "with -inf components vs live only:")


def test_all_weights_neg_inf_gives_neg_inf_and_zero_gradients():
    """Every component switched off: f = -inf for every query; every gradient entry exactly 0."""
    z, m, v, w = _case_all_neg_inf()
    f = mixture_log_prob(z, m, v, w)
    assert np.all(f == -np.inf)
    assert np.all(mixture_log_prob_numpy(z, m, v, w) == -np.inf)
    for a in mixture_log_prob_vjp(np.ones(len(z)), z, m, v, w):
        assert np.all(a == 0.0), "gradient not exactly zero (or NaN) with every weight -inf"
    ms, s = mixture_partial(z, m, v, w)
    assert np.all(ms == -np.inf) and np.all(s == 0.0)
    assert np.all(finalize_partials(ms, s) == -np.inf)


def test_spread_log_weights_pm_1e300():
    """Log-weights +1e300 / -1e300 are used as given: f = 1e300 (+ an O(1) part below its ulp), the
    +1e300 component has responsibility exactly 1 and the others exactly 0, so the gradients are those
    of the single Gaussian, dlog_weights = (0, g, 0, 0, 0) exactly."""
    z, m, v, w = _case_weights_pm_1e300()
    f = mixture_log_prob(z, m, v, w)
    assert np.all(f == 1e300)
    g = np.linspace(-1, 2, len(z))
    dz, dm, dv, dw = mixture_log_prob_vjp(g, z, m, v, w)
    expect_dw = np.zeros(5)
    expect_dw[1] = g.sum()
    tol = tolerance("mixture_vjp_vs_twin")
    _assert_within(dw, expect_dw, tol.atol + tol.rtol * np.sum(np.abs(g)), "dlog_weights")
    assert np.all(dw[[0, 2, 3, 4]] == 0.0) and np.all(dm[[0, 2, 3, 4]] == 0.0)
    ivd = (z - m[1]) * np.exp(-v[1])
    _assert_within(dz, -g[:, None] * ivd, tol.atol + tol.rtol * np.abs(g[:, None] * ivd), "dz")
    _assert_within(dm[1], np.sum(g[:, None] * ivd, 0), tol.atol + tol.rtol * np.sum(np.abs(g[:, None] * ivd), 0),
                   "dmeans")
    dvt = g[:, None] * 0.5 * ((z - m[1]) ** 2 * np.exp(-v[1]) - 1)
    _assert_within(dv[1], dvt.sum(0), tol.atol + tol.rtol * np.abs(dvt).sum(0), "dlog_vars")


def test_far_query_has_finite_correct_value_and_gradient():
    """Queries ~1e3 and ~1e100 from every component: f ~ -1e6 and ~ -1e200, finite and within the bound
    (mpmath); the gradient at the 1e3 queries is finite and matches mpmath entry by entry."""
    case, exact = adversarial_exact("far_query_underflow")
    f = mixture_log_prob(*case)
    assert np.all(np.isfinite(f)) and np.all(f[:3] < -1e5)
    check_error_bound(mixture_log_prob, *case, exact=exact, what="far queries")
    z, m, v, w = case
    check_vjp_vs_exact(np.array([1.0, -0.5]), z[:2], m, v, w, what="far query")


def test_z_mu_1e154_direct_formula():
    """z ~ mu ~ 1e154: the exact value is finite (~ -8.45 for query 0) and the kernel gets it within the
    bound, while the expanded "GEMM" quadratic (z^2 - 2 z mu + mu^2) e^{-v} is not finite there (this
    shows that the case exercises what it is meant to)."""
    case, exact = adversarial_exact("z_mu_1e154")
    z, m, v, w = case
    f = mixture_log_prob(*case)
    assert np.all(np.isfinite(f))
    assert abs(float(exact.f[0]) - (-4 * LN_2PI - math.log(3))) < 1e-12
    check_error_bound(mixture_log_prob, *case, exact=exact, what="1e154")
    with np.errstate(over="ignore", invalid="ignore"):
        gemm = (np.sum(z ** 2, 1)[:, None] - 2 * z @ m.T + np.sum(m ** 2, 1)[None]) * 1.0
    assert not np.all(np.isfinite(gemm)), "the GEMM expansion should fail on this case"


def test_huge_kl_tiny_variances():
    """K L = 19200, sd ~ 1e-12: within the bound of mpmath, and equal to the twin."""
    case, exact = adversarial_exact("huge_KL_tiny_var")
    check_error_bound(mixture_log_prob, *case, exact=exact, what="huge K L")
    check_against_twin(mixture_log_prob, *case)


@pytest.mark.slow
def test_huge_kl_tiny_variances_large():
    """K = 20000, L = 64, B = 40 (K L = 1.3e6) with sd ~ 1e-12: against the twin; the last query
    (in the last, partial block of 16) against mpmath."""
    case = _case_huge_kl_tiny_var(K=20000, L=64, B=40, seed=18)
    check_against_twin(mixture_log_prob, *case)
    check_error_bound(mixture_log_prob, *case, rows=(39,), what="huge K L, large")


@given(mixture_inputs(max_k=1, coord=(-5.0, 5.0), log_var=(-4.0, 4.0), weights=(-5.0, 5.0),
                      allow_dead=False))
def test_k1_equals_single_gaussian_scipy(inputs):
    """K = 1: f = log N(z | mu, diag e^v) + w, compared with scipy.stats.multivariate_normal
    (tolerance ``closed_form_vs_scipy`` relative to |f| + S)."""
    z, m, v, w = inputs
    w0 = 0.0 if w is None else float(w[0])                                   # None: -ln 1 = 0
    ref = scipy.stats.multivariate_normal(mean=m[0], cov=np.diag(np.exp(v[0]))).logpdf(z)
    ref = np.atleast_1d(ref) + w0
    tol = tolerance("closed_form_vs_scipy")
    _assert_within(mixture_log_prob(z, m, v, w), ref, tol.atol + tol.rtol * error_scale(z, m, v, w),
                   "K = 1 vs scipy")


@given(mixture_inputs(max_k=1, coord=(-10.0, 10.0), log_var=(-8.0, 8.0), weights=(-20.0, 20.0),
                      allow_dead=False))
def test_k1_equals_gaussian_log_prob(inputs):
    """K = 1: f = ``refvae.gaussian.log_prob(z, mu, log_var) + log_weight`` (both within a few u of
    |f| + S; tolerance ``closed_form_vs_scipy`` relative to |f| + S)."""
    gaussian = pytest.importorskip("refvae.gaussian")
    z, m, v, w = inputs
    w0 = 0.0 if w is None else float(w[0])
    ref = gaussian.log_prob(z, m[0], v[0]) + w0
    tol = tolerance("closed_form_vs_scipy")
    _assert_within(mixture_log_prob(z, m, v, w), ref, tol.atol + tol.rtol * error_scale(z, m, v, w),
                   "K = 1 vs refvae.gaussian.log_prob")


def test_b1_rows_match_batched_call():
    """B = 1 (each query alone) agrees with the batched call within the error bound."""
    z, m, v, w = _case_tile_and_block_edges()
    f = mixture_log_prob(z, m, v, w)
    scale = error_scale(z, m, v, w)
    for b in range(len(z)):
        fb = mixture_log_prob(z[b:b + 1], m, v, w)
        assert fb.shape == (1,)
        _assert_within(fb, f[b:b + 1], 2 * C_BOUND * U * scale[b:b + 1], f"query {b} alone")


# =========================================================================== properties

def _pair_bound(scale1, scale2, extra=0.0):
    """Two kernel evaluations of values that are equal in exact arithmetic differ by at most
    c u (|f1| + S1) + c u (|f2| + S2) (+ the rounding of the exact relation itself)."""
    return C_BOUND * U * (scale1 + scale2) + extra


@given(mixture_inputs(), floats(-1e3, 1e3))
@example(_case_neg_inf_weights(), 123.25)
@example(_case_k1(), -1e6)
@example(_case_log_var_pm_60(), 1e300)
def test_shift_of_log_weights_shifts_output(inputs, c):
    """Log-weights are used as given: f(z; w + c) = f(z; w) + c."""
    z, m, v, w = inputs
    w = np.full(m.shape[0], -math.log(m.shape[0])) if w is None else w
    f1 = mixture_log_prob(z, m, v, w) + c
    f2 = mixture_log_prob(z, m, v, w + c)
    _assert_within(f2, f1, _pair_bound(error_scale(z, m, v, w), error_scale(z, m, v, w + c),
                                       U * np.abs(np.where(np.isfinite(f1), f1, 0.0))), "shift")


@settings(max_examples=20)  # two VJP calls per example; the equivalence is structural
@given(mixture_inputs(allow_dead=False))
def test_none_weights_equal_minus_log_k(inputs):
    """``log_weights=None`` is the uniform mixture, w_k = -ln K (forward and VJP)."""
    z, m, v, _ = inputs
    K = m.shape[0]
    w = np.full(K, -math.log(K))
    f_none = mixture_log_prob(z, m, v)
    scale = error_scale(z, m, v, w)
    _assert_within(f_none, mixture_log_prob(z, m, v, w), _pair_bound(scale, scale), "None vs -ln K")
    g = np.ones(z.shape[0])
    _assert_vjp_close(mixture_log_prob_vjp(g, z, m, v), mixture_log_prob_vjp(g, z, m, v, w),
                      vjp_abs_scales(g, z, m, v, w)[0], "VJP None vs -ln K:")


@given(mixture_inputs(), st.randoms(use_true_random=False))
@example(_case_neg_inf_tile(), None)
def test_permutation_of_components(inputs, rnd):
    """Reordering the components (with their weights) changes nothing beyond rounding."""
    z, m, v, w = inputs
    K = m.shape[0]
    perm = np.arange(K)[::-1].copy() if rnd is None else np.array(rnd.sample(range(K), K))
    wp = None if w is None else w[perm]
    f1 = mixture_log_prob(z, m, v, w)
    f2 = mixture_log_prob(z, m[perm], v[perm], wp)
    scale = error_scale(z, m, v, w)
    _assert_within(f2, f1, _pair_bound(scale, scale), "permuted components")


@given(mixture_inputs(), st.data())
@example(_case_k1(), None)
@example(_case_neg_inf_weights(), None)
def test_split_component_into_two_halves(inputs, data):
    """Replacing component j by two copies with log-weight w_j - ln 2 changes nothing."""
    z, m, v, w = inputs
    K = m.shape[0]
    w = np.full(K, -math.log(K)) if w is None else w
    j = 0 if data is None else data.draw(st.integers(0, K - 1))
    m2 = np.vstack([m, m[j:j + 1]])
    v2 = np.vstack([v, v[j:j + 1]])
    w2 = np.concatenate([w, [w[j] - math.log(2.0)]])
    w2[j] = w[j] - math.log(2.0)
    f1 = mixture_log_prob(z, m, v, w)
    f2 = mixture_log_prob(z, m2, v2, w2)
    _assert_within(f2, f1, _pair_bound(error_scale(z, m, v, w), error_scale(z, m2, v2, w2), 2 * U),
                   "split component")


# =========================================================================== partials / shards

SHARDINGS = {
    "four_unequal_with_dead_and_single": [(0, 1), (1, 100), (100, 120), (120, 300)],
    "dead_shard_first": [(100, 120), (0, 100), (120, 300)],
    "tile_aligned": [(0, 128), (128, 256), (256, 300)],
    "many_small": [(i, min(i + 37, 300)) for i in range(0, 300, 37)],
    "one_shard": [(0, 300)],
    "singletons_and_rest": [(0, 1), (1, 2), (2, 3), (3, 300)],
}


@pytest.mark.parametrize("sharding", sorted(SHARDINGS))
def test_partials_combine_to_whole(sharding):
    """``mixture_partial`` over shards (one of them all -inf weights, one a single component, unequal
    sizes), ``combine_partials`` in the given order, ``finalize_partials`` = ``mixture_log_prob`` on the
    whole set. Allowed: the kernel bound for both (c u (|f| + S), twice) plus, for the combination,
    c u ln(n) (the shards' |f_i| exceed |f| by at most ln n on average) and 4 u per shard (one exp,
    one product and one sum each)."""
    rng = np.random.default_rng(77)
    z, m, v, w = _random_case(rng, 11, 300, 3, coord=1.5, lv=(-2, 2), wscale=2.0)
    w[100:120] = -np.inf
    shards = SHARDINGS[sharding]
    parts = [mixture_partial(z, m[a:b], v[a:b], w[a:b]) for a, b in shards]
    for (a, b), (mi, si) in zip(shards, parts):
        assert mi.shape == si.shape == (11,)
        if np.all(w[a:b] == -np.inf):
            assert np.all(mi == -np.inf) and np.all(si == 0.0)
    f = finalize_partials(*combine_partials(parts))
    whole = mixture_log_prob(z, m, v, w)
    n = len(shards)
    scale = error_scale(z, m, v, w)
    _assert_within(f, whole, C_BOUND * U * (2 * scale + math.log(n)) + 4 * n * U, f"shards {sharding}")


def test_partials_of_dead_shards_only():
    """All shards switched off: combined result -inf."""
    z, m, v, _ = _random_case(np.random.default_rng(3), 4, 10, 2)
    w = np.full(10, -np.inf)
    parts = [mixture_partial(z, m[:3], v[:3], w[:3]), mixture_partial(z, m[3:], v[3:], w[3:])]
    assert np.all(finalize_partials(*combine_partials(parts)) == -np.inf)


def test_partial_requires_log_weights():
    z, m, v, _ = _random_case(np.random.default_rng(3), 4, 10, 2)
    with pytest.raises(ValueError, match="log_weights"):
        mixture_partial(z, m, v, None)


def test_combine_partials_rejects_empty_and_mismatched():
    with pytest.raises(ValueError):
        combine_partials([])
    with pytest.raises(ValueError):
        combine_partials([(np.zeros(3), np.ones(3)), (np.zeros(4), np.ones(4))])


# =========================================================================== gradient checks

def _gradcheck_case(rng, B=5, K=7, L=3):
    return (rng.normal(size=(B, L)), rng.normal(size=(K, L)), rng.uniform(-1, 1, size=(K, L)),
            rng.normal(size=K))


@pytest.mark.parametrize("method", ["central", "richardson"])
@pytest.mark.parametrize("B,K,L", [(5, 7, 3), (9, 130, 2), (1, 1, 4)])
def test_numba_vjp_random_direction(method, B, K, L):
    """``check_vjp`` on the Numba VJP with respect to z, means, log_vars and log_weights.

    Step size (refvae.gradcheck): central differences have truncation error h^2 |phi'''| / 6 and
    rounding error ~ eps |phi| / h, smallest at h = eps**(1/3) * scale (~6e-6 * scale, scale = RMS of
    the input, at least 1), giving ~eps**(2/3) ~ 4e-11 relative; Richardson extrapolation of h and
    h/2 cancels the h^2 term, so h = eps**(1/5) * scale (~7e-4) balances O(h^4) against eps/h
    (~1e-13). The inputs are O(1) with log-variances in [-1, 1], so the derivatives of phi are O(1)
    to O(10) and the truncation terms stay far below the tolerances (1e-6, 1e-8), which any wrong
    formula exceeds by orders of magnitude.
    """
    rng = np.random.default_rng(1000 + B + K + L)
    args = _gradcheck_case(rng, B, K, L)
    report = check_vjp(_numba_f, _numba_vjp, args, rng=rng, method=method, n_directions=2)
    report.raise_if_failed()
    assert {e.name.split("[")[0] for e in report.entries} == {"arg0", "arg1", "arg2", "arg3"}


@pytest.mark.parametrize("B,K,L", [(5, 7, 3), (9, 130, 2), (1, 1, 4)])
def test_twin_vjp_complex_step(B, K, L):
    """``check_vjp_complex`` on the NumPy twin (complex input; h = 1e-30, no cancellation, tolerance
    ``complex_step``), then the Numba VJP equals the twin's at the same point."""
    rng = np.random.default_rng(2000 + B + K + L)
    args = _gradcheck_case(rng, B, K, L)
    check_vjp_complex(_twin_f, _twin_vjp, args, rng=rng).raise_if_failed()
    check_vjp_vs_twin(rng.normal(size=B), *args)


def test_vjp_with_log_prob_given_equals_recomputed():
    """Passing the forward result (``ans=``) gives the same gradients, bit for bit."""
    z, m, v, w = _case_tile_and_block_edges()
    g = np.random.default_rng(1).normal(size=len(z))
    a = mixture_log_prob_vjp(g, z, m, v, w)
    b = mixture_log_prob_vjp(g, z, m, v, w, ans=mixture_log_prob(z, m, v, w))
    for x, y in zip(a, b):
        assert np.array_equal(x, y)


# =========================================================================== determinism

def _det_case():
    z, m, v, w = _random_case(np.random.default_rng(31), 50, 300, 16, coord=1.0, lv=(-1, 1), wscale=2)
    w[5] = -np.inf
    return z, m, v, w


def _run_all(case, g):
    return (mixture_log_prob(*case),) + tuple(mixture_log_prob_vjp(g, *case))


def _bit_identical(a, b):
    return all(x.shape == y.shape and np.array_equal(x.view(np.uint64), y.view(np.uint64))
               for x, y in zip(a, b))


def test_repeated_calls_bit_identical():
    case = _det_case()
    g = np.random.default_rng(0).normal(size=50)
    first = _run_all(case, g)
    for _ in range(3):
        assert _bit_identical(first, _run_all(case, g))


def test_thread_count_does_not_change_bits():
    """1 thread vs 2 threads: forward and every gradient bit-identical (thread count restored)."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip(f"Numba has only {numba.config.NUMBA_NUM_THREADS} thread(s) on this machine")
    case = _det_case()
    g = np.random.default_rng(0).normal(size=50)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _run_all(case, g)
        numba.set_num_threads(2)
        two = _run_all(case, g)
    finally:
        numba.set_num_threads(before)
    assert _bit_identical(one, two)


# =========================================================================== input validation

_Z = np.zeros((3, 2))
_M = np.zeros((4, 2))
_V = np.zeros((4, 2))
_W = np.zeros(4)


def _with(arr, idx, val):
    arr = arr.copy()
    arr[idx] = val
    return arr


BAD_INPUTS = [
    # (id, z, means, log_vars, log_weights, names that the message must contain)
    ("L_mismatch", np.zeros((3, 3)), _M, _V, _W, ("z", "means")),
    ("z_1d", np.zeros(3), _M, _V, _W, ("z",)),
    ("z_3d", np.zeros((3, 2, 1)), _M, _V, _W, ("z",)),
    ("means_1d", _Z, np.zeros(2), _V, _W, ("means",)),
    ("means_3d", _Z, np.zeros((4, 2, 1)), _V, _W, ("means",)),
    ("log_vars_1d", _Z, _M, np.zeros(2), _W, ("log_vars",)),
    ("log_vars_3d", _Z, _M, np.zeros((4, 2, 1)), _W, ("log_vars",)),
    ("log_vars_wrong_K", _Z, _M, np.zeros((5, 2)), _W, ("log_vars",)),
    ("log_vars_wrong_L", _Z, _M, np.zeros((4, 3)), _W, ("log_vars",)),
    ("z_nan", _with(_Z, (1, 1), np.nan), _M, _V, _W, ("z",)),
    ("z_inf", _with(_Z, (0, 0), np.inf), _M, _V, _W, ("z",)),
    ("z_neg_inf", _with(_Z, (2, 0), -np.inf), _M, _V, _W, ("z",)),
    ("means_nan", _Z, _with(_M, (3, 1), np.nan), _V, _W, ("means",)),
    ("means_inf", _Z, _with(_M, (0, 1), -np.inf), _V, _W, ("means",)),
    ("log_vars_nan", _Z, _M, _with(_V, (2, 0), np.nan), _W, ("log_vars",)),
    ("log_vars_inf", _Z, _M, _with(_V, (2, 0), np.inf), _W, ("log_vars",)),
    ("log_vars_neg_inf", _Z, _M, _with(_V, (1, 1), -np.inf), _W, ("log_vars",)),
    ("K_0", _Z, np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0), ("means",)),
    ("B_0", np.zeros((0, 2)), _M, _V, _W, ("z",)),
    ("log_weights_short", _Z, _M, _V, np.zeros(3), ("log_weights",)),
    ("log_weights_long", _Z, _M, _V, np.zeros(5), ("log_weights",)),
    ("log_weights_2d", _Z, _M, _V, np.zeros((4, 1)), ("log_weights",)),
    ("log_weights_nan", _Z, _M, _V, _with(_W, 2, np.nan), ("log_weights",)),
    ("log_weights_pos_inf", _Z, _M, _V, _with(_W, 0, np.inf), ("log_weights",)),
]


def _names_in(message, names):
    import re
    return all(re.search(rf"(?<![A-Za-z_]){re.escape(n)}(?![A-Za-z_])", message) for n in names)


@pytest.mark.parametrize("entry", ["forward", "vjp", "partial", "twin", "twin_vjp"])
@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_raises_value_error_naming_argument(bad, entry):
    _, z, m, v, w, names = bad
    B = np.shape(z)[0] if np.ndim(z) >= 1 else 1
    g = np.ones(B)
    call = {"forward": lambda: mixture_log_prob(z, m, v, w),
            "vjp": lambda: mixture_log_prob_vjp(g, z, m, v, w),
            "partial": lambda: mixture_partial(z, m, v, w),
            "twin": lambda: mixture_log_prob_numpy(z, m, v, w),
            "twin_vjp": lambda: mixture_log_prob_vjp_numpy(g, z, m, v, w)}[entry]
    with pytest.raises(ValueError) as info:
        call()
    assert _names_in(str(info.value), names), f"message does not name {names}: {info.value}"


@pytest.mark.parametrize("g", [np.ones(4), np.ones(2), np.ones((3, 1)), np.array([1.0, np.nan, 1.0]),
                               np.array([1.0, np.inf, 1.0])], ids=["long", "short", "2d", "nan", "inf"])
def test_bad_upstream_gradient(g):
    with pytest.raises(ValueError) as info:
        mixture_log_prob_vjp(g, _Z, _M, _V, _W)
    assert _names_in(str(info.value), ("g",)), str(info.value)


# =========================================================================== planted bugs

def per_dimension_mixture(z, means, log_vars, log_weights=None):
    """PLANTED BUG: a product of per-dimension mixtures, sum_l logsumexp_k [w_k + log N(z_l | mu_kl, v_kl)]
    (a density that integrates to one, so only a comparison with the definition catches it)."""
    z, means, log_vars, w = mx.check_mixture_args(z, means, log_vars, log_weights)
    t = w[None, :, None] - 0.5 * (LN_2PI + log_vars[None] + (z[:, None, :] - means[None]) ** 2
                                  * np.exp(-log_vars)[None])                       # (B, K, L)
    return np.sum(scipy.special.logsumexp(t, axis=1), axis=1)


def missing_half_log_2pi(z, means, log_vars, log_weights=None):
    """PLANTED BUG: the mixture without the -1/2 ln 2 pi normalising constants."""
    return mixture_log_prob(z, means, log_vars, log_weights) + 0.5 * LN_2PI * np.shape(z)[1]


@pytest.mark.parametrize("L", [2, 3, 6])
@pytest.mark.parametrize("planted", [per_dimension_mixture, missing_half_log_2pi], ids=lambda f: f.__name__)
def test_checks_catch_planted_bugs(planted, L):
    """The twin comparison and the mpmath bound FAIL on a wrong formula, and pass on the kernel."""
    case = _random_case(np.random.default_rng(40 + L), 6, 5, L, coord=1.0, lv=(-1, 1), wscale=1.0)
    check_against_twin(mixture_log_prob, *case)
    check_error_bound(mixture_log_prob, *case)
    with pytest.raises(AssertionError):
        check_against_twin(planted, *case)
    with pytest.raises(AssertionError):
        check_error_bound(planted, *case)


def test_per_dimension_mixture_is_only_wrong_for_l_at_least_2():
    """Control: for L = 1 the per-dimension mixture *is* the mixture, and the checks pass on it, so
    what they catch above is the formula, not the implementation's plumbing."""
    case = _random_case(np.random.default_rng(41), 6, 5, 1, coord=1.0, lv=(-1, 1))
    check_against_twin(per_dimension_mixture, *case)
    check_error_bound(per_dimension_mixture, *case)


# =========================================================================== slow: more cases

@pytest.mark.slow
def test_error_bound_many_random_cases():
    """400 more random cases (L up to 32) against mpmath; asserts c <= 4 (not recorded)."""
    rng = np.random.default_rng(SEED + 1)
    worst = 0.0
    for i in range(400):
        B, K, L = int(rng.integers(1, 9)), int(rng.integers(1, 60)), int(rng.integers(1, 33))
        case = _random_case(rng, B, K, L, coord=float(rng.choice([0.3, 1.0, 3.0, 10.0])),
                            lv=(-8.0, 8.0) if i % 2 else (-2.0, 2.0), wscale=float(rng.choice([0.1, 1, 10])),
                            dead=0.2 if i % 4 == 1 else 0.0, none=i % 5 == 2)
        worst = max(worst, float(np.max(check_error_bound(mixture_log_prob, *case, what=f"random {i}"))))
    assert worst <= C_BOUND


@pytest.mark.slow
@pytest.mark.parametrize("B,K,L", [(1000, 5000, 16), (257, 1025, 64)])
def test_large_sizes_match_twin(B, K, L):
    rng = np.random.default_rng(B + K + L)
    case = _random_case(rng, B, K, L, coord=1.0, lv=(-1, 1), wscale=2.0, dead=0.1)
    check_against_twin(mixture_log_prob, *case)
    check_vjp_vs_twin(rng.normal(size=B), *case)


# =========================================================================== known bugs

def _violation_rounding_accumulation():
    """Regression (was a bug): the quadratic form was accumulated by plain recursive summation onto
    the per-component constant (acc -= w*w over l), so each of the L roundings could be up to half
    an ulp of |acc|; with
    L = 16, |f| ~ 1024.5 and every (z_l - mu_l)^2/2 just above half an ulp of 1024.5, the error is
    ~ L/2 u (|f| + S) and the tested c = 4 is exceeded (observed c ~ 8; c ~ L/2 in general)."""
    L = 16
    lw = np.array([-1024.5 + 0.5 * L * LN_2PI])
    half_ulp = 0.5 * np.spacing(1024.5) * (1 + 1e-6)
    return np.full((1, L), math.sqrt(2 * half_ulp)), np.zeros((1, L)), np.zeros((1, L)), lw


KNOWN_VIOLATIONS = {}  # none: the cases below were bugs and are now regression tests


def test_regression_quadratic_accumulated_onto_the_constant():
    """The quadratic is now summed on its own with Kahan compensation (error 2u of the quadratic,
    whatever L), then subtracted from the constant."""
    check_error_bound(mixture_log_prob, *_violation_rounding_accumulation(), what="L = 16 accumulation")


def test_regression_vjp_component_with_overflowing_quadratic_gets_zero_gradient():
    """Component 1 at 1e200 from the query: t_1 = -5e399 (exactly 0 responsibility). Its gradient
    entries must be 0 and the others those of component 0 alone."""
    z = np.zeros((1, 1))
    m = np.array([[0.0], [1e200]])
    v = np.zeros((2, 1))
    dz, dm, dv, dw = mixture_log_prob_vjp(np.ones(1), z, m, v, np.zeros(2))
    assert np.array_equal(dv, [[-0.5], [0.0]]), dv
    assert np.array_equal(dm, [[0.0], [0.0]]) and np.array_equal(dw, [1.0, 0.0]) and np.array_equal(dz, [[0.0]])


def test_regression_vjp_every_quadratic_overflows_gives_zero_gradients():
    """Was NaN (0 * inf in the dz pass); only components with a nonzero responsibility are now
    touched by the VJP."""
    z = np.zeros((1, 1))
    m = np.array([[1e300]])
    v = np.array([[-60.0]])
    assert np.all(mixture_log_prob(z, m, v) == -np.inf)
    for a in mixture_log_prob_vjp(np.ones(1), z, m, v):
        assert np.all(a == 0.0), a


def test_z_only_vjp_equals_the_full_vjp_dz():
    """``z_only=True`` skips the component pass; its dz is bit-identical to the full VJP's."""
    rng = np.random.default_rng(5)
    z, mu, lv = rng.normal(size=(9, 3)), rng.normal(size=(130, 3)), rng.normal(size=(130, 3))
    g = rng.normal(size=9)
    full = mixture_log_prob_vjp(g, z, mu, lv)
    dz, dm, dv, dw = mixture_log_prob_vjp(g, z, mu, lv, z_only=True)
    assert np.array_equal(dz, full[0]) and dm is None and dv is None and dw is None
