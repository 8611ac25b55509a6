"""The fused Numba loops give the same bits as the NumPy code they replace.

* Adam / Adamax: the fused in-place kernels (``_adam_kernel``, ``_adamax_kernel``) against the
  NumPy in-place updates (``_update_numpy``, the PyTorch order of operations), step after step,
  signed zeros, subnormal and huge gradients, eps = 0 (0/0 = NaN, not ZeroDivisionError), both
  branches of ATen's lerp; parameters that are not C-contiguous take the NumPy update, in place;
* relu / leaky_relu forward and backward: the loops against ``np.where`` (signed zeros, NaN,
  infinities, every shape, non-contiguous and complex input on the NumPy path);
* ``as_float_array``'s Numba screen for non-finite entries: the same errors as the NumPy check.
"""

import re

import numpy as np
import pytest

from refvae import layers
from refvae._validation import _SCREEN_MIN_SIZE, as_float_array
from refvae.optim import Adam, Adamax

SPECIAL = np.array([0.0, -0.0, 5e-324, -5e-324, 1e-310, -1e-310, 1e300, -1e300, 1e-8, -1e-8, 3.0, -3.0])


def same_bits(a, b):
    """Equal as float64 bit patterns (so -0.0 != 0.0, and NaN == NaN with the same payload/sign)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and np.array_equal(a.view(np.int64), b.view(np.int64))


# =========================================================================== optimisers

def _problem(rng, shapes):
    params = {k: rng.standard_normal(s) for k, s in shapes.items()}
    grads = []
    for _ in range(6):
        g = {}
        for k, s in shapes.items():
            a = rng.standard_normal(s) * 10.0 ** rng.uniform(-9, 3, size=s)
            flat = a.reshape(-1)                  # a view (a is a fresh C-contiguous array)
            pick = rng.uniform(size=flat.size) < 0.25
            flat[pick] = rng.choice(SPECIAL, size=int(pick.sum()))
            g[k] = a
        grads.append(g)
    return params, grads


SHAPES = {"w": (9, 4), "b": (7,), "s": (), "e": (3, 0)}


@pytest.mark.parametrize("cls", [Adam, Adamax])
@pytest.mark.parametrize("hyper", [{}, {"betas": (0.3, 0.9), "lr": 0.05, "eps": 1e-6},
                                   {"eps": 0.0}, {"betas": (0.0, 0.0)}])
@pytest.mark.parametrize("seed", [0, 1])
def test_fused_optimiser_matches_numpy_update(cls, hyper, seed):
    rng = np.random.default_rng(seed)
    params, grads = _problem(rng, SHAPES)
    if hyper.get("eps") == 0.0:     # an all-zero gradient history: 0/0 = NaN in both
        for g in grads:
            g["b"][:3] = 0.0
            g["b"][1] = -0.0
    fused_p = {k: v.copy() for k, v in params.items()}
    ref_p = {k: v.copy() for k, v in params.items()}
    fused, ref = cls(fused_p, **hyper), cls(ref_p, **hyper)
    ref._update = ref._update_numpy           # the NumPy in-place update (PyTorch's order)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for t, g in enumerate(grads, 1):
            fused.step(g)
            ref.step(g)
            for k in SHAPES:
                assert same_bits(fused_p[k], ref_p[k]), (k, t, fused_p[k], ref_p[k])
                for name in fused._moment_names:
                    assert same_bits(getattr(fused, name)[k], getattr(ref, name)[k]), (name, k, t)
    if hyper.get("eps") == 0.0:
        assert np.isnan(fused_p["b"][:3]).all()


@pytest.mark.parametrize("cls", [Adam, Adamax])
def test_non_contiguous_parameters_are_updated_in_place(cls):
    """A parameter that is a strided view (or Fortran-ordered) takes the NumPy update, in place."""
    rng = np.random.default_rng(2)
    base = rng.standard_normal((4, 10))
    params = {"view": base[:, ::2], "fortran": np.asfortranarray(rng.standard_normal((3, 5)))}
    ref_p = {k: np.ascontiguousarray(v) for k, v in params.items()}
    opt, ref = cls(params), cls(ref_p)
    for _ in range(3):
        g = {k: rng.standard_normal(v.shape) for k, v in ref_p.items()}
        opt.step(g)
        ref.step(g)
    assert params["view"].base is base or np.shares_memory(params["view"], base)
    for k in params:
        assert same_bits(params[k], ref_p[k]), k
    assert same_bits(base[:, ::2], ref_p["view"])


# =========================================================================== relu / leaky_relu

def _where_fwd(x, slope):
    return np.where(x > 0, x, slope * x)


def _where_bwd(dy, x, slope):
    return dy * np.where(x > 0, 1.0, slope) if slope else dy * (x > 0)


ACT_VALUES = np.concatenate([SPECIAL, [np.inf, -np.inf, np.nan, 1.0, -1.0, 0.5, -123.456]])


@pytest.mark.parametrize("name,slope", [("relu", 0.0), ("leaky_relu", 0.01)])
@pytest.mark.parametrize("shape", [(), (19,), (3, 7), (2, 3, 5), (0, 4)])
def test_kinked_kernels_match_np_where(name, slope, shape):
    rng = np.random.default_rng(7)
    x = rng.choice(ACT_VALUES, size=shape) if shape else np.array(rng.choice(ACT_VALUES))
    dy = rng.choice(ACT_VALUES, size=shape) if shape else np.array(rng.choice(ACT_VALUES))
    fwd, bwd = layers.ACTIVATIONS[name]
    with np.errstate(invalid="ignore", over="ignore"):
        y, cache = fwd(x)
        assert cache is x and same_bits(y, _where_fwd(x, slope))
        assert same_bits(bwd(dy, x), _where_bwd(dy, x, slope))


@pytest.mark.parametrize("name,slope", [("relu", 0.0), ("leaky_relu", 0.01)])
def test_kinked_numpy_path_for_strided_and_complex(name, slope):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 8))[:, ::2]            # not C-contiguous
    dy = rng.standard_normal((4, 8))[:, 1::2]
    fwd, bwd = layers.ACTIVATIONS[name]
    assert same_bits(fwd(x)[0], _where_fwd(x, slope))
    assert same_bits(bwd(dy, x), _where_bwd(dy, x, slope))
    xc = x + 1e-30j                                     # complex step: branch on the real part
    y = fwd(np.ascontiguousarray(xc))[0]
    assert y.dtype == np.complex128
    np.testing.assert_array_equal(y, np.where(x > 0, xc, slope * xc))


def test_public_activation_functions_use_the_kernels_consistently():
    x = np.array([[-2.0, -0.0, 0.0, 3.0]])
    np.testing.assert_array_equal(layers.leaky_relu_forward(x)[0], [[-0.02, -0.0, 0.0, 3.0]])
    assert np.signbit(layers.relu_forward(x)[0]).tolist() == [[True, True, False, False]]


# =========================================================================== input screen

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, 1234, -1])
@pytest.mark.parametrize("allow_neg_inf", [False, True])
def test_screen_gives_the_numpy_errors(bad, where, allow_neg_inf):
    n = 2 * _SCREEN_MIN_SIZE + 3
    x = np.linspace(-1.0, 1.0, n).reshape(-1, 1)
    x[where, 0] = bad
    idx = (where % n, 0)
    if allow_neg_inf and bad == -np.inf:
        assert as_float_array(x, "x", allow_neg_inf=True) is x
        return
    what = "NaN or +inf" if allow_neg_inf else "NaN or inf"
    pattern = rf"^x must not contain {re.escape(what)}; found .* at index \({idx[0]}, 0\)"
    with pytest.raises(ValueError, match=pattern):
        as_float_array(x, "x", allow_neg_inf=allow_neg_inf)


def test_screen_passes_finite_arrays_unchanged():
    x = np.random.default_rng(0).standard_normal((_SCREEN_MIN_SIZE, 3))
    assert as_float_array(x, "x") is x
    xc = np.empty(x.shape, dtype=np.complex128)        # complex: only the real part is checked
    xc.real, xc.imag = x, np.inf
    assert as_float_array(xc, "x", allow_complex=True) is xc
    f = np.asfortranarray(x)
    out = as_float_array(f, "x")
    assert out.flags.c_contiguous and np.array_equal(out, x)
