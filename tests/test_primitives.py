"""refvae.primitives against exact values (mpmath) and its VJPs against finite differences.

Reference values are computed by mpmath at dps=50 from the float64 inputs converted exactly, in
forms that are themselves well conditioned at 50 digits (``log_softmax_i = -log1p(sum_{j != i}
exp(x_j - x_i))``, ``logsumexp = m + log1p(sum_{j != argmax} exp(x_j - m))``), then rounded once
to float64. Tolerances come from ``refvae.tolerances``:

* ``primitive_vs_mpmath`` (4 eps, relative) for softplus, log_sigmoid, sigmoid, log_softmax, and
  for logsumexp on pinned rows whose result is not produced by cancellation;
* ``logsumexp_vs_mpmath_conditioned`` for logsumexp on arbitrary rows (relative to the condition
  scale ``|f| + sum_k softmax_k |x_k|``);
* ``vjp_central_difference``, ``vjp_richardson``, ``complex_step`` for the VJPs.

An expected value of exactly 0 must be matched to within a few subnormal spacings
(``subnormal_spacing``, which also applies to subnormal results), and an expected +-inf by the
same infinity.
"""

import math
import warnings

import mpmath as mp
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from refvae import primitives as P
from refvae.gradcheck import check_vjp, check_vjp_complex
from refvae.tolerances import EPS, tolerance

from gradchecks import all_checks
from strategies import float_arrays, logit_rows

mp.mp.dps = 50
NEG_INF, POS_INF = -np.inf, np.inf

#: adversarial scalars for the elementwise primitives (overflow and underflow thresholds of exp,
#: the point where 1 + e^-x rounds to 1, subnormals, infinities)
ADVERSARIAL = [1e308, -1e308, 1.7976931348623157e308, -1.7976931348623157e308, 710.0, -710.0,
               709.78, -709.78, 745.0, -745.0, 745.2, -745.2, 37.0, -37.0, 36.7, -36.7, 0.0, -0.0,
               5e-324, -5e-324, 1e-310, -1e-310, 2.2250738585072014e-308, -2.2250738585072014e-308,
               1e-20, -1e-20, 1.5, -1.5, 20.0, -20.0, 1e16, -1e16, POS_INF, NEG_INF]


# --------------------------------------------------------------------------- mpmath references

def _mpf(v):
    return mp.mpf(float(v))


def mp_softplus(x):
    if x == POS_INF:
        return POS_INF
    if x == NEG_INF:
        return 0.0
    return float(mp.log1p(mp.exp(_mpf(x))))


def mp_log_sigmoid(x):
    return -mp_softplus(-x)


def mp_sigmoid(x):
    if np.isinf(x):
        return 1.0 if x > 0 else 0.0
    return float(1 / (1 + mp.exp(-_mpf(x))))


def mp_logsumexp(row):
    """Exact logsumexp of a float64 row (mpmath, dps=50, rounded once)."""
    row = [float(v) for v in row]
    if POS_INF in row:
        return POS_INF
    fin = [_mpf(v) for v in row if v != NEG_INF]
    if not fin:
        return NEG_INF
    k = max(range(len(fin)), key=lambda i: fin[i])
    m = fin[k]
    return float(m + mp.log1p(mp.fsum(mp.exp(v - m) for i, v in enumerate(fin) if i != k)))


def mp_log_softmax(row):
    """Exact log_softmax of a float64 row without +inf entries (mpmath, dps=50)."""
    row = [float(v) for v in row]
    out = []
    for i, xi in enumerate(row):
        if xi == NEG_INF:
            out.append(NEG_INF)
            continue
        X = _mpf(xi)
        out.append(float(-mp.log1p(mp.fsum(mp.exp(_mpf(v) - X) for j, v in enumerate(row)
                                           if j != i and v != NEG_INF))))
    return out


def assert_matches(actual, expected, tol, what):
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    ok = tol.check(actual, expected) | tolerance("subnormal_spacing").check(actual, expected)
    if not ok.all():
        bad = np.argwhere(~ok)
        i = tuple(bad[0])
        with np.errstate(invalid="ignore"):
            err = np.abs(actual - expected)
        raise AssertionError(
            f"{what}: {len(bad)} of {ok.size} entries outside rtol={tol.rtol:.2e}, atol={tol.atol:.2e}; "
            f"first at {i}: got {actual[i]!r}, expected {expected[i]!r} (abs err {err[i]:.3e}, "
            f"rel err {err[i] / abs(expected[i]) if expected[i] else np.inf:.3e})")



def no_warnings():
    """Context: any floating-point warning (overflow, invalid, divide, underflow) is an error."""
    class _Ctx:
        def __enter__(self):
            self.w = warnings.catch_warnings()
            self.w.__enter__()
            warnings.simplefilter("error")
            self.e = np.errstate(all="raise")
            self.e.__enter__()

        def __exit__(self, *exc):
            self.e.__exit__(*exc)
            self.w.__exit__(*exc)
    return _Ctx()


# --------------------------------------------------------------------------- elementwise values

@pytest.mark.parametrize("fname, ref", [("softplus", mp_softplus), ("log_sigmoid", mp_log_sigmoid),
                                        ("sigmoid", mp_sigmoid)])
def test_elementwise_vs_mpmath_adversarial(fname, ref):
    """softplus/log_sigmoid/sigmoid at +-1e308, +-710, +-745, +-37, 0, subnormals, +-inf: a few
    ulp of mpmath (dps=50), exact zeros where the exact value rounds to 0, no warnings."""
    x = np.array(ADVERSARIAL)
    with no_warnings():
        got = getattr(P, fname)(x)
    assert got.shape == x.shape and got.dtype == np.float64
    assert_matches(got, [ref(v) for v in x], tolerance("primitive_vs_mpmath"), fname)


def test_elementwise_named_extremes():
    """The values the contract names explicitly."""
    with no_warnings():
        assert P.softplus(np.array([1e308]))[0] == 1e308
        assert P.log_sigmoid(np.array([-1e308]))[0] == -1e308
        assert P.softplus(np.array([-1e308]))[0] == 0.0
        assert P.softplus(np.array([-745.0]))[0] == 5e-324        # correctly rounded e^-745
        assert P.sigmoid(np.array([1e308]))[0] == 1.0
        assert P.log_sigmoid(np.array([POS_INF, NEG_INF])).tolist() == [0.0, NEG_INF]
        assert P.softplus(np.array([POS_INF, NEG_INF])).tolist() == [POS_INF, 0.0]


@given(float_arrays((7,), -800.0, 800.0))
def test_elementwise_vs_mpmath_random(x):
    tol = tolerance("primitive_vs_mpmath")
    with no_warnings():
        got = [P.softplus(x), P.log_sigmoid(x), P.sigmoid(x)]
    for g, ref, name in zip(got, (mp_softplus, mp_log_sigmoid, mp_sigmoid),
                            ("softplus", "log_sigmoid", "sigmoid")):
        assert_matches(g, [ref(v) for v in x], tol, name)


def test_elementwise_identities():
    """sigmoid(x) + sigmoid(-x) = 1 and log_sigmoid(x) = -softplus(-x) bit for bit."""
    x = np.linspace(-40, 40, 161)
    assert_matches(P.sigmoid(x) + P.sigmoid(-x), np.ones_like(x), tolerance("primitive_vs_mpmath"),
                   "sigmoid(x) + sigmoid(-x)")
    np.testing.assert_array_equal(P.log_sigmoid(x), -P.softplus(-x))


def test_scalar_input_keeps_shape():
    assert np.shape(P.softplus(3.0)) == ()
    assert np.shape(P.logsumexp([1.0, 2.0])) == ()


# --------------------------------------------------------------------------- logsumexp values

#: pinned rows (their exact result is far from 0, so a relative tolerance applies)
LSE_ROWS = [
    [1e300, -1e300], [1e308, 1e308], [-1e308, -1e308], [1.7976931348623157e308, -1e308],
    [710.0, 710.0], [709.0, 710.0, 711.0], [-745.0, -745.0], [-745.0, -746.0, -800.0],
    [37.0, -37.0, 1.0], [0.1, -700.1], [1000.0, -1000.0, 0.5], [5e-324, 1.0], [3.0],
    [NEG_INF, 2.0], [NEG_INF, 1e-300, 5.0], [NEG_INF, NEG_INF, -3.0, -3.0],
    [2.0] * 50, [1e-16, 2e-16, 3e-16, 1.0], [-1e-300, 1e300],
    [0.0, -40.0], [0.0, -700.0], [1e-300, -50.0, -60.0],   # f = log1p(tiny): log(1 + s) would give 0
]


def _vs_mpmath_pinned(fname, exact, row):
    """``P.<fname>(row)`` within ``primitive_vs_mpmath`` of the mpmath value ``exact(row)``."""
    x = np.array(row)
    with no_warnings():
        got = getattr(P, fname)(x)
    assert_matches(got, exact(x), tolerance("primitive_vs_mpmath"), f"{fname}({row})")


@pytest.mark.parametrize("row", LSE_ROWS, ids=lambda r: str(r)[:40])
def test_logsumexp_vs_mpmath_pinned(row):
    _vs_mpmath_pinned("logsumexp", mp_logsumexp, row)


def test_logsumexp_infinities():
    """All -inf rows give -inf (not NaN); any +inf gives +inf; works along axis 0 too."""
    x = np.array([[NEG_INF, NEG_INF], [POS_INF, 0.0], [POS_INF, NEG_INF], [NEG_INF, 0.0]])
    with no_warnings():
        out = P.logsumexp(x, axis=-1)
        out0 = P.logsumexp(x.T, axis=0)
    np.testing.assert_array_equal(out, [NEG_INF, POS_INF, POS_INF, 0.0])
    np.testing.assert_array_equal(out0, out)


@given(logit_rows(lo=-700.0, hi=700.0))
@example(np.array([[-math.log(2), -math.log(2)]]))    # f ~ 2e-17 by cancellation
@example(np.array([[1e300, -1e300, 0.0]]))
@example(np.array([[NEG_INF, -1.0, -1.0, 0.5]]))
def test_logsumexp_vs_mpmath_conditioned(x):
    """Arbitrary rows: error <= atol + rtol (|f| + sum_k softmax_k |x_k|) (backward stability)."""
    tol = tolerance("logsumexp_vs_mpmath_conditioned")
    with no_warnings():
        got = P.logsumexp(x)
    for r in range(x.shape[0]):
        exact = mp_logsumexp(x[r])
        fin = x[r][np.isfinite(x[r])]
        scale = abs(exact) + float(np.sum(np.exp(fin - exact) * np.abs(fin)))
        err = abs(got[r] - exact)
        assert err <= tol.atol + tol.rtol * scale, (x[r], got[r], exact, err, scale)


@pytest.mark.parametrize("axis", [0, 1, -1, 2])
def test_logsumexp_axis(axis, rng):
    x = rng.normal(size=(3, 4, 5)) * 30
    got = P.logsumexp(x, axis=axis)
    moved = np.moveaxis(x, axis, -1)
    expect = np.array([mp_logsumexp(r) for r in moved.reshape(-1, moved.shape[-1])]).reshape(moved.shape[:-1])
    assert_matches(got, expect, tolerance("primitive_vs_mpmath"), f"logsumexp axis={axis}")


# --------------------------------------------------------------------------- log_softmax values

LSM_ROWS = [
    [0.1, -700.1], [1e300, -1e300], [1e308, 1e308], [710.0, 709.5, -745.0], [37.0, -37.0, 0.0],
    [5e-324, 0.0, -5e-324], [NEG_INF, 3.0, 2.0], [NEG_INF, NEG_INF, -1e308], [1e10, 1e10 - 1.0],
    [2.0] * 17, [-1e-300, 1e-300, 0.0], [40.0, -40.0],
]


@pytest.mark.parametrize("row", LSM_ROWS, ids=lambda r: str(r)[:40])
def test_log_softmax_vs_mpmath_pinned(row):
    _vs_mpmath_pinned("log_softmax", mp_log_softmax, row)


@given(logit_rows(lo=-700.0, hi=700.0))
def test_log_softmax_vs_mpmath_random(x):
    """No cancellation in (x_k - m) - log1p(s'): a few ulp relative, on every row."""
    with no_warnings():
        got = P.log_softmax(x)
    expect = np.array([mp_log_softmax(r) for r in x])
    assert_matches(got, expect, tolerance("primitive_vs_mpmath"), "log_softmax")


def test_log_softmax_infinities():
    """+inf entries share the mass (-ln k), the rest -inf; an all -inf row stays -inf."""
    x = np.array([[POS_INF, 1.0, POS_INF], [POS_INF, NEG_INF, 0.0], [NEG_INF, NEG_INF, NEG_INF]])
    with no_warnings():
        got = P.log_softmax(x)
    np.testing.assert_array_equal(got, [[-math.log(2), NEG_INF, -math.log(2)], [0.0, NEG_INF, NEG_INF],
                                        [NEG_INF] * 3])


def test_log_softmax_normalised(rng):
    """logsumexp(log_softmax(x)) = 0 (a distribution) to rounding: the entries of y = log_softmax(x)
    are within primitive_vs_mpmath (relative) and logsumexp adds its own conditioned error, so
    |lse(y)| <= atol + (rtol + rtol_y) sum_k softmax_k(y) |y_k|."""
    x = rng.normal(size=(6, 9)) * 20
    y = P.log_softmax(x)
    out = P.logsumexp(y)
    tol, tol_y = tolerance("logsumexp_vs_mpmath_conditioned"), tolerance("primitive_vs_mpmath")
    scale = np.sum(np.exp(y) * np.abs(y), axis=-1)
    assert np.all(np.abs(out) <= tol.atol + (tol.rtol + tol_y.rtol) * scale), (out, scale)


# --------------------------------------------------------------------------- gradients at infinities

def test_gradients_at_neg_inf_are_zero_and_consistent():
    """-inf entries get exactly 0, the other entries get the gradient of the row without them."""
    x = np.array([[NEG_INF, 1.0, NEG_INF, -2.0, 0.5], [3.0, NEG_INF, NEG_INF, NEG_INF, NEG_INF]])
    g_row = np.array([0.7, -1.3])
    g_full = np.array([[0.3, -0.2, 0.9, 1.1, -0.4], [0.5, 2.0, -1.0, 0.25, 4.0]])
    with no_warnings():
        (d_lse,) = P.logsumexp_vjp(g_row, x)
        (d_lse_ans,) = P.logsumexp_vjp(g_row, x, ans=P.logsumexp(x))
        (d_lsm,) = P.log_softmax_vjp(g_full, x)
    dead = np.isneginf(x)
    for d in (d_lse, d_lse_ans, d_lsm):
        assert np.all(d[dead] == 0.0) and np.all(np.isfinite(d)), d
    for r in range(2):
        live = ~dead[r]
        red = x[r][live]
        tol = tolerance("primitive_vs_mpmath")
        assert_matches(d_lse[r][live], P.logsumexp_vjp(g_row[r], red)[0], tol, "logsumexp_vjp")
        assert_matches(d_lsm[r][live], P.log_softmax_vjp(g_full[r][live], red)[0], tol, "log_softmax_vjp")


def mp_log_softmax_vjp(g, row):
    """Exact ``g_j - p_j sum_k g_k`` and its natural scale ``|g_j| (1 - p_j) + p_j |sum_{k!=j} g_k|``
    for a finite float64 row (mpmath, dps=50; 1 - p_j summed from the other entries)."""
    X = [_mpf(v) for v in row]
    G = [_mpf(v) for v in g]
    out, scale = [], []
    for j in range(len(X)):
        others = mp.fsum(mp.exp(X[k] - X[j]) for k in range(len(X)) if k != j)
        pj = 1 / (1 + others)
        qj = others / (1 + others)                      # 1 - p_j without cancellation
        rest = mp.fsum(G[k] for k in range(len(G)) if k != j)
        out.append(float(G[j] * qj - pj * rest))
        scale.append(float(abs(G[j]) * qj + pj * abs(rest)))
    return np.array(out), np.array(scale)


@pytest.mark.parametrize("row,g", [
    ([0.0, -40.0, -40.0], [1.0, 0.0, 0.0]),             # 1 - p_0 = 8.5e-18: textbook form gives 0
    ([0.0, -19.0, -19.0], [2.0, -1.0, 0.5]),
    ([0.0, -23.0, -30.0], [1.0, 1e-20, 0.0]),           # sum_{k != 0} g_k = 1e-20 is lost in sum g
    ([5.0], [3.0]),                                      # one entry: the gradient is exactly 0
    ([1e300, -1e300, 0.0], [1.0, -1.0, 1e-300]),
    ([0.3, 0.3, 0.3, 0.3], [1.0, -1.0, 1.0, -1.0]),
])
def test_log_softmax_vjp_vs_mpmath_pinned(row, g):
    """Confident rows and concentrated cotangents, entry by entry against the exact value on the
    natural scale of the result (tolerance ``log_softmax_vjp_vs_mpmath``)."""
    x, g = np.array(row), np.array(g)
    exact, scale = mp_log_softmax_vjp(g, x)
    tol = tolerance("log_softmax_vjp_vs_mpmath")
    for ans in (None, P.log_softmax(x)):
        got = P.log_softmax_vjp(g, x, ans=ans)
        assert np.all(np.abs(got - exact) <= tol.rtol * scale), (got, exact, scale)


@given(st.lists(st.floats(-60.0, 60.0), min_size=1, max_size=7).flatmap(
    lambda r: st.tuples(st.just(r), st.lists(st.floats(-1e3, 1e3), min_size=len(r), max_size=len(r)))))
def test_log_softmax_vjp_vs_mpmath_random(row_g):
    row, g = row_g
    x, g = np.array(row), np.array(g)
    exact, scale = mp_log_softmax_vjp(g, x)
    got = P.log_softmax_vjp(g, x)
    # + a few subnormal spacings: results below 2^-1022 are rounded on the fixed grid 2^-1074, so
    # their error is absolute, not relative (found: g = 2.2e-309, an error of one spacing)
    floor = 4 * np.finfo(np.float64).smallest_subnormal
    assert np.all(np.abs(got - exact) <= tolerance("log_softmax_vjp_vs_mpmath").rtol * scale + floor)


def test_gradients_of_infinite_rows_are_zero():
    """Rows whose output is +-inf (all -inf, or a +inf entry) do not move: zero gradient, no NaN."""
    x = np.array([[NEG_INF, NEG_INF, NEG_INF], [POS_INF, 1.0, NEG_INF], [POS_INF, POS_INF, 0.0]])
    with no_warnings():
        (d1,) = P.logsumexp_vjp(np.ones(3), x)
        (d2,) = P.logsumexp_vjp(np.ones(3), x, ans=P.logsumexp(x))
        (d3,) = P.log_softmax_vjp(np.ones((3, 3)), x)
    for d in (d1, d2, d3):
        np.testing.assert_array_equal(d, np.zeros((3, 3)))


def test_logsumexp_vjp_huge_equal_entries():
    """ans = 1e308 + ln 2 rounds to 1e308: the reused-ans path must still give weights 1/2."""
    x = np.array([1e308, 1e308])
    with no_warnings():
        np.testing.assert_array_equal(P.logsumexp_vjp(1.0, x), ([0.5, 0.5],))
        np.testing.assert_array_equal(P.logsumexp_vjp(1.0, x, ans=P.logsumexp(x)), ([0.5, 0.5],))


def test_elementwise_vjps_at_extremes():
    x = np.array(ADVERSARIAL)
    with no_warnings():
        (ds,), (dl,) = P.softplus_vjp(np.ones_like(x), x), P.log_sigmoid_vjp(np.ones_like(x), x)
    assert_matches(ds, [mp_sigmoid(v) for v in x], tolerance("primitive_vs_mpmath"), "softplus_vjp")
    assert_matches(dl, [mp_sigmoid(-v) for v in x], tolerance("primitive_vs_mpmath"), "log_sigmoid_vjp")


# --------------------------------------------------------------------------- VJP checks

def _row_pair(fname, axis):
    f = getattr(P, fname)
    vjp = getattr(P, fname + "_vjp")
    return (lambda x: f(x, axis=axis)), (lambda g, x: vjp(g, x, axis=axis))


ELEMENTWISE = [("softplus", P.softplus, P.softplus_vjp), ("log_sigmoid", P.log_sigmoid, P.log_sigmoid_vjp)]


@pytest.mark.parametrize("fname", ["logsumexp", "log_softmax"])
@given(x=logit_rows(lo=-30.0, hi=30.0), axis=st.sampled_from([0, -1]), seed=st.integers(0, 2**32 - 1))
@example(x=np.array([[NEG_INF, 0.0, -29.0]]), axis=-1, seed=0)
def test_row_vjps_gradcheck(fname, x, axis, seed):
    """Central differences, Richardson and complex step, with -inf entries mixed in.

    logsumexp and log_softmax are shift invariant and bend on a length scale of 1 whatever the
    size of x, so the steps are eps**(1/3) and eps**(1/5) themselves (the checker would multiply
    them by the RMS of x, up to 30, and Richardson's O(h^4) truncation would reach 1e-8).
    The checked function is that of the finite entries (the -inf entries are held at -inf: a
    finite step cannot move them, and the step-size rule of the checker scales with the RMS of the
    input, which -inf would make infinite); their zero gradient is tested separately above.
    """
    if axis == 0:
        x = np.ascontiguousarray(x.T)
    f, vjp = _row_pair(fname, axis)
    live = np.isfinite(x)

    def embed(v):
        full = np.full(x.shape, NEG_INF, dtype=v.dtype)
        full[live] = v
        return full

    if fname == "logsumexp":
        f_live = lambda v: f(embed(v))                        # noqa: E731
        vjp_live = lambda g, v: (vjp(g, embed(v))[0][live],)  # noqa: E731
    else:  # log_softmax: the outputs at -inf entries are -inf, constant; check the others
        def f_live(v):
            return f(embed(v))[live]

        def vjp_live(g, v):
            G = np.zeros(x.shape)
            G[live] = g
            return (vjp(G, embed(v))[0][live],)
    args = (np.ascontiguousarray(x[live]),)
    rng = np.random.default_rng(seed)
    rms = max(1.0, float(np.sqrt(np.mean(args[0] ** 2))))
    all_checks(f_live, vjp_live, args, rng,
               {"central": EPS ** (1 / 3) / rms, "richardson": EPS ** 0.2 / rms})
    full = vjp(rng.standard_normal(f(x).shape), x)[0]
    assert np.all(full[~live] == 0.0) and np.all(np.isfinite(full))


def test_logsumexp_vjp_reuses_ans(rng):
    """Passing the forward result gives the same gradient (two evaluations of one closed form)."""
    x = rng.normal(size=(4, 6)) * 10
    g = rng.normal(size=4)
    tol = tolerance("closed_form_vs_scipy")
    assert_matches(P.logsumexp_vjp(g, x, ans=P.logsumexp(x)), P.logsumexp_vjp(g, x), tol, "lse ans")
    G = rng.normal(size=x.shape)
    assert_matches(P.log_softmax_vjp(G, x, ans=P.log_softmax(x)), P.log_softmax_vjp(G, x), tol, "lsm ans")


@pytest.mark.parametrize("name, f, vjp", ELEMENTWISE, ids=[e[0] for e in ELEMENTWISE])
@given(x=float_arrays((3, 4), -40.0, 40.0), seed=st.integers(0, 2**32 - 1))
def test_elementwise_vjps_gradcheck(name, f, vjp, x, seed):
    """softplus and log_sigmoid bend on a length scale of 1 whatever |x| is, so the Richardson step
    is set to eps**(1/5) itself (the checker would otherwise multiply it by the RMS of x, up to
    40, and its O(h^4) truncation error would reach 1e-8 where f ~ e^x is tiny)."""
    rng = np.random.default_rng(seed)
    pair = (f, vjp)                 # the VJP convention is check_vjp's: a tuple of gradients
    rms = max(1.0, float(np.sqrt(np.mean(x * x))))
    all_checks(*pair, (x,), rng, {"richardson": EPS ** 0.2 / rms})


def test_planted_wrong_vjp_fails(rng):
    """The checks can fail: softplus' VJP with sigmoid(-x) instead of sigmoid(x)."""
    x = rng.normal(size=(3, 4)) * 3
    wrong = lambda g, x: (g * P.sigmoid(-x),)   # noqa: E731
    assert not check_vjp(P.softplus, wrong, (x,), rng=rng).passed
    assert not check_vjp_complex(P.softplus, wrong, (x,), rng=rng).passed


# --------------------------------------------------------------------------- bad input

ALL_FORWARD = ["logsumexp", "log_softmax", "softplus", "log_sigmoid", "sigmoid"]


@pytest.mark.parametrize("fname", ALL_FORWARD)
def test_nan_is_rejected_naming_x(fname):
    with pytest.raises(ValueError, match=r"\bx\b.*NaN"):
        getattr(P, fname)(np.array([[0.0, np.nan]]))


@pytest.mark.parametrize("fname", ALL_FORWARD)
def test_strings_and_empty_are_rejected(fname):
    with pytest.raises(TypeError, match=r"\bx\b"):
        getattr(P, fname)("1.0")
    with pytest.raises(TypeError, match=r"\bx\b"):
        getattr(P, fname)(np.array(["a", "b"]))
    with pytest.raises(ValueError, match=r"\bx\b.*empty"):
        getattr(P, fname)(np.zeros((2, 0)))


def test_complex_is_only_for_the_analytic_paths():
    """Complex input is accepted (complex step); real parts drive the branches."""
    out = P.softplus(np.array([-800.0 + 1e-30j, 800.0 + 1e-30j]))
    assert out.dtype == np.complex128 and out.real.tolist() == [0.0, 800.0]


def test_axis_and_cotangent_errors():
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match="axis"):
        P.logsumexp(x, axis=2)
    with pytest.raises(TypeError, match="axis"):
        P.log_softmax(x, axis=1.0)
    with pytest.raises(ValueError, match=r"\bg\b"):
        P.logsumexp_vjp(np.ones(3), x)
    with pytest.raises(ValueError, match=r"\bg\b"):
        P.log_softmax_vjp(np.ones((3, 2)), x)
    with pytest.raises(ValueError, match=r"\bg\b.*NaN"):
        P.softplus_vjp(np.array([np.nan]), np.zeros(1))
    with pytest.raises(ValueError, match="ans"):
        P.logsumexp_vjp(np.ones(2), x, ans=np.zeros(3))
    with pytest.raises(ValueError, match=r"\bx\b"):
        P.logsumexp(np.float64(1.0))   # a scalar has no axis to reduce
