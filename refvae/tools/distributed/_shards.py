"""The shard tasks (the kernel's partial sums with global log-weights, in a worker's Numba threads)
and the fixed combination tree over them (:mod:`refvae.tools.distributed`)."""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import threading

import numpy as np

from ...kernels.mixture import combine_partials, mixture_partial
from ._base import DEFAULT_SPLIT_EVERY, _check_split_every


_KERNEL_LOCK = threading.Lock()


def _kernel_guard():
    """Numba's 'workqueue' threading layer must not be entered by two threads at once; the
    'omp' and 'tbb' layers may. Serialise kernel calls in a worker unless the layer is known safe."""
    import numba
    try:
        layer = numba.threading_layer()
    except ValueError:  # not initialised yet: the first parallel call chooses the layer
        layer = None
    return _KERNEL_LOCK if layer in (None, "workqueue") else contextlib.nullcontext()


@contextlib.contextmanager
def _numba_threads(n):
    if n is None:
        yield
        return
    import numba
    old = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(old)


def _shard_partial(z, means, log_vars, log_weights, index, a, b, threads):
    """The task of shard ``index`` (components a..b-1): ``mixture_partial`` with global log-weights.

    ``log_weights`` is the shard's slice of the global log-weights, or a float: every component has
    that log-weight (``-ln N`` for the aggregated posterior).
    """
    if isinstance(log_weights, float):
        log_weights = np.full(b - a, log_weights)
    try:
        if np.shape(means)[0] != b - a:
            raise ValueError(f"means has {np.shape(means)[0]} rows, expected {b - a}")
        with _numba_threads(threads), _kernel_guard():
            return mixture_partial(z, means, log_vars, log_weights)
    except ValueError as exc:
        raise ValueError(f"shard {index} (components {a}..{b - 1}): {exc}") from None


# =========================================================================== resuming a run

_RESUME_DIR = contextvars.ContextVar("refvae_resume_dir", default=None)
RESUME_PREFIX = "lnq-partial-"


@contextlib.contextmanager
def _resume_from(directory):
    """Within this block, every ln q(z) shard task on a cluster saves its partial ``(m, s)`` in
    ``directory`` (a ``.npy`` file of shape (2, M), written atomically by the worker), and a shard
    whose partial is already there is loaded instead of computed. The file's name is a SHA-256 of
    everything the partial depends on (the queries' bytes, the components' identity, the
    log-weights, the chunk and the shard's range), so a run whose client died, started again with
    the same arguments and seed, finds the partials of the shards that had finished, and gives the
    same bits as a run that was never interrupted (the partials are stored exactly; the
    combination tree is fixed). ``directory`` must be on storage the workers can write and the
    client can read, at the same absolute path. ``None``: no-op."""
    if directory is None:
        yield None
        return
    d = os.path.abspath(os.fspath(directory))
    os.makedirs(d, exist_ok=True)
    token = _RESUME_DIR.set(d)
    try:
        yield d
    finally:
        _RESUME_DIR.reset(token)


def _components_identity(comps):
    """A string that changes when the components do: the files' fingerprints, a SHA-256 of NumPy
    arrays, Dask's token of Dask arrays."""
    if comps.kind == "file":
        return repr([(fa.path, fa.key, fa.shape, fa.fingerprint) for fa in (comps.means, comps.log_vars)])
    if comps.kind == "numpy":
        h = hashlib.sha256()
        for a in (comps.means, comps.log_vars):
            h.update(repr(a.shape).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()
    import dask.base
    return dask.base.tokenize(comps.means, comps.log_vars)


def _partial_path(directory, z_sha, comps_id, w, chunk, index, a, b):
    h = hashlib.sha256()
    lw = ("uniform", w) if isinstance(w, float) else ("weights", hashlib.sha256(np.ascontiguousarray(w).tobytes()).hexdigest())
    h.update(repr((z_sha, comps_id, lw, chunk, index, a, b)).encode())
    return os.path.join(directory, f"{RESUME_PREFIX}{index:06d}-{h.hexdigest()[:40]}.npy")


def _load_partial(path, M):
    """The saved partial of one shard: ``(m, s)``, (M,) float64 each."""
    arr = np.load(path, allow_pickle=False)
    if arr.shape != (2, M) or arr.dtype != np.float64:
        raise ValueError(f"resume file {path!r} holds an array of shape {arr.shape} ({arr.dtype}); "
                         f"expected (2, {M}) float64: remove it to recompute the shard")
    return arr[0].copy(), arr[1].copy()


def _shard_partial_saved(path, *args):
    """:func:`_shard_partial`, then its partial saved atomically at ``path`` (a resume file)."""
    m, s = _shard_partial(*args)
    from ...io import _atomic_write
    _atomic_write(path, lambda fh: np.save(fh, np.stack([m, s]), allow_pickle=False))
    return m, s


def _shard_tasks(zd, z, comps, bounds, mblocks, lblocks, w0, log_weights, threads, chunk):
    """The delayed shard partials of one ln q(z) evaluation, in shard order: ``_shard_partial``
    tasks, or inside :func:`_resume_from`, tasks that save their partial, and loads of the
    partials already saved (their shard's components are then not read)."""
    import dask
    directory = _RESUME_DIR.get()
    task = dask.delayed(_shard_partial, pure=True)
    if directory is None:
        return [task(zd, mb, lb, w0 if log_weights is None else log_weights[a:b], i, a, b, threads)
                for i, ((a, b), mb, lb) in enumerate(zip(bounds, mblocks, lblocks))]
    z_sha = hashlib.sha256(np.ascontiguousarray(z).tobytes() + repr(z.shape).encode()).hexdigest()
    cid = _components_identity(comps)
    save = dask.delayed(_shard_partial_saved, pure=True)
    load = dask.delayed(_load_partial, pure=True)
    parts = []
    for i, ((a, b), mb, lb) in enumerate(zip(bounds, mblocks, lblocks)):
        w = w0 if log_weights is None else log_weights[a:b]
        path = _partial_path(directory, z_sha, cid, w, chunk, i, a, b)
        parts.append(load(path, len(z)) if os.path.isfile(path)
                     else save(path, zd, mb, lb, w, i, a, b, threads))
    return parts


def _combine_group(*partials):
    """One node of the combination tree: ``combine_partials`` of consecutive partials, in order."""
    return combine_partials(partials)


def combine_tree(partials, split_every=DEFAULT_SPLIT_EVERY, combine=None):
    """The fixed combination tree over a list of partials (level 0 in shard order).

    Each level replaces consecutive groups of ``split_every`` entries by ``combine(*group)``
    (default: ``combine_partials`` of the group, in order) until one entry is left. ``combine`` may
    build delayed tasks instead of computing (the cluster path); the tree has the same shape.
    Returns the root and the number of levels.
    """
    split_every = _check_split_every(split_every)
    if isinstance(partials, (str, bytes)) or not hasattr(partials, "__iter__"):
        raise TypeError(f"partials must be a list of (m, s) pairs, got {type(partials).__name__}")
    level = list(partials)
    if not level:
        raise ValueError("partials must contain at least one (m, s) pair")
    if combine is not None and not callable(combine):
        raise TypeError(f"combine must be None or a callable, got {type(combine).__name__}")
    combine = _combine_group if combine is None else combine
    depth = 0
    while len(level) > 1:
        level = [combine(*level[j:j + split_every]) for j in range(0, len(level), split_every)]
        depth += 1
    return level[0], depth
