"""Numerically stable scalar and row primitives, each with its vector-Jacobian product.

Every log-density in refvae is assembled from four building blocks:

========================  ==================================  =========================================
primitive                 forward                              backward (VJP), ``g`` the cotangent
========================  ==================================  =========================================
``logsumexp(x)``          ``ln sum_k exp(x_k)``                ``dx_k = g * exp(x_k - ans)``
``log_softmax(x)``        ``x_k - logsumexp(x)``               ``dx_k = g_k - softmax_k(x) * sum_j g_j``
``softplus(x)``           ``ln(1 + e^x)``                      ``dx = g * sigmoid(x)``
``log_sigmoid(x)``        ``-softplus(-x) = ln sigmoid(x)``    ``dx = g * sigmoid(-x)``
========================  ==================================  =========================================

plus ``sigmoid(x) = 1 / (1 + e^-x)`` itself (no VJP needed by refvae; its derivative is
``sigmoid(x) sigmoid(-x)``).

Numerics, shared by all of them
-------------------------------
* **No overflow, on the whole float64 line.** ``exp`` is only ever applied to a number whose real
  part is <= 0 (the row maximum is subtracted first; ``softplus`` uses ``max(x, 0) + ln(1 + e^-|x|)``).
  ``softplus(1e308) = 1e308``, ``log_sigmoid(-1e308) = -1e308``, ``softplus(-1e308) = 0``. Underflow
  of ``exp`` to 0 (or to a subnormal) is the correct answer and is not reported as a warning.
* **A few ulp of the exact value** (checked against mpmath at 50 digits). ``log1p``/``expm1`` are
  used where their argument is small: ``logsumexp(x) = m + log1p(s')`` with ``m = max_k x_k`` and
  ``s' = sum_k exp(x_k - m) - 1`` (the maximal term contributes ``expm1(0) = 0``, not ``1``, so a
  dominant term does not wash out the others). The differences ``x_k - m`` are computed exactly
  (an error-free TwoSum), so that rows with a huge spread (``[0.1, -700.1]``) keep full relative
  accuracy in ``log_softmax``.
* **Infinities.** ``-inf`` entries are legal (log-weights of switched-off components): they
  contribute ``exp(-inf) = 0``. A row that is all ``-inf`` has ``logsumexp = -inf`` (not NaN). A
  ``+inf`` entry makes ``logsumexp = +inf``; in ``log_softmax`` the ``k`` entries equal to ``+inf``
  share the mass (``-ln k``), the others are ``-inf`` (the limit of letting those entries grow
  together). ``log_softmax`` of an all ``-inf`` row is all ``-inf`` (the row carries no mass).
  NaN input is a ``ValueError`` naming the argument.
* **Gradients at infinities are 0, never NaN.** An input equal to ``+-inf`` stays ``+-inf`` under
  every finite perturbation, so its partial derivative is 0; an output that is infinite (a row
  of ``logsumexp`` equal to ``+-inf``, an entry of ``log_softmax`` equal to ``-inf``) is constant
  under finite perturbations of any input, so its cotangent does not propagate.
* **Cotangents** ``g`` must be finite (NaN or +-inf is a ``ValueError`` naming ``g``); any finite
  ``g`` up to +-1.8e308 is accepted, and a gradient is +-inf only where its exact value is beyond
  the float range.
* **Complex step.** Every forward also accepts complex128 input with a tiny imaginary part, for
  ``refvae.gradcheck.check_vjp_complex``: branch decisions and the shift ``m`` use the real part
  only, and every formula is analytic in ``x``. (Only the imaginary part of a complex result is
  meaningful; numpy's complex ``log1p`` is not accurate in the real part for tiny arguments.)

Conventions (all of refvae's hand-written derivatives)
------------------------------------------------------
* **Functions** (this module, :mod:`refvae.gaussian`, :mod:`refvae.kernels.mixture`):
  ``f(*inputs)`` and ``f_vjp(g, *inputs, ans=None) -> (d_input, ...)``,
  ``g`` the cotangent of f's output, one gradient per array input **in input order** (a 1-tuple
  for one input; non-array settings such as ``axis`` get none), each with its input's shape. This
  is the ``vjp(g, *args)`` of :func:`refvae.gradcheck.check_vjp`. ``ans``, keyword only, is f's
  output: optional, reused when given (never required, never ignored); VJPs that do not need it
  do not take it.
* **Layers** (:mod:`refvae.layers`, the MLPs of the encoder, decoder and priors):
  ``<layer>_forward(...) -> (out, cache)`` and ``<layer>_backward(dout, cache) -> gradients``; the
  cache carries what the backward needs, so nothing is recomputed.

Each quantity is one function, the arithmetic with its math docstring, wrapped by
:func:`refvae._validation.checked`: ``logsumexp(x)`` checks ``x`` (and ``axis``, ``g``, ``ans``)
and runs the arithmetic; ``logsumexp.unchecked`` is the arithmetic alone, for refvae's callers
with checked arrays (bit-identical results).

References: SPEC.md section 2 (Bernoulli and categorical decoders) and section 4 (mixtures as a
``logsumexp`` over components); HIPS/autograd ``numpy_vjps.py`` for the VJP of ``logsumexp``.
"""

from __future__ import annotations

import numpy as np

from ._validation import as_float_array, check_cotangent, checked

__all__ = ["logsumexp", "logsumexp_vjp", "log_softmax", "log_softmax_vjp", "softplus",
           "softplus_vjp", "log_sigmoid", "log_sigmoid_vjp", "sigmoid"]


# --------------------------------------------------------------------------- input checking

def _check_input(x, name, *, allow_complex=True):
    """float64 (or complex128) array; +-inf allowed, NaN rejected with the argument's name."""
    # (np.ascontiguousarray inside as_float_array makes 0-d input 1-d; keep the caller's shape)
    arr = as_float_array(x, name, finite=False, allow_complex=allow_complex).reshape(np.shape(x))
    bad = np.isnan(arr)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} must not contain NaN; found {arr[idx]!r} at index {idx}")
    return arr


def _check_axis(axis, ndim, name="axis", array_name="x"):
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of range for {array_name} with {ndim} dimension(s)")
    return int(axis) % ndim


def _check_args(arguments, *, reduces=False):
    """Validator (:func:`refvae._validation.checked`) of every function here, in this order: ``x``
    (float64 or complex128, +-inf allowed, NaN a ``ValueError``), ``axis`` (an in-range integer,
    normalised to >= 0), the cotangent ``g`` broadcast to the output shape (``x.shape``, without
    ``axis`` when the function ``reduces`` along it; finite: in ``log_softmax_vjp`` two infinite
    entries would meet as inf - inf) and ``ans`` (no NaN, the output shape)."""
    out = dict(arguments)
    out["x"] = x = _check_input(arguments["x"], "x")
    out_shape = x.shape
    if "axis" in arguments:
        out["axis"] = axis = _check_axis(arguments["axis"], x.ndim)
        if reduces:
            out_shape = x.shape[:axis] + x.shape[axis + 1:]
    if "g" in arguments:
        out["g"] = check_cotangent(arguments["g"], out_shape)
    if arguments.get("ans") is not None:
        out["ans"] = ans = _check_input(arguments["ans"], "ans")
        if ans.shape != out_shape:
            want = f"the output shape {out_shape}" if reduces else f"the shape of x {x.shape}"
            raise ValueError(f"ans must have {want}, got {ans.shape}")
    return out


def _check_reducing_args(arguments):
    return _check_args(arguments, reduces=True)


# --------------------------------------------------------------------------- row kernels

def _shifted(x, axis):
    """The pieces of a stable logsumexp along ``axis``.

    Returns ``(m, d, c, s1)``: ``m`` the real row maximum (keepdims), ``d + c = x - m`` exactly
    (``d = fl(x - m)``, ``c`` the TwoSum rounding error, 0 where ``d`` is infinite), and
    ``s1 = sum_k exp(x_k - m) - 1`` (keepdims), accumulated as ``expm1`` for the first maximal
    entry so that ``1 + s1`` is never formed. Rows whose maximum is infinite get ``m = +-inf`` and
    meaningless ``d, c, s1`` (callers overwrite them).
    """
    xr = x.real
    m = np.max(xr, axis=axis, keepdims=True)
    finite_m = np.isfinite(m)
    m0 = np.where(finite_m, m, 0.0)
    x = np.where(finite_m, x, 0.0)   # rows with an infinite maximum: placeholders, never exp'd large
    with np.errstate(over="ignore", invalid="ignore"):
        # TwoSum(x, -m0): d + c == x - m0 exactly (Knuth); x - m0 may overflow to -inf (then c = 0).
        d = x - m0
        bb = d - x
        c = (x - (d - bb)) + (-m0 - bb)
    c = np.where(np.isfinite(d.real), c, 0.0)
    # the first entry attaining the maximum contributes expm1(d + c) = expm1(imag part) instead of 1
    first = np.expand_dims(np.argmax(xr, axis=axis), axis)
    is_first = np.zeros(x.shape, dtype=bool)
    np.put_along_axis(is_first, first, True, axis=axis)
    with np.errstate(under="ignore"):
        e = np.exp(d) * (1.0 + c)
        e = np.where(is_first, np.expm1(d + c), e)
    s1 = np.sum(e, axis=axis, keepdims=True)
    return m, d, c, s1


def _softmax_weights(x, axis, ans=None):
    """Softmax weights ``exp(x - logsumexp(x))`` along ``axis`` (same shape as ``x``).

    Without ``ans``: ``exp(d + c) / (1 + s1)`` from :func:`_shifted` (a few ulp). With ``ans``
    (the forward result, keepdims): ``exp(x - ans)`` renormalised to sum 1, which removes the
    rounding of ``ans`` itself (common to the row; it matters when ``|ans|`` is huge, e.g. 1e308).
    Zero where ``x = -inf`` (the input cannot move) and on rows whose maximum or ``ans`` is
    infinite (the output cannot move); see the module docstring.
    """
    if ans is None:
        m, d, c, s1 = _shifted(x, axis)
        row_ok = np.isfinite(m)
        with np.errstate(under="ignore"):
            w = np.exp(d) * (1.0 + c) / (1.0 + s1)
    else:
        row_ok = np.isfinite(ans.real) & np.isfinite(np.max(x.real, axis=axis, keepdims=True))
        a0 = np.where(row_ok, ans, 0.0)
        with np.errstate(under="ignore", over="ignore", invalid="ignore"):
            w = np.exp(np.where(row_ok, x - a0, -np.inf))
            w = w / np.sum(w, axis=axis, keepdims=True)
    ok = row_ok & np.isfinite(x.real)
    return np.where(ok, w, 0.0)


# --------------------------------------------------------------------------- logsumexp

@checked(_check_reducing_args)
def logsumexp(x, axis=-1):
    r"""Log of a sum of exponentials along one axis, ``ln sum_k exp(x_k)``, without overflow.

    Forward
        .. math:: \mathrm{lse}(x) = m + \operatorname{log1p}\Big(\sum_k e^{x_k - m} - 1\Big),
                  \qquad m = \max_k x_k .

    Backward
        ``dx_k = g * exp(x_k - ans)`` (``= g * softmax_k(x)``): differentiate
        ``ln sum_j e^{x_j}`` to get ``e^{x_k} / sum_j e^{x_j}``.

    Shapes
        ``x``: any shape with at least one dimension, ``axis`` is reduced; output ``x.shape``
        without ``axis``.

    Numerics
        Exact shift by the row maximum, ``expm1`` for the maximal term, ``log1p`` for the sum:
        a few ulp of the exact value whenever the result is not the difference of two nearly
        equal numbers (e.g. ``m ~ -ln 2`` with two equal entries, where the error is a few ulp
        of ``|m|``). ``-inf`` entries are legal; a row of only ``-inf`` gives ``-inf``; any
        ``+inf`` entry gives ``+inf``. NaN is a ``ValueError``.

    References
        SPEC.md section 4 (mixture log-densities); HIPS/autograd (VJP reusing the forward result).
    """
    m, _, _, s1 = _shifted(x, axis)
    out = np.where(np.isfinite(m), np.where(np.isfinite(m), m, 0.0) + np.log1p(s1), m)
    return np.squeeze(out, axis=axis)


@checked(_check_reducing_args)
def logsumexp_vjp(g, x, axis=-1, *, ans=None):
    r"""VJP of :func:`logsumexp`: ``(dx,)`` with ``dx = g[..., None] * exp(x - ans)``.

    Forward
        ``ans = logsumexp(x, axis)`` (recomputed unless passed in).

    Backward
        ``dx_k = g * exp(x_k - ans)``: the derivative of ``ln sum_j e^{x_j}`` with respect to
        ``x_k`` is the softmax weight ``e^{x_k - lse}``.

    Shapes
        ``g``: the output shape (``x.shape`` without ``axis``), or anything broadcasting to it;
        ``dx``: ``x.shape``.

    Numerics
        ``exp(x - ans) <= 1`` never overflows. Without ``ans`` the weights are formed from the
        exact shift ``x - max(x)``; with ``ans`` they are renormalised to sum 1, so that the
        rounding of ``ans`` (an ulp of 1e308 is larger than every weight) does not leak in.
        Entries equal to ``-inf`` get exactly 0; a row whose ``logsumexp`` is ``-inf`` (all
        ``-inf``) or ``+inf`` gets 0 everywhere (the output does not move under finite
        perturbations), never NaN.

    References
        HIPS/autograd ``numpy_vjps.py`` (``grad_logsumexp``).
    """
    if ans is not None:
        ans = np.expand_dims(ans, axis)
    return (np.expand_dims(g, axis) * _softmax_weights(x, axis, ans),)


# --------------------------------------------------------------------------- log_softmax

@checked(_check_args)
def log_softmax(x, axis=-1):
    r"""Logarithm of the softmax along one axis, ``x_k - logsumexp(x)``.

    Forward
        .. math:: \log\mathrm{softmax}_k(x) = (x_k - m)
                  - \operatorname{log1p}\Big(\sum_j e^{x_j - m} - 1\Big).

    Backward
        ``dx_j = g_j - softmax_j(x) * sum_k g_k``: ``d(x_k - lse)/dx_j = [j = k] - softmax_j``.

    Shapes
        ``x``: any shape with at least one dimension; output ``x.shape``.

    Numerics
        ``x_k - m`` is formed exactly (never ``x_k - lse``, which would lose the low digits of a
        large ``x_k``); both terms are <= 0, so there is no cancellation and the result is within a
        few ulp. ``-inf`` in gives ``-inf`` out. Rows with ``+inf`` entries: ``-ln k`` on the ``k``
        infinite entries, ``-inf`` elsewhere. An all ``-inf`` row gives all ``-inf``.

    References
        SPEC.md section 2 (categorical decoder: ``log p(x|z) = sum_d log_softmax(logits_d)[x_d]``).
    """
    m, d, c, s1 = _shifted(x, axis)
    finite_m = np.isfinite(m)
    with np.errstate(invalid="ignore"):
        out = (d - np.log1p(s1)) + c
    # rows containing +inf: the k entries equal to +inf get -ln k, the others -inf
    pos = x.real == np.inf
    k = np.sum(pos, axis=axis, keepdims=True)
    inf_row = np.where(pos, -np.log(np.maximum(k, 1)), -np.inf)
    out = np.where(finite_m, out, np.where(m == np.inf, inf_row, -np.inf))
    return np.where(np.isfinite(x.real) | ~finite_m, out, -np.inf)


def _sum_hi_lo(g, axis):
    """``(hi, lo)`` with ``hi + lo = sum(g, axis)`` (keepdims) to about ``u^2 sum|g|``.

    Cascaded TwoSum along ``axis`` (Ogita, Rump and Oishi's Sum2): ``hi`` is the recursive sum,
    ``lo`` the sum of its rounding errors, each found exactly by TwoSum.
    """
    g = np.moveaxis(g, axis, -1)
    hi = np.zeros(g.shape[:-1], dtype=g.dtype)
    lo = np.zeros(g.shape[:-1], dtype=g.dtype)
    for k in range(g.shape[-1]):
        b = g[..., k]
        t = hi + b
        bb = t - hi
        lo = lo + ((hi - (t - bb)) + (b - bb))
        hi = t
    return np.expand_dims(hi, axis), np.expand_dims(lo, axis)


@checked(_check_args)
def log_softmax_vjp(g, x, axis=-1, *, ans=None):
    r"""VJP of :func:`log_softmax`: ``(dx,)`` with ``dx = g - softmax(x) * sum(g)``.

    Forward
        ``ans = log_softmax(x, axis)``, optional. When given it supplies ``1 - p = -expm1(ans)``
        directly (the forward's ``(d - log1p(s1)) + c``, so the result has the same bits as
        without it); the weights ``p`` themselves still come from the exact shift of ``x``:
        ``exp(ans)`` would carry ``|ans_j| u`` relative error (700 u at ``ans_j = -700``).
        Only its shape and NaN are checked: an ``ans`` that is not the forward's output gives
        wrong gradients.

    Backward
        ``dx_j = g_j - softmax_j(x) * sum_k g_k``, from ``d(x_k - lse)/dx_j = [j = k] - softmax_j``.

    Shapes
        ``g``: ``x.shape`` (or broadcasting to it); ``dx``: ``x.shape``.

    Numerics
        Evaluated as ``dx_j = g_j (1 - p_j) - p_j sum_{k != j} g_k`` with ``p = exp(ans)``:

        * ``p_j = exp(d_j)(1 + c_j) / (1 + s1)`` from the exact shift ``d + c = x - max x`` (as in
          :func:`log_softmax`), a few ulp whatever ``|ans_j|``;
        * ``1 - p_j = -expm1(log p_j)``, accurate to a few ulp even for a confident row
          (``p_j = 1 - 1e-18``, where ``1 - p_j`` in float64 would be 0 and the textbook form
          ``g_j - p_j sum g`` loses every digit);
        * ``sum_{k != j} g_k = (G_hi - g_j) + G_lo`` from a compensated sum of g
          (:func:`_sum_hi_lo`), so a cotangent concentrated on one entry does not cancel; if the
          sum of g overflows or exceeds 2^1000 (entries near 1.8e308) it is redone with g scaled
          by 2^-64, so
          ``dx`` is +-inf only where its exact value is beyond the float range.

        Each of the two products is then accurate to a few ulp and the error of ``dx_j`` is a few
        ulp of ``|g_j| (1 - p_j) + p_j |sum_{k != j} g_k|``, the natural scale of the result.
        Entries with ``x_j = -inf`` give ``-inf`` outputs that no finite perturbation moves: their
        ``dx_j`` is exactly 0 and their ``g_j`` is left out of ``sum_k g_k``. Rows with a ``+inf``
        entry or with only ``-inf`` entries have a constant output, hence ``dx = 0`` there.

    References
        SPEC.md section 2 (categorical decoder); Ogita, Rump & Oishi, "Accurate sum and dot
        product", SIAM J. Sci. Comput. 26 (2005) (Sum2).
    """
    # p and 1 - p from the exact shift d + c = x - max (not from exp(ans), which would carry
    # |ans_j| u relative error): p_j = exp(d_j)(1 + c_j) / (1 + s1), log p_j = (d_j - log1p(s1)) + c_j
    m, d, c, s1 = _shifted(x, axis)
    # outputs that move with x: finite input in a row with a finite maximum (rows with +inf have
    # no finite outputs at finite inputs, rows of only -inf have no finite inputs)
    live = np.isfinite(m) & np.isfinite(x.real) & np.isfinite(d.real)
    with np.errstate(under="ignore", invalid="ignore", over="ignore"):
        dl = np.where(live, d, 0.0)
        p = np.where(live, np.exp(dl) * (1.0 + c) / (1.0 + s1), 0.0)
        lsm = (dl - np.log1p(s1)) + c if ans is None else ans    # log p_j (the forward's output)
        q = np.where(live, -np.expm1(lsm), 0.0)   # 1 - p_j, accurate near p_j = 1
    gl = np.where(live, g, 0.0)
    with np.errstate(over="ignore", invalid="ignore"):   # an overflowing sum is redone below
        hi, lo = _sum_hi_lo(gl, axis)
    if np.iscomplexobj(hi) or np.all(np.abs(hi) < 2.0 ** 1000):
        rest = (hi - gl) + lo                           # sum_{k != j} g_k
        return (gl * q - p * rest,)
    # the sum of g overflows or comes near it (entries near 1.8e308; (hi - g_j) + lo can overflow
    # although hi did not): redo it with g scaled by 2^-64 (exact for every entry that matters),
    # and scale p * rest back (inf only if the exact product is)
    # p_j * sum_{k != j} g_k is formed as t - q_j t + p_j lo (t = hi - g_j): near the overflow
    # threshold p_j = 1 - q_j with q_j < u/2 rounds to 1, and p_j rest to the threshold itself
    scale = 2.0 ** -64
    gs = gl * scale
    hi, lo = _sum_hi_lo(gs, axis)
    t = hi - gs
    pr = np.where(p > 0.5, t + (p * lo - q * t), p * t + p * lo)   # small corrections summed first
    with np.errstate(over="ignore"):
        return (gl * q - pr / scale,)


# --------------------------------------------------------------------------- softplus family

def _split(x):
    """``(pos, t, xp)``: ``pos = Re x > 0``, ``t = exp(-|x|)`` (analytic form), ``xp = max(x, 0)``."""
    pos = x.real > 0
    with np.errstate(under="ignore"):
        t = np.exp(np.where(pos, -x, x))
    return pos, t, np.where(pos, x, 0.0)


@checked(_check_args)
def softplus(x):
    r"""Softplus, ``ln(1 + e^x)``, stable on the whole float64 line.

    Forward
        .. math:: \mathrm{softplus}(x) = \max(x, 0) + \operatorname{log1p}(e^{-|x|}).

    Backward
        ``dx = g * sigmoid(x)``: ``d ln(1 + e^x)/dx = e^x / (1 + e^x)``.

    Shapes
        Elementwise; output ``x.shape``.

    Numerics
        ``e^{-|x|} <= 1``: no overflow. ``softplus(1e308) = 1e308``, ``softplus(-745) = 5e-324``
        (correctly rounded), ``softplus(-1e308) = 0``, ``softplus(+-inf) = inf, 0``. For x > 0 both
        terms are positive, for x <= 0 ``log1p`` of a correctly rounded ``exp``: a few ulp.

    References
        SPEC.md section 3 (activations) and section 2 (Bernoulli decoder).
    """
    _, t, xp = _split(x)
    return xp + np.log1p(t)


@checked(_check_args)
def softplus_vjp(g, x):
    """VJP of :func:`softplus`: ``(dx,)`` with ``dx = g * sigmoid(x)`` (``g`` broadcasts to ``x``)."""
    return (g * sigmoid.unchecked(x),)


@checked(_check_args)
def log_sigmoid(x):
    r"""Log of the logistic sigmoid, ``ln sigmoid(x) = -softplus(-x)``, without forming sigmoid.

    Forward
        .. math:: \ln\sigma(x) = \min(x, 0) - \operatorname{log1p}(e^{-|x|}).

    Backward
        ``dx = g * sigmoid(-x)``: ``d/dx [-ln(1 + e^{-x})] = e^{-x} / (1 + e^{-x})``.

    Shapes
        Elementwise; output ``x.shape``.

    Numerics
        As :func:`softplus`: ``log_sigmoid(-1e308) = -1e308``, ``log_sigmoid(745) = -5e-324``,
        ``log_sigmoid(-inf) = -inf``, ``log_sigmoid(inf) = 0``. No clamping of probabilities.

    References
        SPEC.md section 2 (Bernoulli decoder: ``x log sigma(a) + (1 - x) log sigma(-a)``).
    """
    return -softplus.unchecked(-x)


@checked(_check_args)
def log_sigmoid_vjp(g, x):
    """VJP of :func:`log_sigmoid`: ``(dx,)`` with ``dx = g * sigmoid(-x)`` (``g`` broadcasts to ``x``)."""
    return (g * sigmoid.unchecked(-x),)


@checked(_check_args)
def sigmoid(x):
    r"""Logistic sigmoid ``1 / (1 + e^-x)``, without overflow warnings.

    Forward
        ``sigmoid(x) = 1 / (1 + e^{-x})`` for x > 0 and ``e^x / (1 + e^x)`` otherwise (the same
        function; each branch exponentiates a non-positive number).

    Backward
        ``d sigmoid/dx = sigmoid(x) sigmoid(-x)`` (not needed by refvae's VJPs, which use the
        log-domain primitives above).

    Shapes
        Elementwise; output ``x.shape``.

    Numerics
        Relative error of a few ulp; ``sigmoid(-745) = 5e-324``, ``sigmoid(-1e308) = 0``,
        ``sigmoid(1e308) = 1``.

    References
        SPEC.md section 3 (activations).
    """
    pos, t, _ = _split(x)
    return np.where(pos, 1.0, t) / (1.0 + t)
