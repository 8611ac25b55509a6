"""The fused categorical kernel (refvae.kernels.rowkernels) against the NumPy path and against mpmath.

* every entry of log_softmax and softmax produced by the kernel, against
  ``primitives.log_softmax.unchecked`` / ``primitives._softmax_weights`` (hypothesis rows, C <= 17, with
  +-1e300, +-1e3, +-700, ties at the maximum, C = 1) and against mpmath (dps=50) on adversarial
  rows; tolerance ``categorical_kernel`` (a few ulp; subnormal results to a few spacings);
* the VJP entry by entry against mpmath, the observed entry ``sum_{c != k} p_c`` included;
* non-finite logits: the kernel reports them and the private path falls back to NumPy;
* the public and private paths give the same bits on adversarial rows.

The kernel is reached through :func:`kernel_rows`: example (r, k) of a (R C, 1, C) batch holds row
r and observes category k, so ``log_prob`` is ``log_softmax(row r)[k]`` and ``p`` the softmax.
The gradient checks (central differences, Richardson, complex step) of the public functions,
which run on this kernel, are in tests/test_likelihoods.py.
"""

import mpmath
import numpy as np
import pytest
from hypothesis import example, given

from refvae.kernels import rowkernels as _rowkernels
from refvae import likelihoods
from refvae.primitives import _softmax_weights, log_softmax
from refvae.tolerances import tolerance

from strategies import finite_logit_rows

TOL = tolerance("categorical_kernel")

#: adversarial rows: huge spreads, +-1e300, C = 1, ties at the maximum, confident predictions,
#: an overflowing shift (a_c - m = -inf), results near the subnormal range
ADVERSARIAL_ROWS = [
    [0.1, -700.1], [1e300, -1e300], [-1e300, 1e300, 0.0], [0.0], [-3.5], [1e300],
    [0.0, -19.0, -19.0], [0.0, -9.0, -9.0, -19.0], [3.0, 3.0, 3.0], [3.0, -1.0, 3.0],
    [-1.0, 3.0, 3.0], [700.0, 0.0], [-745.2, 0.0, -745.2], [125.0, -587.0, -587.0],
    [1e-300, -1e-300, 0.0], [709.7, 709.7, -709.7], [40.0, 0.0, 0.0], [1e308, -1e308],
    [0.5, 0.5 + 2.0 ** -53, 0.5 - 2.0 ** -54], [2.0] * 17, [1e3, -1e3, 7e2, -7e2, 0.0, 1e300],
]


@pytest.fixture(scope="module", autouse=True)
def warm_up_kernels():
    """Compile (or load from the cache) both kernels once, outside any hypothesis example."""
    kernel_rows(np.zeros((1, 2)))
    _rowkernels.categorical_vjp(np.ones(1), np.zeros((1, 1), dtype=np.intp), np.ones((1, 1, 2)))


def kernel_rows(rows):
    """``(lsm, p)``, each (R, C): the kernel's log_softmax and softmax of every row of ``rows``."""
    rows = np.asarray(rows, dtype=np.float64)
    R, C = rows.shape
    a = np.ascontiguousarray(np.repeat(rows, C, axis=0).reshape(R * C, 1, C))
    xi = np.tile(np.arange(C, dtype=np.intp), R).reshape(R * C, 1)
    ok, lp, p = _rowkernels.categorical_forward(xi, a)
    assert ok
    return lp.reshape(R, C), p[::C, 0, :]


def mp_row(row):
    """Exact ``(log_softmax, softmax)`` of a finite float64 row (mpmath, dps=50, rounded once):
    ``log_softmax_k = (a_k - m) - log1p(s')``, ``softmax_k = exp(a_k - m) / (1 + s')`` with
    ``s' = sum_{c != c*} exp(a_c - m)`` (log1p keeps an s' below 1e-50)."""
    with mpmath.workdps(50):
        a = [mpmath.mpf(float(v)) for v in row]
        m = max(a)
        first = a.index(m)
        s1 = mpmath.fsum(mpmath.exp(v - m) for i, v in enumerate(a) if i != first)
        lsm = [float((v - m) - mpmath.log1p(s1)) for v in a]
        p = [float(mpmath.exp(v - m) / (1 + s1)) for v in a]
    return np.array(lsm), np.array(p)


def mp_vjp_row(row, k):
    """Exact ``[c = k] - softmax_c`` (g = 1), the observed entry as ``sum_{c != k} softmax_c``."""
    with mpmath.workdps(50):
        a = [mpmath.mpf(float(v)) for v in row]
        m = max(a)
        e = [mpmath.exp(v - m) for v in a]
        tot = mpmath.fsum(e)
        return np.array([float(mpmath.fsum(e[j] for j in range(len(a)) if j != k) / tot) if c == k
                         else float(-e[c] / tot) for c in range(len(a))])


def assert_close(actual, expected, what):
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    ok = TOL.check(actual, expected)
    if not ok.all():
        i = tuple(np.argwhere(~ok)[0])
        raise AssertionError(f"{what}: {np.sum(~ok)} of {ok.size} entries outside rtol={TOL.rtol:.2e}, "
                             f"atol={TOL.atol:.2e}; first at {i}: got {actual[i]!r}, expected "
                             f"{expected[i]!r} ({abs(actual[i] - expected[i]) / np.spacing(abs(expected[i])):.1f}"
                             " ulp)")


# --------------------------------------------------------------------------- vs the NumPy path

@given(finite_logit_rows())
@example(np.array([[0.1, -700.1, 0.0]]))
@example(np.array([[1e300, -1e300], [1e308, -1e308]]))
@example(np.array([[2.0] * 17, [0.0, -19.0, -19.0] + [-19.0] * 14]))
def test_kernel_vs_numpy_log_softmax(rows):
    """The same algorithm in NumPy: every entry within a few ulp (libm vs SIMD exp, summation order)."""
    lsm, p = kernel_rows(rows)
    assert_close(lsm, log_softmax.unchecked(rows, axis=-1), "log_softmax, kernel vs NumPy")
    assert_close(p, _softmax_weights(rows, -1), "softmax, kernel vs NumPy")
    assert np.all(lsm <= 0) and np.all((p >= 0) & (p <= 1))


def test_kernel_vs_numpy_random_c17():
    """The digits setting (C = 17) at the sizes of trained logits, 4096 rows."""
    scale = np.array([0.3, 3.0, 30.0, 300.0]).repeat(1024)[:, None]
    rows = np.random.default_rng(0).normal(size=(4096, 17)) * scale
    lsm, p = kernel_rows(rows)
    assert_close(lsm, log_softmax.unchecked(rows, axis=-1), "log_softmax, kernel vs NumPy")
    assert_close(p, _softmax_weights(rows, -1), "softmax, kernel vs NumPy")


@given(finite_logit_rows(max_rows=6, max_len=9, extreme=False))
def test_whole_forward_and_vjp_vs_numpy_twins(rows):
    """The kernels on a (B, D, C) batch against their NumPy twins in the same module: log_prob
    (a sum over D rows, so its scale is sum_d |log_softmax|), p, and the VJP for a random g."""
    R, C = rows.shape
    B = R // 2 + 1
    D = -(-R // B)
    a = np.ascontiguousarray(np.resize(rows, (B * D, C)).reshape(B, D, C))
    rng = np.random.default_rng(R * 31 + C)
    xi = rng.integers(0, C, size=(B, D)).astype(np.intp)
    g = rng.normal(size=B)
    ok, lp, p = _rowkernels.categorical_forward(xi, a)
    lp_t, p_t = _rowkernels.categorical_forward_numpy(xi, a)
    assert ok
    scale = np.abs(np.take_along_axis(log_softmax.unchecked(a, axis=-1), xi[:, :, None], axis=-1)).sum(axis=(1, 2))
    assert np.all(np.abs(lp - lp_t) <= TOL.rtol * scale + TOL.atol), (lp, lp_t)
    assert_close(p, p_t, "softmax, kernel vs twin")
    d = _rowkernels.categorical_vjp(g, xi, p)
    d_t = _rowkernels.categorical_vjp_numpy(g, xi, p)
    assert np.all(np.abs(d - d_t) <= TOL.rtol * np.abs(g)[:, None, None] + TOL.atol), "VJP, kernel vs twin"


# --------------------------------------------------------------------------- vs mpmath

@pytest.mark.parametrize("row", ADVERSARIAL_ROWS, ids=lambda r: str(r)[:40])
def test_kernel_vs_mpmath_adversarial(row):
    lsm, p = kernel_rows([row])
    want_lsm, want_p = mp_row(row)
    assert_close(lsm[0], want_lsm, f"log_softmax({row})")
    assert_close(p[0], want_p, f"softmax({row})")


@given(finite_logit_rows(max_rows=2, max_len=8))
def test_kernel_vs_mpmath_random(rows):
    lsm, p = kernel_rows(rows)
    for r in range(rows.shape[0]):
        want_lsm, want_p = mp_row(rows[r])
        assert_close(lsm[r], want_lsm, "log_softmax")
        assert_close(p[r], want_p, "softmax")


@pytest.mark.parametrize("row", [r for r in ADVERSARIAL_ROWS if len(r) <= 8], ids=lambda r: str(r)[:40])
def test_vjp_vs_mpmath_adversarial(row):
    """g ([c = k] - p_c) for every observed k; the observed entry is sum_{c != k} p_c, which keeps
    full relative accuracy when the prediction is confident (1 - p_k = 1.1e-8 for [0, -19, -19])."""
    C = len(row)
    x = np.arange(C, dtype=float)[:, None]                 # example k observes category k
    logits = np.tile(np.array(row, dtype=float), (C, 1))
    got = likelihoods.categorical_log_prob_vjp(np.ones(C), x, logits, C)
    for k in range(C):
        assert_close(got[k], mp_vjp_row(row, k), f"dlogits({row}), observed {k}")


def test_one_category_has_zero_gradient():
    """C = 1: log p = 0 and dlogits = 0 exactly (p = 1, an empty sum at the observed entry)."""
    x = np.zeros((3, 2))
    logits = np.array([[1e300, -5.0], [0.0, 0.0], [-1e300, 7.0]])
    np.testing.assert_array_equal(likelihoods.categorical_log_prob(x, logits, 1), np.zeros(3))
    np.testing.assert_array_equal(likelihoods.categorical_log_prob_vjp(np.ones(3), x, logits, 1),
                                  np.zeros((3, 2)))


# --------------------------------------------------------------------------- non-finite logits

@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_nonfinite_logits_fall_back_to_numpy(bad):
    """The kernel reports a non-finite logit (ok = False); the private path then uses the NumPy
    log_softmax, which handles +-inf (the public functions reject non-finite logits anyway)."""
    xi = np.array([[0, 1], [2, 0]], dtype=np.intp)
    a = np.array([[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]], [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]])
    a[1, 1, 2] = bad
    ok, _, _ = _rowkernels.categorical_forward(xi, a)
    assert not ok
    with np.errstate(invalid="ignore"):
        lp, cache = likelihoods._categorical_log_prob_and_cache(xi, a)
        lsm = log_softmax.unchecked(a, axis=-1)
    assert cache[0] == "lsm"
    np.testing.assert_array_equal(cache[1], lsm)
    np.testing.assert_array_equal(lp, np.take_along_axis(lsm, xi[:, :, None], -1)[:, :, 0].sum(1))
    if not np.isnan(bad):
        d = likelihoods._categorical_vjp_from_cache(np.array([1.0, -2.0]), xi, cache)
        assert np.all(np.isfinite(d))
        if bad == np.inf:   # the +inf entry takes all the mass of its row: g (onehot - [0, 0, 1])
            np.testing.assert_array_equal(d[1, 1], [-2.0, 0.0, 2.0])


def test_public_rejects_nonfinite_logits():
    for bad in (np.inf, np.nan):
        with pytest.raises(ValueError, match="^logits must not contain"):
            likelihoods.categorical_log_prob([[0.0]], [[0.0, bad]], 2)


# --------------------------------------------------------------------------- same bits

def test_private_and_public_paths_agree_bitwise_on_adversarial_rows():
    C = 3
    rows = [r for r in ADVERSARIAL_ROWS if len(r) == C]
    logits = np.array(rows, dtype=float)
    B = len(rows)
    x = (np.arange(B) % C).astype(float)[:, None]
    g = np.linspace(-2.0, 3.0, B)
    xi = likelihoods._check_categorical_x(x, C)
    lp, cache = likelihoods._categorical_log_prob_and_cache(xi, logits.reshape(B, 1, C))
    assert cache[0] == "p"
    assert np.array_equal(lp, likelihoods.categorical_log_prob(x, logits, C))
    d = likelihoods._categorical_vjp_from_cache(g, xi, cache).reshape(B, C)
    pub = likelihoods.categorical_log_prob_vjp(g, x, logits, C)
    assert np.array_equal(d, pub) and np.array_equal(np.signbit(d), np.signbit(pub))
