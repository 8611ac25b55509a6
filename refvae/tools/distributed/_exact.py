"""Drawn rows and exact sums: for ``aggregated_stats(..., n_queries=M)`` with components in files or
Dask arrays, one task per shard returns the drawn rows and exact sums of the per-component terms
(:mod:`refvae.tools.distributed`, "Drawn rows and exact sums")."""

from __future__ import annotations

import math

import numpy as np

from ... import gaussian
from ..._validation import as_float_array
from ._base import _require_dask
from ._base import DEFAULT_WORKER_TIMEOUT
from ._cluster import _compute_on, _in_graph, _shard_blocks


_EXACT_SUM_MAX_TERMS = 48  # > 2098 / 53: the binary range of float64 in 53-bit steps


def _exact_sum(values):
    """The exact sum of float64 ``values`` as a tuple of floats ``(t_1, t_2, ...)``.

    ``t_1 = math.fsum(values)`` (the correctly rounded sum); each next ``t_k`` is the correctly
    rounded remainder ``sum(values) - t_1 - ... - t_{k-1}`` (``fsum`` again), until the remainder
    is zero. So ``t_1 + t_2 + ...`` equals the sum of the values exactly, with
    ``|t_{k+1}| <= u |t_k|``; the remainders are multiples of 2^-1074, so this ends (in practice
    after 1 to 3 terms; each costs one ``fsum`` over the values). Shapes: any; memory O(size).
    Non-finite values, or a sum beyond the float range: one term, NumPy's sum (inf or NaN).
    """
    arr = np.asarray(values, dtype=np.float64)
    vals = arr.ravel().tolist()
    try:
        t = math.fsum(vals)
    except (OverflowError, ValueError):  # a finite sum overflowing, or inf + -inf
        return (float(np.sum(arr)),)
    if not math.isfinite(t):
        return (t,)
    terms = []
    while t != 0.0 and len(terms) < _EXACT_SUM_MAX_TERMS:
        terms.append(t)
        t = math.fsum(vals + [-s for s in terms])
    return tuple(terms) if terms else (0.0,)


def _combine_exact_sums(parts):
    """The correctly rounded value of the sum of the shards' exact sums (lists of terms of
    :func:`_exact_sum`, in shard order): one ``math.fsum`` over all terms, so the result is the
    correctly rounded sum of all the values, whatever the sharding and the order. NumPy's sum if
    a term is non-finite (inf, or NaN for inf - inf, as ``np.mean`` would give)."""
    flat = [t for p in parts for t in p]
    try:
        return math.fsum(flat)
    except (OverflowError, ValueError):
        return float(np.sum(flat))


def _shard_drawn_rows_and_sums(means, log_vars, rows, kl_rows, index, a, b):
    """The task of shard ``index`` (components a..b-1) for ``aggregated_stats(n_queries=M)``.

    ``means``, ``log_vars``: the shard's (b - a, L) blocks; ``rows``: (U_i,) sorted distinct local
    row numbers (in 0..b-a-1) of the components drawn in this shard (possibly none).

    Returns ``(means[rows], log_vars[rows], ent, kl)``: the drawn rows, float64 (U_i, L) each, and
    the exact sums over the shard's b - a components of H[q(z|x_n)] (``gaussian.entropy``, per
    row) and, if ``kl_rows`` is given (the prior's closed form ``(mu, lv) -> KL[q(z|x_n) || p]`` per
    row, ``estimators._closed_form_kl``), of the KL (else None), each as the terms of
    :func:`_exact_sum`. Memory O((b - a) L); non-finite components are a ``ValueError``
    naming the shard.
    """
    try:
        mu = as_float_array(means, "means", shape=(b - a, None))
        lv = as_float_array(log_vars, "log_vars", shape=(b - a, mu.shape[1]))
        ent = _exact_sum(gaussian.entropy(lv))
        kl = None if kl_rows is None else _exact_sum(kl_rows(mu, lv))
        return mu[rows], lv[rows], ent, kl
    except ValueError as exc:
        raise ValueError(f"shard {index} (components {a}..{b - 1}): {exc}") from None


def _drawn_rows_and_sums_on(client, comps, idx, kl_rows, chunk, progress,
                            worker_timeout=DEFAULT_WORKER_TIMEOUT):
    """Rows ``idx`` of the components and their exact sums, with one task per shard on the cluster.

    ``comps``: a _Components (files or Dask arrays, read on the workers); ``idx``: (M,) integers in
    0..N-1 (repeats allowed). Returns ``(means[idx], log_vars[idx], sum_n H_n, sum_n KL_n)``:
    (M, L) float64 each (the same bits as indexing the whole arrays), the correctly rounded sum over
    all N components of ``gaussian.entropy(log_vars)`` and, if ``kl_rows`` is given (a picklable
    closed form ``(mu, lv) -> (n,)``), of ``kl_rows(means, log_vars)`` (else None). Each shard
    task gets only the distinct
    drawn rows in its range and returns them and its exact sums (:func:`_exact_sum`); the client
    combines them with one ``fsum`` (:func:`_combine_exact_sums`). Client memory O(M L + shards).
    """
    dask, _, _ = _require_dask()
    bounds, mblocks, lblocks = _shard_blocks(comps, chunk)
    uniq, inverse = np.unique(np.asarray(idx, dtype=np.int64), return_inverse=True)
    cuts = np.searchsorted(uniq, [a for a, _ in bounds] + [comps.N])
    task = dask.delayed(_shard_drawn_rows_and_sums, pure=True)
    # the closed form (it holds the prior and its parameters): one key of the graph, kept by the
    # scheduler (recoverable if every worker holding it is lost, unlike a scattered future)
    kf = None if kl_rows is None else _in_graph(kl_rows, "kl-rows")
    parts = [task(mb, lb, uniq[cuts[i]:cuts[i + 1]] - a, kf, i, a, b)
             for i, ((a, b), mb, lb) in enumerate(zip(bounds, mblocks, lblocks))]
    del kf
    results = _compute_on(client, parts, progress,
                          f"q(z|x): {len(uniq)} drawn components and the exact sums over "
                          f"{comps.N} components in {len(bounds)} shards of <= {chunk}", worker_timeout)
    mu_u = np.concatenate([r[0] for r in results])
    lv_u = np.concatenate([r[1] for r in results])
    if mu_u.shape[0] != len(uniq):  # pragma: no cover - a shard returned the wrong rows
        raise RuntimeError(f"the shards returned {mu_u.shape[0]} drawn rows, expected {len(uniq)}")
    ent_sum = _combine_exact_sums([r[2] for r in results])
    kl_sum = None if kl_rows is None else _combine_exact_sums([r[3] for r in results])
    del results
    return mu_u[inverse], lv_u[inverse], ent_sum, kl_sum
