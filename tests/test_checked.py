"""One function per quantity (issue 14): each checked entry point and its ``.unchecked`` arithmetic.

:func:`refvae._validation.checked` turns an arithmetic function into the public entry point that
validates user data; the bare arithmetic stays reachable as ``.unchecked`` for refvae's callers
whose arrays are already checked (the VAE's training step, the priors, the kernels). Checked here:

* every public function of gaussian, primitives and layers (and ``FlowPrior.transform``) is such
  a wrapper, with the arithmetic's name and math docstring;
* on valid input the wrapper and ``.unchecked`` give **bit-identical** results (signed zeros and
  the bits of every entry, tuples and dicts included), also for keyword calls;
* the wrapper's errors are the public ones (the full message texts are pinned by the hostile
  tests, tests/test_hostile_*.py); a call with missing or unknown arguments is a ``TypeError``
  naming the function.
"""

from __future__ import annotations

import numpy as np
import pytest

from refvae import gaussian, layers, primitives
from refvae.priors.flow import FlowPrior

RNG = np.random.default_rng(20261202)


def _bits(a):
    """The exact content of a result: arrays as (dtype, shape, bytes), containers recursively."""
    if isinstance(a, dict):
        return {k: _bits(v) for k, v in a.items()}
    if isinstance(a, (tuple, list)):
        return type(a)(_bits(v) for v in a)
    if isinstance(a, np.ndarray):
        a = np.ascontiguousarray(a)
        return a.dtype.str, a.shape, a.tobytes()
    return a


def _same_bits(x, y):
    return _bits(x) == _bits(y)


# --------------------------------------------------------------------------- valid calls

B, L = 4, 3
Z, MU, LV = RNG.normal(size=(B, L)), RNG.normal(size=L), RNG.normal(size=(B, L))
MUP, LVP = RNG.normal(size=(B, L)), RNG.normal(size=(1, L))
EPS = RNG.normal(size=(B, L))
GB = RNG.normal(size=B)

X_ROWS = RNG.normal(size=(3, 5)) * 5
X_ROWS[0, 1] = -np.inf                    # a switched-off entry
X_ELEM = np.array([-800.0, -3.0, -0.0, 0.0, 2.5, 40.0, 1e308])

LX = RNG.normal(size=(3, 4))
LX[0, 0] = 0.0                            # the kink
LW, LB = RNG.normal(size=(4, 2)), RNG.normal(size=2)
MLP = layers.mlp_init([4, 5, 2], "enc", np.random.default_rng(0))

CALLS = {   # name -> (function, positional args, keyword args)
    "gaussian.log_prob": (gaussian.log_prob, (Z, MU, LV), {}),
    "gaussian.log_prob_vjp": (gaussian.log_prob_vjp, (GB, Z, MU, LV), {}),
    "gaussian.entropy": (gaussian.entropy, (LV,), {}),
    "gaussian.entropy_vjp": (gaussian.entropy_vjp, (GB, LV), {}),
    "gaussian.cross_entropy": (gaussian.cross_entropy, (MU, LV, MUP, LVP), {}),
    "gaussian.cross_entropy_vjp": (gaussian.cross_entropy_vjp, (GB, MU, LV, MUP, LVP), {}),
    "gaussian.kl": (gaussian.kl, (MU, LV, MUP, LVP), {}),
    "gaussian.kl_vjp": (gaussian.kl_vjp, (GB, MU, LV, MUP, LVP), {}),
    "gaussian.reparameterize": (gaussian.reparameterize, (MU, LV, EPS), {}),
    "gaussian.reparameterize_vjp": (gaussian.reparameterize_vjp, (EPS, MU, LV, EPS), {}),
    "primitives.logsumexp": (primitives.logsumexp, (X_ROWS,), {"axis": -1}),
    "primitives.logsumexp_vjp": (primitives.logsumexp_vjp, (RNG.normal(size=3), X_ROWS), {}),
    "primitives.logsumexp_vjp(ans)": (primitives.logsumexp_vjp, (RNG.normal(size=3), X_ROWS),
                                      {"ans": primitives.logsumexp(X_ROWS)}),
    "primitives.log_softmax": (primitives.log_softmax, (X_ROWS,), {}),
    "primitives.log_softmax_vjp": (primitives.log_softmax_vjp, (RNG.normal(size=(3, 5)), X_ROWS), {}),
    "primitives.log_softmax_vjp(ans)": (primitives.log_softmax_vjp, (RNG.normal(size=(3, 5)), X_ROWS),
                                        {"ans": primitives.log_softmax(X_ROWS)}),
    "primitives.softplus": (primitives.softplus, (X_ELEM,), {}),
    "primitives.softplus_vjp": (primitives.softplus_vjp, (np.ones(7), X_ELEM), {}),
    "primitives.log_sigmoid": (primitives.log_sigmoid, (X_ELEM,), {}),
    "primitives.log_sigmoid_vjp": (primitives.log_sigmoid_vjp, (np.ones(7), X_ELEM), {}),
    "primitives.sigmoid": (primitives.sigmoid, (X_ELEM,), {}),
    "layers.linear_forward": (layers.linear_forward, (LX, LW, LB), {}),
    "layers.linear_backward": (layers.linear_backward,
                               (RNG.normal(size=(3, 2)), layers.linear_forward(LX, LW, LB)[1]), {}),
    "layers.mlp_forward": (layers.mlp_forward, (MLP, "enc", LX, "tanh"), {"out_activation": "sigmoid"}),
    "layers.mlp_backward": (layers.mlp_backward,
                            (RNG.normal(size=(3, 2)), layers.mlp_forward(MLP, "enc", LX, "relu")[1]), {}),
}
for _act in layers.ACTIVATIONS:
    _fwd, _bwd = getattr(layers, f"{_act}_forward"), getattr(layers, f"{_act}_backward")
    CALLS[f"layers.{_act}_forward"] = (_fwd, (LX,), {})
    CALLS[f"layers.{_act}_backward"] = (_bwd, (RNG.normal(size=LX.shape), _fwd(LX)[1]), {})


@pytest.mark.parametrize("name", sorted(CALLS))
def test_unchecked_is_bit_identical_on_valid_input(name):
    """``f(*args)`` and ``f.unchecked(*args)`` agree bit for bit (valid, already-converted input)."""
    f, args, kwargs = CALLS[name]
    with np.errstate(all="ignore"):
        checked = f(*args, **kwargs)
        bare = f.unchecked(*args, **kwargs)
    assert _same_bits(checked, bare), name


@pytest.mark.parametrize("name", sorted(CALLS))
def test_keyword_call_is_the_positional_call(name):
    """The wrapper binds its arguments like the arithmetic's own signature: all-keyword calls
    give the same bits as positional ones."""
    import inspect
    f, args, kwargs = CALLS[name]
    names = list(inspect.signature(f.unchecked).parameters)
    with np.errstate(all="ignore"):
        assert _same_bits(f(*args, **kwargs), f(**dict(zip(names, args)), **kwargs)), name


@pytest.mark.parametrize("module", [gaussian, primitives, layers])
def test_every_public_function_is_one_checked_function(module):
    """Each public function of the math core is a :func:`checked` wrapper (no hand-written
    public/private twins): it has ``.unchecked``, the arithmetic's name and math docstring, and
    the module holds no ``_<name>`` twin."""
    for name in module.__all__:
        f = getattr(module, name)
        if not callable(f) or name in ("activation_forward", "activation_backward", "mlp_init",
                                       "mlp_param_names"):
            continue
        assert callable(getattr(f, "unchecked", None)), f"{module.__name__}.{name}"
        assert f.__name__ == f.unchecked.__name__ == name
        assert f.__doc__ and f.__doc__ == f.unchecked.__doc__
        assert not hasattr(module, "_" + name), f"{module.__name__}._{name} is a twin"


def test_activations_table_holds_the_arithmetic():
    """:data:`refvae.layers.ACTIVATIONS` maps each name to the bare forward/backward."""
    for act, (fwd, bwd) in layers.ACTIVATIONS.items():
        assert fwd is getattr(layers, f"{act}_forward").unchecked
        assert bwd is getattr(layers, f"{act}_backward").unchecked


def test_flow_transform_unchecked_bit_identical_and_caches():
    prior = FlowPrior(4, num_couplings=2, hidden=(3,), activation="tanh", init="random")
    params = prior.init_params(np.random.default_rng(1))
    z = RNG.normal(size=(5, 4))
    caches = []
    got = FlowPrior.transform.unchecked(prior, params, z, caches)
    assert _same_bits(prior.transform(params, z), got)
    assert len(caches) == 2
    log_p, cache = prior.forward(params, z)
    assert _same_bits(cache["u"], got[0])


def test_wrapper_errors_are_the_validators():
    """The checked entry point raises the public messages (pinned in the hostile tests); the
    arithmetic does not check."""
    with pytest.raises(ValueError, match=r"the last axis \(latent dimension L\) must have the same "
                                         r"length in z, mu, log_var"):
        gaussian.log_prob(np.zeros((2, 3)), np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match=r"x must not contain NaN"):
        primitives.logsumexp(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match=r"ans must have the shape of x"):
        primitives.log_softmax_vjp(np.ones((2, 3)), np.zeros((2, 3)), ans=np.zeros(3))
    with pytest.raises(TypeError, match="cache must be the array returned by relu_forward"):
        layers.relu_backward(np.ones(3), "not a cache")
    with np.errstate(all="ignore"):
        assert np.isnan(primitives.softplus.unchecked(np.array([np.nan])))[0]


def test_wrong_arguments_name_the_function():
    with pytest.raises(TypeError, match=r"log_prob\(\).*log_var"):
        gaussian.log_prob(np.zeros(2), np.zeros(2))
    with pytest.raises(TypeError, match=r"logsumexp_vjp\(\).*bogus"):
        primitives.logsumexp_vjp(np.ones(1), np.zeros((1, 2)), bogus=1)
