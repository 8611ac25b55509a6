r"""Fused Numba row kernels for the categorical likelihood (private).

What it is
----------
The categorical decoder's log-likelihood (SPEC section 2) is a log-softmax over each row of C
logits, read at the observed category and summed over the D rows of an example. In NumPy this
takes a dozen passes over the (B, D, C) logits (maximum, TwoSum shift, exp, expm1, sum, log1p,
gathers, and the same again for the VJP). The two kernels here do it in one sweep per row:

- :func:`categorical_forward` ``(xi, a) -> (ok, log_prob, p)``: the per-example log-likelihood and
  the softmax weights ``p`` that the VJP needs (no second exp pass, no log-softmax array);
- :func:`categorical_vjp` ``(g, xi, p) -> dlogits``: ``g_b ([c = x_bd] - p_bdc)``.

Both are used by the VAE's fast path *and* by the public
:func:`refvae.likelihoods.categorical_log_prob` / :func:`~refvae.likelihoods.categorical_log_prob_vjp`
for real logits, so the two paths give the same bits. Complex logits (complex-step checks) and
non-finite logits (``+-inf`` handling) stay on the NumPy path,
:func:`refvae.primitives.log_softmax` (``.unchecked``).

Forward
-------
For one row :math:`a = a_{bd\cdot}` with observed category :math:`k = x_{bd}`, the algorithm of
:func:`refvae.primitives._shifted` / :func:`~refvae.primitives.log_softmax` (``.unchecked``):

.. math::

    m = \max_c a_c, \qquad \delta_c + \gamma_c = a_c - m \ \text{exactly (TwoSum)}, \\
    s' = \sum_{c \ne c^*} e^{\delta_c}(1 + \gamma_c) + \operatorname{expm1}(\delta_{c^*} + \gamma_{c^*})
       \;=\; \sum_c e^{a_c - m} - 1, \\
    \log\operatorname{softmax}(a)_k = (\delta_k - \operatorname{log1p}(s')) + \gamma_k, \qquad
    p_c = \operatorname{softmax}(a)_c = \frac{e^{\delta_c}(1 + \gamma_c)}{1 + s'},

with :math:`c^*` the first index attaining the maximum: for real logits
:math:`\delta_{c^*} = \gamma_{c^*} = 0` exactly, so its term ``expm1(0)`` is exactly 0 and is left
out of the sum (``1 + s'`` is never formed inside it; a dominant term does not wash out the
others), and ``p_{c^*} = 1 / (1 + s')``;
``log_prob[b] = sum_d log_softmax(a_bd)[x_bd]``, summed over d in order.

Backward
--------
With the cotangent :math:`g_b` on example b,

.. math::

    \frac{\partial L}{\partial a_{bdc}} = g_b\big([c = k] - p_{bdc}\big), \qquad
    \frac{\partial L}{\partial a_{bdk}} = g_b \sum_{c \ne k} p_{bdc},

the observed entry as a sum of positive terms (``1 - p_k`` by subtraction loses every digit of a
confident prediction: logits [0, -19, -19] give 1 - p_k = 1.1e-8, of which float64 keeps 8 digits).
Entries off the observed value are ``(-g_b) p_bdc`` (negation is exact).

Shapes
------
xi (B, D) intp category indices in 0..C-1 (checked by the caller: the kernels do not bounds-check);
a, p, dlogits (B, D, C) C-contiguous float64; g, log_prob (B,).

Numerics
--------
- *Exact shift.* ``delta + gamma = a_c - m`` exactly (Knuth's TwoSum), so rows with a huge spread
  (``[0.1, -700.1]``, ``[1e300, -1e300]``) keep full relative accuracy in the log-softmax; when
  ``a_c - m`` overflows to ``-inf`` (spread > 1.8e308) ``gamma`` is 0 and the entry is ``-inf``
  with ``p = 0``, as in NumPy.
- *exp/log1p.* ``math.exp`` / ``math.log1p`` are the C library's (glibc: < 1 ulp), where NumPy
  uses its SIMD ``exp``; the sums run in a fixed sequential order (NumPy: pairwise). The error
  is <= (C + 4) u per log-softmax or softmax entry (no cancellation); the results differ from
  the NumPy path by a few ulp and are within a few ulp of mpmath (tolerance
  ``categorical_kernel``, with the measured values). Each logit is exponentiated once.
- *No warnings, no NaN from finite input.* ``exp`` of a non-positive argument never overflows;
  underflow to 0 (or a subnormal) is the correct value. Every logit must be finite: at the first
  non-finite one the forward returns ``ok = False`` and the caller takes the NumPy path.
- ``fastmath`` is off (reassociation would break TwoSum); ``error_model="numpy"`` (IEEE division,
  no zero-divisor branch; the divisor ``1 + s'`` is >= 1 anyway); ``cache=True``. Serial loops:
  results do not depend on the thread count.

References
----------
SPEC.md section 2 (categorical decoder); Knuth, TAOCP vol. 2, section 4.2.2 (TwoSum);
:mod:`refvae.primitives` (the same algorithm on NumPy arrays).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..primitives import _softmax_weights, log_softmax

__all__ = ["categorical_forward", "categorical_vjp", "categorical_forward_numpy",
           "categorical_vjp_numpy"]

_DBL_MAX = 1.7976931348623157e308


@njit(cache=True, error_model="numpy")
def categorical_forward(xi, a):
    """``(ok, log_prob, p)`` for integer targets ``xi`` (B, D) and logits ``a`` (B, D, C).

    See the module docstring for the formulas. ``ok`` is False (and ``log_prob``, ``p`` are
    incomplete) if some logit is NaN or +-inf; the caller must then use the NumPy path.

    Per row: (1) the maximum m and the first index c* attaining it; (2) the exact shift
    ``delta_c + gamma_c = a_c - m`` and ``e_c = exp(delta_c) (1 + gamma_c)``, stored in ``p``;
    (3) ``s' = sum_{c != c*} e_c``, in order: the first maximal entry has ``delta = gamma = 0``
    exactly (``m - m``), so its ``expm1(delta + gamma)`` term is exactly 0 and is left out;
    (4) ``p_c = e_c / (1 + s')``; (5) ``log_softmax_k = (delta_k - log1p(s')) + gamma_k`` at the
    observed ``k``, added to the example's sum.
    """
    B, D, C = a.shape
    lp = np.empty(B)
    p = np.empty((B, D, C))
    for b in range(B):
        acc = 0.0
        for d in range(D):
            row = a[b, d]
            prow = p[b, d]
            k = xi[b, d]
            # (1) the real maximum and the first index attaining it; any non-finite logit: give up
            m = row[0]
            first = 0
            bad = not abs(m) <= _DBL_MAX
            for c in range(1, C):
                v = row[c]
                bad |= not abs(v) <= _DBL_MAX
                if v > m:
                    m = v
                    first = c
            if bad:
                return False, lp, p
            # (2) TwoSum(a_c, -m): dl + gm == a_c - m exactly; e_c = exp(dl) (1 + gm)
            dl_k = 0.0
            gm_k = 0.0
            for c in range(C):
                x = row[c]
                dl = x - m
                bb = dl - x
                gm = (x - (dl - bb)) + (-m - bb)
                if not abs(dl) <= _DBL_MAX:     # a_c - m overflowed to -inf: e_c = 0, no error term
                    gm = 0.0
                prow[c] = math.exp(dl) * (1.0 + gm)
                if c == k:
                    dl_k = dl
                    gm_k = gm
            # (3) s' = sum_c exp(a_c - m) - 1: the maximal term contributes expm1(0) = 0
            s1 = 0.0
            for c in range(first):
                s1 += prow[c]
            for c in range(first + 1, C):
                s1 += prow[c]
            # (4) softmax weights
            den = 1.0 + s1
            for c in range(C):
                prow[c] = prow[c] / den
            # (5) log_softmax at the observed category
            acc += (dl_k - math.log1p(s1)) + gm_k
        lp[b] = acc
    return True, lp, p


@njit(cache=True, error_model="numpy")
def categorical_vjp(g, xi, p):
    """dlogits (B, D, C) = ``g_b ([c = x_bd] - p_bdc)``, the observed entry as ``g_b sum_{c != k} p_c``.

    ``g`` (B,), ``xi`` (B, D) intp, ``p`` (B, D, C) the softmax weights from
    :func:`categorical_forward`. See the module docstring.
    """
    B, D, C = p.shape
    out = np.empty((B, D, C))
    for b in range(B):
        gb = g[b]
        ng = -gb
        for d in range(D):
            k = xi[b, d]
            s = 0.0
            for c in range(C):
                pc = p[b, d, c]
                out[b, d, c] = ng * pc
                if c != k:
                    s += pc
            out[b, d, k] = gb * s
    return out


# --------------------------------------------------------------------------- NumPy twins

def categorical_forward_numpy(xi, a):
    """Plain NumPy twin of :func:`categorical_forward` (finite real logits): ``(log_prob, p)``.

    ``log_prob[b] = sum_d log_softmax(a[b, d])[xi[b, d]]`` and ``p = softmax(a)`` along the last
    axis, from :func:`refvae.primitives.log_softmax` (``.unchecked``) and
    :func:`~refvae.primitives._softmax_weights`
    (the same algorithm with NumPy's exp and pairwise sums: a few ulp from the kernel).
    """
    lsm = log_softmax.unchecked(a, axis=-1)
    lp = np.take_along_axis(lsm, xi[:, :, None], axis=-1)[:, :, 0].sum(axis=1)
    return lp, _softmax_weights(a, -1)


def categorical_vjp_numpy(g, xi, p):
    """Plain NumPy twin of :func:`categorical_vjp`: ``g_b ([c = x_bd] - p_bdc)``, the observed
    entry as ``g_b sum_{c != k} p_c`` (the same products; NumPy's pairwise sum for the last)."""
    off = p.copy()
    np.put_along_axis(off, xi[:, :, None], 0.0, axis=-1)
    out = -g[:, None, None] * off
    np.put_along_axis(out, xi[:, :, None], g[:, None, None] * off.sum(axis=-1, keepdims=True), axis=-1)
    return out
