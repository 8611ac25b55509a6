"""Constants, the optional dependency (Dask) and the argument checks of :mod:`refvae.tools.distributed`."""

from __future__ import annotations

import math
import numbers
import os

from ..._validation import check_positive_int


DEFAULT_CHUNK = 65536          #: components per shard (16 MiB of components at L = 16)
DEFAULT_SPLIT_EVERY = 8        #: fan-in of the combination tree
DEFAULT_CONNECT_TIMEOUT = 10.0  #: seconds to wait for a scheduler given by address
DEFAULT_WORKER_TIMEOUT = 60.0   #: seconds without a usable worker (none, or all paused) before giving up
ENCODE_CHUNK = 1024            #: rows encoded at a time (= estimators.encode_all's batch_size)
COMPONENT_FILES = ("means.npy", "log_vars.npy")  #: the files of a directory of components
COMPONENTS_MANIFEST = "components.json"          #: written last by encode_to_shards
COMPONENTS_FORMAT = "refvae-components"

_SCALE_HINT = "install the 'scale' extra: pip install refvae[scale]"


class ClusterError(ConnectionError):
    """The Dask cluster cannot run the computation: no workers (at the start, or all lost
    mid-run), every worker paused for memory, a worker whose refvae, NumPy, Numba or Python differs
    from this machine's (or that cannot import refvae), the scheduler lost mid-run, or a task that
    kept killing its workers. The message names the workers concerned and what to do. A
    ``ConnectionError`` (hence an ``OSError``), so that ``refvae stats`` reports it in one line."""


# =========================================================================== optional dependency

def _require_dask():
    """Import dask, dask.array and distributed, or raise an ImportError naming the extra."""
    try:
        import dask
        import dask.array as da
        import distributed
    except ImportError as exc:
        raise ImportError(f"the cluster path of refvae.tools.distributed needs dask[distributed], which is "
                          f"not installed ({exc}); {_SCALE_HINT}") from None
    return dask, da, distributed


def _is_dask_array(a):
    return hasattr(a, "__dask_graph__") and hasattr(a, "chunks") and hasattr(a, "rechunk")


def _is_path(a):
    return isinstance(a, (str, os.PathLike))


# =========================================================================== argument checks

def _check_chunk(chunk):
    if isinstance(chunk, bool) or not isinstance(chunk, numbers.Integral):
        raise ValueError(f"chunk must be a positive integer (components per shard), got {chunk!r}")
    if chunk <= 0:
        raise ValueError(f"chunk must be a positive integer (components per shard), got {chunk}")
    return int(chunk)


def _check_split_every(split_every):
    if isinstance(split_every, bool) or not isinstance(split_every, numbers.Integral) or split_every < 2:
        raise ValueError(f"split_every must be an integer >= 2 (fan-in of the combination tree), "
                         f"got {split_every!r}")
    return int(split_every)


def _check_cluster_args(client, scheduler, connect_timeout):
    if client is not None and scheduler is not None:
        raise ValueError("pass either client or scheduler, not both")
    if scheduler is not None and not isinstance(scheduler, str):
        raise ValueError(f"scheduler must be an address string such as 'tcp://host:8786', "
                         f"got {type(scheduler).__name__}")
    if scheduler is not None and not scheduler.strip():
        raise ValueError("scheduler must be a non-empty address such as 'tcp://host:8786'")
    if not (isinstance(connect_timeout, numbers.Real) and not isinstance(connect_timeout, bool)
            and math.isfinite(connect_timeout) and connect_timeout > 0):
        raise ValueError(f"connect_timeout must be a positive number of seconds, got {connect_timeout!r}")
    if client is not None:
        _require_dask()
        from distributed import Client
        if not isinstance(client, Client):
            raise ValueError(f"client must be a distributed.Client, got {type(client).__name__}")


def _check_worker_timeout(worker_timeout):
    if not (isinstance(worker_timeout, numbers.Real) and not isinstance(worker_timeout, bool)
            and math.isfinite(worker_timeout) and worker_timeout > 0):
        raise ValueError(f"worker_timeout must be a positive number of seconds, got {worker_timeout!r}")
    return float(worker_timeout)


def _check_threads(threads_per_task):
    if threads_per_task is None:
        return None
    return check_positive_int(threads_per_task, "threads_per_task")


def shard_bounds(N, chunk):
    """``[(a_0, b_0), (a_1, b_1), ...]``: shard i holds components ``a_i <= n < b_i``."""
    N = check_positive_int(N, "N")
    chunk = _check_chunk(chunk)
    return [(a, min(a + chunk, N)) for a in range(0, N, chunk)]
