"""The section-5 estimators that need q(z), with ln q(z) on a cluster: the draws are made here, the
estimates by :mod:`refvae.estimators` with the cluster's ln q(z) evaluator
(:mod:`refvae.tools.distributed`)."""

from __future__ import annotations

import contextlib
import functools
import math

import numpy as np

from ... import gaussian
from ..._validation import as_float_array, check_positive_int, check_rng
from ...estimators import (Estimate, _aggregated_estimates, _closed_form_kl, _draw_posterior, _exact,
                           _params, _prior_hole_estimates, encode_all)
from ._base import (DEFAULT_CHUNK, DEFAULT_CONNECT_TIMEOUT, DEFAULT_SPLIT_EVERY,
                    DEFAULT_WORKER_TIMEOUT, _check_chunk, _check_cluster_args, _check_split_every,
                    _check_threads, _check_worker_timeout, _is_path)
from ._cluster import _cluster, _LogQz
from ._components import _Components
from ._exact import _drawn_rows_and_sums_on


def _check_model(model):
    if not (hasattr(model, "params") and hasattr(model, "encoder") and hasattr(model, "prior")):
        raise TypeError(f"model must be a refvae VAE, got {type(model).__name__}")
    return model


def _data_or_components(model, x_or_components):
    """('x', x) for a data array; ('components', _Components) for a pair, dict, path or directory."""
    obj = x_or_components
    if isinstance(obj, dict):
        try:
            comps = _Components(obj["means"], obj["log_vars"])
        except KeyError:
            raise ValueError("a dict of components needs the keys 'means' and 'log_vars'") from None
    elif isinstance(obj, (tuple, list)) and len(obj) == 2:
        comps = _Components(obj[0], obj[1])
    elif _is_path(obj):
        comps = _Components(obj, None)
    else:
        return "x", as_float_array(obj, "x", shape=(None, model.x_dim))
    if comps.L != model.latent_dim:
        raise ValueError(f"the components have L = {comps.L} columns but the model's latent_dim is "
                         f"{model.latent_dim}")
    return "components", comps


def _common_checks(chunk, split_every, threads_per_task, client, scheduler, connect_timeout,
                   worker_timeout):
    chunk = _check_chunk(chunk)
    split_every = _check_split_every(split_every)
    threads_per_task = _check_threads(threads_per_task)
    _check_cluster_args(client, scheduler, connect_timeout)
    return chunk, split_every, threads_per_task, _check_worker_timeout(worker_timeout)


@contextlib.contextmanager
def _components_on_cluster(model, x_or_components, params, client, scheduler, connect_timeout,
                           worker_timeout):
    """``(p, comps, c)``: the parameters, the components (a _Components; data x is encoded with
    ``encode_all``, as the single-machine estimators do) and the client (None: this machine,
    else closed at the end if made here from ``scheduler``)."""
    p = _params(model, params)
    kind, obj = _data_or_components(model, x_or_components)
    with _cluster(client, scheduler, connect_timeout, worker_timeout) as c:
        comps = _Components(*encode_all(model, obj, p)) if kind == "x" else obj
        if c is not None:
            comps.keep_on(c)  # files: each shard read once per run, kept on the workers (H17b)
        yield p, comps, c


def aggregated_stats(model, x_or_components, rng, n_samples=1, *, params=None, n_queries=None,
                     client=None, scheduler=None, chunk=DEFAULT_CHUNK,
                     split_every=DEFAULT_SPLIT_EVERY, threads_per_task=1, progress=False,
                     connect_timeout=DEFAULT_CONNECT_TIMEOUT, worker_timeout=DEFAULT_WORKER_TIMEOUT):
    r"""H[q(z)], CE[q(z)||p], KL[q(z)||p], I_q(x; z), E_x KL[q(z|x)||p] and its split, with ln q(z)
    evaluated by :func:`log_mixture` (on a cluster or on this machine).

    The estimates are computed by the code of :func:`refvae.estimators.aggregated_posterior_stats`
    (``estimators._aggregated_estimates``), given this module's ln q(z) evaluator; only the draws'
    source (``n_queries``, components in files) and the evaluation of ln q(z) are this module's.

    ``x_or_components``: the data set x (N, D) (encoded with ``encode_all``, as the single-machine
    estimator does), or its components: a pair ``(means, log_vars)``, a dict with those keys, an
    ``.npz`` path or a directory (:func:`encode_to_shards`).

    Draws: with ``n_queries=None`` (default), ``n_samples`` stratified draws z_ns ~ q(z|x_n) from
    ``rng`` exactly as :func:`refvae.estimators.aggregated_posterior_stats` makes them, and the same
    formulas: the result differs from that function's only through the rounding of ln q(z) (within
    the module's error bound; bit-identical on the single-machine path and with ``chunk >= N``).
    With ``n_queries=M``: M draws from q(z) as ``AggregatedPosterior.sample`` makes them
    (``n = rng.integers(0, N, M)``, then ``eps = rng.standard_normal((M, L))``), so that the cost is
    M N pairs instead of S N^2 (the plan of validation/SCALING.md); the Monte Carlo terms are then
    paired with the drawn n (H[q(z|x)] and, when the prior has a closed form, E_x KL stay exact over
    all N).
    With ``n_queries=M``, a cluster, and components in files or Dask arrays, nothing of size N
    comes to the client (memory O(M L + shards)): the workers return the M drawn rows (the same
    draws, to the bit) and per-shard exact sums, and these two exact terms are the correctly
    rounded means, within ``(d + 4) u mean|h|`` of the ``np.mean`` values used for NumPy
    components (module docstring, "Drawn rows and exact sums"); everything else is bit-identical.

    Returns the dict of :class:`~refvae.estimators.Estimate` of ``aggregated_posterior_stats``:
    ``entropy_qz``, ``cross_entropy``, ``conditional_entropy``, ``kl_qz_p``,
    ``mutual_information``, ``avg_kl``, ``avg_kl_split``.
    """
    check_rng(rng)
    _check_model(model)
    S = check_positive_int(n_samples, "n_samples")
    M = None if n_queries is None else check_positive_int(n_queries, "n_queries")
    chunk, split_every, threads_per_task, worker_timeout = _common_checks(
        chunk, split_every, threads_per_task, client, scheduler, connect_timeout, worker_timeout)
    with _components_on_cluster(model, x_or_components, params, client, scheduler,
                                connect_timeout, worker_timeout) as (p, comps, c):
        if M is not None and c is not None and comps.kind != "numpy":
            # components in files or Dask arrays: the same draws, but only the M drawn rows and
            # per-shard exact sums come to this machine (module docstring, "Drawn rows and exact sums")
            draws = _queries_on_cluster(c, model, p, comps, rng, M, chunk, progress, worker_timeout)
        else:
            draws, comps = _draws_here(model, p, comps, rng, S, M, here=c is None)
        log_qz = _LogQz(comps, c, chunk, split_every, threads_per_task, progress, worker_timeout)
        return _aggregated_estimates(model, p, *draws[:4], log_qz, *draws[4:])


def _closed_form_kl_rows(model, p, L):
    """A picklable ``(mu, lv) -> KL[q(z|x_n)||p]`` per row for the shard tasks when the prior has a
    closed form (:func:`refvae.estimators._closed_form_kl`, tried on one row), else None."""
    probe = np.zeros((1, L))
    if _closed_form_kl(model.prior, p, probe, probe) is None:
        return None
    return functools.partial(_closed_form_kl, model.prior, p)


def _queries_on_cluster(client, model, p, comps, rng, M, chunk, progress, worker_timeout):
    """M draws from q(z) (``idx = rng.integers(0, N, M)``, then ``eps``) with the drawn rows and the
    exact sums of H[q(z|x_n)] (and of the closed-form KL) computed by the shards:
    ``(z, mu_q, lv_q, ent_q, h_cond, avg_kl)`` for :func:`refvae.estimators._aggregated_estimates`."""
    N, L = comps.N, comps.L
    idx = rng.integers(0, N, size=M)
    eps = rng.standard_normal((M, L))
    kl_rows = _closed_form_kl_rows(model, p, L)
    mu_q, lv_q, ent_sum, kl_sum = _drawn_rows_and_sums_on(client, comps, idx, kl_rows, chunk, progress,
                                                                worker_timeout)
    z = mu_q + np.exp(0.5 * lv_q) * eps
    avg_kl = None if kl_rows is None else Estimate(kl_sum / N, 0.0, N)
    return z, mu_q, lv_q, gaussian.entropy(lv_q), Estimate(ent_sum / N, 0.0, N), avg_kl


def _draws_here(model, p, comps, rng, S, M, here):
    """The draws with the components on this machine: N S stratified draws z_ns ~ q(z|x_n)
    (``M`` None), or M draws from q(z) as ``AggregatedPosterior.sample`` makes them. Returns
    ``((z, mu_q, lv_q, ent_q, h_cond, avg_kl), comps)``; with ``here`` (no cluster) ``comps`` as
    NumPy arrays, so that files are read (or Dask arrays computed) once, not twice."""
    mu, lv = comps.to_numpy()
    if here and comps.kind != "numpy":
        comps = _Components(mu, lv)
    N, L = comps.N, comps.L
    ent = gaussian.entropy(lv)
    kl = _closed_form_kl(model.prior, p, mu, lv)
    exact = (_exact(ent), None if kl is None else _exact(kl))
    if M is None:
        z = _draw_posterior(mu, lv, S, rng)
        return (z, mu[:, None, :], lv[:, None, :], ent[:, None]) + exact, comps
    idx = rng.integers(0, N, size=M)
    eps = rng.standard_normal((M, L))
    z = mu[idx] + np.exp(0.5 * lv[idx]) * eps
    return (z, mu[idx], lv[idx], ent[idx]) + exact, comps


def holes(model, x_or_components, rng, n_samples=10000, taus=(0.1, 0.01), *, params=None,
          client=None, scheduler=None, chunk=DEFAULT_CHUNK, split_every=DEFAULT_SPLIT_EVERY,
          threads_per_task=1, progress=False, connect_timeout=DEFAULT_CONNECT_TIMEOUT,
          worker_timeout=DEFAULT_WORKER_TIMEOUT):
    """Holes (SPEC section 5) by the code of :func:`refvae.estimators.hole_metrics`
    (``estimators._prior_hole_estimates``): z_1..z_M ~ p(z) from ``rng`` (the same draws), ``reverse_kl = KL[p||q(z)]`` and ``hole_mass[tau] = P_p[q(z)/p(z) < tau]``,
    with ln q(z) by :func:`log_mixture`. ``x_or_components`` as in :func:`aggregated_stats`;
    components given as files are read only by the workers (cluster path).

    Returns ``{"reverse_kl": Estimate, "hole_mass": {tau: Estimate}}``.
    """
    check_rng(rng)
    _check_model(model)
    M = check_positive_int(n_samples, "n_samples", minimum=2)
    if isinstance(taus, (str, bytes)) or taus is None:
        raise TypeError(f"taus must be a number or a sequence of numbers, got {type(taus).__name__}")
    try:
        taus = tuple(float(t) for t in np.atleast_1d(np.asarray(taus, dtype=np.float64)))
    except (TypeError, ValueError):
        raise TypeError(f"taus must be a number or a sequence of numbers, got {taus!r:.60}") from None
    if not all(t > 0 and math.isfinite(t) for t in taus):
        raise ValueError(f"taus must be positive finite thresholds, got {taus}")
    chunk, split_every, threads_per_task, worker_timeout = _common_checks(
        chunk, split_every, threads_per_task, client, scheduler, connect_timeout, worker_timeout)
    with _components_on_cluster(model, x_or_components, params, client, scheduler,
                                connect_timeout, worker_timeout) as (p, comps, c):
        log_qz = _LogQz(comps, c, chunk, split_every, threads_per_task, progress, worker_timeout)
        return _prior_hole_estimates(model, p, rng, M, taus, log_qz)
