r"""Diagonal Gaussians in closed form (SPEC.md section 2), with their VJPs.

A diagonal Gaussian over ``L`` latent dimensions is parameterised by ``mu`` and ``log_var``, the
natural logarithm of the variance; the standard deviation is ``exp(0.5 * log_var)``. With
``sigma^2 = exp(log_var)``:

======================  =====================================================================
``log_prob``            ``-1/2 sum_l [ ln 2pi + log_var_l + (z_l - mu_l)^2 exp(-log_var_l) ]``
``entropy``             ``1/2 sum_l ln(2 pi e sigma_l^2)``
``cross_entropy``       ``-E_q ln p = 1/2 sum_l [ ln 2pi + log_var_p + (sigma_q^2 + (mu_q - mu_p)^2) / sigma_p^2 ]``
``kl``                  ``CE[q||p] - H[q]``
``reparameterize``      ``z = mu + exp(0.5 log_var) * eps``, ``eps ~ N(0, I)``
======================  =====================================================================

Shapes
------
Every argument has the latent dimension ``L`` as its **last** axis (the last-axis lengths must be
equal); the leading axes broadcast by numpy's rules, so a batch ``z`` of shape (B, L) can be
scored against one ``mu`` of shape (L,) or against per-example parameters of shape (B, L). The
densities return one value per row: the broadcast shape without its last axis. A VJP takes the
cotangent ``g`` of that output shape (anything broadcasting to it) and returns one gradient per
input **with that input's own shape**: axes along which an input was broadcast are summed over.

Each quantity is one function (the arithmetic, with its math docstring) wrapped by
:func:`refvae._validation.checked`: called by its name it checks its arguments (finite, equal
``L``, broadcastable; the cotangent broadcastable to the output shape) and then runs the
arithmetic; ``log_prob.unchecked`` (etc.) is the bare arithmetic, which other refvae modules call
on arrays they have already checked. The arithmetic is analytic and accepts complex input, so the
complex-step check applies to it (the checking entry points accept complex input too). A VJP
``f_vjp(g, *inputs)`` returns one gradient per input, in input order (module docstring of
:mod:`refvae.primitives`, "Conventions"); none of these VJPs needs the forward's output, so none
takes ``ans``.

Range
-----
Every finite float64 is accepted everywhere (log-variances included: ``|log_var|`` up to 1.8e308).
``exp(+-v/2)`` is never formed on its own where it would overflow or underflow while the quantity
built from it is finite: ``(z - mu) e^{-v/2}``, ``(z - mu) e^{-v}``, ``e^{v_q - v_p}/2`` and
``e^{v/2} eps`` are products ``x * exp(a)`` split into four factors ``exp(a/4)`` beyond
``|a| = 708``; a difference ``z - mu`` that overflows is formed from the halves; ``r^2/2`` as
``(r/2) r``; sums over L that overflow with finite terms are redone with scaled terms. So every
forward and gradient is within a few ulp of the exact value (mpmath-checked in
``tests/test_hostile_numerics.py``) whenever that value is representable. Where it is not:
densities and divergences are ``+-inf`` exactly when their exact value is beyond +-1.8e308 (e.g.
``log_prob`` with ``z != mu`` and ``log_var = -1e300``); a gradient entry is ``+-inf`` exactly when
its exact value is, and 0 where its cotangent is 0; :func:`reparameterize` and
:func:`reparameterize_vjp` raise a ``ValueError`` naming ``log_var`` and ``eps`` instead of
returning ``inf``.

References: SPEC.md section 2; Tomczak, *Deep Generative Modeling*, section 4.4.1 (the
decomposition (4.43) uses the entropy and the cross-entropy below).
"""

from __future__ import annotations

import math

import numpy as np

from ._validation import as_float_array, check_cotangent, checked

__all__ = ["log_prob", "log_prob_vjp", "entropy", "entropy_vjp", "cross_entropy",
           "cross_entropy_vjp", "kl", "kl_vjp", "reparameterize", "reparameterize_vjp"]

LOG_2PI = math.log(2.0 * math.pi)  #: ln(2 pi)


# --------------------------------------------------------------------------- checking / plumbing

def _check(named, *, allow_complex=True):
    """Convert ``(name, value)`` pairs; equal last axes; broadcastable. Returns (arrays, shape)."""
    arrays = []
    for name, value in named:
        arr = as_float_array(value, name, allow_complex=allow_complex)
        if np.ndim(value) == 0 or arr.ndim == 0:
            raise ValueError(f"{name} must have at least one dimension (the latent dimension L), "
                             f"got a scalar")
        arrays.append(arr)
    names = [n for n, _ in named]
    lengths = {a.shape[-1] for a in arrays}
    if len(lengths) > 1:
        desc = ", ".join(f"{n} {a.shape}" for n, a in zip(names, arrays))
        raise ValueError(f"the last axis (latent dimension L) must have the same length in "
                         f"{', '.join(names)}; got {desc}")
    try:
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
    except ValueError:
        desc = ", ".join(f"{n} {a.shape}" for n, a in zip(names, arrays))
        raise ValueError(f"the shapes of {', '.join(names)} do not broadcast: {desc}") from None
    return arrays, shape


def _unbroadcast(grad, shape):
    """Sum ``grad`` over the axes along which an input of ``shape`` was broadcast."""
    grad = np.asarray(grad)
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return np.broadcast_to(grad, shape).copy() if grad.shape != tuple(shape) else grad


def _expm1mx(a):
    """``exp(a) - 1 - a`` to a few ulp, analytic (complex-step safe), >= 0 for real ``a``.

    For ``|Re a| < 1/2`` the Taylor series ``sum_{k>=2} a^k / k!`` to k = 17 in Horner form
    (truncation < 1e-18 relative); otherwise ``expm1(a) - a`` (cancellation by a factor < 5).
    """
    small = np.abs(a.real) < 0.5
    s = np.where(small, a, 0.0)
    poly = np.zeros_like(s)
    for k in range(17, 1, -1):
        poly = (poly * s + 1.0 / math.factorial(k))
    series = s * s * poly
    big = np.where(small, 0.0, a)
    with np.errstate(over="ignore"):
        direct = np.expm1(big) - big
    return np.where(small, series, direct)


# --------------------------------------------------------------------------- extreme magnitudes
# Log-variances may be any finite float64. exp(+-v/2) on its own overflows or underflows for
# |v| > 1419 (and exp(v) for |v| > 709.8) while the quantities built from it are finite, so every
# product x * exp(a) goes through _mul_exp, every difference that can overflow through _diff, and
# every sum over L through _sum_last; each is a no-op (one exp, one product, np.sum) unless some
# entry needs it.

_EXP_DIRECT = 708.0    #: |a| <= this: exp(a) is a normal finite double, x * exp(a) as is
_EXP_SPLIT = 1455.0    #: |a| <= this: x * exp(a) = (((x h) h) h) h with h = exp(a/4) (a/4 exact)
_SUM_SCALE = 2.0 ** -64


def _mul_exp(x, a):
    """``x * exp(a)`` (broadcasting), accurate to a few ulp wherever it is representable.

    For ``|a| <= 708`` one exp and one product. Beyond, ``(((x h) h) h) h`` with ``h = exp(a/4)``
    (a/4 is exact, a power-of-two scaling; h is normal and finite for |a| <= 1455):
    for ``h > 1`` each intermediate is below the result (it overflows only if the result does),
    for ``h < 1`` above it (it underflows only if the result does). For ``|a| > 1455``: the
    product is 0 (a < -1455: below half the smallest subnormal for any finite x) or +-inf (a > 1455: above
    the float range for any nonzero x; 0 for x = 0). Analytic in x and a (complex step) for
    moderate a. (For a subnormal x and |a| > 708 the first product may lose digits.) The bounds:
    |x| e^a < 2^-1075 for a < -1454.91 and > 1.8e308 for a > 1454.22 whatever the finite x != 0.
    """
    ar = np.real(a)
    direct = np.abs(ar) <= _EXP_DIRECT
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        out = x * np.exp(np.where(direct, a, 0.0))
        if np.all(direct):
            return out
        split = ~direct & (np.abs(ar) <= _EXP_SPLIT)
        h = np.exp(np.where(split, a, 0.0) * 0.25)
        out = np.where(split, (((x * h) * h) * h) * h, out)
        huge = ar > _EXP_SPLIT
        if np.any(huge):
            out = np.where(huge, np.where(x == 0, 0.0 * x, x * np.inf), out)
        out = np.where(ar < -_EXP_SPLIT, 0.0 * x, out)
    return out


def _diff(a, b, c):
    """``(a - b) * exp(c)`` via :func:`_mul_exp`; when ``a - b`` overflows (|a|, |b| near the float
    maximum) it is formed as ``2 ((a/2 - b/2) exp(c))`` (the halves are exact there)."""
    with np.errstate(over="ignore", invalid="ignore"):
        d = a - b
    if np.iscomplexobj(d) or np.all(np.isfinite(d)):
        return _mul_exp(d, c)
    with np.errstate(over="ignore", invalid="ignore"):
        half = _mul_exp(0.5 * a - 0.5 * b, c)
        return np.where(np.isfinite(d), _mul_exp(d, c), 2.0 * half)


def _half_square(r):
    """``r^2 / 2``, finite whenever it is representable (``(r/2) r`` where ``r^2`` overflows)."""
    with np.errstate(over="ignore"):
        q = r * r
        if np.iscomplexobj(q) or np.all(np.isfinite(q)):
            return 0.5 * q
        return np.where(np.isfinite(q), 0.5 * q, (0.5 * r) * r)


def _sum_last(t):
    """Sum over the last axis; rows whose float sum overflows (or meets inf - inf) while every
    term is finite are summed again with terms scaled by 2^-64 (exact for every term that
    matters), so the result is +-inf only when the exact sum is beyond the float range or a term
    is."""
    with np.errstate(over="ignore", invalid="ignore"):
        s = np.sum(t, axis=-1)
    if np.iscomplexobj(s) or np.all(np.isfinite(s)):
        return s
    bad = ~np.isfinite(s) & np.all(np.isfinite(t), axis=-1)
    if np.any(bad):
        with np.errstate(over="ignore", under="ignore"):
            s = np.where(bad, np.sum(np.where(bad[..., None], t, 0.0) * _SUM_SCALE, axis=-1)
                         / _SUM_SCALE, s)
    return s


def _g_times(g, x):
    """``g * x`` with 0 where ``g = 0`` (a zero cotangent never meets an infinite partial)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(g == 0, 0.0 * g, g * x)


def _half_expm1(a, lo):
    """``(e^{a + lo} - 1) / 2`` (lo the rounding error of a, see :func:`_half_lv_diff`), finite up
    to a = 710.47 (where e^a alone overflows at 709.78)."""
    big = np.real(a) > _EXP_DIRECT
    safe = np.where(big, 0.0, a)
    with np.errstate(over="ignore"):
        return np.where(big, _mul_exp(0.5, a) * (1.0 + lo) - 0.5,
                        0.5 * np.expm1(safe) + lo * (0.5 * np.exp(safe)))


def _half_lv_diff(log_var_q, log_var_p):
    """``(a, lo, a/2)``: ``a = fl(v_q - v_p)`` (+-inf where it overflows), ``lo`` its rounding
    error (TwoSum: ``a + lo = v_q - v_p`` exactly; 0 where a is infinite) and ``a/2`` from the
    halves (never overflows). e^{v_q - v_p} = e^a (1 + lo) to u^2: without ``lo`` the rounding of
    a would cost |a| u relative (500 u at a = 700)."""
    with np.errstate(over="ignore", invalid="ignore"):
        a = log_var_q - log_var_p
        bb = a - log_var_q
        lo = (log_var_q - (a - bb)) + (-log_var_p - bb)
        lo = np.where(np.isfinite(np.real(a)), lo, 0.0)
        return a, lo, 0.5 * log_var_q - 0.5 * log_var_p


# --------------------------------------------------------------------------- validators

def _check_latent_args(arguments, *, g_has_latent_axis=False):
    """Validator (:func:`refvae._validation.checked`) of every function here: each argument but
    ``g`` is an array (..., L), finite, with equal ``L`` and broadcastable shapes; ``g`` (a VJP's
    cotangent) is broadcast to the output shape (the broadcast shape without ``L``, or with it
    for :func:`reparameterize_vjp`)."""
    named = [(n, v) for n, v in arguments.items() if n != "g"]
    arrays, shape = _check(named)
    out = dict(zip((n for n, _ in named), arrays))
    if "g" in arguments:
        out["g"] = check_cotangent(arguments["g"], shape if g_has_latent_axis else shape[:-1])
    return out


def _check_reparameterize_vjp_args(arguments):
    return _check_latent_args(arguments, g_has_latent_axis=True)


def _check_no_overflow(out, what, named):
    """``ValueError`` if ``out`` (computed from finite inputs) has an infinite entry: the exact
    value is beyond the float64 range. Names the inputs at the first such entry."""
    bad = ~np.isfinite(out)
    if not np.any(bad):
        return
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    vals = []
    for n, a in named:
        try:
            vals.append(f"{n}={complex(np.broadcast_to(a, out.shape)[idx]).real!r}")
        except ValueError:      # a gradient summed over broadcast axes: no single input entry
            vals.append(f"{n} of shape {np.shape(a)}")
    vals = ", ".join(vals)
    raise ValueError(f"{what} overflows float64 at index {idx} ({vals}): the exact value is beyond "
                     f"+-1.8e308; reduce the magnitude of log_var or eps")


def _check_z_in_range(z, a):
    """Result check of :func:`reparameterize`: ``ValueError`` where ``z`` overflows."""
    _check_no_overflow(z, "z = mu + exp(log_var/2) * eps",
                       (("mu", a["mu"]), ("log_var", a["log_var"]), ("eps", a["eps"])))
    return z


def _check_grads_in_range(out, a):
    """Result check of :func:`reparameterize_vjp`: ``ValueError`` where a gradient overflows."""
    for name, grad in zip(("dlog_var", "deps"), out[1:]):
        _check_no_overflow(grad, f"the gradient {name}",
                           (("g", a["g"]), ("log_var", a["log_var"]), ("eps", a["eps"])))
    return out


# --------------------------------------------------------------------------- the quantities

@checked(_check_latent_args)
def log_prob(z, mu, log_var):
    r"""Log-density of a diagonal Gaussian, all normalising constants included.

    Forward
        .. math:: \ln N(z \mid \mu, \mathrm{diag}\,e^{v}) = -\tfrac12 \sum_l \big[\ln 2\pi + v_l
                  + (z_l - \mu_l)^2 e^{-v_l}\big], \qquad v = \texttt{log\_var}.

    Backward (``g`` the cotangent of the output)
        - ``dz = -g (z - mu) e^{-v}``: the derivative of ``-(z - mu)^2 e^{-v} / 2`` in ``z``.
        - ``dmu = +g (z - mu) e^{-v}``: the same square differentiated in ``mu`` (opposite sign).
        - ``dlog_var = g/2 ((z - mu)^2 e^{-v} - 1)``: ``d/dv [-(v + r^2 e^{-v})/2] = (r^2 e^{-v} - 1)/2``.

    Shapes
        ``z``, ``mu``, ``log_var``: (..., L), broadcasting; output: the broadcast shape without
        ``L``, e.g. (B,) for ``z`` (B, L) and ``mu``, ``log_var`` (L,) or (B, L). Each gradient
        has its input's shape (summed over broadcast axes).

    Numerics
        The standardised residual ``r = (z - mu) exp(-v/2)`` is formed first (``exp(-v/2)``
        split into four factors beyond ``|v| = 1416``) and ``r^2/2`` without overflow, so every
        finite ``v`` is accepted and ``z = mu`` gives ``-(ln 2pi + v)/2`` (749.08 at v = -1500).
        The result is ``-inf`` only when the exact value is below ``-1.8e308`` (module docstring,
        "Range"); the gradients are ``+-inf`` only where their exact values overflow.

    References
        SPEC.md section 2 (``log N`` with all constants); SPEC.md section 5 (``ln q(z|x)``).
        See also: docs/course/03-gaussian.md (the derivation with numbers, and an exercise).
    """
    r = _diff(z, mu, -0.5 * log_var)                 # (z - mu) e^{-v/2}
    return _sum_last(-0.5 * (LOG_2PI + log_var) - _half_square(r))


@checked(_check_latent_args)
def log_prob_vjp(g, z, mu, log_var):
    """VJP of :func:`log_prob`; returns ``(dz, dmu, dlog_var)``, each with its input's shape.

    See :func:`log_prob` for the formulas (``dz = -g (z - mu)/sigma^2``, ``dmu = -dz``,
    ``dlog_var = g/2 ((z - mu)^2/sigma^2 - 1)``).
    """
    g = g[..., None]
    w = _g_times(g, _diff(z, mu, -log_var))         # g (z - mu) / sigma^2
    r = _diff(z, mu, -0.5 * log_var)
    dz = -w
    dmu = w
    with np.errstate(over="ignore", invalid="ignore"):
        dlog_var = _g_times(g, _half_square(r)) - 0.5 * g
    return (_unbroadcast(dz, z.shape), _unbroadcast(dmu, mu.shape),
            _unbroadcast(dlog_var, log_var.shape))


@checked(_check_latent_args)
def entropy(log_var):
    r"""Differential entropy of a diagonal Gaussian, ``H = 1/2 sum_l ln(2 pi e sigma_l^2)``.

    Forward
        .. math:: H[N(\mu, \mathrm{diag}\,e^{v})] = \tfrac12 \sum_l (\ln 2\pi + 1 + v_l).

    Backward
        - ``dlog_var = g/2``: ``H`` is linear in each ``v_l`` with slope 1/2.

    Shapes
        ``log_var``: (..., L); output (...). (The entropy does not depend on ``mu``.)

    Numerics
        A sum of the finite terms ``(ln 2pi + 1 + v_l)/2`` (halved first, so
        ``entropy([1e308, 1e308]) = 1e308``); exact up to the rounding of the sum, ``+-inf`` only
        when the exact value is beyond the float range.

    References
        SPEC.md section 2; the conditional entropy ``H[q(z|x)]`` of (4.43) is its data average.
    """
    return _sum_last(0.5 * (LOG_2PI + 1.0 + log_var))


@checked(_check_latent_args)
def entropy_vjp(g, log_var):
    """VJP of :func:`entropy`; returns ``(dlog_var,)`` with ``dlog_var = g/2`` broadcast to (..., L)."""
    return (_unbroadcast(np.broadcast_to(0.5 * g[..., None], log_var.shape), log_var.shape),)


def _half_ratio(log_var_q, log_var_p):
    """``e^{v_q - v_p} / 2`` (0 where v_q - v_p = -inf, +inf where it is +inf)."""
    a, lo, _ = _half_lv_diff(log_var_q, log_var_p)
    with np.errstate(over="ignore"):
        return _mul_exp(0.5, a) * (1.0 + lo)


@checked(_check_latent_args)
def cross_entropy(mu_q, log_var_q, mu_p, log_var_p):
    r"""Cross-entropy ``CE[q||p] = -E_q ln p`` between two diagonal Gaussians.

    Forward
        .. math:: CE = \tfrac12 \sum_l \big[\ln 2\pi + v^p_l + e^{v^q_l - v^p_l}
                  + (\mu^q_l - \mu^p_l)^2 e^{-v^p_l}\big].

        (Take ``E_q`` of ``-ln p(z)``: ``E_q (z - mu_p)^2 = sigma_q^2 + (mu_q - mu_p)^2``.)

    Backward
        - ``dmu_q = g (mu_q - mu_p) / sigma_p^2``: derivative of the squared mean difference.
        - ``dlog_var_q = g/2 sigma_q^2/sigma_p^2``: ``d/dv_q e^{v_q - v_p} = e^{v_q - v_p}``.
        - ``dmu_p = -dmu_q``: the squared difference is symmetric in the two means.
        - ``dlog_var_p = g/2 (1 - sigma_q^2/sigma_p^2 - (mu_q - mu_p)^2/sigma_p^2)``: the ``v_p`` term
          has slope 1, the two ratios have slope -1 times themselves.

    Shapes
        All four (..., L), broadcasting; output (...). Gradients have their inputs' shapes.

    Numerics
        The variance ratio is ``exp(v_q - v_p)``, never ``exp(v_q) / exp(v_p)`` (which overflows or
        gives ``inf/inf`` for large log-variances), and it enters halved, ``exp(v_q - v_p)/2``,
        finite up to ``v_q - v_p = 710.47``; the mean term is ``r^2/2`` with
        ``r = (mu_q - mu_p) exp(-v_p/2)``. Any finite log-variances; ``+inf`` only when the exact
        value is beyond the float range (module docstring, "Range").

    References
        SPEC.md section 2; (4.43) (``Omega = -CE + H``).
    """
    r = _diff(mu_q, mu_p, -0.5 * log_var_p)
    return _sum_last(0.5 * (LOG_2PI + log_var_p) + _half_ratio(log_var_q, log_var_p)
                     + _half_square(r))


@checked(_check_latent_args)
def cross_entropy_vjp(g, mu_q, log_var_q, mu_p, log_var_p):
    """VJP of :func:`cross_entropy`; returns ``(dmu_q, dlog_var_q, dmu_p, dlog_var_p)``."""
    g = g[..., None]
    r = _diff(mu_q, mu_p, -0.5 * log_var_p)
    w = _g_times(g, _diff(mu_q, mu_p, -log_var_p))  # g (mu_q - mu_p) / sigma_p^2
    dlog_var_q = _g_times(g, _half_ratio(log_var_q, log_var_p))
    with np.errstate(over="ignore", invalid="ignore"):
        dlog_var_p = (0.5 * g - dlog_var_q) - _g_times(g, _half_square(r))
    return (_unbroadcast(w, mu_q.shape), _unbroadcast(dlog_var_q, log_var_q.shape),
            _unbroadcast(-w, mu_p.shape), _unbroadcast(dlog_var_p, log_var_p.shape))


def _half_expm1mx(log_var_q, log_var_p):
    """``(e^a - 1 - a) / 2`` with a = v_q - v_p, finite wherever it is representable: beyond
    a = 708 as ``e^a / 2 - (1 + a)/2`` (no cancellation there); where a overflows to -inf,
    ``-1/2 - a/2`` from the exact halves."""
    a, lo, half_a = _half_lv_diff(log_var_q, log_var_p)
    ar = np.real(a)
    big = ar > _EXP_DIRECT
    neg_inf = ar == -np.inf
    safe = np.where(big | neg_inf, 0.0, a)
    # + lo (e^a - 1)/2: the first-order effect of the rounding of a (d/da = e^a - 1)
    out = 0.5 * _expm1mx(safe) + lo * (0.5 * np.expm1(safe))
    if np.any(big) or np.any(neg_inf):
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.where(big, _mul_exp(0.5, a) * (1.0 + lo) - (0.5 + half_a), out)
            out = np.where(neg_inf, -half_a - 0.5, out)
    return out


@checked(_check_latent_args)
def kl(mu_q, log_var_q, mu_p, log_var_p):
    r"""Kullback-Leibler divergence ``KL[q||p] = CE[q||p] - H[q]`` between diagonal Gaussians.

    Forward
        With ``a_l = v^q_l - v^p_l``,

        .. math:: KL = \tfrac12 \sum_l \big[(e^{a_l} - 1 - a_l) + (\mu^q_l - \mu^p_l)^2 e^{-v^p_l}\big],

        which is ``CE - H`` with the constants ``ln 2pi`` cancelled by hand.

    Backward
        - ``dmu_q = g (mu_q - mu_p) / sigma_p^2`` (as for CE; H does not depend on the means).
        - ``dlog_var_q = g/2 (e^{a} - 1)``: ``d/da (e^a - 1 - a) = e^a - 1``.
        - ``dmu_p = -dmu_q``.
        - ``dlog_var_p = -g/2 (e^{a} - 1 + (mu_q - mu_p)^2 / sigma_p^2)``: ``da/dv_p = -1`` and the
          mean term has slope -1 times itself.

    Shapes
        All four (..., L), broadcasting; output (...). Gradients have their inputs' shapes.

    Numerics
        ``e^a - 1 - a`` is evaluated without cancellation (a Taylor series for ``|a| < 1/2``,
        ``expm1(a) - a`` beyond), so every term is >= 0 in floating point: ``KL >= 0`` always,
        ``KL = 0`` exactly for equal arguments, and near-equal variances keep full relative
        accuracy (``CE - H`` computed as a difference would not). ``expm1`` in the gradient.
        Halved terms, finite up to ``a = 710.47`` (``e^a/2 - (1 + a)/2`` beyond ``a = 708``) and
        for ``a = v_q - v_p`` beyond the float range (``-a/2 - 1/2`` from the halves): any finite
        log-variances, ``+inf`` only when the exact value is beyond the float range.

    References
        SPEC.md section 2 (``KL = CE - H``); SPEC.md section 5 (analytic KL for the standard prior).
        See also: docs/course/03-gaussian.md.
    """
    r = _diff(mu_q, mu_p, -0.5 * log_var_p)
    return _sum_last(_half_expm1mx(log_var_q, log_var_p) + _half_square(r))


@checked(_check_latent_args)
def kl_vjp(g, mu_q, log_var_q, mu_p, log_var_p):
    """VJP of :func:`kl`; returns ``(dmu_q, dlog_var_q, dmu_p, dlog_var_p)``."""
    g = g[..., None]
    r = _diff(mu_q, mu_p, -0.5 * log_var_p)
    w = _g_times(g, _diff(mu_q, mu_p, -log_var_p))
    a, lo, _ = _half_lv_diff(log_var_q, log_var_p)
    with np.errstate(over="ignore", invalid="ignore"):
        dlog_var_q = _g_times(g, _half_expm1(a, lo))    # g (e^{v_q - v_p} - 1)/2
    with np.errstate(over="ignore", invalid="ignore"):
        dlog_var_p = -(dlog_var_q + _g_times(g, _half_square(r)))
    return (_unbroadcast(w, mu_q.shape), _unbroadcast(dlog_var_q, log_var_q.shape),
            _unbroadcast(-w, mu_p.shape), _unbroadcast(dlog_var_p, log_var_p.shape))


@checked(_check_latent_args, result=_check_z_in_range)
def reparameterize(mu, log_var, eps):
    r"""The reparameterisation ``z = mu + exp(0.5 log_var) * eps``: with ``eps ~ N(0, I)``,
    ``z ~ N(mu, diag exp(log_var))``.

    Forward
        .. math:: z = \mu + e^{v/2} \odot \varepsilon.

        The standard deviation is ``exp(v/2)``; ``mu + exp(v) * eps`` (the log-variance used as a
        log-standard-deviation) would sample from a distribution with variance ``exp(2 v)`` and
        disagree with :func:`log_prob`.

    Backward (``g`` has the shape of ``z``)
        - ``dmu = g``: ``z`` is ``mu`` plus a term independent of ``mu``.
        - ``dlog_var = g/2 exp(v/2) eps``: ``d e^{v/2}/dv = e^{v/2}/2``.
        - ``deps = g exp(v/2)``: ``z`` is linear in ``eps`` with slope ``sigma``.

    Shapes
        ``mu``, ``log_var``, ``eps``: (..., L), broadcasting; ``z``: the broadcast shape (e.g. S
        samples per example with ``eps`` of shape (S, B, L)). Gradients have their inputs' shapes.

    Numerics
        Exact up to two roundings per entry (a few for ``|log_var| > 1416``, where ``exp(v/2)``
        alone over- or underflows and ``e^{v/2} eps`` is formed in four factors: e.g.
        ``reparameterize(0, 1500, 1e-300) = 5.258e25``). Any finite inputs. If ``z`` itself is
        beyond the float range (``reparameterize(0, 1500, 1)``, ``eps = 1e300`` with
        ``log_var = 10``) a ``ValueError`` naming ``log_var`` and ``eps`` is raised, never
        ``inf`` or NaN; :func:`reparameterize_vjp` likewise for a gradient beyond the range.

    References
        SPEC.md section 3 (reparameterisation) and section 1 (``eps`` is passed in).
        See also: docs/course/03-gaussian.md.
    """
    with np.errstate(over="ignore"):
        return mu + _mul_exp(eps, 0.5 * log_var)


@checked(_check_reparameterize_vjp_args, result=_check_grads_in_range)
def reparameterize_vjp(g, mu, log_var, eps):
    """VJP of :func:`reparameterize`; returns ``(dmu, dlog_var, deps)``, each with its input's shape.

    ``ValueError`` naming ``log_var`` and ``eps`` if ``dlog_var`` or ``deps`` is beyond the float
    range (module docstring, "Range")."""
    deps = _mul_exp(g, 0.5 * log_var)                # g e^{v/2}
    with np.errstate(over="ignore"):
        dlog_var = _g_times(g, 0.5 * _mul_exp(eps, 0.5 * log_var))   # g/2 (e^{v/2} eps)
    return (_unbroadcast(g, mu.shape), _unbroadcast(dlog_var, log_var.shape),
            _unbroadcast(deps, eps.shape))


# --------------------------------------------------------------------------- public API
