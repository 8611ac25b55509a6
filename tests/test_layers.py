"""Tests of refvae.layers: linear, the five activations, and the MLP.

What is checked, and against what:

* every backward against the random-direction VJP check (central differences, and Richardson for
  the smooth paths) and the complex-step check, on hypothesis-drawn inputs;
* the kink conventions (relu'(0) = 0, leaky_relu'(0) = 0.01, slope exactly 0.01);
* activation derivatives against mpmath (dps=50) on the whole float64 line;
* the MLP against a hand-written composition, its trace, its parameter names and init;
* refvae against torch autograd in float64 (``-m torch``);
* that the checks reject deliberately wrong formulas (the tolerances are tight enough to fail).

Tolerances come from :data:`refvae.tolerances.TOLERANCES`.
"""

import warnings

import mpmath
import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from refvae import layers
from refvae.gradcheck import GradcheckError, check_vjp, check_vjp_complex
from refvae.layers import (ACTIVATIONS, LEAKY_SLOPE, activation_backward, activation_forward,
                           linear_backward, linear_forward, mlp_backward, mlp_forward, mlp_init,
                           mlp_param_names)
from refvae.tolerances import tolerance

from strategies import (activation_inputs, away_from_zero, check_vjp_robust, float_arrays, linear_args,
                        mlp_cases)

NAMES = ("leaky_relu", "relu", "tanh", "sigmoid", "softplus")
SMOOTH = ("tanh", "sigmoid", "softplus")
KINKED = ("leaky_relu", "relu")

# Distance kept from the kink at 0 in finite-difference checks of relu/leaky_relu. The stencil
# moves x by t*u with |t| <= h = eps**(1/3) * max(1, rms(x)) <= 6.1e-6 * 10 (|x| <= 10) and u a
# standard normal direction (|u_i| < 6 with probability 1 - 2e-9 per entry), so every evaluated
# point is within 3.7e-4 < 1e-3 of x and on the same side of 0. (A difference quotient across the
# kink measures a blend of both slopes, which is not the derivative at x.)
KINK_MARGIN = 1e-3


def _lin_f(x, W, b):
    return linear_forward(x, W, b)[0]


def _lin_vjp(g, x, W, b):
    return linear_backward(g, linear_forward(x, W, b)[1])


def _act_f(name):
    return lambda x: activation_forward(name, x)[0]


def _act_vjp(name):
    return lambda g, x: (activation_backward(name, g, activation_forward(name, x)[1]),)


# =========================================================================== linear

@given(linear_args())
def test_linear_vjp_central_and_richardson(args):
    check_vjp_robust(_lin_f, _lin_vjp, args, seed=1)
    check_vjp_robust(_lin_f, _lin_vjp, args, seed=1, method="richardson")


@given(linear_args())
def test_linear_vjp_complex_step(args):
    check_vjp_robust(_lin_f, _lin_vjp, args, seed=2, method="complex")


def test_linear_forward_convention():
    """y = x @ W + b with W of shape (in, out); the backward's shapes are those of its inputs."""
    x = np.arange(6.0).reshape(2, 3)
    W = np.arange(12.0).reshape(3, 4) / 7
    b = np.array([1.0, -2.0, 0.5, 3.0])
    y, cache = linear_forward(x, W, b)
    np.testing.assert_array_equal(y, x @ W + b)
    dx, dW, db = linear_backward(np.ones((2, 4)), cache)
    assert dx.shape == x.shape and dW.shape == W.shape and db.shape == b.shape
    np.testing.assert_array_equal(db, [2.0, 2.0, 2.0, 2.0])  # a sum over the batch, not a mean


def test_linear_accepts_float32_and_lists():
    y, _ = linear_forward(np.ones((2, 3), np.float32), [[1.0], [2.0], [3.0]], [0.5])
    assert y.dtype == np.float64 and y.shape == (2, 1)
    np.testing.assert_array_equal(y, [[6.5], [6.5]])


# =========================================================================== activations

@pytest.mark.parametrize("name", NAMES)
@given(x=activation_inputs())
def test_activation_vjp_central(name, x):
    if name in KINKED:
        x = away_from_zero(x, KINK_MARGIN)
    check_vjp_robust(_act_f(name), _act_vjp(name), (x,), seed=3)


@pytest.mark.parametrize("name", SMOOTH)
@given(x=activation_inputs())
def test_activation_vjp_richardson(name, x):
    # relu/leaky_relu are left out: Richardson's step eps**(1/5) * scale ~ 7e-3 is larger than
    # KINK_MARGIN, and on each side of the kink the functions are linear (the central check is exact)
    check_vjp_robust(_act_f(name), _act_vjp(name), (x,), seed=4, method="richardson")


@pytest.mark.parametrize("name", NAMES)
@given(x=activation_inputs())
@example(x=np.array([[0.0, -0.0, 1e-300, -1e-300]]))
def test_activation_vjp_complex_step(name, x):
    """Complex step for all five, kinks included.

    The forward branches on Re x only and the step is purely imaginary, so it never crosses a
    kink: at x = 0 exactly relu gives Im(0 * (i h u)) = 0 and leaky_relu 0.01 h u, i.e. the
    complex step measures the left slope -- the convention the backward implements.
    """
    check_vjp_robust(_act_f(name), _act_vjp(name), (x,), seed=5, method="complex")


def test_kink_conventions_exact():
    x = np.array([-2.0, -0.0, 0.0, 3.0])
    dy = np.ones(4)
    np.testing.assert_array_equal(layers.relu_backward(dy, layers.relu_forward(x)[1]), [0, 0, 0, 1])
    np.testing.assert_array_equal(layers.leaky_relu_backward(dy, layers.leaky_relu_forward(x)[1]),
                                  [0.01, 0.01, 0.01, 1])
    assert LEAKY_SLOPE == 0.01
    # slope exactly 0.01 in the forward: y = 0.01 * x, correctly rounded
    xs = np.array([-1.0, -3.0, -1e-5, -123.456])
    np.testing.assert_array_equal(layers.leaky_relu_forward(xs)[0], 0.01 * xs)
    np.testing.assert_array_equal(layers.relu_forward(x)[0], [0, 0, 0, 3])
    # the same through the registry
    for name, want in (("relu", 0.0), ("leaky_relu", 0.01)):
        _, cache = activation_forward(name, np.zeros((1, 1)))
        assert activation_backward(name, np.ones((1, 1)), cache)[0, 0] == want


@pytest.mark.parametrize("name,slope", [("relu", 0.0), ("leaky_relu", 0.01)])
def test_kink_convention_through_mlp(name, slope):
    """A hidden pre-activation exactly 0 (W = 0, b = 0) passes the left slope to layer 0."""
    params = {"m.0.W": np.zeros((2, 3)), "m.0.b": np.zeros(3),
              "m.1.W": np.ones((3, 1)), "m.1.b": np.zeros(1)}
    x = np.array([[1.0, 2.0]])
    y, cache = mlp_forward(params, "m", x, name)
    _, grads = mlp_backward(np.ones((1, 1)), cache)
    np.testing.assert_array_equal(grads["m.0.b"], np.full(3, slope))
    np.testing.assert_array_equal(grads["m.0.W"], slope * x.T @ np.ones((1, 3)))


def _exact_derivative(name, xi):
    X = mpmath.mpf(float(xi))
    if name == "tanh":
        return mpmath.sech(X) ** 2
    e = mpmath.exp(-abs(X))          # sigma(x) sigma(-x) = e^{-|x|} / (1 + e^{-|x|})^2 (no cancellation)
    if name == "sigmoid":
        return e / (1 + e) ** 2
    return 1 / (1 + mpmath.exp(-X))  # softplus' = sigmoid


@pytest.mark.parametrize("name", SMOOTH)
@given(x=float_arrays((16,), -745.0, 745.0))
@example(x=np.array([10.0, 20.0, 40.0, -40.0, 100.0, 700.0, -700.0, 0.0]))
def test_smooth_derivatives_vs_mpmath(name, x):
    """tanh' = sech^2, sigmoid' = sigmoid(x) sigmoid(-x), softplus' = sigmoid to a few ulp (mpmath,
    dps=50), including where 1 - tanh^2 and 1 - sigmoid would cancel to 0."""
    tol = tolerance("activation_derivative_vs_mpmath")
    _, cache = activation_forward(name, x)
    d = activation_backward(name, np.ones_like(x), cache)
    with mpmath.workdps(50):
        exact = np.array([float(_exact_derivative(name, xi)) for xi in x])
    normal = np.abs(exact) > 1e-300   # below that, float64 is subnormal and has fewer digits
    ok = tol.check(d[normal], exact[normal])
    assert ok.all(), (f"{name}': {np.sum(~ok)} of {ok.size} entries off; worst at x = "
                      f"{x[normal][~ok][0]}: {d[normal][~ok][0]!r} vs {exact[normal][~ok][0]!r}")


def test_activations_overflow_free():
    x = np.array([-1e300, -800.0, -40.0, 0.0, 40.0, 800.0, 1e300])
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # any overflow/invalid RuntimeWarning fails the test
        for name in NAMES:
            y, cache = activation_forward(name, x)
            d = activation_backward(name, np.ones_like(x), cache)
            assert np.all(np.isfinite(y)) and np.all(np.isfinite(d)), name
    np.testing.assert_array_equal(layers.sigmoid_forward(x)[0][[0, -1]], [0.0, 1.0])
    np.testing.assert_array_equal(layers.softplus_forward(x)[0][[0, -1]], [0.0, 1e300])
    np.testing.assert_array_equal(layers.tanh_forward(x)[0][[0, -1]], [-1.0, 1.0])


def test_activation_values_match_definitions():
    x = np.linspace(-5, 5, 41)
    tol = tolerance("closed_form_vs_scipy")
    want = {"relu": np.maximum(x, 0), "leaky_relu": np.where(x > 0, x, 0.01 * x), "tanh": np.tanh(x),
            "sigmoid": 1 / (1 + np.exp(-x)), "softplus": np.log1p(np.exp(x))}
    for name in NAMES:
        assert tol.check(activation_forward(name, x)[0], want[name]).all(), name


def test_activation_registry():
    assert tuple(ACTIVATIONS) == NAMES
    x = np.linspace(-2, 2, 7)
    for name in NAMES:
        y, _ = activation_forward(name, x)
        np.testing.assert_array_equal(y, getattr(layers, f"{name}_forward")(x)[0])
    with pytest.raises(ValueError, match="activation") as err:
        activation_forward("gelu", x)
    assert all(n in str(err.value) for n in NAMES)   # the message lists the choices
    with pytest.raises(ValueError, match="activation"):
        activation_backward("swish", x, x)


# =========================================================================== MLP

def test_mlp_init_names_shapes_bounds():
    params = mlp_init([4, 7, 3], "encoder", np.random.default_rng(0))
    assert list(params) == ["encoder.0.W", "encoder.0.b", "encoder.1.W", "encoder.1.b"]
    assert params["encoder.0.W"].shape == (4, 7) and params["encoder.0.b"].shape == (7,)
    assert params["encoder.1.W"].shape == (7, 3) and params["encoder.1.b"].shape == (3,)
    for k, v in params.items():
        fan_in = 4 if ".0." in k else 7
        assert v.dtype == np.float64 and np.all(np.abs(v) <= 1 / np.sqrt(fan_in)), k
    again = mlp_init([4, 7, 3], "encoder", np.random.default_rng(0))
    assert all(np.array_equal(params[k], again[k]) for k in params)   # explicit generator: reproducible


def test_mlp_init_distribution():
    """W ~ U(-1/sqrt(in), 1/sqrt(in)) (PyTorch's nn.Linear default).

    n = 200 * 300 = 60000 draws scaled by sqrt(in): mean 0 and variance 1/3 for U(-1, 1). The
    sample mean has sd sqrt(1/3/n) = 2.4e-3 and the sample variance sd sqrt((1/5 - 1/9)/n) = 1.2e-3;
    the checks use 6 sd (false-failure probability < 4e-9 each under the CLT, and the seed is
    fixed). A Kaiming-uniform bound sqrt(6/in) would give variance 2, a bound 1/in variance
    1/(3 in): both are off by more than 100 sd.
    """
    n_in, n_out = 200, 300
    W = mlp_init([n_in, n_out], "m", np.random.default_rng(7))["m.0.W"] * np.sqrt(n_in)
    assert abs(W.mean()) < 6 * np.sqrt(1 / 3 / W.size)
    assert abs(W.var() - 1 / 3) < 6 * np.sqrt((1 / 5 - 1 / 9) / W.size)
    assert W.max() > 0.999 and W.min() < -0.999


def test_mlp_init_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="sizes"):
        mlp_init([3], "m", rng)
    with pytest.raises(ValueError, match=r"sizes\[1\]"):
        mlp_init([3, 0, 2], "m", rng)
    with pytest.raises(TypeError, match=r"sizes\[0\]"):
        mlp_init([2.5, 3], "m", rng)
    with pytest.raises(TypeError, match="rng"):
        mlp_init([3, 2], "m", 0)
    with pytest.raises(TypeError, match="prefix"):
        mlp_init([3, 2], "", rng)


def _manual_mlp(params, prefix, x, act, out_act):
    n = len(mlp_param_names(params, prefix)) // 2
    fns = {"relu": lambda a: np.maximum(a, 0), "leaky_relu": lambda a: np.where(a > 0, a, 0.01 * a),
           "tanh": np.tanh, "sigmoid": lambda a: 1 / (1 + np.exp(-a)), "softplus": lambda a: np.log1p(np.exp(a))}
    h, trace = x, []
    for i in range(n):
        h = h @ params[f"{prefix}.{i}.W"] + params[f"{prefix}.{i}.b"]
        trace.append((f"{prefix}.{i}.pre", h))
        a = act if i < n - 1 else out_act
        if a is not None:
            h = fns[a](h)
            trace.append((f"{prefix}.{i}.out", h))
    return h, trace


@pytest.mark.parametrize("out_act", [None, "sigmoid"])
@pytest.mark.parametrize("act", NAMES)
def test_mlp_forward_matches_composition_and_trace(act, out_act):
    rng = np.random.default_rng(11)
    params = mlp_init([3, 5, 4, 2], "decoder", rng)
    x = rng.standard_normal((6, 3))
    y, cache = mlp_forward(params, "decoder", x, act, out_act)
    y_ref, trace_ref = _manual_mlp(params, "decoder", x, act, out_act)
    tol = tolerance("closed_form_vs_scipy")
    assert [n for n, _ in cache["trace"]] == [n for n, _ in trace_ref]
    for (name, a), (_, e) in zip(cache["trace"], trace_ref):
        assert a.shape == e.shape and tol.check(a, e).all(), f"first differing intermediate: {name}"
    assert cache["trace"][-1][1] is y
    assert tol.check(y, y_ref).all()


def test_mlp_trace_names():
    params = mlp_init([2, 3, 3, 1], "prior.gtm", np.random.default_rng(0))
    _, cache = mlp_forward(params, "prior.gtm", np.ones((1, 2)), "tanh")
    assert [n for n, _ in cache["trace"]] == ["prior.gtm.0.pre", "prior.gtm.0.out", "prior.gtm.1.pre",
                                              "prior.gtm.1.out", "prior.gtm.2.pre"]
    _, cache = mlp_forward(params, "prior.gtm", np.ones((1, 2)), "tanh", out_activation="sigmoid")
    assert [n for n, _ in cache["trace"]][-2:] == ["prior.gtm.2.pre", "prior.gtm.2.out"]


def test_mlp_reads_only_its_own_params_and_grads_have_exactly_its_keys():
    rng = np.random.default_rng(0)
    params = {**mlp_init([3, 4, 2], "encoder", rng), **mlp_init([2, 4, 3], "decoder", rng),
              **mlp_init([2, 2], "encoder2", rng), "prior.means": np.zeros((2, 2)),
              "prior.flow.0.s.0.W": np.zeros((1, 1)), "encoder.x.W": np.zeros(1)}
    y, cache = mlp_forward(params, "encoder", np.ones((5, 3)), "leaky_relu")
    dx, grads = mlp_backward(np.ones_like(y), cache)
    assert list(grads) == ["encoder.0.W", "encoder.0.b", "encoder.1.W", "encoder.1.b"]
    assert all(grads[k].shape == params[k].shape for k in grads)
    assert dx.shape == (5, 3)


def test_mlp_param_names_errors():
    p = mlp_init([2, 3, 1], "m", np.random.default_rng(0))
    assert mlp_param_names(p, "m") == ["m.0.W", "m.0.b", "m.1.W", "m.1.b"]
    with pytest.raises(ValueError, match="no layers under prefix 'q'"):
        mlp_param_names(p, "q")
    q = dict(p)
    del q["m.1.b"]
    with pytest.raises(ValueError, match=r"m\.1\.b"):
        mlp_param_names(q, "m")
    q = dict(p)
    q["m.3.W"], q["m.3.b"] = np.ones((1, 1)), np.ones(1)   # layer 2 missing
    with pytest.raises(ValueError, match=r"m\.2\.W"):
        mlp_param_names(q, "m")


def _mlp_check_fns(prefix, act, out_act, patterns):
    """f and vjp over a dict {params..., "x": x}; f records the sign pattern of every pre-activation."""
    def f(args):
        params = {k: v for k, v in args.items() if k != "x"}
        y, cache = mlp_forward(params, prefix, args["x"], act, out_act)
        patterns.append(tuple((np.real(a) > 0).tobytes() for n, a in cache["trace"] if n.endswith(".pre")))
        return y

    def vjp(g, args):
        params = {k: v for k, v in args.items() if k != "x"}
        _, cache = mlp_forward(params, prefix, args["x"], act, out_act)
        dx, grads = mlp_backward(g, cache)
        return {**grads, "x": dx}
    return f, vjp


@given(case=mlp_cases(), act=st.sampled_from(NAMES), out_act=st.sampled_from([None, *NAMES]))
def test_mlp_vjp(case, act, out_act):
    """Every parameter and x, central differences (and Richardson when all activations are smooth).

    For relu/leaky_relu, f records the sign pattern of every pre-activation at every point of the
    difference stencil; an example whose stencil crosses a kink is discarded (``assume``) rather
    than judged, since there the difference quotient is not a derivative. Crossings are rare (the
    stencil spans ~1e-5), so few examples are discarded.
    """
    sizes, seed, x = case
    params = mlp_init(sizes, "enc", np.random.default_rng(seed))
    patterns = []
    f, vjp = _mlp_check_fns("enc", act, out_act, patterns)
    args = {**params, "x": x}
    smooth = act in SMOOTH and out_act in (None, *SMOOTH)
    try:
        check_vjp_robust(f, vjp, args, seed=seed)
        if smooth:
            check_vjp_robust(f, vjp, args, seed=seed, method="richardson")
    except GradcheckError:
        assume(all(p == patterns[0] for p in patterns))   # judge only stencils that cross no kink
        raise


@given(case=mlp_cases(), act=st.sampled_from(NAMES), out_act=st.sampled_from([None, *NAMES]))
@example(case=([1, 1, 5, 1], 0, np.zeros((1, 1))), act="leaky_relu", out_act=None)
def test_mlp_vjp_complex_step(case, act, out_act):
    """All activations: the imaginary step never moves Re(pre), so no kink is crossed (see the
    activation complex-step test).

    A derivative of an MLP is a sum over paths; when the paths cancel (the pinned example: a
    1-1-5-1 leaky_relu net at x = 0 has d/db_0 = 1.9e-7 from paths of size ~1e-4) no draw of v
    and u helps, and both the VJP and the complex step carry a rounding error of a few ulp of the
    *path magnitudes*, i.e. > 1e-13 of the result. For an input that fails the complex step in
    every draw, :func:`_complex_step_vs_path_scale` judges it against that scale instead.
    """
    sizes, seed, x = case
    params = mlp_init(sizes, "enc", np.random.default_rng(seed))
    f, vjp = _mlp_check_fns("enc", act, out_act, [])
    args = {**params, "x": x}
    try:
        check_vjp_robust(f, vjp, args, seed=seed, method="complex")
    except GradcheckError:
        _complex_step_vs_path_scale(f, vjp, args, "enc", act, out_act, seed)


def _complex_step_vs_path_scale(f, vjp, args, prefix, act, out_act, seed):
    """Complex step judged relative to the sum of absolute path contributions.

    With every factor replaced by its absolute value -- |v|, |W|, |h|, and the activation
    derivatives, which are >= 0 for all five activations -- the backward pass returns
    ``S_p = sum over paths |terms|`` for each input p. Both the VJP and the complex step sum those
    terms, so each errs by at most a few hundred ulp of ``<S_p, |u_p|>`` (the ``complex_step``
    tolerance's reason), however much the terms cancel. A wrong formula changes the sum by a
    fraction of the terms, which this still catches unless it is below 1e-13 of them.
    """
    tol = tolerance("complex_step")
    rng = np.random.default_rng([seed, 99])
    params = {k: v for k, v in args.items() if k != "x"}
    y, cache = mlp_forward(params, prefix, args["x"], act, out_act)
    v = rng.standard_normal(y.shape)
    grads = vjp(v, args)
    # the absolute-value backward pass (uses this module's cache layout: (x, W) per linear layer)
    d, abs_grads = np.abs(v), {}
    for i in range(len(cache["layers"]) - 1, -1, -1):
        (h, W), a, a_cache = cache["layers"][i]
        if a is not None:
            d = activation_backward(a, d, a_cache)
        d, abs_grads[f"{prefix}.{i}.W"], abs_grads[f"{prefix}.{i}.b"] = linear_backward(d, (np.abs(h), np.abs(W)))
    abs_grads["x"] = d
    for name, value in args.items():
        u = rng.standard_normal(value.shape)
        moved = {k: w.astype(np.complex128) for k, w in args.items()}
        moved[name] = value + 1e-30j * u
        num = float(np.sum(v * f(moved).imag)) / 1e-30
        ana = float(np.sum(grads[name] * u))
        scale = max(abs(ana), float(np.sum(abs_grads[name] * np.abs(u))))
        assert abs(ana - num) <= tol.rtol * scale, (f"{name}: VJP {ana!r} vs complex step {num!r}, "
                                                    f"path scale {scale:.3e}")


# =========================================================================== bad input

def test_linear_bad_input():
    x, W, b = np.ones((2, 3)), np.ones((3, 4)), np.ones(4)
    with pytest.raises(ValueError, match=r"x has 3 columns but W has 5 rows"):
        linear_forward(x, np.ones((5, 4)), b)
    with pytest.raises(ValueError, match=r"^b must have shape"):
        linear_forward(x, W, np.ones(3))
    with pytest.raises(ValueError, match=r"^x must have 2 dimension"):
        linear_forward(np.ones(3), W, b)
    for bad in (np.nan, np.inf, -np.inf):
        xb = x.copy()
        xb[1, 2] = bad
        with pytest.raises(ValueError, match=r"^x must not contain NaN or inf"):
            linear_forward(xb, W, b)
    Wb = W.copy()
    Wb[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"^W must not contain"):
        linear_forward(x, Wb, b)
    _, cache = linear_forward(x, W, b)
    with pytest.raises(ValueError, match=r"^dy must have shape \(2, 4\)"):
        linear_backward(np.ones((2, 3)), cache)
    with pytest.raises(ValueError, match=r"^dy must not contain"):
        linear_backward(np.full((2, 4), np.nan), cache)
    with pytest.raises(TypeError, match=r"^x must be an array of real numbers"):
        linear_forward("abc", W, b)


@pytest.mark.parametrize("name", NAMES)
def test_activation_bad_input(name):
    with pytest.raises(ValueError, match=r"^x must not contain NaN or inf"):
        activation_forward(name, np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match=r"^x must not contain NaN or inf"):
        getattr(layers, f"{name}_forward")(np.array([np.inf]))
    _, cache = activation_forward(name, np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"^dy must have shape \(2, 3\)"):
        activation_backward(name, np.ones((3, 2)), cache)
    with pytest.raises(ValueError, match=r"^dy must have shape"):
        getattr(layers, f"{name}_backward")(np.ones(6), cache)


def test_mlp_bad_input():
    params = mlp_init([3, 4, 2], "encoder", np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"x has 5 columns but encoder\.0\.W has 3 rows"):
        mlp_forward(params, "encoder", np.ones((2, 5)), "relu")
    bad = dict(params, **{"encoder.1.W": np.ones((5, 2))})
    with pytest.raises(ValueError, match=r"encoder\.0\.W has 4 columns \(outputs\) but encoder\.1\.W has 5 rows"):
        mlp_forward(bad, "encoder", np.ones((2, 3)), "relu")
    bad = dict(params, **{"encoder.0.b": np.ones(3)})
    with pytest.raises(ValueError, match=r"^encoder\.0\.b must have shape \(4\)"):
        mlp_forward(bad, "encoder", np.ones((2, 3)), "relu")
    bad = dict(params, **{"encoder.1.W": np.full((4, 2), np.nan)})
    with pytest.raises(ValueError, match=r"^encoder\.1\.W must not contain NaN"):
        mlp_forward(bad, "encoder", np.ones((2, 3)), "relu")
    with pytest.raises(ValueError, match=r"^x must not contain NaN"):
        mlp_forward(params, "encoder", np.full((2, 3), np.nan), "relu")
    with pytest.raises(ValueError, match=r"unknown activation 'elu'"):
        mlp_forward(params, "encoder", np.ones((2, 3)), "elu")
    with pytest.raises(ValueError, match=r"unknown out_activation 'softmax'"):
        mlp_forward(params, "encoder", np.ones((2, 3)), "relu", out_activation="softmax")
    with pytest.raises(ValueError, match=r"no layers under prefix 'decoder'"):
        mlp_forward(params, "decoder", np.ones((2, 3)), "relu")
    y, cache = mlp_forward(params, "encoder", np.ones((2, 3)), "relu")
    with pytest.raises(ValueError, match=r"^dy must have shape \(2, 2\)"):
        mlp_backward(np.ones((2, 3)), cache)


# =========================================================================== the checks can fail

def test_gradcheck_rejects_wrong_backward_formulas():
    """Plausible wrong formulas each fail the checks used above, at the tolerances used above."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, (4, 5))
    xa = away_from_zero(x, KINK_MARGIN)
    W, b = rng.standard_normal((5, 3)), rng.standard_normal(3)

    def act_f(fwd):
        return lambda x: fwd(x)[0]

    mutants = {
        "tanh' = 1 - x**2": (act_f(layers.tanh_forward), lambda g, x: (g * (1 - x ** 2),), x),
        "sigmoid' = s**2": (act_f(layers.sigmoid_forward),
                            lambda g, x: (g * layers.sigmoid_forward(x)[0] ** 2,), x),
        "leaky slope 0.02": (act_f(layers.leaky_relu_forward),
                             lambda g, x: (g * np.where(x > 0, 1.0, 0.02),), xa),
        "softplus' = exp(x)": (act_f(layers.softplus_forward), lambda g, x: (g * np.exp(x),), x),
        "relu' = 1 everywhere": (act_f(layers.relu_forward), lambda g, x: (g,), xa),
    }
    for label, (f, vjp, at) in mutants.items():
        assert not check_vjp(f, vjp, (at,), rng=np.random.default_rng(1)).passed, label
        with pytest.raises(GradcheckError):   # the re-checks in fresh directions fail too
            check_vjp_robust(f, vjp, (at,), seed=1)
    for label, wrong in {"db = mean": lambda g, x, W, b: (g @ W.T, x.T @ g, g.mean(0)),
                         "dx 1e-5 too large": lambda g, x, W, b: (g @ W.T * (1 + 1e-5), x.T @ g, g.sum(0))}.items():
        assert not check_vjp(_lin_f, wrong, (x, W, b), rng=np.random.default_rng(1)).passed, label
    # the complex step resolves a relative error of 1e-11 in one input's gradient
    wrong = lambda g, x, W, b: (g @ W.T, x.T @ g * (1 + 1e-11), g.sum(0))  # noqa: E731
    assert not check_vjp_complex(_lin_f, wrong, (x, W, b), rng=np.random.default_rng(1)).passed
    with pytest.raises(AssertionError):
        check_vjp_robust(_lin_f, wrong, (x, W, b), seed=1, method="complex")
    # and so does the path-scale fallback of the MLP complex-step test, at the pinned cancellation
    params = mlp_init([1, 1, 5, 1], "enc", np.random.default_rng(0))
    f, vjp = _mlp_check_fns("enc", "leaky_relu", None, [])

    def off(g, args):
        grads = vjp(g, args)
        return {**grads, "enc.1.W": grads["enc.1.W"] * (1 + 1e-9)}
    args = {**params, "x": np.zeros((1, 1))}
    _complex_step_vs_path_scale(f, vjp, args, "enc", "leaky_relu", None, 0)
    with pytest.raises(AssertionError, match="enc.1.W"):
        _complex_step_vs_path_scale(f, off, args, "enc", "leaky_relu", None, 0)


# =========================================================================== torch float64

def _torch():
    return pytest.importorskip("torch", reason="torch is an optional dependency (pip install refvae[torch]); "
                                               "the float64 cross-checks against autograd are skipped")


def _assert_normwise(actual, expected, what):
    tol = tolerance("vs_torch_float64")
    expected = np.asarray(expected)
    err = float(np.max(np.abs(actual - expected))) if expected.size else 0.0
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    assert err <= tol.rtol * scale, f"{what}: max abs err {err:.3e} > {tol.rtol:.0e} * {scale:.3e}"


def _torch_mlp(torch, params, prefix, x, act, out_act):
    """The same network with torch.nn.Linear (weight = W.T); returns y, intermediates, modules, x."""
    mods = {"relu": torch.nn.ReLU(), "leaky_relu": torch.nn.LeakyReLU(),  # default slope 0.01
            "tanh": torch.nn.Tanh(), "sigmoid": torch.nn.Sigmoid(),
            # threshold=40: torch's softplus returns x itself above the threshold (default 20, where
            # it is off by e^-20 ~ 2e-9); above 37, log1p(exp(x)) == x in float64 anyway
            "softplus": torch.nn.Softplus(threshold=40.0)}
    n = len(mlp_param_names(params, prefix)) // 2
    lins = []
    for i in range(n):
        W, b = params[f"{prefix}.{i}.W"], params[f"{prefix}.{i}.b"]
        lin = torch.nn.Linear(W.shape[0], W.shape[1], dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W.T.copy()))
            lin.bias.copy_(torch.from_numpy(b))
        lins.append(lin)
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    h, trace = tx, []
    for i, lin in enumerate(lins):
        h = lin(h)
        trace.append((f"{prefix}.{i}.pre", h))
        a = act if i < n - 1 else out_act
        if a is not None:
            h = mods[a](h)
            trace.append((f"{prefix}.{i}.out", h))
    return h, trace, lins, tx


@pytest.mark.torch
@given(case=mlp_cases(max_width=8), act=st.sampled_from(NAMES), out_act=st.sampled_from([None, *NAMES]))
def test_mlp_vs_torch(case, act, out_act):
    torch = _torch()
    sizes, seed, x = case
    rng = np.random.default_rng(seed)
    params = mlp_init(sizes, "decoder", rng)
    y, cache = mlp_forward(params, "decoder", x, act, out_act)
    ty, ttrace, lins, tx = _torch_mlp(torch, params, "decoder", x, act, out_act)
    # forward: compare in data-flow order and report the first intermediate that differs
    for (name, a), (_, t) in zip(cache["trace"], ttrace):
        _assert_normwise(a, t.detach().numpy(), f"forward, first differing intermediate {name}")
    dy = rng.standard_normal(y.shape)
    dx, grads = mlp_backward(dy, cache)
    ty.backward(torch.from_numpy(dy))
    _assert_normwise(dx, tx.grad.numpy(), "dx")
    for i, lin in enumerate(lins):
        _assert_normwise(grads[f"decoder.{i}.W"], lin.weight.grad.numpy().T, f"decoder.{i}.W (weight.T)")
        _assert_normwise(grads[f"decoder.{i}.b"], lin.bias.grad.numpy(), f"decoder.{i}.b")


@pytest.mark.torch
def test_kink_conventions_match_torch():
    torch = _torch()
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    for name, fn in (("relu", torch.relu), ("leaky_relu", torch.nn.functional.leaky_relu)):
        x.grad = None
        fn(x).sum().backward()
        _, cache = activation_forward(name, np.zeros(3))
        np.testing.assert_array_equal(activation_backward(name, np.ones(3), cache), x.grad.numpy())
