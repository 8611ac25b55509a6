"""Hostile arguments to the VAE, prior and gradcheck APIs (issue 13: items 2.7-config, 2.8, 2.10,
2.11-params, 2.14).

Every test carries ``@pytest.mark.hostile(cls, outcome)`` (tests/conftest.py). Named errors are
checked by exception type and a ``match=`` on the argument's name; exact values against mpmath at
256 bits.
"""

import json
import math
import warnings

import mpmath
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refvae import layers, likelihoods
from refvae._validation import NonFiniteIntermediateError
from refvae.gradcheck import (GradcheckError, GradcheckReport, _scale, check_elementwise, check_vjp,
                              check_vjp_complex)
from refvae.optim import make_optimizer
from refvae.priors.flow import FlowPrior
from refvae.priors.mixtures import (AggregatedPosterior, GTMPrior, GTMVampPrior, MoGPrior, VampPrior)
from refvae.priors import StandardPrior, make_prior
from refvae.vae import VAE, Encoder

U = 2.0 ** -53
LN_2PI = mpmath.log(2 * mpmath.pi)


def _f(x):
    return np.sin(x) * x


def _vjp(g, x):
    return (g * (np.cos(x) * x + np.sin(x)),)


def _no_warnings():
    """A context in which any RuntimeWarning (overflow, invalid) fails the test."""
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("error")
    return ctx


# =========================================================================== gradcheck

_X = np.linspace(0.1, 1.0, 5)

_GRADCHECK_BAD = [
    (check_vjp, dict(n_directions=0), ValueError, "n_directions"),
    (check_vjp, dict(n_directions=-1), ValueError, "n_directions"),
    (check_vjp, dict(n_directions=True), TypeError, "n_directions"),
    (check_vjp, dict(n_directions=1.5), TypeError, "n_directions"),
    (check_vjp, dict(step=0), ValueError, "step"),
    (check_vjp, dict(step=-1e-3), ValueError, "step"),
    (check_vjp, dict(step=float("nan")), ValueError, "step"),
    (check_vjp, dict(step=float("inf")), ValueError, "step"),
    (check_vjp, dict(step="1e-3"), TypeError, "step"),
    (check_vjp, dict(step=True), TypeError, "step"),
    (check_vjp, dict(rtol=float("inf")), ValueError, "rtol"),
    (check_vjp, dict(rtol=float("nan")), ValueError, "rtol"),
    (check_vjp, dict(rtol=-1e-6), ValueError, "rtol"),
    (check_vjp, dict(rtol=1.0), ValueError, "rtol"),
    (check_vjp, dict(rtol=None, method="forward"), ValueError, "method"),
    (check_elementwise, dict(max_entries=0), ValueError, "max_entries"),
    (check_elementwise, dict(max_entries=-2), ValueError, "max_entries"),
    (check_elementwise, dict(max_entries=2.0), TypeError, "max_entries"),
    (check_elementwise, dict(step=0.0), ValueError, "step"),
    (check_elementwise, dict(rtol=2.0), ValueError, "rtol"),
    (check_elementwise, dict(verbose="yes"), TypeError, "verbose"),
    (check_vjp_complex, dict(step=0.0), ValueError, "step"),
    (check_vjp_complex, dict(step=float("nan")), ValueError, "step"),
    (check_vjp_complex, dict(rtol=float("inf")), ValueError, "rtol"),
    (check_vjp_complex, dict(step=None), TypeError, "step"),
]


@pytest.mark.hostile("option", "named error")
@pytest.mark.parametrize("fn,kwargs,exc,match", _GRADCHECK_BAD,
                         ids=[f"{c[0].__name__}-{list(c[1])[-1]}={list(c[1].values())[-1]!r}"
                              for c in _GRADCHECK_BAD])
def test_gradcheck_meaningless_settings_are_named(fn, kwargs, exc, match):
    """gradcheck with n_directions/max_entries < 1, step 0/nan/inf, rtol inf/nan/>= 1, bad types."""
    called = []

    def f(x):
        called.append(1)
        return _f(x)

    kwargs = {k: v for k, v in kwargs.items() if not (k == "rtol" and v is None)}
    if fn is check_elementwise and "verbose" not in kwargs:
        kwargs["verbose"] = False
    with pytest.raises(exc, match=match):
        fn(f, _vjp, (_X,), rng=np.random.default_rng(0), **kwargs)
    assert not called   # rejected before f runs


@pytest.mark.hostile("option", "named error")
@pytest.mark.parametrize("fn", [check_vjp, check_vjp_complex, check_elementwise])
@pytest.mark.parametrize("args,wrt,exc,match", [
    ((), None, ValueError, "args is empty"), ({}, None, ValueError, "args is empty"),
    ((_X,), [], ValueError, "wrt is empty"), ((_X,), "b", ValueError, "wrt names"),
    ((_X,), 3, TypeError, "wrt must be"), ((np.array([np.nan, 1.0]),), None, ValueError, "arg0 .*NaN"),
    ("a", None, TypeError, "args must be"), (None, None, TypeError, "args must be"),
])
def test_gradcheck_empty_or_bad_args_are_named(fn, args, wrt, exc, match):
    """gradcheck with args=() or {}, wrt=[], an unknown wrt, NaN or non-array args: named error."""
    kw = dict(verbose=False) if fn is check_elementwise else {}
    called = []

    def f(*a):
        called.append(1)
        return np.float64(1.0)

    with pytest.raises(exc, match=match):
        fn(f, lambda g, *a: (), args, rng=np.random.default_rng(0), wrt=wrt, **kw)
    assert not called


@pytest.mark.hostile("type", "named error")
@pytest.mark.parametrize("fn", [check_vjp, check_vjp_complex, check_elementwise])
@pytest.mark.parametrize("which", ["f", "vjp"])
@pytest.mark.parametrize("bad", [None, "abc", 3])
def test_gradcheck_non_callable_f_or_vjp(fn, which, bad):
    """gradcheck with f or vjp None, a str or an int: TypeError naming it."""
    kw = dict(verbose=False) if fn is check_elementwise else {}
    fv = {"f": _f, "vjp": _vjp, which: bad}
    with pytest.raises(TypeError, match=f"{which} must be callable"):
        fn(fv["f"], fv["vjp"], (_X,), rng=np.random.default_rng(0), **kw)


@pytest.mark.hostile("shape", "named error")
@pytest.mark.parametrize("fn", [check_vjp, check_vjp_complex, check_elementwise])
def test_gradcheck_nothing_to_check_does_not_pass(fn):
    """A gradient check whose only input is an empty array does not pass and says why."""
    kw = dict(verbose=False) if fn is check_elementwise else {}
    report = fn(lambda x: np.sum(x), lambda g, x: (np.full_like(x, g),), (np.zeros(0),),
                rng=np.random.default_rng(0), **kw)
    reason = "empty arrays"
    assert report.passed is False
    assert report.entries == [] and reason in report.reason
    assert report.worst is None and report.max_rel_err == math.inf
    assert "NOT PASSED" in str(report) and reason in str(report)
    with pytest.raises(GradcheckError, match="nothing was checked"):
        report.raise_if_failed()


@pytest.mark.hostile("shape", "named error")
def test_gradcheck_empty_report_worst_and_str():
    """GradcheckReport() with no entries: worst is None, str() and raise_if_failed name the cause."""
    report = GradcheckReport("central", 1e-6)
    assert report.worst is None and not report.passed and report.by_name() == {}
    with pytest.raises(GradcheckError, match="nothing was checked"):
        report.raise_if_failed()


@pytest.mark.hostile("type", "named error")
@pytest.mark.parametrize("fn", [check_vjp, check_vjp_complex, check_elementwise])
@pytest.mark.parametrize("bad,exc,match", [
    (_X + 1j, TypeError, "arg0 is complex"),
    (_X.astype(np.complex64), TypeError, "arg0 is complex"),
    (np.array(["a", "b"]), TypeError, "arg0 must be an array of real numbers"),
    (np.array([object(), 1.0], dtype=object), TypeError, "arg0 must be an array of real numbers"),
])
def test_gradcheck_complex_or_non_numeric_input_is_type_error(fn, bad, exc, match):
    """gradcheck with a complex, str or object input: a TypeError naming it (no silent cast)."""
    kw = dict(verbose=False) if fn is check_elementwise else {}
    with pytest.raises(exc, match=match):
        fn(_f, _vjp, (bad,), rng=np.random.default_rng(0), **kw)


@pytest.mark.hostile("type", "named error")
def test_gradcheck_complex_output_is_type_error():
    """check_vjp with an f that returns complex values at a real point: a TypeError naming f."""
    with pytest.raises(TypeError, match="f returned a complex value"):
        check_vjp(lambda x: x * (1 + 1j), _vjp, (_X,), rng=np.random.default_rng(0))


@pytest.mark.hostile("option", "named error")
def test_gradcheck_wrong_vjp_fails_at_every_allowed_rtol():
    """A VJP off by a factor 3 fails at the largest allowed rtol (0.5) and rtol >= 1 is refused."""
    def bad(g, x):
        return (3 * _vjp(g, x)[0],)
    report = check_vjp(_f, bad, (_X,), rng=np.random.default_rng(0), rtol=0.5, n_directions=4)
    assert not report.passed and report.worst.name.startswith("arg0")
    with pytest.raises(ValueError, match="rtol"):
        check_vjp(_f, bad, (_X,), rng=np.random.default_rng(0), rtol=np.inf)


@pytest.mark.hostile("magnitude", "exact value")
@given(k=st.integers(-300, 300), a=st.floats(0.5, 4.0), seed=st.integers(0, 2 ** 16))
def test_gradcheck_linear_map_at_any_magnitude(k, a, seed):
    """check_vjp of x -> a x at |x| ~ 10^k (k in -300..300, up to 1e300): passes, no overflow."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(6) * 10.0 ** k
    ctx = _no_warnings()
    try:
        report = check_vjp(lambda y: a * y, lambda g, y: (a * g,), (x,), rng=rng, n_directions=2)
        rich = check_vjp(lambda y: a * y, lambda g, y: (a * g,), (x,), rng=rng, method="richardson")
    finally:
        ctx.__exit__(None, None, None)
    assert report.passed and rich.passed, str(report)
    assert all(math.isfinite(e.step) and e.step > 0 for e in report.entries)


@pytest.mark.hostile("magnitude", "exact value")
@pytest.mark.parametrize("x", [
    np.array([1e300, -2e300, 3e300]), np.array([1.7e308, -1.7e308]), np.array([1e-300, 2e-300]),
    np.array([0.0, 0.0]), np.array([1e300, -np.inf, 1.0]), np.array([5e200, 1.0, -3e-100]),
])
def test_gradcheck_step_scale_exact(x):
    """The step scale max(1, RMS(finite x)) at x up to 1.7e308 against mpmath (no overflow)."""
    fin = [mpmath.mpf(float(v)) for v in x if math.isfinite(v)]
    with mpmath.workprec(256):
        want = max(mpmath.mpf(1), mpmath.sqrt(mpmath.fsum(v * v for v in fin) / len(fin)))
    got = _scale(x)
    assert math.isfinite(got)
    assert abs(mpmath.mpf(got) - want) <= 8 * U * want, (got, float(want))


# =========================================================================== VAE constructor

_HOSTILE_INTS = [(True, TypeError), (6.0, TypeError), ("6", TypeError), (None, TypeError),
                 (0, ValueError), (-1, ValueError), (float("nan"), TypeError),
                 (float("inf"), TypeError), (10 ** 12, ValueError)]

_VAE_BAD = (
    [(dict(x_dim=v), e, "x_dim") for v, e in _HOSTILE_INTS]
    + [(dict(latent_dim=v), e, "latent_dim") for v, e in _HOSTILE_INTS]
    + [(dict(hidden=v), e, m) for v, e, m in [
        (None, TypeError, "hidden"), ("64", TypeError, "hidden"), ((4, 0), ValueError, r"hidden\[1\]"),
        ((4, -1), ValueError, r"hidden\[1\]"), ((4.0,), TypeError, r"hidden\[0\]"),
        ((True,), TypeError, r"hidden\[0\]"), (1e12, TypeError, "hidden"),
        ([float("nan")], TypeError, r"hidden\[0\]"), ((10 ** 12,), ValueError, r"hidden=\(1000000000000,\)"),
        ({"a": 1}, TypeError, "hidden")]]
    + [(dict(activation=v), ValueError, "activation") for v in (None, 3, "gelu", "")]
    + [(dict(likelihood=v), ValueError, "likelihood") for v in (None, 0, "poisson")]
    + [(dict(likelihood="categorical", num_vals=v), e, "num_vals") for v, e in [
        (0, ValueError), (1, ValueError), (-3, ValueError), (True, TypeError), (2.5, TypeError),
        (None, TypeError), ("17", TypeError), (float("nan"), TypeError), (10 ** 12, ValueError)]]
    + [(dict(likelihood="gaussian", num_vals=0), ValueError, "num_vals")]
    + [(dict(prior=v), e, "prior") for v, e in [
        (None, TypeError), (5, TypeError), ("nope", ValueError), (StandardPrior, TypeError),
        (StandardPrior(5), ValueError)]]
    + [(dict(prior_kwargs=v), TypeError, "prior_kwargs") for v in (5, "x", [("a", 1)])]
    + [(dict(prior="mog", prior_kwargs={"num_component": 3}), ValueError, "num_component"),
       (dict(prior=StandardPrior(2), prior_kwargs={"a": 1}), ValueError, "prior_kwargs")]
    + [(dict(likelihood="gaussian", decoder_log_var=v), e, "decoder_log_var") for v, e in [
        (True, TypeError), (False, TypeError), (None, TypeError), ("learnt", ValueError),
        (float("nan"), ValueError), (float("inf"), ValueError), (1e300, ValueError),
        (-1e300, ValueError), (-1401.0, ValueError), ([0.0], TypeError)]]
    + [(dict(kl=v), ValueError, "kl") for v in (None, "exact", 1)]
    + [(dict(prior="mog", kl="analytic"), ValueError, "kl")]
)


@pytest.mark.hostile("option", "named error")
@pytest.mark.parametrize("kwargs,exc,match", _VAE_BAD, ids=[repr(c[0])[:60] for c in _VAE_BAD])
def test_vae_constructor_hostile_arguments(kwargs, exc, match):
    """VAE(...) with bool/float/str/None/0/negative/NaN/inf/huge for every argument: named error."""
    base = dict(x_dim=6, latent_dim=2, hidden=(4,), activation="tanh", likelihood="gaussian")
    base.update(kwargs)
    with pytest.raises(exc, match=match):
        VAE(**base, rng=np.random.default_rng(0))


@pytest.mark.hostile("resources", "named error")
@pytest.mark.parametrize("kwargs", [dict(hidden=(10 ** 12,)), dict(x_dim=10 ** 11),
                                    dict(hidden=(2 ** 20, 2 ** 20)),
                                    dict(likelihood="categorical", num_vals=10 ** 10),
                                    dict(prior="vamp", prior_kwargs={"num_components": 10 ** 10})])
def test_vae_too_large_is_refused_before_allocating(kwargs):
    """VAE with 1e12-wide layers or 1e10 categories/components: ValueError saying the memory needed."""
    base = dict(x_dim=6, latent_dim=2, hidden=(4,), activation="tanh", likelihood="gaussian")
    base.update(kwargs)
    with pytest.raises(ValueError, match=r"parameters, which need [\d.]+ [GTMK]iB .*more than the limit"):
        VAE(**base, rng=np.random.default_rng(0))


@pytest.mark.hostile("option", "named error")
def test_vae_prior_instance_latent_dim_mismatch():
    """VAE(6, 2, prior=StandardPrior(5)): ValueError at construction naming both latent_dims."""
    with pytest.raises(ValueError, match=r"prior has latent_dim 5 but the VAE has latent_dim 2"):
        VAE(6, 2, hidden=(4,), prior=StandardPrior(5), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"latent_dim 3 .* latent_dim 2"):
        VAE(6, 2, hidden=(4,), prior=MoGPrior(3, 2), rng=np.random.default_rng(0))


# =========================================================================== priors

_ENC = Encoder(5, 2, (3,), "tanh")

_PRIOR_BAD = (
    [(StandardPrior, dict(latent_dim=v), e, "latent_dim") for v, e in _HOSTILE_INTS[:-1]]
    + [(MoGPrior, dict(num_components=v), e, "num_components") for v, e in _HOSTILE_INTS]
    + [(MoGPrior, dict(init_scale=v), e, "init_scale") for v, e in [
        (-1, ValueError), (0.0, ValueError), (float("nan"), ValueError), (float("inf"), ValueError),
        (1e300, ValueError), (True, TypeError), ("0.1", TypeError), (None, TypeError)]]
    + [(MoGPrior, dict(component_trace_limit=v), e, "component_trace_limit") for v, e in [
        (-1, ValueError), (True, TypeError), (1.5, TypeError), (None, TypeError)]]
    + [(VampPrior, dict(encoder=_ENC, num_components=v), e, "num_components") for v, e in _HOSTILE_INTS]
    + [(VampPrior, dict(encoder=_ENC, learn_weights=v), TypeError, "learn_weights")
       for v in (1, "yes", None, 0.0)]
    + [(VampPrior, dict(encoder=_ENC, data_range=v), e, "data_range") for v, e in [
        (None, ValueError), ((0.0,), ValueError), ("ab", ValueError), (("a", 1.0), TypeError),
        ((True, 2.0), TypeError), ((0.0, float("nan")), ValueError), ((0.0, float("inf")), ValueError),
        ((-1e308, 1e308), ValueError), ((2.0, 1.0), ValueError)]]
    + [(VampPrior, dict(encoder=_ENC, x_dim=v), e, "x_dim") for v, e in [
        (0, ValueError), (True, TypeError), (5.0, TypeError), (6, ValueError)]]
    + [(VampPrior, dict(encoder=_ENC, init_data=np.zeros((3, 5))), ValueError, "init_data"),
       (VampPrior, dict(encoder=_ENC, num_components=2, init_data=np.full((2, 5), np.nan)),
        ValueError, "init_data"),
       (VampPrior, dict(encoder=None), ValueError, "encoder"),
       (VampPrior, dict(encoder="enc"), ValueError, "encoder")]
    + [(GTMPrior, dict(grid_size=v), e, "grid_size") for v, e in _HOSTILE_INTS[:-1]]
    + [(GTMPrior, dict(grid_size=10 ** 7), ValueError, "grid_size=10000000")]
    + [(GTMPrior, dict(u_min=v), e, "u_min") for v, e in [
        (float("nan"), ValueError), (True, TypeError), ("a", TypeError), (None, TypeError),
        (20.0, ValueError)]]
    + [(GTMPrior, dict(u_min=-1e308, u_max=1e308), ValueError, "u_max - u_min")]
    + [(GTMPrior, dict(hidden=v), e, "hidden") for v, e in [
        ("wide", TypeError), (None, TypeError), ((4, 0), ValueError), ((1e12,), TypeError),
        (10 ** 12, ValueError)]]
    + [(GTMPrior, dict(activation=v), ValueError, "activation") for v in (None, "gelu")]
    + [(GTMVampPrior, dict(encoder=_ENC, data_range=(1.0, 1.0)), ValueError, "data_range"),
       (GTMVampPrior, dict(encoder=_ENC, hidden=(10 ** 12,)), ValueError, "gtm_vamp prior"),
       (GTMVampPrior, dict(encoder=_ENC, x_dim=0), ValueError, "x_dim"),
       (GTMVampPrior, dict(encoder=None), ValueError, "encoder")]
    + [(FlowPrior, dict(num_couplings=v), e, "num_couplings") for v, e in _HOSTILE_INTS[:-1]]
    + [(FlowPrior, dict(num_couplings=10 ** 12), ValueError, "num_couplings=1000000000000"),
       (FlowPrior, dict(hidden=(10 ** 12,)), ValueError, "flow prior"),
       (FlowPrior, dict(hidden=(2.0,)), TypeError, r"hidden\[0\]"),
       (FlowPrior, dict(latent_dim=1), ValueError, "latent_dim"),
       (FlowPrior, dict(init=None), ValueError, "init")]
    + [(AggregatedPosterior, dict(means=None), ValueError, "means"),
       (AggregatedPosterior, dict(means=np.zeros((3, 3)), log_vars=np.zeros((3, 3))), ValueError, "means"),
       (AggregatedPosterior, dict(means=np.zeros((3, 2)), log_vars=np.zeros((2, 2))), ValueError, "log_vars"),
       (AggregatedPosterior, dict(means=np.full((3, 2), np.inf), log_vars=np.zeros((3, 2))),
        ValueError, "means"),
       (AggregatedPosterior, dict(means=np.zeros((3, 2)) + 1j, log_vars=np.zeros((3, 2))),
        TypeError, "means"),
       (AggregatedPosterior, dict(means=np.zeros((3, 2)), log_vars=np.zeros((3, 2)),
                                  component_trace_limit=-1), ValueError, "component_trace_limit")]
)


@pytest.mark.hostile("option", "named error")
@pytest.mark.parametrize("cls,kwargs,exc,match", _PRIOR_BAD,
                         ids=[f"{c[0].__name__}-{repr(c[1])[:50]}" for c in _PRIOR_BAD])
def test_prior_constructor_hostile_arguments(cls, kwargs, exc, match):
    """Every prior class with wrong types, zero, negative, NaN, inf and huge arguments: named error."""
    kwargs = dict(kwargs)
    latent_dim = kwargs.pop("latent_dim", 2)
    if cls in (GTMPrior, GTMVampPrior, FlowPrior) and "hidden" not in kwargs:
        kwargs["hidden"] = (3,)
    with pytest.raises(exc, match=match):
        cls(latent_dim, **kwargs)


@pytest.mark.hostile("option", "named error")
@pytest.mark.parametrize("name,kwargs,match", [
    ("mog", {"num_component": 3}, "num_component"),
    ("flow", {"couplings": 2}, "couplings"),
    ("standard", {"scale": 1.0}, "scale"),
    ("gtm", {"grid": 3}, "grid"),
])
def test_make_prior_unknown_option_is_named(name, kwargs, match):
    """make_prior with an option the prior does not take: ValueError naming it and the accepted ones."""
    with pytest.raises(ValueError, match=f"unknown option.*{match}.*{name} prior"):
        make_prior(name, 2, **kwargs)


@pytest.mark.hostile("resources", "named error")
@pytest.mark.parametrize("prior", [StandardPrior(2), MoGPrior(2, 2)])
def test_prior_draw_too_many_is_refused(prior):
    """prior.draw(10**13): ValueError saying the memory needed, before allocating."""
    prior.bind(prior.init_params(np.random.default_rng(0)))
    with pytest.raises(ValueError, match=r"n=10000000000000 rows.*choose smaller"):
        prior.draw(10 ** 13, np.random.default_rng(0))


@pytest.mark.hostile("resources", "named error")
def test_vae_sample_too_many_is_refused():
    """VAE.sample(10**13): ValueError naming n and the memory, before allocating."""
    m = VAE(6, 2, hidden=(4,), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"n=10000000000000"):
        m.sample(10 ** 13, np.random.default_rng(0))
    with pytest.raises(ValueError, match="mode"):
        m.sample(2, np.random.default_rng(0), mode="median")


# =========================================================================== config files

def _config():
    return VAE(6, 2, hidden=(4,), rng=np.random.default_rng(0)).config()


@pytest.mark.hostile("flag", "named error")
@pytest.mark.parametrize("change,exc,match", [
    ({"num_vals": 0}, ValueError, "num_vals must be >= 2, got 0"),
    ({"num_vals": 1}, ValueError, "num_vals"),
    ({"num_vals": False}, TypeError, "num_vals"),
    ({"num_vals": 17.0}, TypeError, "num_vals"),
    ({"hidden": [1e12]}, TypeError, r"hidden\[0\] must be an integer, got float"),
    ({"hidden": [10 ** 12]}, ValueError, r"need [\d.]+ TiB"),
    ({"hidden": "256"}, TypeError, "hidden"),
    ({"hidden": None}, TypeError, "hidden"),
    ({"x_dim": 0}, ValueError, "x_dim"),
    ({"latent_dim": "2"}, TypeError, "latent_dim"),
    ({"prior_kwargs": "x"}, TypeError, "prior_kwargs"),
    ({"prior_kwargs": 0}, TypeError, "prior_kwargs"),
    ({"prior": "mog", "prior_kwargs": {"num_components": 0}}, ValueError, "num_components"),
    ({"decoder_log_var": True, "likelihood": "gaussian"}, TypeError, "decoder_log_var"),
    ({"kl": None}, ValueError, "kl"),
] + [({key: None, "_drop": key}, ValueError, f"missing '{key}'.*expected the keys x_dim, latent_dim")
     for key in ("x_dim", "latent_dim", "hidden", "activation", "likelihood", "prior")])
def test_from_config_hostile_values(change, exc, match):
    """VAE.from_config with num_vals 0, hidden [1e12], a missing key, wrong types: named error."""
    cfg = _config()
    change = dict(change)
    drop = change.pop("_drop", None)
    cfg.update(change)
    if drop:
        del cfg[drop]
    with pytest.raises(exc, match=match):
        VAE.from_config(cfg)


@pytest.mark.hostile("flag", "named error")
@pytest.mark.parametrize("cfg", [None, [1, 2], "config", 3])
def test_from_config_not_a_dict(cfg):
    """VAE.from_config(None / list / str / int): TypeError naming config."""
    with pytest.raises(TypeError, match="config must be a dict"):
        VAE.from_config(cfg)


@pytest.mark.hostile("file", "named error")
@pytest.mark.parametrize("change,exc,match", [
    ({"num_vals": 0}, ValueError, "num_vals"),
    ({"hidden": [10 ** 12]}, ValueError, "TiB"),
    ({"_drop": "x_dim"}, ValueError, "missing 'x_dim'"),
])
def test_load_tampered_config_json(tmp_path, change, exc, match):
    """VAE.load of a config.json with num_vals 0, a huge layer or no x_dim: named error with the path."""
    m = VAE(6, 2, hidden=(4,), rng=np.random.default_rng(0))
    m.save(tmp_path)
    path = tmp_path / "config.json"
    doc = json.loads(path.read_text())
    change = dict(change)
    drop = change.pop("_drop", None)
    doc["model"].update(change)
    if drop:
        del doc["model"][drop]
    path.write_text(json.dumps(doc))
    with pytest.raises(exc, match=match) as info:
        VAE.load(tmp_path)
    assert "config.json" in str(info.value)


@pytest.mark.hostile("flag", "exact value")
def test_from_config_defaults_only_when_absent():
    """from_config: num_vals absent -> 17 (categorical), None for other likelihoods; 3 stays 3."""
    cfg = _config()
    del cfg["num_vals"]
    assert VAE.from_config(cfg).num_vals == 17
    cfg["num_vals"] = 3
    assert VAE.from_config(cfg).num_vals == 3
    g = VAE(6, 2, hidden=(4,), likelihood="gaussian", rng=np.random.default_rng(0)).config()
    assert g["num_vals"] is None and VAE.from_config(g).num_vals is None


# =========================================================================== overflow in the passes

def _model(likelihood="categorical", **kw):
    return VAE(6, 2, hidden=(5,), activation="leaky_relu", likelihood=likelihood, num_vals=17,
               rng=np.random.default_rng(3), **kw)


def _data(likelihood, B=4):
    rng = np.random.default_rng(4)
    if likelihood == "categorical":
        return rng.integers(0, 17, (B, 6)).astype(float), rng.standard_normal((B, 2))
    return rng.normal(size=(B, 6)), rng.standard_normal((B, 2))


_OVERFLOW_CASES = [
    # (likelihood, what to change, expected first intermediate, the input blamed)
    ("categorical", {"encoder.0.W": 1e308}, r"encoder\.0\.pre", "parameters"),
    ("categorical", {"encoder.1.W": 1e300, "encoder.0.W": 1e10}, r"encoder\.1\.pre", "parameters"),
    ("categorical", {"encoder.1.b": 1e300}, r"z", "parameters"),
    ("categorical", {"decoder.0.W": 1e308}, r"decoder\.0\.pre", "parameters"),
    ("categorical", {"eps": 1e300}, r"(decoder\.\d\.pre|prior\.log_p|log_qz_x)", "eps"),
    ("categorical", {"eps": 1e200}, r"(decoder\.\d\.pre|prior\.log_p|log_qz_x)", "eps"),
    ("gaussian", {"x": 1e300}, r"(encoder\.\d\.pre|z|decoder\.\d\.pre|log_px_z)", "x"),
    ("gaussian", {"decoder.log_var": -1e300}, r"log_px_z", "parameters"),
    ("bernoulli", {"decoder.1.W": 1e308}, r"decoder\.1\.pre", "parameters"),
]


@pytest.mark.hostile("magnitude", "named error")
@pytest.mark.parametrize("likelihood,change,where,blame", _OVERFLOW_CASES,
                         ids=[f"{c[0]}-{list(c[1])[0]}={list(c[1].values())[0]:g}" for c in _OVERFLOW_CASES])
@pytest.mark.parametrize("call", ["neg_elbo", "neg_elbo_and_grad", "loss"])
def test_forward_overflow_names_the_intermediate(likelihood, change, where, blame, call):
    """Finite x/eps/params of 1e300 that overflow inside: error naming the first non-finite
    intermediate and the input, never NaN or a misleading 'x must not contain NaN'."""
    m = _model(likelihood)
    x, eps = _data(likelihood)
    if likelihood == "bernoulli":
        x = (x > 0).astype(float)
    p = {k: v.copy() for k, v in m.params.items()}
    for k, v in change.items():
        if k == "x":
            x = np.full_like(x, v)
        elif k == "eps":
            eps = np.full_like(eps, v)
        else:
            p[k] = np.full_like(p[k], v)
    ctx = _no_warnings()
    try:
        with pytest.raises(NonFiniteIntermediateError,
                           match=f"the forward pass overflowed at {where} .*{blame} too large") as info:
            getattr(m, call)(x, eps, params=p)
    finally:
        ctx.__exit__(None, None, None)
    assert isinstance(info.value, ValueError) and isinstance(info.value, FloatingPointError)
    assert "must not contain NaN" not in str(info.value)


@pytest.mark.hostile("magnitude", "named error")
def test_backward_overflow_names_the_gradient():
    """Finite forward (value ~2e301) whose decoder gradient overflows: error naming grads[key]."""
    m = VAE(3, 2, hidden=(4,), likelihood="categorical", num_vals=3, kl="analytic",
            rng=np.random.default_rng(1))
    p = {k: (np.zeros_like(v) if k.startswith("encoder") else v) for k, v in m.params.items()}
    p["decoder.0.W"] = np.full_like(p["decoder.0.W"], 1e-8)
    x = np.random.default_rng(1).integers(0, 3, (10, 3)).astype(float)
    eps = np.full((10, 2), 1e308)
    assert math.isfinite(m.neg_elbo(x, eps, reduction="sum", params=p).value)
    ctx = _no_warnings()
    try:
        with pytest.raises(NonFiniteIntermediateError,
                           match=r"the backward pass overflowed at grads\['decoder\.0\.W'\].*eps too large"):
            m.neg_elbo_and_grad(x, eps, reduction="sum", params=p)
    finally:
        ctx.__exit__(None, None, None)


def _mp_log_normal(z, mu, lv):
    return -(LN_2PI + lv + (z - mu) ** 2 * mpmath.exp(-lv)) / 2


@pytest.mark.hostile("magnitude", "exact value")
@pytest.mark.parametrize("xval", [1e300, -1e300, 1e200, 1.7e308])
def test_neg_elbo_exact_at_huge_gaussian_x(xval):
    """Gaussian likelihood, x = 1e300 with a fixed log-variance 1000: finite neg_elbo and its
    decoder-bias gradient equal mpmath (the residual is scaled before squaring)."""
    m = _model("gaussian", decoder_log_var=1000.0)
    p = {k: (np.zeros_like(v) if k.endswith(".W") and k.startswith("encoder") else v.copy())
         for k, v in m.params.items()}
    x = np.full((3, 6), xval)
    x[1] *= -0.5
    eps = np.random.default_rng(5).standard_normal((3, 2))
    ctx = _no_warnings()
    try:
        cache = m.forward(x, eps, params=p)
        value, grads = m.neg_elbo_and_grad(x, eps, params=p)
    finally:
        ctx.__exit__(None, None, None)
    with mpmath.workprec(256):
        v = mpmath.mpf(1000)
        per = []
        for b in range(3):
            lpx = mpmath.fsum(_mp_log_normal(mpmath.mpf(x[b, d]), mpmath.mpf(cache.out[b, d]), v)
                              for d in range(6))
            z = [mpmath.mpf(t) for t in cache.z[b]]
            mu = [mpmath.mpf(t) for t in cache.mu[b]]
            lv = [mpmath.mpf(t) for t in cache.log_var[b]]
            lq = mpmath.fsum(_mp_log_normal(z[j], mu[j], lv[j]) for j in range(2))
            lp = mpmath.fsum(-(LN_2PI + z[j] ** 2) / 2 for j in range(2))
            per.append(-(lpx + lp - lq))
        want = mpmath.fsum(per) / 3
        # d loss / d decoder.1.b_d = mean_b -(x_bd - out_bd) e^{-v}
        want_db = [mpmath.fsum(-(mpmath.mpf(x[b, d]) - mpmath.mpf(cache.out[b, d])) * mpmath.exp(-v)
                               for b in range(3)) / 3 for d in range(6)]
    assert math.isfinite(value)
    assert abs(mpmath.mpf(value) - want) <= 16 * U * abs(want), (value, float(want))
    for d in range(6):
        got = grads["decoder.1.b"][d]
        assert abs(mpmath.mpf(got) - want_db[d]) <= 16 * U * abs(want_db[d]) + 1e-300, (d, got)
    assert all(np.all(np.isfinite(g)) for g in grads.values())


@pytest.mark.hostile("magnitude", "exact value")
@pytest.mark.parametrize("epsval", [1e300, -1e300, 1e154, 1.5e308])
def test_neg_elbo_exact_at_huge_eps_analytic_kl(epsval):
    """kl='analytic', eps = 1e300 (z ~ 1e300) with a z-independent decoder: the finite neg_elbo
    and decoder-bias gradient equal mpmath; log_pz/log_qz_x are reported as their limits."""
    m = VAE(4, 2, hidden=(3,), likelihood="categorical", num_vals=5, kl="analytic",
            rng=np.random.default_rng(7))
    p = {k: (np.zeros_like(v) if (k.startswith("decoder") and k.endswith(".W")) or k.startswith("encoder")
             else v.copy()) for k, v in m.params.items()}
    p["encoder.0.b"] = np.array([0.3, -0.2, 0.1])
    p["encoder.1.b"] = np.array([0.5, -0.25, -0.1, 0.05])   # mu = (0.5, -0.25), log_var small
    x = np.random.default_rng(8).integers(0, 5, (3, 4)).astype(float)
    eps = np.full((3, 2), epsval)
    eps[1] *= -1
    ctx = _no_warnings()
    try:
        res = m.neg_elbo(x, eps, params=p)
        value, grads = m.neg_elbo_and_grad(x, eps, params=p)
    finally:
        ctx.__exit__(None, None, None)
    # the encoder's output is its last bias (every weight is zero; leaky_relu(0.3) = 0.3 but W = 0)
    logits = p["decoder.1.b"].reshape(4, 5)   # the decoder's output (all weights zero)
    with mpmath.workprec(256):
        lse = [mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(a)) for a in row)) for row in logits]
        mu = [mpmath.mpf(t) for t in p["encoder.1.b"][:2]]
        lv = [mpmath.mpf(t) for t in p["encoder.1.b"][2:]]
        kl = mpmath.fsum((mu[j] ** 2 + mpmath.exp(lv[j]) - 1 - lv[j]) / 2 for j in range(2))
        per = [-mpmath.fsum(mpmath.mpf(logits[d, int(x[b, d])]) - lse[d] for d in range(4)) + kl
               for b in range(3)]
        want = mpmath.fsum(per) / 3
        sm = [[mpmath.exp(mpmath.mpf(a) - lse[d]) for a in logits[d]] for d in range(4)]
        want_db = [mpmath.fsum(sm[d][c] - (1 if int(x[b, d]) == c else 0) for b in range(3)) / 3
                   for d in range(4) for c in range(5)]
    assert abs(mpmath.mpf(value) - want) <= 16 * U * abs(want), (value, float(want))
    assert res.value == value
    assert np.all(res.log_qz_x == -np.inf) or np.all(np.isfinite(res.log_qz_x))
    for i, got in enumerate(grads["decoder.1.b"]):
        assert abs(mpmath.mpf(got) - want_db[i]) <= 16 * U * max(abs(want_db[i]), 1e-300), (i, got)
    assert all(np.all(np.isfinite(g)) for g in grads.values())


@pytest.mark.hostile("magnitude", "exact value")
@given(st.lists(st.floats(1e307, 1.79e308), min_size=2, max_size=16),
       st.lists(st.booleans(), min_size=16, max_size=16))
def test_mean_reduction_exact_when_the_sum_overflows(vals, signs):
    """neg_elbo's batch mean of per-example values near 1.8e308 (sum overflows): finite, equal to
    the mpmath mean to the rounding of a pairwise sum; the sum itself is a named error."""
    a = np.array([v if s else v * 0.999 for v, s in zip(vals, signs)])
    with mpmath.workprec(256):
        want = mpmath.fsum(mpmath.mpf(float(t)) for t in a) / len(a)
    got = VAE._reduce(a, "mean")
    assert math.isfinite(got)
    assert abs(mpmath.mpf(got) - want) <= (len(a) + 1) * U * abs(want), (got, float(want))
    with np.errstate(over="ignore"):
        total = float(np.sum(a))
    if math.isfinite(total):
        assert VAE._reduce(a, "sum") == total
    else:
        with pytest.raises(NonFiniteIntermediateError, match=r"reduction='sum'.*use reduction='mean'"):
            VAE._reduce(a, "sum")


@pytest.mark.hostile("magnitude", "exact value")
def test_mean_reduction_exact_through_the_model():
    """Gaussian x = 1.3e154 per entry: per-example ~1e308 each, the batch mean is finite and
    exact (mpmath), the sum is a named error."""
    m = VAE(1, 1, hidden=(2,), likelihood="gaussian", decoder_log_var=0.0, rng=np.random.default_rng(2))
    p = {k: (np.zeros_like(v) if k.startswith("encoder") else v.copy()) for k, v in m.params.items()}
    x = np.full((4, 1), 1.3e154)
    eps = np.zeros((4, 1))
    ctx = _no_warnings()
    try:
        res = m.neg_elbo(x, eps, params=p)
        with pytest.raises(NonFiniteIntermediateError, match="reduction='sum'"):
            m.neg_elbo(x, eps, reduction="sum", params=p)
    finally:
        ctx.__exit__(None, None, None)
    with mpmath.workprec(256):
        want = mpmath.fsum(mpmath.mpf(float(t)) for t in res.per_example) / 4
        out = m.decode(np.zeros((1, 1)), params=p)[0, 0]
        exact_one = (LN_2PI + (mpmath.mpf(1.3e154) - mpmath.mpf(float(out))) ** 2) / 2
    assert math.isfinite(res.value)
    assert abs(mpmath.mpf(res.value) - want) <= 4 * U * abs(want)
    assert abs(mpmath.mpf(float(res.per_example[0])) - exact_one) <= 4 * U * exact_one


# =========================================================================== optimisers, layers, likelihoods

@pytest.mark.hostile("option", "named error")
@pytest.mark.parametrize("name", ["adam", "adamax"])
@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(lr=0.0), ValueError, "lr must be > 0"), (dict(lr=-1e-3), ValueError, "lr"),
    (dict(lr=float("nan")), ValueError, "lr"), (dict(lr=True), TypeError, "lr"),
    (dict(lr="1e-3"), TypeError, "lr"), (dict(eps=float("inf")), ValueError, "eps"),
    (dict(betas=(1.0, 0.9)), ValueError, r"betas\[0\]"), (dict(betas=(0.9, float("nan"))), ValueError, r"betas\[1\]"),
])
def test_optimiser_meaningless_hyperparameters(name, kwargs, exc, match):
    """make_optimizer with lr 0/negative/NaN/bool/str, eps inf, betas 1 or NaN: named error."""
    with pytest.raises(exc, match=match):
        make_optimizer(name, {"w": np.zeros(3)}, **kwargs)


@pytest.mark.hostile("non-finite", "named error")
@pytest.mark.parametrize("name", ["adam", "adamax"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_optimiser_non_finite_parameters(name, bad):
    """make_optimizer on parameters holding NaN or inf: ValueError naming the parameter and index."""
    w = np.zeros((2, 3))
    w[1, 2] = bad
    with pytest.raises(ValueError, match=r"params\['w'\] must not contain NaN or inf.*\(1, 2\)"):
        make_optimizer(name, {"v": np.zeros(2), "w": w})


@pytest.mark.hostile("type", "named error")
@pytest.mark.parametrize("call,arg", [
    (lambda r: layers.linear_forward(r, np.zeros((3, 2)), np.zeros(2)), "x"),
    (lambda r: layers.tanh_forward(r), "x"),
    (lambda r: likelihoods.bernoulli_log_prob(r, np.zeros((2, 3))), "x"),
    (lambda r: likelihoods.gaussian_log_prob(np.zeros((2, 3)), r, np.zeros(3)), "mean"),
    (lambda r: StandardPrior(3).log_prob(r), "z"),
])
def test_ragged_lists_are_named(call, arg):
    """A ragged list of lists where an array is expected: TypeError naming the argument."""
    ragged = [[0.0, 1.0, 2.0], [0.0, 1.0]]
    with pytest.raises(TypeError, match=f"{arg} must be an array of real numbers .*rectangular"):
        call(ragged)


@pytest.mark.hostile("type", "named error")
@pytest.mark.parametrize("fn,args,arg", [
    ("categorical_log_prob_vjp", lambda c: (np.ones(2), np.zeros((2, 3)), c(np.zeros((2, 9))), 3), "logits"),
    ("bernoulli_log_prob_vjp", lambda c: (np.ones(2), np.zeros((2, 3)), c(np.zeros((2, 3)))), "logits"),
    ("gaussian_log_prob_vjp", lambda c: (np.ones(2), np.zeros((2, 3)), c(np.zeros((2, 3))), np.zeros(3)), "mean"),
    ("gaussian_log_prob_vjp", lambda c: (np.ones(2), np.zeros((2, 3)), np.zeros((2, 3)), c(np.zeros(3))), "log_var"),
])
def test_likelihood_vjp_rejects_complex(fn, args, arg):
    """Likelihood VJPs with complex logits/mean/log_var: TypeError naming it (no silent real part)."""
    with pytest.raises(TypeError, match=f"{arg} must be real"):
        getattr(likelihoods, fn)(*args(lambda a: a + 1e-3j))


@pytest.mark.hostile("type", "named error")
@pytest.mark.parametrize("fn", ["relu", "leaky_relu", "tanh", "sigmoid", "softplus", "linear", "mlp"])
@pytest.mark.parametrize("cache", [None, "abc", (1, 2)])
def test_layer_backward_bad_cache(fn, cache):
    """<layer>_backward with a cache that its forward did not make (None, str, tuple): TypeError."""
    with pytest.raises(TypeError, match="cache must be"):
        getattr(layers, f"{fn}_backward")(np.ones((2, 2)), cache)


@pytest.mark.hostile("magnitude", "named error")
@pytest.mark.parametrize("method,key", [("encode", "encoder.0.W"), ("decode", "decoder.0.W")])
def test_encode_decode_overflow_named(method, key):
    """VAE.encode/decode with finite parameters of 1e308 that overflow: error naming <key>.pre."""
    m = _model("categorical")
    x, _ = _data("categorical")
    p = {k: v.copy() for k, v in m.params.items()}
    p[key] = np.full_like(p[key], 1e308)
    arg = x if method == "encode" else np.full((4, 2), 16.0)
    ctx = _no_warnings()
    try:
        with pytest.raises(NonFiniteIntermediateError,
                           match=rf"the {method[:-1]}er pass overflowed at {key[:-2]}\.pre.*parameters too large"):
            getattr(m, method)(arg, params=p)
    finally:
        ctx.__exit__(None, None, None)


@pytest.mark.hostile("magnitude", "named error")
@pytest.mark.parametrize("prior,key,exc,match", [
    ("gtm", "prior.gtm.0.W", NonFiniteIntermediateError,
     r"the gtm prior's components overflowed at prior\.gtm\.0\.pre .*parameters too large"),
    ("vamp", "prior.pseudo_inputs", ValueError,
     r"the vamp prior's components .*computed from the parameters.*out of range.*parameters too large"),
])
def test_prior_component_overflow_named(prior, key, exc, match):
    """Finite prior parameters of 1e308 whose components overflow: named, not 'means must not
    contain NaN'."""
    kw = {"hidden": (3,)} if prior == "gtm" else {}
    m = VAE(6, 2, hidden=(5,), prior=prior, prior_kwargs=kw, rng=np.random.default_rng(0))
    p = {k: v.copy() for k, v in m.params.items()}
    p[key] = np.full_like(p[key], 1e308)
    x, eps = _data("categorical", B=3)
    ctx = _no_warnings()
    try:
        with pytest.raises(exc, match=match):
            m.neg_elbo(x, eps, params=p)
        with pytest.raises(exc, match=match.split(" .*")[0]):
            m.prior.sample(p, 2, np.random.default_rng(0)) if prior == "gtm" else m.prior.log_prob(eps, p)
    finally:
        ctx.__exit__(None, None, None)


@pytest.mark.hostile("magnitude", "named error")
def test_flow_prior_overflow_named():
    """FlowPrior.log_prob with finite t-weights of 1e308 that overflow: error naming the
    intermediate; a huge but finite u still gives the -inf limit without a warning."""
    pr = FlowPrior(2, 1, (3,), "leaky_relu", "random")
    p = pr.init_params(np.random.default_rng(0))
    good = dict(p)
    p["prior.flow.0.t.0.W"] = np.full_like(p["prior.flow.0.t.0.W"], 1e308)
    z = np.array([[4.0, 2.0], [3.0, -1.0]])
    ctx = _no_warnings()
    try:
        with pytest.raises(NonFiniteIntermediateError, match=r"flow prior overflowed at prior\.flow\.0\.t\.0\.pre"):
            pr.log_prob(z, p)
        assert np.all(pr.log_prob(np.array([[1e200, 1e200]]), good) == -np.inf)
    finally:
        ctx.__exit__(None, None, None)
