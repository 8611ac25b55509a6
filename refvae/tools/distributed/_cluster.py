"""The cluster path: connecting to a scheduler, computing a graph, the log-density of a mixture over
the shards (:func:`log_mixture`, :func:`log_qz`) and the ln q(z) evaluator that
:mod:`refvae.estimators` takes (:class:`_LogQz`) (:mod:`refvae.tools.distributed`)."""

from __future__ import annotations

import contextlib
import gc
import math
import warnings

from ..._validation import as_float_array
from ...kernels.mixture import finalize_partials, mixture_log_prob
from ._base import (DEFAULT_CHUNK, DEFAULT_CONNECT_TIMEOUT, DEFAULT_SPLIT_EVERY, _check_chunk,
                    _check_cluster_args, _check_split_every, _check_threads, _is_dask_array,
                    _is_path, _require_dask, shard_bounds)
from ._components import _Components
from ._shards import _combine_group, _shard_partial, combine_tree


@contextlib.contextmanager
def _cluster(client, scheduler, connect_timeout):
    """Yields the client to use (None: single machine); a client made here is closed at the end."""
    if scheduler is None:
        yield client
        return
    _require_dask()
    from distributed import Client
    failure = None
    try:
        own = Client(scheduler, timeout=connect_timeout, set_as_default=False)
    except ValueError as exc:
        failure = ValueError(f"scheduler address {scheduler!r} is not valid: {exc}")
    except (OSError, TimeoutError) as exc:
        failure = ConnectionError(f"cannot reach the Dask scheduler at {scheduler!r} within "
                                  f"{connect_timeout:g} s ({exc}); is it running and reachable from here?")
    if failure is not None:
        # the half-made Client closes itself when collected: do it now, while its event loop runs
        # (otherwise at interpreter exit, after a 4 s timeout and with a traceback on stderr)
        gc.collect()
        raise failure
    try:
        yield own
    finally:
        own.close()


def _dashboard(client):
    try:
        link = client.dashboard_link
    except Exception:  # noqa: BLE001 - no dashboard (e.g. bokeh missing)
        link = None
    return link


def _compute_on(client, graph, progress, message):
    """``client.compute(graph)`` and its gathered result, with a progress bar if asked.

    NumPy components travel in the graph on purpose (see components_to_dask): the scheduler keeps
    them, so a shard lost with a worker can be re-sent; the "Sending large graph" warning is
    silenced for this reason. With ``progress``, prints the dashboard link and ``message`` first.
    """
    _, _, distributed = _require_dask()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        futs = client.compute(graph)
    try:
        if progress:
            link = _dashboard(client)
            if link:
                print(f"Dask dashboard: {link}", flush=True)
            print(message, flush=True)
            distributed.progress(futs, notebook=False, scheduler=client.scheduler.address)
            print(flush=True)
        return client.gather(futs)
    finally:
        del futs


def _shard_blocks(comps, chunk):
    """``(bounds, mblocks, lblocks)``: the shards' row ranges [a, b) and the delayed blocks of the
    means and log-variances, one per shard (a _Components as Dask arrays chunked by ``chunk``)."""
    means_da, log_vars_da = comps.to_dask(chunk)
    bounds = shard_bounds(comps.N, chunk)
    mblocks = means_da.to_delayed().ravel()
    lblocks = log_vars_da.to_delayed().ravel()
    assert len(mblocks) == len(lblocks) == len(bounds)
    return bounds, mblocks, lblocks


def _log_mixture_on(client, z, comps, log_weights, chunk, split_every, threads_per_task, progress):
    """The cluster path on checked inputs (z (M, L) float64, comps a _Components)."""
    dask, _, _ = _require_dask()
    bounds, mblocks, lblocks = _shard_blocks(comps, chunk)
    w0 = -math.log(comps.N)  # the kernel's uniform weight, computed once here
    zf = client.scatter(z, broadcast=True, hash=False)  # a fresh key: no race with a release
    task = dask.delayed(_shard_partial, pure=True)
    parts = [task(zf, mb, lb, w0 if log_weights is None else log_weights[a:b], i, a, b, threads_per_task)
             for i, ((a, b), mb, lb) in enumerate(zip(bounds, mblocks, lblocks))]
    root, _ = combine_tree(parts, split_every, dask.delayed(_combine_group, pure=True))
    try:
        m, s = _compute_on(client, root, progress,
                           f"log q(z): {len(z)} queries x {comps.N} components in {len(bounds)} "
                           f"shards of <= {chunk}")
    finally:
        del zf
    return finalize_partials(m, s)


def _check_queries(z, L):
    z = as_float_array(z, "z", ndim=2)
    if z.shape[1] != L:
        raise ValueError(f"z has L = {z.shape[1]} columns but the components (means) have L = {L}; "
                         f"z must have shape (M, {L})")
    return z


def _check_log_weights(log_weights, N):
    if log_weights is None:
        return None
    if _is_path(log_weights) or _is_dask_array(log_weights):
        raise ValueError("log_weights must be a NumPy array of shape (N,) (or None for uniform weights)")
    return as_float_array(log_weights, "log_weights", shape=(N,), allow_neg_inf=True)


def _evaluate(z, comps, log_weights, client, chunk, split_every, threads_per_task, progress):
    if client is None:
        means, log_vars = comps.to_numpy()
        return mixture_log_prob(z, means, log_vars, log_weights)
    return _log_mixture_on(client, z, comps, log_weights, chunk, split_every, threads_per_task, progress)


class _LogQz:
    """The ln q(z) evaluator that :mod:`refvae.estimators` takes (``log_qz(z) -> (B,)``): the
    aggregated posterior of the components ``comps`` (a _Components), sharded over the cluster of
    ``client``, or on this machine (``client`` None)."""

    def __init__(self, comps, client, chunk, split_every, threads_per_task, progress):
        self.comps, self.client, self.chunk = comps, client, chunk
        self.split_every, self.threads_per_task, self.progress = split_every, threads_per_task, progress

    def __call__(self, z):
        return _evaluate(z, self.comps, None, self.client, self.chunk, self.split_every,
                         self.threads_per_task, self.progress)


def log_mixture(z, means, log_vars=None, log_weights=None, *, client=None, scheduler=None,
                chunk=DEFAULT_CHUNK, split_every=DEFAULT_SPLIT_EVERY, threads_per_task=1,
                progress=False, connect_timeout=DEFAULT_CONNECT_TIMEOUT):
    r"""``log sum_n exp(w_n + log N(z_b | mu_n, diag e^{v_n}))`` at each row of z, sharded over a
    Dask cluster (``client`` or ``scheduler``) or on this machine (neither).

    Parameters
    ----------
    z : (M, L) queries (NumPy).
    means, log_vars : (N, L) components: NumPy arrays, Dask arrays, or paths (module docstring).
    log_weights : (N,) NumPy array of GLOBAL log-weights, used as given (-inf switches a component
        off; a shard of switched-off components contributes nothing), or None for ``-ln N`` each.
    client : distributed.Client, optional. Not closed.
    scheduler : str, optional. Address of a Dask scheduler; connected to (``connect_timeout``
        seconds) and closed at the end.
    chunk : int > 0. Components per shard (cluster path only). Fixes the rounding; see the module
        docstring for the determinism guarantee.
    split_every : int >= 2. Fan-in of the combination tree.
    threads_per_task : int or None. Numba threads per shard task (None: the worker's default).
    progress : bool. Print the dashboard link and Dask's progress bar (cluster path).

    Returns
    -------
    (M,) float64. Error ``<= c u (|f| + S + ln n) + D (k + 3 + ln k) u + 2 u`` (module docstring).
    """
    chunk = _check_chunk(chunk)
    split_every = _check_split_every(split_every)
    threads_per_task = _check_threads(threads_per_task)
    _check_cluster_args(client, scheduler, connect_timeout)
    comps = _Components(means, log_vars)
    z = _check_queries(z, comps.L)
    log_weights = _check_log_weights(log_weights, comps.N)
    with _cluster(client, scheduler, connect_timeout) as c:
        return _evaluate(z, comps, log_weights, c, chunk, split_every, threads_per_task, progress)


def log_qz(z, means, log_vars=None, *, client=None, scheduler=None, chunk=DEFAULT_CHUNK,
           split_every=DEFAULT_SPLIT_EVERY, threads_per_task=1, progress=False,
           connect_timeout=DEFAULT_CONNECT_TIMEOUT):
    r"""``log q(z) = log (1/N) sum_n N(z | mu_n, diag e^{v_n})``, the aggregated posterior (eq. 4.44),
    at each row of z: :func:`log_mixture` with uniform log-weights ``-ln N``.

    On the single-machine path (neither ``client`` nor ``scheduler``) this is exactly
    ``AggregatedPosterior(L, means, log_vars).log_prob(z)``; on a cluster with ``chunk >= N`` too.
    """
    return log_mixture(z, means, log_vars, None, client=client, scheduler=scheduler, chunk=chunk,
                       split_every=split_every, threads_per_task=threads_per_task,
                       progress=progress, connect_timeout=connect_timeout)
