r"""Layers with hand-written backward passes: linear, five activations, and the MLP built of them.

Every layer is a pure pair in the style of CS231n's ``layers.py``::

    y, cache = <layer>_forward(...)
    d<inputs> = <layer>_backward(dy, cache)

where ``d<name>`` is :math:`\partial L / \partial\,\text{name}` for a scalar loss L and has the
shape of ``name``. Nothing is stored between calls except in the returned cache. (This is the
layer-level convention; the function-level one, ``f_vjp(g, *inputs, ans=None)``, is described in
:mod:`refvae.primitives`, "Conventions".)

Each layer function is one function, the arithmetic with its math docstring, wrapped by
:func:`refvae._validation.checked`: ``relu_forward(x)`` checks ``x``, ``relu_backward(dy, cache)``
checks the cache and ``dy``; ``relu_forward.unchecked`` etc. are the bare arithmetic, used by
:data:`ACTIVATIONS`, by the MLP and by the VAE on arrays checked once at their boundary.

Conventions (SPEC section 3)
----------------------------
- Linear: ``y = x @ W + b`` with ``W`` of shape (in, out); PyTorch's ``nn.Linear.weight`` is ``W.T``.
- Activations ``leaky_relu`` (slope 0.01), ``relu``, ``tanh``, ``sigmoid``, ``softplus``. At a kink
  the derivative is the *left* slope, as in PyTorch: relu'(0) = 0, leaky_relu'(0) = 0.01.
- An MLP's parameters live in a flat dict under ``f"{prefix}.{i}.W"`` / ``f"{prefix}.{i}.b"``
  (``encoder.0.W``, ...); its gradient dict has exactly those keys.

Complex input
-------------
The forwards accept complex128 input (they are used by complex-step derivative checks,
:func:`refvae.gradcheck.check_vjp_complex`). Branch decisions (relu's ``x > 0``, the sign split in
sigmoid/softplus) are taken on the real part only, so each forward is an analytic function of its
input away from the kinks. Backwards are real.
"""

from __future__ import annotations

import re

import numpy as np
from numba import njit

from ._validation import as_float_array, check_choice, check_positive_int, check_rng, checked
from .primitives import sigmoid as _sigmoid
from .primitives import softplus as _softplus

__all__ = ["linear_forward", "linear_backward",
           "relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward",
           "tanh_forward", "tanh_backward", "sigmoid_forward", "sigmoid_backward",
           "softplus_forward", "softplus_backward",
           "ACTIVATIONS", "LEAKY_SLOPE", "activation_forward", "activation_backward",
           "mlp_init", "mlp_forward", "mlp_backward", "mlp_param_names"]

LEAKY_SLOPE = 0.01  #: negative-side slope of leaky_relu (PyTorch's default)


def _real(x):
    """Real part for branch decisions (a no-op view for real arrays)."""
    return x.real if np.iscomplexobj(x) else x


def _check_dy(dy, shape, name="dy"):
    return as_float_array(dy, name, shape=tuple(shape))


def _check_act_cache(cache, who):
    """The cache of an activation: the (real or complex) input array its forward returned."""
    if not (isinstance(cache, np.ndarray) and (np.issubdtype(cache.dtype, np.floating)
                                                or np.issubdtype(cache.dtype, np.complexfloating))):
        raise TypeError(f"cache must be the array returned by {who}_forward (its input x), got "
                        f"{type(cache).__name__}")
    return cache


def _check_linear_cache(cache):
    """The cache of :func:`linear_forward`: the pair ``(x, W)`` of 2-d arrays, x (B, in), W (in, out)."""
    if not (isinstance(cache, tuple) and len(cache) == 2
            and all(isinstance(a, np.ndarray) and a.ndim == 2 for a in cache)
            and cache[0].shape[1] == cache[1].shape[0]):
        raise TypeError("cache must be the pair (x, W) returned by linear_forward, got "
                        f"{type(cache).__name__}")
    return cache


_MLP_CACHE_KEYS = ("prefix", "layers", "y_shape")


def _check_mlp_cache(cache):
    """The cache of :func:`mlp_forward`: a dict with (at least) the keys it wrote."""
    if not isinstance(cache, dict) or any(k not in cache for k in _MLP_CACHE_KEYS):
        raise TypeError("cache must be the dict returned by mlp_forward (keys "
                        f"{', '.join(_MLP_CACHE_KEYS)}, ...), got {type(cache).__name__}")
    return cache


def _check_x_args(arguments):
    """Validator (:func:`refvae._validation.checked`) of the activation forwards: ``x`` float64
    or complex128, finite, any shape."""
    return dict(arguments, x=as_float_array(arguments["x"], "x", allow_complex=True))


def _check_act_args(who):
    """Validator of ``<who>_backward(dy, cache)``: the cache is the forward's input array, ``dy``
    a finite float64 array of its shape."""
    def check_args(arguments):
        cache = _check_act_cache(arguments["cache"], who)
        return dict(arguments, cache=cache, dy=_check_dy(arguments["dy"], cache.shape))
    return check_args


def _check_linear_args(arguments):
    """Validator of :func:`linear_forward`: x (B, in), W (in, out), b (out,)."""
    x = as_float_array(arguments["x"], "x", ndim=2, allow_complex=True)
    W = as_float_array(arguments["W"], "W", ndim=2, allow_complex=True)
    if x.shape[1] != W.shape[0]:
        raise ValueError(f"x has {x.shape[1]} columns but W has {W.shape[0]} rows; "
                         f"x must have shape (B, {W.shape[0]}) for W of shape {W.shape}")
    b = as_float_array(arguments["b"], "b", shape=(W.shape[1],), allow_complex=True)
    return {"x": x, "W": W, "b": b}


def _check_linear_backward_args(arguments):
    """Validator of :func:`linear_backward`: the cache ``(x, W)``, then dy (B, out)."""
    x, W = cache = _check_linear_cache(arguments["cache"])
    return {"dy": _check_dy(arguments["dy"], (x.shape[0], W.shape[1])), "cache": cache}


# =========================================================================== linear

@checked(_check_linear_args)
def linear_forward(x, W, b):
    r"""Affine layer ``y = x W + b``.

    Forward
    -------
    .. math:: y_{bj} = \sum_i x_{bi} W_{ij} + b_j

    Backward
    --------
    See :func:`linear_backward`.

    Shapes
    ------
    x (B, in); W (in, out); b (out,); y (B, out). The cache is ``(x, W)``.

    Numerics
    --------
    No stabilisation is needed; complex input is accepted (the map is analytic).

    References
    ----------
    SPEC.md section 3 (W of shape (in, out); PyTorch's weight is W.T).
    """
    return x @ W + b, (x, W)


@checked(_check_linear_backward_args)
def linear_backward(dy, cache):
    r"""Backward pass of :func:`linear_forward`: ``(dx, dW, db)``.

    What it is
    ----------
    The vector-Jacobian product of the affine map with an upstream gradient ``dy``.

    Forward
    -------
    :math:`y_{bj} = \sum_i x_{bi} W_{ij} + b_j`.

    Backward
    --------
    - :math:`\partial L/\partial x_{bi} = \sum_j dy_{bj}\, \partial y_{bj}/\partial x_{bi}
      = \sum_j dy_{bj} W_{ij}` :math:`\Rightarrow` ``dx = dy @ W.T``
    - :math:`\partial L/\partial W_{ij} = \sum_b dy_{bj}\, x_{bi}` :math:`\Rightarrow` ``dW = x.T @ dy``
    - :math:`\partial L/\partial b_j = \sum_b dy_{bj}` (b is broadcast over the batch)
      :math:`\Rightarrow` ``db = dy.sum(0)``

    Shapes
    ------
    dy (B, out); dx (B, in); dW (in, out); db (out,).

    Numerics
    --------
    Sums over the batch (dW, db) and over ``out`` (dx) in BLAS order; no stabilisation needed.

    References
    ----------
    SPEC.md section 3. See also: docs/course/01-chain-rule.md (the chain rule with every number of a
    two-layer network) and docs/course/02-linear-and-activations.md (batches, activations, kinks).
    """
    x, W = cache
    return dy @ W.T, x.T @ dy, dy.sum(axis=0)


# =========================================================================== activations

@njit(cache=True, error_model="numpy")
def _kinked_fwd_kernel(x, slope):
    r"""``y = x`` where ``x > 0``, else ``slope * x``, for a 1-d float64 array (relu: slope 0).

    Forward: :math:`y_i = x_i\,[x_i > 0] + (\text{slope}\cdot x_i)\,[x_i \le 0]`; the same
    operation per element as ``np.where(x > 0, x, slope * x)`` (hence the same bits: relu gives
    ``0.0 * x = -0.0`` for negative x, and NaN stays NaN). Backward: :func:`_kinked_bwd_kernel`.
    Used for real float64 input only (complex input keeps ``np.where``, branching on the real part).
    """
    y = np.empty_like(x)
    for i in range(x.shape[0]):
        xi = x[i]
        y[i] = xi if xi > 0 else slope * xi
    return y


@njit(cache=True, error_model="numpy")
def _kinked_bwd_kernel(dy, x, slope):
    r"""``dx = dy * (1.0 if x > 0 else slope)`` for 1-d float64 arrays (the left slope at 0).

    Backward of :func:`_kinked_fwd_kernel`: :math:`\partial y_i/\partial x_i = 1` for
    :math:`x_i > 0`, ``slope`` otherwise; the same product per element as
    ``dy * np.where(x > 0, 1.0, slope)`` (hence the same bits, signed zeros included).
    """
    dx = np.empty_like(dy)
    for i in range(dy.shape[0]):
        dx[i] = dy[i] * (1.0 if x[i] > 0 else slope)
    return dx


def _use_kernel(*arrays):
    """True for real, C-contiguous float64 arrays of one shape (the Numba kernels' domain)."""
    a0 = arrays[0]
    return all(type(a) is np.ndarray and a.dtype == np.float64 and a.flags.c_contiguous
               and a.shape == a0.shape for a in arrays)


def _kinked_forward(x, slope):
    """``(y, x)``, ``y = where(Re x > 0, x, slope * x)``: relu (slope 0) and leaky_relu; the Numba
    kernel for real float64 input, the same bits as the NumPy expression."""
    if _use_kernel(x):
        return _kinked_fwd_kernel(x.reshape(-1), slope).reshape(x.shape), x
    return np.where(_real(x) > 0, x, slope * x), x


def _kinked_backward(dy, x, slope):
    """``dx = dy * where(Re x > 0, 1, slope)`` (the left slope at 0), kernel or NumPy, same bits."""
    if _use_kernel(dy, x):
        return _kinked_bwd_kernel(dy.reshape(-1), x.reshape(-1), slope).reshape(x.shape)
    return dy * np.where(_real(x) > 0, 1.0, slope)


@checked(_check_x_args)
def relu_forward(x):
    r"""Rectified linear unit, ``y = max(x, 0)``.

    Forward
    -------
    :math:`y = x` for :math:`x > 0`, else 0.

    Backward
    --------
    See :func:`relu_backward`.

    Shapes
    ------
    x of any shape; y and the cache (``x``) have x's shape.

    Numerics
    --------
    Exact. The branch is taken on the real part (complex-step safe away from 0).

    References
    ----------
    SPEC.md section 3.
    """
    return _kinked_forward(x, 0.0)


@checked(_check_act_args("relu"))
def relu_backward(dy, cache):
    r"""Backward of :func:`relu_forward`: ``dx = dy * [x > 0]``.

    Backward
    --------
    :math:`\partial y/\partial x = 1` for :math:`x > 0` and 0 for :math:`x < 0`; elementwise, so
    :math:`dx = dy \odot \mathbb 1[x > 0]`.

    Shapes
    ------
    dy and dx have x's shape.

    Numerics
    --------
    At the kink x = 0 the left slope is used: relu'(0) = 0 (as PyTorch).

    References
    ----------
    SPEC.md section 3.
    """
    return _kinked_backward(dy, cache, 0.0)


@checked(_check_x_args)
def leaky_relu_forward(x):
    r"""Leaky ReLU with slope 0.01: ``y = x`` for x > 0, ``0.01 x`` otherwise.

    Forward
    -------
    :math:`y = x\,\mathbb 1[x > 0] + 0.01\,x\,\mathbb 1[x \le 0]`.

    Backward
    --------
    See :func:`leaky_relu_backward`.

    Shapes
    ------
    x of any shape; y and the cache (``x``) have x's shape.

    Numerics
    --------
    Exact up to the rounding of ``0.01 * x``. Branch on the real part (complex-step safe).

    References
    ----------
    SPEC.md section 3 (slope 0.01).
    """
    return _kinked_forward(x, LEAKY_SLOPE)


@checked(_check_act_args("leaky_relu"))
def leaky_relu_backward(dy, cache):
    r"""Backward of :func:`leaky_relu_forward`: ``dx = dy * where(x > 0, 1, 0.01)``.

    Backward
    --------
    :math:`\partial y/\partial x = 1` for :math:`x > 0` and 0.01 for :math:`x < 0`; elementwise.

    Shapes
    ------
    dy and dx have x's shape.

    Numerics
    --------
    At the kink x = 0 the left slope is used: leaky_relu'(0) = 0.01 (as PyTorch).

    References
    ----------
    SPEC.md section 3. See also: docs/course/02-linear-and-activations.md (why a kink matters to a
    gradient check).
    """
    return _kinked_backward(dy, cache, LEAKY_SLOPE)


@checked(_check_x_args)
def tanh_forward(x):
    r"""Hyperbolic tangent, ``y = tanh(x)``.

    Forward
    -------
    :math:`y = \tanh x = (e^{x} - e^{-x}) / (e^{x} + e^{-x})` (``numpy.tanh``).

    Backward
    --------
    See :func:`tanh_backward`.

    Shapes
    ------
    x of any shape; y and the cache (``x``) have x's shape.

    Numerics
    --------
    ``numpy.tanh`` saturates to +-1 without overflow; complex input is accepted (analytic).

    References
    ----------
    SPEC.md section 3.
    """
    return np.tanh(x), x


@checked(_check_act_args("tanh"))
def tanh_backward(dy, cache):
    r"""Backward of :func:`tanh_forward`: ``dx = dy * sech(x)**2``.

    Backward
    --------
    :math:`\frac{d}{dx}\tanh x = 1 - \tanh^2 x = \operatorname{sech}^2 x`, elementwise, so
    :math:`dx = dy \odot \operatorname{sech}^2 x`.

    Shapes
    ------
    dy and dx have x's shape.

    Numerics
    --------
    ``1 - y**2`` cancels catastrophically once |y| is close to 1 (at x = 10 it has relative error
    ~1e-8, and it is exactly 0 from |x| ~ 19 on). Instead
    :math:`\operatorname{sech} x = 2e^{-|x|}/(1 + e^{-2|x|})`, which has full relative accuracy
    and never overflows (it underflows to 0 only where the true value is below the smallest float).

    References
    ----------
    SPEC.md section 3. See also: docs/course/01-chain-rule.md (tanh in a worked example).
    """
    # sech(x) = 2 e^{-|x|} / (1 + e^{-2|x|}): no overflow, full relative accuracy for large |x|
    x = np.real(cache)
    e = np.exp(-np.abs(x))
    sech = 2.0 * e / (1.0 + e * e)
    return dy * (sech * sech)


@checked(_check_x_args)
def sigmoid_forward(x):
    r"""Logistic sigmoid, ``y = 1 / (1 + exp(-x))``.

    Forward
    -------
    :math:`\sigma(x) = 1/(1 + e^{-x})` (:func:`refvae.primitives.sigmoid`).

    Backward
    --------
    See :func:`sigmoid_backward`.

    Shapes
    ------
    x of any shape; y and the cache (``x``) have x's shape.

    Numerics
    --------
    Overflow-free for any finite x (the primitive evaluates ``exp`` of a non-positive argument only).

    References
    ----------
    SPEC.md section 3.
    """
    return _sigmoid(x), x


@checked(_check_act_args("sigmoid"))
def sigmoid_backward(dy, cache):
    r"""Backward of :func:`sigmoid_forward`: ``dx = dy * sigma(x) * sigma(-x)``.

    Backward
    --------
    :math:`\sigma'(x) = e^{-x}/(1 + e^{-x})^2 = \sigma(x)\,(1 - \sigma(x)) = \sigma(x)\,\sigma(-x)`,
    elementwise, so :math:`dx = dy \odot \sigma(x)\sigma(-x)`.

    Shapes
    ------
    dy and dx have x's shape.

    Numerics
    --------
    ``1 - sigma(x)`` is computed as ``sigma(-x)``, not by subtraction, so the derivative keeps full
    relative accuracy for large x (where 1 - sigma(x) would round to 0).

    References
    ----------
    SPEC.md section 3.
    """
    x = np.real(cache)
    return dy * (_sigmoid(x) * _sigmoid(-x))


@checked(_check_x_args)
def softplus_forward(x):
    r"""Softplus, ``y = log(1 + exp(x))``.

    Forward
    -------
    :math:`\operatorname{softplus}(x) = \log(1 + e^{x})` (:func:`refvae.primitives.softplus`).

    Backward
    --------
    See :func:`softplus_backward`.

    Shapes
    ------
    x of any shape; y and the cache (``x``) have x's shape.

    Numerics
    --------
    Overflow-free: the primitive evaluates ``max(x, 0) + log1p(exp(-|x|))``.

    References
    ----------
    SPEC.md section 3.
    """
    return _softplus(x), x


@checked(_check_act_args("softplus"))
def softplus_backward(dy, cache):
    r"""Backward of :func:`softplus_forward`: ``dx = dy * sigma(x)``.

    Backward
    --------
    :math:`\frac{d}{dx}\log(1 + e^{x}) = e^{x}/(1 + e^{x}) = \sigma(x)`, elementwise.

    Shapes
    ------
    dy and dx have x's shape.

    Numerics
    --------
    The overflow-free :func:`refvae.primitives.sigmoid`.

    References
    ----------
    SPEC.md section 3.
    """
    return dy * _sigmoid(np.real(cache))


#: name -> (forward, backward), the bare arithmetic (``.unchecked``) of ``<name>_forward`` and
#: ``<name>_backward``; ``tuple(ACTIVATIONS)`` lists the names.
ACTIVATIONS = {name: (fwd.unchecked, bwd.unchecked) for name, fwd, bwd in (
    ("leaky_relu", leaky_relu_forward, leaky_relu_backward),
    ("relu", relu_forward, relu_backward),
    ("tanh", tanh_forward, tanh_backward),
    ("sigmoid", sigmoid_forward, sigmoid_backward),
    ("softplus", softplus_forward, softplus_backward),
)}


def activation_forward(name, x):
    """Apply the activation ``name`` (one of :data:`ACTIVATIONS`): returns ``(y, cache)``.

    Unknown names raise ``ValueError`` listing the choices. See the ``<name>_forward`` functions.
    """
    check_choice(name, "activation", tuple(ACTIVATIONS))
    x = as_float_array(x, "x", allow_complex=True)
    return ACTIVATIONS[name][0](x)


def activation_backward(name, dy, cache):
    """Backward of :func:`activation_forward` with the same ``name``: returns ``dx``."""
    check_choice(name, "activation", tuple(ACTIVATIONS))
    cache = _check_act_cache(cache, "activation")
    return ACTIVATIONS[name][1](_check_dy(dy, cache.shape), cache)


# =========================================================================== MLP

def mlp_param_names(params, prefix):
    """The parameter names of the MLP ``prefix`` in ``params``, in layer order.

    Returns ``[f"{prefix}.0.W", f"{prefix}.0.b", f"{prefix}.1.W", ...]``. Raises ``ValueError``
    if there is no layer 0, if a layer has W but not b (or b but not W), or if layer indices skip.
    """
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict of named arrays, got {type(params).__name__}")
    if not isinstance(prefix, str) or not prefix:
        raise TypeError(f"prefix must be a non-empty str, got {prefix!r}")
    pat = re.compile(re.escape(prefix) + r"\.(\d+)\.(W|b)")
    found: dict = {}
    for key in params:
        m = pat.fullmatch(key)
        if m:
            found.setdefault(int(m.group(1)), set()).add(m.group(2))
    if not found:
        raise ValueError(f"params has no layers under prefix {prefix!r} (expected keys "
                         f"'{prefix}.0.W', '{prefix}.0.b', ...)")
    n = max(found) + 1
    names = []
    for i in range(n):
        have = found.get(i, set())
        for part in ("W", "b"):
            if part not in have:
                raise ValueError(f"params is missing {prefix}.{i}.{part} (layers of {prefix!r} must be "
                                 f"numbered 0..{n - 1} with a W and a b each)")
            names.append(f"{prefix}.{i}.{part}")
    return names


def mlp_init(sizes, prefix, rng):
    r"""Parameters of an MLP with layer widths ``sizes``, initialised like PyTorch's ``nn.Linear``.

    What it is
    ----------
    ``len(sizes) - 1`` linear layers; layer i maps ``sizes[i]`` to ``sizes[i + 1]``.

    Forward
    -------
    :math:`W_i, b_i \sim \mathcal U(-1/\sqrt{n_i}, 1/\sqrt{n_i})` elementwise, :math:`n_i` = ``sizes[i]``
    (the fan-in). This is PyTorch's default: ``kaiming_uniform_(a=sqrt(5))`` has bound
    :math:`\text{gain}\sqrt{3/n}` with :math:`\text{gain} = \sqrt{2/(1 + a^2)} = \sqrt{1/3}`, i.e.
    :math:`1/\sqrt n`, and the bias uses the bound :math:`1/\sqrt n` too.

    Shapes
    ------
    Returns a dict ``{f"{prefix}.{i}.W": (sizes[i], sizes[i+1]), f"{prefix}.{i}.b": (sizes[i+1],)}``,
    insertion-ordered by layer, W before b.

    Numerics
    --------
    Draw order (reproducible): for i = 0, 1, ...: W_i (C order), then b_i, from ``rng.uniform``.
    The values differ from PyTorch's (a different generator); copy them into torch with
    ``weight = W.T`` to replay a run.

    References
    ----------
    SPEC.md section 3 (parameter names ``<module>.<layer index>.<W|b>``).
    """
    check_rng(rng)
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__") or len(sizes) < 2:
        raise ValueError(f"sizes must be a sequence of at least two layer widths, got {sizes!r}")
    sizes = [check_positive_int(s, f"sizes[{i}]") for i, s in enumerate(sizes)]
    if not isinstance(prefix, str) or not prefix:
        raise TypeError(f"prefix must be a non-empty str, got {prefix!r}")
    params = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        bound = 1.0 / np.sqrt(n_in)
        params[f"{prefix}.{i}.W"] = rng.uniform(-bound, bound, size=(n_in, n_out))
        params[f"{prefix}.{i}.b"] = rng.uniform(-bound, bound, size=(n_out,))
    return params


def check_mlp_params(params, prefix, x_width, names=None):
    """The parameters of the MLP ``prefix`` in ``params``, checked for an input of ``x_width``
    columns: ``{name: array}`` with exactly its keys (:func:`mlp_param_names`), each finite,
    float64 or complex128, C-contiguous, the shapes chained (``prefix.i.W`` (width, out),
    ``prefix.i.b`` (out,)). Part of the validator of :func:`mlp_forward`; callers that checked
    ``x`` themselves (the VAE's encoder) check the parameters with it and then call
    ``mlp_forward.unchecked``."""
    if names is None:
        names = mlp_param_names(params, prefix)
    checked_params = {}
    width, width_from = x_width, "x"
    for i in range(len(names) // 2):
        wn, bn = f"{prefix}.{i}.W", f"{prefix}.{i}.b"
        W = as_float_array(params[wn], wn, ndim=2, allow_complex=True)
        if W.shape[0] != width:
            what = "columns" if width_from == "x" else "columns (outputs)"
            raise ValueError(f"{width_from} has {width} {what} but {wn} has {W.shape[0]} rows; "
                             f"{wn} must have shape ({width}, out)")
        b = as_float_array(params[bn], bn, shape=(W.shape[1],), allow_complex=True)
        checked_params[wn], checked_params[bn] = W, b
        width, width_from = W.shape[1], wn
    return checked_params


def _check_mlp_args(arguments):
    """Validator of :func:`mlp_forward`, in this order: the activation names, the parameter names,
    ``x`` (2-d, finite), the parameters (:func:`check_mlp_params`)."""
    a = dict(arguments)
    check_choice(a["activation"], "activation", tuple(ACTIVATIONS))
    if a["out_activation"] is not None:
        check_choice(a["out_activation"], "out_activation", tuple(ACTIVATIONS))
    names = mlp_param_names(a["params"], a["prefix"])
    a["x"] = as_float_array(a["x"], "x", ndim=2, allow_complex=True)
    a["params"] = check_mlp_params(a["params"], a["prefix"], a["x"].shape[1], names)
    return a


@checked(_check_mlp_args)
def mlp_forward(params, prefix, x, activation, out_activation=None):
    r"""Multi-layer perceptron: linear, activation, linear, ..., linear [, out_activation].

    Forward
    -------
    With n linear layers, :math:`h_0 = x`,

    .. math::

        \text{pre}_i = h_i W_i + b_i, \qquad
        h_{i+1} = \text{act}(\text{pre}_i) \ (i < n-1), \qquad
        y = \text{pre}_{n-1} \ \text{or} \ \text{out\_act}(\text{pre}_{n-1}).

    Backward
    --------
    See :func:`mlp_backward`.

    Shapes
    ------
    x (B, sizes[0]); ``params[f"{prefix}.{i}.W"]`` (sizes[i], sizes[i+1]), ``...b`` (sizes[i+1],);
    y (B, sizes[n]). ``params`` may hold other modules' parameters too; only the keys
    ``f"{prefix}.<i>.<W|b>"`` are read.

    The cache is a dict; ``cache["trace"]`` is the ordered list of ``(name, array)`` in data-flow
    order: ``f"{prefix}.{i}.pre"`` (the linear output) and ``f"{prefix}.{i}.out"`` (after the
    activation: every hidden layer, and the last layer when ``out_activation`` is given). The
    arrays are the ones used by the backward pass; do not modify them.

    Numerics
    --------
    Inputs and parameters are validated once by the wrapper (finite, shapes chained); the layers
    then run unchecked. ``mlp_forward.unchecked`` expects ``x`` and the parameters in that checked
    form (:func:`check_mlp_params`). Complex input is accepted (complex-step checks of the
    analytic activations).

    References
    ----------
    SPEC.md section 3.
    """
    n = 0
    while f"{prefix}.{n}.W" in params:
        n += 1
    layers, trace = [], []
    h = x
    for i in range(n):
        pre, lin_cache = linear_forward.unchecked(h, params[f"{prefix}.{i}.W"], params[f"{prefix}.{i}.b"])
        trace.append((f"{prefix}.{i}.pre", pre))
        act = activation if i < n - 1 else out_activation
        if act is None:
            h, act_cache = pre, None
        else:
            h, act_cache = ACTIVATIONS[act][0](pre)
            trace.append((f"{prefix}.{i}.out", h))
        layers.append((lin_cache, act, act_cache))
    cache = {"prefix": prefix, "activation": activation, "out_activation": out_activation,
             "layers": layers, "trace": trace, "x_shape": x.shape, "y_shape": h.shape}
    return h, cache


def _check_mlp_backward_args(arguments):
    """Validator of :func:`mlp_backward`: the cache (the dict of :func:`mlp_forward`), then dy."""
    cache = _check_mlp_cache(arguments["cache"])
    return {"dy": _check_dy(arguments["dy"], cache["y_shape"]), "cache": cache}


@checked(_check_mlp_backward_args)
def mlp_backward(dy, cache):
    r"""Backward of :func:`mlp_forward`: ``(dx, grads)``.

    Backward
    --------
    Reverse-mode chain rule through the layers, last to first, with :math:`\delta = dy`:

    - through an activation, :math:`\delta \leftarrow \delta \odot \text{act}'(\text{pre}_i)`
      (the elementwise rules of the ``<name>_backward`` functions);
    - through layer i, :math:`dW_i = h_i^\top \delta`, :math:`db_i = \sum_b \delta_b`,
      :math:`\delta \leftarrow \delta W_i^\top` (:func:`linear_backward`);

    and finally ``dx`` is the last :math:`\delta`.

    Shapes
    ------
    dy (B, out) like y; dx (B, in) like x; ``grads`` has exactly the keys of this MLP's parameters
    (``f"{prefix}.{i}.W"``, ``f"{prefix}.{i}.b"``, in layer order) with their shapes.

    Numerics
    --------
    Kinks use the left slope (relu'(0) = 0, leaky_relu'(0) = 0.01).

    References
    ----------
    SPEC.md section 3 (gradient dicts have the keys and shapes of the parameter dict). See also:
    docs/course/02-linear-and-activations.md.
    """
    d = dy
    prefix = cache["prefix"]
    grads_rev = {}
    for i in range(len(cache["layers"]) - 1, -1, -1):
        lin_cache, act, act_cache = cache["layers"][i]
        if act is not None:
            d = ACTIVATIONS[act][1](d, act_cache)
        d, dW, db = linear_backward.unchecked(d, lin_cache)
        grads_rev[i] = (dW, db)
    grads = {}
    for i in range(len(cache["layers"])):
        grads[f"{prefix}.{i}.W"], grads[f"{prefix}.{i}.b"] = grads_rev[i]
    return d, grads
