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

Each public function checks its arguments at the boundary (finite, equal ``L``, broadcastable)
and then calls a private helper (``_log_prob`` ...) that does the arithmetic only. Other refvae
modules call the helpers on arrays they have already checked; the helpers are analytic and accept
complex input, so the complex-step check applies to them (the public forwards accept complex
input too).

References: SPEC.md section 2; Tomczak, *Deep Generative Modeling*, section 4.4.1 (the
decomposition (4.43) uses the entropy and the cross-entropy below).
"""

from __future__ import annotations

import math

import numpy as np

from ._validation import as_float_array

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


def _check_g(g, shape, name="g"):
    """The cotangent, broadcast to ``shape`` (the output shape)."""
    garr = as_float_array(g, name, allow_empty=True, allow_complex=True).reshape(np.shape(g))
    try:
        return np.broadcast_to(garr, shape)
    except ValueError:
        raise ValueError(f"{name} has shape {garr.shape}, which does not broadcast to the output "
                         f"shape {shape}") from None


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


# --------------------------------------------------------------------------- unchecked helpers

def _log_prob(z, mu, log_var):
    r = (z - mu) * np.exp(-0.5 * log_var)
    return -0.5 * np.sum(LOG_2PI + log_var + r * r, axis=-1)


def _log_prob_vjp(g, z, mu, log_var):
    g = g[..., None]
    inv_sd = np.exp(-0.5 * log_var)
    r = (z - mu) * inv_sd
    w = g * r * inv_sd                 # g (z - mu) / sigma^2
    dz = -w
    dmu = w
    dlog_var = 0.5 * g * (r * r - 1.0)
    return (_unbroadcast(dz, z.shape), _unbroadcast(dmu, mu.shape),
            _unbroadcast(dlog_var, log_var.shape))


def _entropy(log_var):
    return 0.5 * np.sum(LOG_2PI + 1.0 + log_var, axis=-1)


def _entropy_vjp(g, log_var):
    return (_unbroadcast(np.broadcast_to(0.5 * g[..., None], log_var.shape), log_var.shape),)


def _cross_entropy(mu_q, log_var_q, mu_p, log_var_p):
    r = (mu_q - mu_p) * np.exp(-0.5 * log_var_p)
    ratio = np.exp(log_var_q - log_var_p)
    return 0.5 * np.sum(LOG_2PI + log_var_p + ratio + r * r, axis=-1)


def _cross_entropy_vjp(g, mu_q, log_var_q, mu_p, log_var_p):
    g = g[..., None]
    inv_sd_p = np.exp(-0.5 * log_var_p)
    r = (mu_q - mu_p) * inv_sd_p
    ratio = np.exp(log_var_q - log_var_p)
    w = g * r * inv_sd_p               # g (mu_q - mu_p) / sigma_p^2
    dlog_var_q = 0.5 * g * ratio
    dlog_var_p = 0.5 * g * (1.0 - ratio - r * r)
    return (_unbroadcast(w, mu_q.shape), _unbroadcast(dlog_var_q, log_var_q.shape),
            _unbroadcast(-w, mu_p.shape), _unbroadcast(dlog_var_p, log_var_p.shape))


def _kl(mu_q, log_var_q, mu_p, log_var_p):
    r = (mu_q - mu_p) * np.exp(-0.5 * log_var_p)
    return 0.5 * np.sum(_expm1mx(log_var_q - log_var_p) + r * r, axis=-1)


def _kl_vjp(g, mu_q, log_var_q, mu_p, log_var_p):
    g = g[..., None]
    inv_sd_p = np.exp(-0.5 * log_var_p)
    r = (mu_q - mu_p) * inv_sd_p
    em1 = np.expm1(log_var_q - log_var_p)
    w = g * r * inv_sd_p
    dlog_var_q = 0.5 * g * em1
    dlog_var_p = -0.5 * g * (em1 + r * r)
    return (_unbroadcast(w, mu_q.shape), _unbroadcast(dlog_var_q, log_var_q.shape),
            _unbroadcast(-w, mu_p.shape), _unbroadcast(dlog_var_p, log_var_p.shape))


def _reparameterize(mu, log_var, eps):
    return mu + np.exp(0.5 * log_var) * eps


def _reparameterize_vjp(g, mu, log_var, eps):
    sd = np.exp(0.5 * log_var)
    return (_unbroadcast(g, mu.shape), _unbroadcast(0.5 * g * sd * eps, log_var.shape),
            _unbroadcast(g * sd, eps.shape))


# --------------------------------------------------------------------------- public API

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
        The standardised residual ``r = (z - mu) exp(-v/2)`` is formed first and squared, so that
        ``exp(-v)`` alone never overflows for ``|v| < 1418`` and ``z = mu`` gives exactly
        ``-(ln 2pi + v)/2``. The result overflows to ``-inf`` only when it is below ``-1.8e308``.

    References
        SPEC.md section 2 (``log N`` with all constants); SPEC.md section 5 (``ln q(z|x)``).
    """
    (z, mu, log_var), _ = _check((("z", z), ("mu", mu), ("log_var", log_var)))
    return _log_prob(z, mu, log_var)


def log_prob_vjp(g, z, mu, log_var):
    """VJP of :func:`log_prob`; returns ``(dz, dmu, dlog_var)``, each with its input's shape.

    See :func:`log_prob` for the formulas (``dz = -g (z - mu)/sigma^2``, ``dmu = -dz``,
    ``dlog_var = g/2 ((z - mu)^2/sigma^2 - 1)``).
    """
    (z, mu, log_var), shape = _check((("z", z), ("mu", mu), ("log_var", log_var)))
    return _log_prob_vjp(_check_g(g, shape[:-1]), z, mu, log_var)


def entropy(log_var):
    r"""Differential entropy of a diagonal Gaussian, ``H = 1/2 sum_l ln(2 pi e sigma_l^2)``.

    Forward
        .. math:: H[N(\mu, \mathrm{diag}\,e^{v})] = \tfrac12 \sum_l (\ln 2\pi + 1 + v_l).

    Backward
        - ``dlog_var = g/2``: ``H`` is linear in each ``v_l`` with slope 1/2.

    Shapes
        ``log_var``: (..., L); output (...). (The entropy does not depend on ``mu``.)

    Numerics
        A sum of finite terms; exact up to the rounding of the sum.

    References
        SPEC.md section 2; the conditional entropy ``H[q(z|x)]`` of (4.43) is its data average.
    """
    (log_var,), _ = _check((("log_var", log_var),))
    return _entropy(log_var)


def entropy_vjp(g, log_var):
    """VJP of :func:`entropy`; returns ``(dlog_var,)`` with ``dlog_var = g/2`` broadcast to (..., L)."""
    (log_var,), shape = _check((("log_var", log_var),))
    return _entropy_vjp(_check_g(g, shape[:-1]), log_var)


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
        gives ``inf/inf`` for large log-variances); the mean term is ``(r)^2`` with
        ``r = (mu_q - mu_p) exp(-v_p/2)``.

    References
        SPEC.md section 2; (4.43) (``Omega = -CE + H``).
    """
    (mu_q, log_var_q, mu_p, log_var_p), _ = _check(
        (("mu_q", mu_q), ("log_var_q", log_var_q), ("mu_p", mu_p), ("log_var_p", log_var_p)))
    return _cross_entropy(mu_q, log_var_q, mu_p, log_var_p)


def cross_entropy_vjp(g, mu_q, log_var_q, mu_p, log_var_p):
    """VJP of :func:`cross_entropy`; returns ``(dmu_q, dlog_var_q, dmu_p, dlog_var_p)``."""
    (mu_q, log_var_q, mu_p, log_var_p), shape = _check(
        (("mu_q", mu_q), ("log_var_q", log_var_q), ("mu_p", mu_p), ("log_var_p", log_var_p)))
    return _cross_entropy_vjp(_check_g(g, shape[:-1]), mu_q, log_var_q, mu_p, log_var_p)


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

    References
        SPEC.md section 2 (``KL = CE - H``); SPEC.md section 5 (analytic KL for the standard prior).
    """
    (mu_q, log_var_q, mu_p, log_var_p), _ = _check(
        (("mu_q", mu_q), ("log_var_q", log_var_q), ("mu_p", mu_p), ("log_var_p", log_var_p)))
    return _kl(mu_q, log_var_q, mu_p, log_var_p)


def kl_vjp(g, mu_q, log_var_q, mu_p, log_var_p):
    """VJP of :func:`kl`; returns ``(dmu_q, dlog_var_q, dmu_p, dlog_var_p)``."""
    (mu_q, log_var_q, mu_p, log_var_p), shape = _check(
        (("mu_q", mu_q), ("log_var_q", log_var_q), ("mu_p", mu_p), ("log_var_p", log_var_p)))
    return _kl_vjp(_check_g(g, shape[:-1]), mu_q, log_var_q, mu_p, log_var_p)


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
        Exact up to two roundings per entry.

    References
        SPEC.md section 3 (reparameterisation) and section 1 (``eps`` is passed in).
    """
    (mu, log_var, eps), _ = _check((("mu", mu), ("log_var", log_var), ("eps", eps)))
    return _reparameterize(mu, log_var, eps)


def reparameterize_vjp(g, mu, log_var, eps):
    """VJP of :func:`reparameterize`; returns ``(dmu, dlog_var, deps)``, each with its input's shape."""
    (mu, log_var, eps), shape = _check((("mu", mu), ("log_var", log_var), ("eps", eps)))
    return _reparameterize_vjp(_check_g(g, shape), mu, log_var, eps)
