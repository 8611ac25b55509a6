"""The shard tasks (the kernel's partial sums with global log-weights, in a worker's Numba threads)
and the fixed combination tree over them (:mod:`refvae.tools.distributed`)."""

from __future__ import annotations

import contextlib
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
