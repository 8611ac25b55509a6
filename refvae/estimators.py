r"""Estimators for section 4.4.1: the Omega decomposition, the aggregated posterior's entropy, ELBO
surgery, holes, and the importance-sampled log-likelihood (SPEC sections 5 and 6).

Every function takes a model (a :class:`refvae.vae.VAE`, whose ``prior`` and ``params`` are used),
a data set ``x`` (N, D), an explicit ``numpy.random.Generator`` and sample counts, and returns
:class:`Estimate` objects (value, standard error, number of draws).

Which standard error
--------------------
The estimands are averages over the *given* data set (E_x is the empirical average), so the only
randomness is the Monte Carlo noise. With ``n_samples = S >= 2`` draws per data point the standard
error is the stratified one, ``se^2 = sum_n var_s(v_ns) / S / N^2`` (within-point variances only).
With S = 1 the within-point variance cannot be separated from the variation between data points,
and ``se = std_n(v_n) / sqrt(N)`` is reported: conservative (too large), never too small.

Quantities (SPEC section 5)
---------------------------
- ``RE = E_x E_q ln p(x|z)``, ``Omega = E_x E_q [ln p(z) - ln q(z|x)]``, ``ELBO = RE + Omega``
  (eqs. 4.33-4.35), all from the same draws, so ELBO = RE + Omega to rounding.
- ``H[q(z|x)] = E_x 1/2 sum_l ln(2 pi e sigma_l^2(x))`` in closed form; ``CE[q(z)||p] =
  -E_{q(z)} ln p(z)`` by Monte Carlo (closed form for the standard prior); eq. (4.43):
  ``Omega = -CE + H[q(z|x)]``.
- ``H[q(z)] = -E_{q(z)} ln q(z)`` with q(z) evaluated exactly over all N components by the
  streaming kernel; ``KL[q(z)||p] = E_{q(z)} [ln q(z) - ln p(z)]``; ``I_q(x; z) = H[q(z)] -
  H[q(z|x)]``; ``E_x KL[q(z|x)||p] = I + KL[q(z)||p]`` (ELBO surgery).
- Holes: ``KL[p||q(z)] = E_p [ln p(z) - ln q(z)]`` and the hole mass
  ``P_{z~p}[q(z)/p(z) < tau]``.
- ``ln p(x)`` by importance sampling with S proposals from q(z|x):
  ``logsumexp_s [ln p(x|z_s) + ln p(z_s) - ln q(z_s|x)] - ln S``, with its delta-method standard
  error and effective sample size. A negative ELBO is never called an NLL.

The ln q(z) evaluator
--------------------
:func:`aggregated_posterior_stats` and :func:`hole_metrics` take ``log_qz``: a callable
``log_qz(z) -> (B,)`` mapping queries z (B, L) to ln q(z), or an object with such a ``log_prob``
method (an :class:`~refvae.priors.mixtures.AggregatedPosterior`). By default q(z) is evaluated
exactly by the streaming kernel on this machine; :mod:`refvae.tools.distributed` passes an evaluator
that shards the components over a Dask cluster and reuses the estimates here unchanged
(:func:`_aggregated_estimates`, :func:`_prior_hole_estimates`), so the two paths differ only in how
ln q(z) is evaluated.

Closed forms come from the prior: ``prior.cross_entropy_closed_form(params, mu, log_var)`` (None:
Monte Carlo) for CE, and ``prior.kl_closed_form`` when the prior has it (the standard prior:
:func:`refvae.gaussian.kl`), else ``CE - H`` from the closed-form CE, for ``E_x KL[q(z|x)||p]``.

Draws from q(z) are stratified: ``S`` draws from each q(z|x_n), which is an exact sample of
q(z) = 1/N sum_n q(z|x_n) with the mixture index fixed rather than random (lower variance, same
expectation).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from . import gaussian
from ._validation import as_float_array, check_positive_int, check_rng
from .kernels.mixture import LOG_VAR_LIMIT
from .priors.mixtures import AggregatedPosterior

__all__ = ["Estimate", "elbo_terms", "conditional_entropy", "cross_entropy", "omega_decomposition",
           "aggregated_posterior_stats", "hole_metrics", "log_likelihood", "density_grid",
           "encode_all"]


@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo (or exact, ``se = 0``) estimate with its standard error."""

    value: float
    se: float
    n: int

    def as_dict(self):
        return asdict(self)

    def __format__(self, spec):
        spec = spec or ".4f"
        return f"{self.value:{spec}} ± {self.se:{spec}}"


def _check_values(v, what):
    """NaN among Monte Carlo values (an inf - inf of two infinite log-densities) is a ValueError
    naming the quantity and the row of x; ``+-inf`` values are legal (exact log-densities beyond
    the float range) but may not mix signs."""
    bad = np.isnan(v)
    if bad.any() or (np.any(v == np.inf) and np.any(v == -np.inf)):
        n = int(np.argwhere(bad)[0][0]) if bad.any() else int(np.argwhere(np.isinf(v))[0][0])
        raise ValueError(f"{what} is undefined at x[{n}] (an infinite log-density minus another, "
                         f"inf - inf): the model's densities are beyond the float range there")


def _estimate(v, what="the estimate"):
    """Estimate of the mean of v (N, S): stratified SE for S >= 2, conservative SE for S = 1,
    ``se = inf`` for a single value (nothing to estimate its spread from).

    If some values are infinite (all of one sign: log-densities beyond the float range) the
    value is that infinity and ``se = inf``; NaN is a ``ValueError`` (:func:`_check_values`).
    """
    v = np.asarray(v, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    _check_values(v, what)
    N, S = v.shape
    if not np.all(np.isfinite(v)):
        return Estimate(float(np.mean(v)), math.inf, int(v.size))
    value = float(np.mean(v))
    if S >= 2:
        se = math.sqrt(float(np.sum(np.var(v, axis=1, ddof=1))) / S) / N
    elif N >= 2:
        se = float(np.std(v[:, 0], ddof=1)) / math.sqrt(N)
    else:
        se = math.inf          # one value: no estimate of its spread (never NaN)
    return Estimate(value, se, int(v.size))


def _exact(v, what="the value"):
    v = np.asarray(v, dtype=np.float64)
    _check_values(v.reshape(v.shape[0], -1) if v.ndim else v.reshape(1, 1), what)
    return Estimate(float(np.mean(v)), 0.0, int(np.size(v)))


_MODEL_ATTRS = ("params", "encoder", "decoder", "prior", "latent_dim", "x_dim")
#: the largest array of draws (elements) an estimator allocates at once: 2^28 float64 = 2 GiB
MAX_DRAW_ELEMENTS = 2 ** 28


def _check_model(model):
    """``TypeError`` naming ``model`` unless it looks like a :class:`refvae.vae.VAE`."""
    missing = [a for a in _MODEL_ATTRS if not hasattr(model, a)]
    if missing:
        raise TypeError(f"model must be a refvae.vae.VAE (with .params, .encoder, .decoder, .prior, "
                        f".latent_dim, .x_dim), got {type(model).__name__} without "
                        f"{', '.join(missing)}")
    return model


def _check_aggregated(aggregated, model):
    """``None`` or an aggregated posterior (an object with ``log_prob``, ``means``, ``log_vars``)."""
    if aggregated is None:
        return None
    if not callable(getattr(aggregated, "log_prob", None)) or not hasattr(aggregated, "means") \
            or not hasattr(aggregated, "log_vars"):
        raise TypeError(f"aggregated must be a refvae.priors.mixtures.AggregatedPosterior (or None "
                        f"to build it from x), got {type(aggregated).__name__}")
    if np.shape(aggregated.means)[-1] != model.latent_dim:
        raise ValueError(f"aggregated has latent dimension {np.shape(aggregated.means)[-1]}, the "
                         f"model {model.latent_dim}")
    return aggregated


def _check_draws(n_rows, n_samples, width, name="n_samples"):
    """``ValueError`` naming ``name`` if an (n_rows, n_samples, width) array of draws would exceed
    :data:`MAX_DRAW_ELEMENTS` (2 GiB)."""
    total = int(n_rows) * int(n_samples) * int(width)
    if total > MAX_DRAW_ELEMENTS:
        raise ValueError(f"{name} = {n_samples} needs {n_rows} x {n_samples} x {width} = {total:.3g} "
                         f"draws at once, more than {MAX_DRAW_ELEMENTS:.3g} (2 GiB); use fewer "
                         f"samples or a smaller data set")


def _params(model, params):
    _check_model(model)
    if params is None:
        return model.params
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict of parameter arrays (or None for model.params), "
                        f"got {type(params).__name__}")
    return params


def _check_x(model, x):
    return as_float_array(x, "x", shape=(None, _check_model(model).x_dim))


def encode_all(model, x, params=None, batch_size=1024):
    """(mu, log_var) of q(z|x_n) for every row of x, encoded in chunks of ``batch_size``."""
    p = _params(model, params)
    x = _check_x(model, x)
    batch_size = check_positive_int(batch_size, "batch_size")
    mus, lvs = [], []
    for n0 in range(0, x.shape[0], batch_size):
        mu, lv, _ = model.encoder.forward(p, x[n0:n0 + batch_size])
        mus.append(mu)
        lvs.append(lv)
    mu, lv = np.concatenate(mus), np.concatenate(lvs)
    bad = ~(np.isfinite(mu) & np.isfinite(lv))
    if bad.any():
        n = int(np.argwhere(bad)[0][0])
        raise ValueError(f"the encoder's output for x[{n}] is not finite (mu = {mu[n].tolist()}, "
                         f"log_var = {lv[n].tolist()}): x (max |x| = {float(np.max(np.abs(x[n]))):.3g} "
                         f"in that row) or the parameters are outside the range the model handles")
    return mu, lv


def _draw_posterior(mu, lv, S, rng, row0=0):
    """z (N, S, L) with z[n, s] ~ q(z|x_n); a ``ValueError`` naming the row of x if a draw is
    beyond the float range (an encoder output too large for the model, e.g. from a huge x)."""
    eps = rng.standard_normal((mu.shape[0], S, mu.shape[1]))
    z = gaussian.reparameterize.unchecked(mu[:, None, :], lv[:, None, :], eps)
    bad = ~np.isfinite(z)
    if bad.any():
        n = int(np.argwhere(bad)[0][0])
        raise ValueError(f"a draw from q(z|x[{row0 + n}]) overflows float64 (encoder mu = "
                         f"{mu[n].tolist()}, log_var = {lv[n].tolist()}): x or the parameters are "
                         f"outside the range the model handles")
    return z


def _check_mixture_range(lv):
    """The aggregated posterior needs log-variances within the mixture kernel's range."""
    bad = np.abs(lv) > LOG_VAR_LIMIT
    if bad.any():
        n = int(np.argwhere(bad)[0][0])
        raise ValueError(f"the encoder's log_var for x[{n}] is {lv[n].tolist()}, outside "
                         f"[-{LOG_VAR_LIMIT:g}, {LOG_VAR_LIMIT:g}] where the aggregated posterior q(z) "
                         f"is evaluated: x or the parameters are outside the range the model handles")


def _prior_log_prob(model, p, z):
    return model.prior.forward(p, z)[0]


def _log_qz_evaluator(log_qz, name="log_qz"):
    """``log_qz`` as a callable z (B, L) -> (B,): a callable as given, an object's ``log_prob``."""
    fn = getattr(log_qz, "log_prob", log_qz)
    if not callable(fn):
        raise TypeError(f"{name} must be a callable z (B, L) -> ln q(z) (B,) or an object with such "
                        f"a log_prob method, got {type(log_qz).__name__}")
    return fn


def _evaluate_log_qz(log_qz, z):
    """ln q(z) at the rows of z (B, L) as a float64 (B,) array (``ValueError`` otherwise)."""
    out = np.asarray(log_qz(z), dtype=np.float64)
    if out.shape != (z.shape[0],):
        raise ValueError(f"log_qz returned shape {out.shape} for {z.shape[0]} queries; expected "
                         f"({z.shape[0]},)")
    return out


def _check_log_qz(log_qz, aggregated):
    """The ln q(z) evaluator given to an estimator: ``log_qz`` (a callable, or an object's
    ``log_prob``), else ``aggregated.log_prob``, else None (build it from x)."""
    if log_qz is None:
        return None if aggregated is None else aggregated.log_prob
    if aggregated is not None:
        raise ValueError("give aggregated or log_qz, not both")
    return _log_qz_evaluator(log_qz)


def _aggregated_posterior(model, mu, lv):
    """q(z) of the encoded components, checked to lie in the mixture kernel's range."""
    _check_mixture_range(lv)
    return AggregatedPosterior(model.latent_dim, mu, lv)


def _closed_form_kl(prior, params, mu, lv):
    """``KL[N(mu_n, e^{lv_n}) || p]`` per row in closed form, or None (then Monte Carlo): the
    prior's :meth:`~refvae.priors.base.Prior.kl_closed_form` (the standard prior:
    :func:`refvae.gaussian.kl`; by default ``CE - H`` when the cross-entropy has a closed form)."""
    return prior.kl_closed_form(params, mu, lv)


# --------------------------------------------------------------------------- ELBO, RE, Omega

def elbo_terms(model, x, rng, n_samples=1, params=None, batch_size=256):
    """RE, Omega and ELBO = RE + Omega over a data set (eqs. 4.33-4.35), from the same draws.

    Returns a dict of :class:`Estimate` (``re``, ``omega``, ``elbo``, ``neg_elbo``).
    """
    check_rng(rng)
    S = check_positive_int(n_samples, "n_samples")
    p = _params(model, params)
    x = _check_x(model, x)
    _check_draws(x.shape[0], S, model.latent_dim)
    mu, lv = encode_all(model, x, p)
    N, L = mu.shape
    z = _draw_posterior(mu, lv, S, rng)
    lpx = np.empty((N, S))
    lpz = np.empty((N, S))
    lq = np.empty((N, S))
    batch_size = check_positive_int(batch_size, "batch_size")
    for n0 in range(0, N, batch_size):
        sl = slice(n0, n0 + batch_size)
        nb = min(batch_size, N - n0)
        zz = z[sl].reshape(nb * S, L)
        xx = np.repeat(x[sl], S, axis=0)
        out = model.decoder.forward(p, zz)[0]
        lpx[sl] = model.decoder.log_prob(p, xx, out).reshape(nb, S)
        lpz[sl] = _prior_log_prob(model, p, zz).reshape(nb, S)
        lq[sl] = gaussian.log_prob(z[sl], mu[sl, None, :], lv[sl, None, :])
    omega = lpz - lq
    elbo = lpx + omega
    return {"re": _estimate(lpx, "RE"), "omega": _estimate(omega, "Omega"),
            "elbo": _estimate(elbo, "the ELBO"), "neg_elbo": _estimate(-elbo, "the negative ELBO")}


def conditional_entropy(model, x, params=None):
    """H[q(z|x)] = E_x 1/2 sum_l ln(2 pi e sigma_l^2(x)), exact (se = 0)."""
    mu, lv = encode_all(model, x, params)
    return _exact(gaussian.entropy(lv))


def cross_entropy(model, x, rng, n_samples=1, params=None):
    """CE[q(z)||p] = -E_x E_{q(z|x)} ln p(z).

    Closed form when the prior has one (``prior.cross_entropy_closed_form``; CE is linear in its
    first argument: the average of CE[q(z|x_n)||p], e.g. for N(0, I)); Monte Carlo with
    ``n_samples`` draws per data point otherwise.
    """
    check_rng(rng)
    S = check_positive_int(n_samples, "n_samples")
    p = _params(model, params)
    mu, lv = encode_all(model, x, p)
    ce = model.prior.cross_entropy_closed_form(p, mu, lv)
    if ce is not None:
        return _exact(ce)
    _check_draws(mu.shape[0], S, mu.shape[1])
    z = _draw_posterior(mu, lv, S, rng)
    N, _, L = z.shape
    lpz = _prior_log_prob(model, p, z.reshape(N * S, L)).reshape(N, S)
    return _estimate(-lpz)


def omega_decomposition(model, x, rng, n_samples=1, params=None):
    """Eq. (4.43): ``Omega = -CE[q(z)||p] + H[q(z|x)]``; returns ``cross_entropy``,
    ``conditional_entropy`` and ``omega`` (se of omega = se of CE)."""
    ce = cross_entropy(model, x, rng, n_samples, params)
    h = conditional_entropy(model, x, params)
    return {"cross_entropy": ce, "conditional_entropy": h,
            "omega": Estimate(-ce.value + h.value, ce.se, ce.n)}


# --------------------------------------------------------------------------- aggregated posterior

def aggregated_posterior_stats(model, x, rng, n_samples=1, params=None, aggregated=None, *,
                               log_qz=None):
    """H[q(z)], CE[q(z)||p], KL[q(z)||p], I_q(x; z), E_x KL[q(z|x)||p] and its split.

    ln q(z) comes from ``log_qz`` (a callable z (B, L) -> (B,), or an object with such a
    ``log_prob``: module docstring), else from ``aggregated``, an
    :class:`~refvae.priors.mixtures.AggregatedPosterior` of x, else from the aggregated posterior
    built from the model (evaluated exactly over all N components by the streaming kernel). All
    Monte Carlo terms use the same stratified draws z_ns ~ q(z|x_n) (:func:`_aggregated_estimates`).

    Returns a dict of :class:`Estimate`: ``entropy_qz``, ``cross_entropy`` (CE[q(z)||p]),
    ``conditional_entropy``, ``kl_qz_p``, ``mutual_information``, ``avg_kl`` (E_x KL[q(z|x)||p];
    exact when the prior has a closed form, :func:`_closed_form_kl`) and ``avg_kl_split``
    (I + KL[q(z)||p], to compare).
    """
    check_rng(rng)
    S = check_positive_int(n_samples, "n_samples")
    p = _params(model, params)
    x = _check_x(model, x)
    log_qz = _check_log_qz(log_qz, _check_aggregated(aggregated, model))
    _check_draws(x.shape[0], S, model.latent_dim)
    mu, lv = encode_all(model, x, p)
    if log_qz is None:
        log_qz = _aggregated_posterior(model, mu, lv).log_prob
    z = _draw_posterior(mu, lv, S, rng)
    ent = gaussian.entropy(lv)
    kl = _closed_form_kl(model.prior, p, mu, lv)
    return _aggregated_estimates(model, p, z, mu[:, None, :], lv[:, None, :], ent[:, None], log_qz,
                                _exact(ent), None if kl is None else _exact(kl))


def _aggregated_estimates(model, params, z, mu, lv, ent, log_qz, h_cond, avg_kl=None):
    r"""The seven estimates of :func:`aggregated_posterior_stats` from given draws of q(z).

    ``z`` (..., L): draws with z[i] ~ q(z|x_n(i)) (stratified (N, S, L), or (M, L) with drawn n);
    ``mu``, ``lv`` (broadcastable to z): the components q(z|x_n(i)) they were drawn from, ``ent``
    (broadcastable to z.shape[:-1]): their entropies ``gaussian.entropy(lv)``; ``log_qz``: the ln q(z)
    evaluator (module docstring), called once on the (B, L) rows of z;
    ``h_cond``: the :class:`Estimate` of H[q(z|x)]; ``avg_kl``: the :class:`Estimate`
    of E_x KL[q(z|x)||p] when it has a closed form, else None (then Monte Carlo from ``mu, lv``).

    With ``lqz = ln q(z)``, ``lpz = ln p(z)``: ``H[q(z)] ~ -lqz``, ``CE[q(z)||p] ~ -lpz``,
    ``KL[q(z)||p] ~ lqz - lpz``, ``I = H[q(z)] - H[q(z|x)] ~ -lqz - ent``, ``E_x KL ~ ln q(z|x) -
    lpz`` and its split ``I + KL[q(z)||p]``, each averaged with :func:`_estimate` over the draws.
    """
    p = _params(model, params)
    flat = z.reshape(-1, z.shape[-1])
    lqz = _evaluate_log_qz(_log_qz_evaluator(log_qz), flat).reshape(z.shape[:-1])
    lpz = _prior_log_prob(model, p, flat).reshape(z.shape[:-1])
    if avg_kl is None:
        avg_kl = _estimate(gaussian.log_prob(z, mu, lv) - lpz)
    return {"entropy_qz": _estimate(-lqz), "cross_entropy": _estimate(-lpz),
            "conditional_entropy": h_cond, "kl_qz_p": _estimate(lqz - lpz),
            "mutual_information": _estimate(-lqz - ent), "avg_kl": avg_kl,
            "avg_kl_split": _estimate(-lqz - ent + (lqz - lpz))}


def hole_metrics(model, x, rng, n_samples=10000, taus=(0.1, 0.01), params=None, aggregated=None, *,
                 log_qz=None):
    """Holes: regions where the prior puts mass that the aggregated posterior does not.

    Draws z_1..z_M ~ p(z) (M = ``n_samples``) and reports
    ``reverse_kl = KL[p||q(z)] = E_p[ln p(z) - ln q(z)]`` (se from the sample std) and, for each
    tau, the hole mass ``P_p[q(z)/p(z) < tau]`` (binomial se sqrt(P (1 - P) / M)).
    ln q(z) as in :func:`aggregated_posterior_stats` (``log_qz``, ``aggregated`` or built from x).
    Returns a dict with ``reverse_kl`` and ``hole_mass`` (a dict tau -> Estimate).
    """
    check_rng(rng)
    M = check_positive_int(n_samples, "n_samples", minimum=2)
    taus = _check_taus(taus)
    p = _params(model, params)
    log_qz = _check_log_qz(log_qz, _check_aggregated(aggregated, model))
    _check_draws(M, 1, model.latent_dim)
    if log_qz is None:
        log_qz = _aggregated_posterior(model, *encode_all(model, x, p)).log_prob
    return _prior_hole_estimates(model, p, rng, M, taus, log_qz)


def _check_taus(taus):
    taus = tuple(float(t) for t in as_float_array(taus, "taus", ndim=(0, 1)).reshape(-1))
    if not all(t > 0 for t in taus):
        raise ValueError(f"taus must be positive finite thresholds, got {taus}")
    return taus


def _prior_hole_estimates(model, params, rng, n_samples, taus, log_qz):
    """The holes of :func:`hole_metrics` with a given ln q(z) evaluator: ``n_samples`` draws
    z_m ~ p(z) from ``rng`` (``prior.sample``), then ln q(z_m) - ln p(z_m) (:func:`_hole_estimates`)."""
    p = _params(model, params)
    z = model.prior.sample(p, n_samples, rng)
    lpz = _prior_log_prob(model, p, z)
    lqz = _evaluate_log_qz(_log_qz_evaluator(log_qz), z)
    return _hole_estimates(lqz - lpz, taus)


def _hole_estimates(log_ratio, taus):
    """``{"reverse_kl", "hole_mass"}`` from ``log_ratio = ln q(z_m) - ln p(z_m)`` at M prior draws:
    ``KL[p||q] ~ mean(-log_ratio)`` and ``P_p[q/p < tau] ~ mean(log_ratio < ln tau)`` with the
    binomial standard error ``sqrt(f (1 - f) / M)``."""
    M = len(log_ratio)
    masses = {}
    for t in taus:
        frac = float(np.mean(log_ratio < math.log(t)))
        masses[t] = Estimate(frac, math.sqrt(frac * (1 - frac) / M), M)
    return {"reverse_kl": _estimate(-log_ratio), "hole_mass": masses}


# --------------------------------------------------------------------------- log-likelihood

def log_likelihood(model, x, rng, n_samples=5000, params=None, max_rows=512):
    r"""Importance-sampled ``ln p(x)`` per example, with proposals from q(z|x).

    ``ln p_hat(x) = logsumexp_s lw_s - ln S``, ``lw_s = ln p(x|z_s) + ln p(z_s) - ln q(z_s|x)``.
    The S proposals are processed in chunks (at most ``max_rows`` decoder rows at a time), with an
    online log-sum-exp of the weights and of their squares, so memory is bounded whatever S.

    Standard error (delta method): ``se = sqrt(var(w) / S) / mean(w)``, with the unbiased
    variance of the normalised weights. Effective sample size ``(sum w)^2 / sum w^2``.

    Returns a dict: ``log_px`` (N,), ``se`` (N,), ``ess`` (N,), ``elbo`` (N,) (the mean of lw, the
    single-sample ELBO averaged over the same S draws, <= E ln p_hat), and ``mean`` (an
    :class:`Estimate` of the data-set average of ln p(x), se = sqrt(sum se_n^2) / N).

    A row whose S log-weights are all ``-inf`` (the decoder gives probability 0 to x at every
    draw) gets ``log_px = -inf``, ``se = inf``, ``ess = 0`` (never NaN); a NaN or ``+inf``
    log-weight is a ``ValueError`` naming the row of x.
    """
    check_rng(rng)
    S = check_positive_int(n_samples, "n_samples", minimum=2)
    max_rows = check_positive_int(max_rows, "max_rows")
    p = _params(model, params)
    x = _check_x(model, x)
    mu, lv = encode_all(model, x, p)
    N, L = mu.shape
    m = np.full(N, -np.inf)
    s1 = np.zeros(N)
    s2 = np.zeros(N)
    total = np.zeros(N)
    chunk = max(1, min(S, max_rows))
    for n in range(N):
        xn = x[n:n + 1]
        done = 0
        while done < S:
            c = min(chunk, S - done)
            z = _draw_posterior(mu[n:n + 1], lv[n:n + 1], c, rng, row0=n)[0]
            out = model.decoder.forward(p, z)[0]
            lw = (model.decoder.log_prob(p, np.repeat(xn, c, axis=0), out)
                  + _prior_log_prob(model, p, z)
                  - gaussian.log_prob(z, mu[n], lv[n]))
            if np.isnan(lw).any() or (lw == np.inf).any():
                raise ValueError(f"the importance log-weight of x[{n}] is {float(lw[~(lw < np.inf)][0])}: "
                                 f"the model's log-densities are not finite there")
            cmax = float(np.max(lw))
            if cmax == -np.inf:      # every weight of this chunk is 0: nothing to add
                total[n] += float(np.sum(lw))
                done += c
                continue
            if cmax > m[n]:
                if m[n] > -np.inf:
                    s1[n] *= math.exp(m[n] - cmax)
                    s2[n] *= math.exp(2 * (m[n] - cmax))
                m[n] = cmax
            w = np.exp(lw - m[n])
            s1[n] += float(np.sum(w))
            s2[n] += float(np.sum(w * w))
            total[n] += float(np.sum(lw))
            done += c
    live = m > -np.inf          # rows with a nonzero weight (m = -inf: every weight is 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_px = np.where(live, m + np.log(np.where(live, s1, 1.0)) - math.log(S), -np.inf)
        var = np.maximum(s2 - s1 * s1 / S, 0.0) / (S - 1)
        se = np.where(live, np.sqrt(var / S) / (s1 / S), np.inf)
        ess = np.where(live, s1 * s1 / np.where(live, s2, 1.0), 0.0)
    mean = Estimate(float(np.mean(log_px)), float(np.sqrt(np.sum(se * se))) / N, int(N * S))
    return {"log_px": log_px, "se": se, "ess": ess, "elbo": total / S, "mean": mean}


# --------------------------------------------------------------------------- grids (L = 2)

def density_grid(model, x, n=101, lims=None, params=None, aggregated=None):
    """For L = 2: ln p(z), ln q(z) and ln q(z)/p(z) on an n x n grid, ready for contour plots.

    ``lims = ((z1_min, z1_max), (z2_min, z2_max))``; by default the box holding the encoded means
    +- 4 posterior standard deviations and [-3, 3]^2. Returns a dict with ``z1``, ``z2`` (n,),
    ``log_p``, ``log_q``, ``log_ratio`` (n, n; rows follow z2, columns z1, as ``meshgrid``).
    """
    if _check_model(model).latent_dim != 2:
        raise ValueError(f"density_grid needs latent_dim = 2, the model has {model.latent_dim}")
    n = check_positive_int(n, "n", minimum=2)
    _check_draws(n, n, 2, "n")
    p = _params(model, params)
    aggregated = _check_aggregated(aggregated, model)
    if aggregated is None:
        aggregated = _aggregated_posterior(model, *encode_all(model, x, p))
    if lims is None:
        sd = np.exp(0.5 * aggregated.log_vars)
        lo = np.minimum((aggregated.means - 4 * sd).min(axis=0), -3.0)
        hi = np.maximum((aggregated.means + 4 * sd).max(axis=0), 3.0)
        lims = ((lo[0], hi[0]), (lo[1], hi[1]))
    lims = as_float_array(lims, "lims", shape=(2, 2))
    if not np.all(lims[:, 1] > lims[:, 0]):
        raise ValueError(f"lims must be ((lo, hi), (lo, hi)) with lo < hi, got {lims.tolist()}")
    z1 = np.linspace(lims[0, 0], lims[0, 1], n)
    z2 = np.linspace(lims[1, 0], lims[1, 1], n)
    Z1, Z2 = np.meshgrid(z1, z2)
    pts = np.column_stack([Z1.ravel(), Z2.ravel()])
    log_p = _prior_log_prob(model, p, pts).reshape(n, n)
    log_q = aggregated.log_prob(pts).reshape(n, n)
    return {"z1": z1, "z2": z2, "log_p": log_p, "log_q": log_q, "log_ratio": log_q - log_p}
