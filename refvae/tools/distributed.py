r"""Aggregated-posterior statistics beyond one machine: the streaming kernel sharded over Dask.

What it computes
----------------
The log-density of a diagonal Gaussian mixture with N components at M queries,

.. math::

    f_b = \log \sum_{n=1}^{N} \exp\big(w_n
          + \log \mathcal N(z_b \mid \mu_n, \operatorname{diag} e^{v_n})\big),

with uniform weights ``w_n = -ln N`` for the aggregated posterior q(z) = 1/N sum_n q(z | x_n)
(text eq. 4.44, SPEC section 4 ``aggregated``): :func:`log_qz`, or given log-weights:
:func:`log_mixture`. On top of it, the section-5 estimators of :mod:`refvae.estimators` that need
q(z) -- H[q(z)], CE[q(z)||p], KL[q(z)||p], I_q(x; z), E_x KL[q(z|x)||p] (:func:`aggregated_stats`)
and the holes KL[p||q(z)], P_p[q(z)/p(z) < tau] (:func:`holes`) -- with the same draws and the same
formulas as the single-machine functions, so that only the evaluation of ln q(z) is distributed.

Where it runs
-------------
- ``client=`` a ``distributed.Client``, or ``scheduler=`` an address (``"tcp://host:8786"``; this
  module connects with a timeout of ``connect_timeout`` seconds and closes the connection at the
  end): the **cluster path**.
- Neither: the **single-machine path**, :func:`refvae.kernels.mixture.mixture_log_prob` on the whole set of
  components (Dask is not imported; ``chunk`` is validated but not used).

The cluster path
----------------
*Components* (``means``, ``log_vars``, (N, L)) become Dask arrays chunked over components,
``chunks = (chunk, L)`` (:func:`components_to_dask`): shard i holds components
``[i chunk, min((i + 1) chunk, N))``. They may be

- NumPy arrays: sliced on the client and embedded in the task graph (``dask.array.from_array``),
  so each shard is shipped once per call, to the worker that evaluates it, and stays recoverable
  from the scheduler if that worker dies (the scheduler holds a copy: Dask's "large graph" warning
  is silenced for this reason). For components larger than the client's memory, or evaluated
  against several query batches, pass files or a Dask array persisted on the workers;
- Dask arrays (with known shape): rechunked to ``(chunk, L)``;
- paths: a ``.npy`` file for each (``np.load(..., allow_pickle=False, mmap_mode="r")``), an
  ``.npz`` file with keys ``means`` and ``log_vars`` (``log_vars=None``), or a directory holding
  ``means.npy`` and ``log_vars.npy`` (as written by :func:`encode_to_shards`; ``log_vars=None``).
  Each shard task reads only its own rows on its worker (a memory map of the ``.npy`` file; for an
  ``.npz`` member a forward read of the ZIP stream, O(shard) memory), so the files must be visible
  to the workers at the same path (a shared file system). The client reads only the headers
  (and, for a directory with the ``components.json`` manifest that :func:`encode_to_shards`
  writes last, checks N, L, dtype, sizes and the files' SHA-256 against it: a partial or mixed
  set is a ``ValueError``). Every read of rows re-checks the file's shape, dtype and size on
  disk against those of the header first read: a file swapped in meanwhile is a ``ValueError``
  "component file X changed: expected ..., found ...", never silently fewer rows.

*Queries* z (M, L) are scattered once to every worker (``client.scatter(z, broadcast=True)``).

*Shard task*: ``(m_i, s_i) = mixture_partial(z, means_i, log_vars_i, log_weights_i)`` with the
GLOBAL log-weights of the shard's components (``-ln N`` each for q(z)), so that
``sum_{n in shard i} exp(t_bn) = exp(m_i) s_i``. Each task uses ``threads_per_task`` Numba
threads (default 1: the cluster's parallelism is its workers times their threads).

*Combination*: a fixed tree over the shard index. Level 0 is the list of partials in shard order;
each next level combines consecutive groups of ``split_every`` entries with
:func:`refvae.kernels.mixture.combine_partials` (in the group's order), until one pair is left; the client
returns ``finalize_partials(m, s) = m + log s``. The tree's shape is a function of
``(N, chunk, split_every)`` only.

Memory: a shard task holds z (M L), its shard (chunk L, plus the kernel's tiled copy) and its
partial (2 M); a combine task holds <= ``split_every`` partials. Nothing of size M N is formed.
The client holds z and the final (m, s); with NumPy components also the components themselves.
:func:`aggregated_stats` with ``n_queries=M`` and components in files or Dask arrays holds
O(M L + n) on the client (n shards): the M drawn rows and a few floats per shard (next but one
section), never an (N, L) array. With ``n_queries=None`` it draws z_ns ~ q(z|x_n) for every n, so
it reads the components onto the client (and holds the N S draws).

Determinism
-----------
The value of every task is a deterministic function of its inputs (the kernel's forward pass has
no atomics or shared accumulators and does not depend on its thread count; ``combine_partials``
is elementwise NumPy in a fixed order), and which inputs each task gets is fixed by the graph,
not by the scheduler: which worker runs a task, in which order, how often (a task lost with a
worker is recomputed from the same inputs) does not change any value. Hence **for a given
``(chunk, split_every)`` the result is bit-identical for any number of workers, threads per
worker, threads per task, and on repeated runs** -- on a homogeneous cluster (the same refvae,
NumPy and Numba versions on the same CPU family everywhere: NumPy's ``exp`` and ``log`` may use
different SIMD code on different CPUs). The default ``chunk`` is a constant, never derived from the
number of workers. A different ``chunk`` changes the rounding (not the value beyond the bound
below). With one shard (``chunk >= N``) the result is bit-identical to
``mixture_log_prob(z, means, log_vars, log_weights)``, i.e. to the single-machine path.

Error bound (sharded vs exact)
------------------------------
The kernel gives each shard's log-sum ``f_i`` within ``c u (|f_i| + S_i)`` (c <= 26 proven; the
tests assert c <= 4, ``tolerance("mixture_kernel_c").c``, and use it here; S_i the shard's
responsibility-weighted magnitude
of the summands). With the shard shares ``rho_i = exp(f_i - f)`` (they sum to one),
``sum_i rho_i S_i = S`` and ``sum_i rho_i |f_i| <= |f| + sum_i rho_i |ln rho_i| <= |f| + ln n``
(n shards), so the partials carry at most ``c u (|f| + S + ln n)``. The kernel's skipped terms
(t - m_i < -(ln K_i + 40)) are at most e^-40 of each shard's own sum, hence at most e^-40 ~ 0.04 u
of the total whatever the sharding. Each combine level adds at most ``(k + 3 + ln k) u`` relative to
the sum (k = ``split_every``: one ``exp`` <= 1 u, the product 1 u, the rounding of ``m_i - m`` in
the exponent, whose weighted mean is <= (1 + ln k) u, and a recursive sum of k positive terms,
(k - 1) u), over ``D = ceil(log_k n)`` levels. In total

    |f_sharded - f| <= c u (|f| + S + ln n) + D (k + 3 + ln k) u + 2 u,

about 5e-14 for |f| + S ~ 100, n = 2000, k = 8; see ``tests/test_distributed.py``.

Drawn rows and exact sums (``aggregated_stats(..., n_queries=M)``)
------------------------------------------------------------------
With components in files or Dask arrays and a cluster, the client draws
``idx = rng.integers(0, N, size=M)`` and then ``eps = rng.standard_normal((M, L))`` (the same calls
in the same order as with NumPy components), and one task per shard (the shards above) returns

- the shard's rows among the distinct drawn components (each task is sent only those row numbers),
  as float64 copies: the client assembles ``means[idx]``, ``log_vars[idx]`` (M, L) bit for bit,
  so z, ln q(z), ln p(z) and every Monte Carlo term are those of NumPy components, to the bit;
- the exact sums over the shard's components of ``H[q(z|x_n)]`` (``gaussian.entropy``) and, for
  a prior with a closed form (``estimators._closed_form_kl``; the standard prior: ``gaussian.kl``),
  ``KL[q(z|x_n) || p]``, each as a few floats
  t_1, t_2, ... with t_1 the ``math.fsum`` of the shard's values and each next t_k the ``fsum`` of
  what is left, until nothing is (so t_1 + t_2 + ... is the shard's sum exactly).

The client adds all shards' terms with one ``math.fsum``: the **correctly rounded** sum of the N
per-component values, then divides by N (an exact ``Estimate(sum / N, 0.0, N)``, as before). That
value does not depend on the chunk, the number of workers or the order in which anything runs; the
per-component values are the same bits whichever block of rows they are computed in (elementwise
operations and a sum over the L entries of each row). With NumPy components (or the data x) the
value stays ``np.mean`` of the N values (bit-identical to before), i.e. NumPy's pairwise sum, whose
rounding depth is ``d <= 24 + max(0, ceil(log2(N / 128)))`` (blocks of <= 128 terms in 8
accumulators, then halving), so the two agree within

    |fsum / N - np.mean| <= (d + 4) u mean_n |h_n|

(``d u sum_n |h_n|`` for the pairwise sum, ``u`` for the correctly rounded one, one rounding per
division, plus second-order terms): 5.0e-15 mean|h| at N = 10^7 (d = 41). No tolerance of
``refvae.tolerances`` is involved: this is the a-priori bound the tests check.

Each shard is read twice (here, and by its ln q(z) task, after the queries exist); for a Dask
array whose blocks are expensive to compute, pass it persisted on the workers.

Failure modes
-------------
Bad input is a ``ValueError`` naming the argument (``z``, ``means``, ``log_vars``,
``log_weights``, ``chunk``, ``split_every``), raised on the client before anything is sent;
non-finite component values in files or Dask arrays are found on the workers and reported as a
``ValueError`` naming the shard and its component range. An unreachable ``scheduler`` is a
``ConnectionError`` naming the address (after ``connect_timeout`` seconds); a malformed address is
a ``ValueError``. Nothing is written in either case. A missing Dask gives an ``ImportError`` that
names the ``scale`` extra (``pip install refvae[scale]``).

References
----------
SPEC.md sections 4 (``aggregated``) and 5; :mod:`refvae.kernels.mixture` (the kernel, its sharding API and
its error bound); :mod:`refvae.estimators` (the single-machine estimators);
``validation/SCALING.md`` (sizes, bytes moved and worker counts for N = 10^7).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import json
import math
import numbers
import os
import sys
import threading
import warnings
import zipfile

import numpy as np

from .. import gaussian
from .._validation import as_float_array, check_positive_int, check_rng
from ..estimators import (Estimate, _aggregated_estimates, _closed_form_kl,
                          _draw_posterior, _exact, _params, _prior_hole_estimates, encode_all)
from ..kernels.mixture import combine_partials, finalize_partials, mixture_log_prob, mixture_partial

__all__ = ["log_qz", "log_mixture", "aggregated_stats", "holes", "encode_to_shards",
           "components_to_dask", "shard_bounds", "combine_tree", "load_array",
           "DEFAULT_CHUNK", "DEFAULT_SPLIT_EVERY", "DEFAULT_CONNECT_TIMEOUT", "Estimate"]

DEFAULT_CHUNK = 65536          #: components per shard (16 MiB of components at L = 16)
DEFAULT_SPLIT_EVERY = 8        #: fan-in of the combination tree
DEFAULT_CONNECT_TIMEOUT = 10.0  #: seconds to wait for a scheduler given by address
ENCODE_CHUNK = 1024            #: rows encoded at a time (= estimators.encode_all's batch_size)
COMPONENT_FILES = ("means.npy", "log_vars.npy")  #: the files of a directory of components
COMPONENTS_MANIFEST = "components.json"          #: written last by encode_to_shards
COMPONENTS_FORMAT = "refvae-components"

_SCALE_HINT = "install the 'scale' extra: pip install refvae[scale]"


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


def _check_threads(threads_per_task):
    if threads_per_task is None:
        return None
    return check_positive_int(threads_per_task, "threads_per_task")


def shard_bounds(N, chunk):
    """``[(a_0, b_0), (a_1, b_1), ...]``: shard i holds components ``a_i <= n < b_i``."""
    N = check_positive_int(N, "N")
    chunk = _check_chunk(chunk)
    return [(a, min(a + chunk, N)) for a in range(0, N, chunk)]


# =========================================================================== arrays on disk

def _npz_member_header(fh):
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fh)
    raise ValueError(f"unsupported .npy format version {version}")


def _npz_member(zf, path, key):
    name = key + ".npy"
    if name not in zf.namelist():
        have = sorted(n[:-4] for n in zf.namelist() if n.endswith(".npy"))
        raise ValueError(f"{path}: no array {key!r} in the archive (it holds {have}); an .npz of "
                         f"components needs the keys 'means' and 'log_vars'")
    return name


class _FileArray:
    """A 2-D array in a ``.npy`` file or an ``.npz`` member; reads only the rows asked for."""

    def __init__(self, path, key, name):
        self.path = os.fspath(path)
        self.key = key
        self.name = name
        if not os.path.isfile(self.path):
            raise ValueError(f"{name}: file {self.path!r} does not exist")
        try:
            if key is None:
                arr = np.load(self.path, allow_pickle=False, mmap_mode="r")
                if not isinstance(arr, np.ndarray):
                    raise ValueError("not a .npy file")
                shape, dtype = arr.shape, arr.dtype
                del arr
            else:
                with zipfile.ZipFile(self.path) as zf:
                    with zf.open(_npz_member(zf, self.path, key)) as fh:
                        shape, _, dtype = _npz_member_header(fh)
            self.size = os.path.getsize(self.path)  # re-checked whenever rows are read
        except ValueError as exc:
            raise ValueError(f"{name}: cannot read {self.path!r} ({exc})") from None
        except (OSError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{name}: cannot read {self.path!r} ({exc})") from None
        if dtype.hasobject or not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
            raise ValueError(f"{name}: {self.path!r}{'' if key is None else f'[{key!r}]'} has dtype "
                             f"{dtype}; expected real numbers")
        if len(shape) != 2:
            raise ValueError(f"{name} must have 2 dimension(s), got shape {tuple(shape)} in {self.path!r}")
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype

    def __repr__(self):
        return f"_FileArray({self.path!r}, key={self.key!r}, shape={self.shape})"

    def rows(self, a, b):
        """Rows a..b-1 as a float64 C-contiguous array (memory O((b - a) L)); a file whose shape,
        dtype or size on disk changed since the header was read is a ``ValueError``."""
        return _read_rows(self.path, self.key, a, b, self.shape, self.name, self.dtype.str, self.size)

    def full(self):
        return self.rows(0, self.shape[0])


def _read_rows(path, key, a, b, shape, name, dtype=None, size=None):
    """Rows a..b-1 of the array in ``path`` (``key`` None: a .npy file; else an .npz member).

    ``shape`` (and, when given, ``dtype``, a dtype string, and ``size``, the file's bytes on disk)
    are what the header said when the file was first opened: a file replaced since then (fewer
    rows, another dtype, another size) is a ``ValueError`` "<name>: component file <path> changed:
    expected ..., found ...", never fewer rows.
    """
    where = f"{name}: component file {path!r}" + ("" if key is None else f"[{key!r}]")
    shape = tuple(int(s) for s in shape)

    def check_size():
        if size is None:
            return
        try:
            found = os.path.getsize(path)
        except OSError as exc:
            raise ValueError(f"{where} changed: it cannot be read any more ({exc})") from None
        if found != size:
            raise ValueError(f"{where} changed: expected {size} bytes on disk (shape {shape}), "
                             f"found {found}")

    def check_header(fshape, fdtype):
        if tuple(fshape) != shape or (dtype is not None and fdtype != np.dtype(dtype)):
            raise ValueError(f"{where} changed: expected shape {shape}"
                             + ("" if dtype is None else f" ({np.dtype(dtype)})")
                             + f", found {tuple(fshape)}" + ("" if dtype is None else f" ({fdtype})"))

    if key is None:
        try:
            arr = np.load(path, allow_pickle=False, mmap_mode="r")
        except (OSError, ValueError) as exc:
            check_size()  # a shorter file: say so in bytes
            raise ValueError(f"{where} changed: expected a .npy file of shape {shape}, but it cannot "
                             f"be read ({exc})") from None
        if not isinstance(arr, np.ndarray):
            raise ValueError(f"{where} changed: expected a .npy file of shape {shape}, found an archive")
        check_header(arr.shape, arr.dtype)
        check_size()
        out = np.array(arr[a:b], dtype=np.float64, order="C")
        del arr
        if out.shape[0] != b - a:
            raise ValueError(f"{where} changed: expected rows {a}..{b - 1}, found {out.shape[0]} rows")
        return out
    try:
        with zipfile.ZipFile(path) as zf:
            with zf.open(_npz_member(zf, path, key)) as fh:
                fshape, fortran, fdtype = _npz_member_header(fh)
                check_header(fshape, fdtype)
                check_size()
                if fortran:  # column-major on disk: rows are not contiguous; read the member once
                    data = np.frombuffer(fh.read(), dtype=fdtype).reshape(fshape, order="F")
                    return np.array(data[a:b], dtype=np.float64, order="C")
                row = int(fshape[1]) * fdtype.itemsize
                fh.seek(a * row, 1)  # forward read of the stream: O(1) memory
                buf = fh.read((b - a) * row)
                if len(buf) != (b - a) * row:
                    raise ValueError(f"{where} is truncated")
                return np.array(np.frombuffer(buf, dtype=fdtype).reshape(b - a, fshape[1]),
                                dtype=np.float64, order="C")
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        check_size()
        raise ValueError(f"{where} changed: it cannot be read any more ({exc})") from None


def load_array(path, key=None, name="data"):
    """Load a 2-D array from a ``.npy`` file (memory-mapped, ``allow_pickle=False``) or an ``.npz``
    file (``key``, else the member named ``x``, else its only member); returns float64."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name}: path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{name}: {path!r} is a directory, not a .npy or .npz file")
    if not os.path.isfile(path):
        raise ValueError(f"{name}: file {path!r} does not exist")
    if path.endswith(".npz"):
        try:
            with zipfile.ZipFile(path) as zf:
                keys = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
        except (OSError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{name}: cannot read {path!r} ({exc})") from None
        if key is None:
            if "x" in keys:
                key = "x"
            elif len(keys) == 1:
                key = keys[0]
            else:
                raise ValueError(f"{name}: {path!r} holds {sorted(keys)}; say which array to use "
                                 f"(an array named 'x' is used by default)")
        fa = _FileArray(path, key, name)
    else:
        fa = _FileArray(path, None, name)
    return as_float_array(fa.full(), name, ndim=2)


# =========================================================================== components

class _Components:
    """means and log_vars (N, L) in one of three forms: NumPy, Dask, or files."""

    def __init__(self, means, log_vars):
        if _is_path(means):
            if log_vars is not None and not _is_path(log_vars):
                raise ValueError("means is a path, so log_vars must be a path too (or None for an "
                                 ".npz file or a directory holding means.npy and log_vars.npy)")
            p = os.fspath(means)
            if log_vars is None:
                if os.path.isdir(p):
                    self.means = _FileArray(os.path.join(p, COMPONENT_FILES[0]), None, "means")
                    self.log_vars = _FileArray(os.path.join(p, COMPONENT_FILES[1]), None, "log_vars")
                    _check_components_manifest(p, self.means, self.log_vars)
                elif p.endswith(".npz"):
                    self.means = _FileArray(p, "means", "means")
                    self.log_vars = _FileArray(p, "log_vars", "log_vars")
                else:
                    raise ValueError(f"means: {p!r} is neither an .npz file with keys 'means' and "
                                     f"'log_vars' nor a directory with means.npy and log_vars.npy; "
                                     f"for a .npy file pass log_vars as well")
            else:
                self.means = _FileArray(p, None, "means")
                self.log_vars = _FileArray(log_vars, None, "log_vars")
            self.kind = "file"
        elif _is_dask_array(means) or _is_dask_array(log_vars):
            if not (_is_dask_array(means) and _is_dask_array(log_vars)):
                raise ValueError("means and log_vars must both be Dask arrays or neither")
            for a, nm in ((means, "means"), (log_vars, "log_vars")):
                if a.ndim != 2:
                    raise ValueError(f"{nm} must have 2 dimension(s), got shape {a.shape}")
                if any(isinstance(s, float) and math.isnan(s) for s in a.shape):
                    raise ValueError(f"{nm} is a Dask array of unknown shape {a.shape}; call "
                                     f"compute_chunk_sizes() first")
            self.means, self.log_vars = means, log_vars
            self.kind = "dask"
        else:
            if log_vars is None:
                raise ValueError("log_vars is required with array means")
            self.means = as_float_array(means, "means", ndim=2)
            self.log_vars = as_float_array(log_vars, "log_vars", ndim=2)
            self.kind = "numpy"
        shape = tuple(int(s) for s in self.means.shape)
        if shape[0] == 0:
            raise ValueError(f"means must not be empty: N = 0 components (shape {shape})")
        if shape[1] == 0:
            raise ValueError(f"means must have L >= 1 columns, got shape {shape}")
        if tuple(int(s) for s in self.log_vars.shape) != shape:
            raise ValueError(f"log_vars must have the shape of means {shape}, "
                             f"got {tuple(self.log_vars.shape)}")
        self.N, self.L = shape

    def to_numpy(self):
        """(means, log_vars) as checked float64 arrays on this machine (memory O(N L))."""
        if self.kind == "numpy":
            return self.means, self.log_vars
        if self.kind == "file":
            return tuple(as_float_array(fa.full(), f"{fa.name} (in {fa.path!r})", shape=(self.N, self.L))
                         for fa in (self.means, self.log_vars))
        return (as_float_array(np.asarray(self.means.compute()), "means", shape=(self.N, self.L)),
                as_float_array(np.asarray(self.log_vars.compute()), "log_vars", shape=(self.N, self.L)))

    def to_dask(self, chunk):
        """(means, log_vars) as Dask arrays with chunks (chunk, L)."""
        _, da, _ = _require_dask()
        import dask
        bounds = shard_bounds(self.N, chunk)
        out = []
        for a in (self.means, self.log_vars):
            if self.kind == "numpy":
                out.append(da.from_array(a, chunks=(chunk, self.L), name=False))
            elif self.kind == "dask":
                out.append(a.astype(np.float64).rechunk((chunk, self.L)))
            else:
                blocks = [da.from_delayed(dask.delayed(_read_rows, pure=True)(a.path, a.key, lo, hi, a.shape,
                                                                              a.name, a.dtype.str, a.size),
                                          shape=(hi - lo, self.L), dtype=np.float64)
                          for lo, hi in bounds]
                out.append(da.concatenate(blocks, axis=0) if len(blocks) > 1 else blocks[0])
        return out[0], out[1]


def components_to_dask(means, log_vars=None, chunk=DEFAULT_CHUNK):
    """The components as Dask arrays chunked over components, ``chunks = (chunk, L)``.

    ``means``, ``log_vars``: NumPy arrays, Dask arrays, or paths (see the module docstring).
    Nothing is read but file headers.
    """
    return _Components(means, log_vars).to_dask(_check_chunk(chunk))


# =========================================================================== shard tasks

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


# =========================================================================== the cluster

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


# =========================================================================== drawn rows and exact sums

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


def _drawn_rows_and_sums_on(client, comps, idx, kl_rows, chunk, progress):
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
    # the closed form (it holds the prior and its parameters) is sent once to every worker
    kf = None if kl_rows is None else client.scatter(kl_rows, broadcast=True, hash=False)
    parts = [task(mb, lb, uniq[cuts[i]:cuts[i + 1]] - a, kf, i, a, b)
             for i, ((a, b), mb, lb) in enumerate(zip(bounds, mblocks, lblocks))]
    try:
        results = _compute_on(client, parts, progress,
                              f"q(z|x): {len(uniq)} drawn components and the exact sums over "
                              f"{comps.N} components in {len(bounds)} shards of <= {chunk}")
    finally:
        del kf
    mu_u = np.concatenate([r[0] for r in results])
    lv_u = np.concatenate([r[1] for r in results])
    if mu_u.shape[0] != len(uniq):  # pragma: no cover - a shard returned the wrong rows
        raise RuntimeError(f"the shards returned {mu_u.shape[0]} drawn rows, expected {len(uniq)}")
    ent_sum = _combine_exact_sums([r[2] for r in results])
    kl_sum = None if kl_rows is None else _combine_exact_sums([r[3] for r in results])
    del results
    return mu_u[inverse], lv_u[inverse], ent_sum, kl_sum


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


# =========================================================================== encoding

def _encoder_of(model, params):
    if hasattr(model, "encoder") and hasattr(model, "params"):
        return model.encoder, (model.params if params is None else params)
    raise ValueError(f"model must be a refvae VAE (with encoder and params), got {type(model).__name__}")


def encode_to_shards(model, x, chunk=ENCODE_CHUNK, out_dir=None, *, params=None):
    """Encode a data set chunk by chunk with the model's own encoder: the components of q(z).

    ``x``: (N, D) array, or a path to a ``.npy`` file (memory-mapped: rows are read ``chunk`` at a
    time). Returns ``(means, log_vars)``, each (N, L): arrays, or with ``out_dir`` the paths of
    ``out_dir/means.npy`` and ``out_dir/log_vars.npy``, written chunk by chunk (memory O(chunk))
    through :func:`refvae.io._atomic_write` (temporary files, fsynced, given the permissions of a
    normally created file, 0o666 less the umask, so workers running as another user can read them,
    and moved into place only when complete: a crash leaves no half-written file under either
    name). Then ``out_dir/components.json`` is written LAST (N, L, dtype, each file's size and
    SHA-256); an existing one is removed before either file is replaced, so a present manifest
    means a complete set, and readers of the directory (:class:`_Components`) check it. The
    paths, or ``out_dir`` itself, can be passed to :func:`log_qz` and :func:`aggregated_stats` as
    the components.

    With the default ``chunk`` (1024) the rows are encoded in the same batches as
    :func:`refvae.estimators.encode_all`, so the arrays are bit-identical to its output.
    """
    encoder, p = _encoder_of(model, params)
    chunk = _check_chunk(chunk)
    if _is_path(x):
        xs = np.load(os.fspath(x), allow_pickle=False, mmap_mode="r")
        if xs.ndim != 2 or xs.shape[1] != model.x_dim:
            raise ValueError(f"x must have shape (N, {model.x_dim}), got {xs.shape} in {os.fspath(x)!r}")
    else:
        xs = as_float_array(x, "x", shape=(None, model.x_dim))
    N, L = xs.shape[0], model.latent_dim
    if N == 0:
        raise ValueError("x must not be empty: N = 0 rows")

    def blocks():
        for n0 in range(0, N, chunk):
            xb = as_float_array(xs[n0:n0 + chunk], "x", shape=(None, model.x_dim))
            mu, lv, _ = encoder.forward(p, xb)
            yield n0, mu, lv

    if out_dir is None:
        means = np.empty((N, L))
        log_vars = np.empty((N, L))
        for n0, mu, lv in blocks():
            means[n0:n0 + len(mu)] = mu
            log_vars[n0:n0 + len(mu)] = lv
        return means, log_vars
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    finals = [os.path.join(out_dir, COMPONENT_FILES[0]), os.path.join(out_dir, COMPONENT_FILES[1])]
    manifest_path = os.path.join(out_dir, COMPONENTS_MANIFEST)
    from ..io import _atomic_write, _atomic_write_bytes
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f8")), "fortran_order": False,
              "shape": (N, L)}
    files = {}

    def write_both(fm, fl):
        hm, hl = _HashingWriter(fm), _HashingWriter(fl)
        for h in (hm, hl):
            np.lib.format.write_array_header_1_0(h, header)
        for _, mu, lv in blocks():
            hm.write(np.ascontiguousarray(mu, dtype="<f8").tobytes())
            hl.write(np.ascontiguousarray(lv, dtype="<f8").tobytes())
        files[COMPONENT_FILES[0]], files[COMPONENT_FILES[1]] = hm.summary(), hl.summary()
        # everything is encoded: the old set stops being described before either file is replaced
        with contextlib.suppress(FileNotFoundError):
            os.unlink(manifest_path)

    # log_vars.npy is replaced first (inner), then means.npy; each fsynced, umask permissions
    _atomic_write(finals[0], lambda fm: _atomic_write(finals[1], lambda fl: write_both(fm, fl)))
    manifest = {"format": COMPONENTS_FORMAT, "format_version": 1, "N": int(N), "L": int(L),
                "dtype": "float64", "files": files,
                "written_by": "refvae.tools.distributed.encode_to_shards"}
    _atomic_write_bytes(manifest_path, (json.dumps(manifest, indent=1) + "\n").encode("utf-8"))
    return finals[0], finals[1]


class _HashingWriter:
    """A binary file wrapper that counts and SHA-256-hashes what is written through it."""

    def __init__(self, fh):
        self.fh, self.sha, self.bytes = fh, hashlib.sha256(), 0

    def write(self, data):
        self.sha.update(data)
        self.bytes += len(data)
        return self.fh.write(data)

    def summary(self):
        return {"bytes": self.bytes, "sha256": self.sha.hexdigest()}


def _file_sha256(path):
    from ..io import file_sha256
    return file_sha256(path)


def _check_components_manifest(directory, means, log_vars):
    """Check ``directory/components.json`` (when present) against the two component files.

    The manifest is written last by :func:`encode_to_shards`, after both files are in place, and
    removed before either is replaced; when present it must agree with the files: N, L, dtype,
    each file's size and SHA-256 (read here in 1 MiB blocks). Otherwise a ``ValueError`` names the
    manifest and what differs (an incomplete or mixed set of components). Without a manifest
    (files written otherwise) nothing can be checked.
    """
    path = os.path.join(directory, COMPONENTS_MANIFEST)
    if not os.path.isfile(path):
        return
    try:
        with open(path, "rb") as fh:
            m = json.loads(fh.read().decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"components manifest {path!r} is malformed ({exc})") from None
    expected = {"format": COMPONENTS_FORMAT, "format_version": 1, "N": means.shape[0],
                "L": means.shape[1], "dtype": "float64"}
    if not isinstance(m, dict) or not isinstance(m.get("files"), dict):
        raise ValueError(f"components manifest {path!r} must be an object with 'files'")
    for k, v in expected.items():
        if m.get(k) != v or isinstance(m.get(k), bool):
            raise ValueError(f"components manifest {path!r}: {k} is {m.get(k)!r:.60}, but the files "
                             f"hold {v!r} (an incomplete or mixed set of components)")
    for fa, fname in ((means, COMPONENT_FILES[0]), (log_vars, COMPONENT_FILES[1])):
        if fa.dtype != np.dtype("<f8"):
            raise ValueError(f"components manifest {path!r}: {fname} has dtype {fa.dtype}, the "
                             f"manifest says float64")
        entry = m["files"].get(fname)
        if not isinstance(entry, dict):
            raise ValueError(f"components manifest {path!r} does not list {fname}")
        if entry.get("bytes") != fa.size:
            raise ValueError(f"components manifest {path!r}: {fname} has {fa.size} bytes, the "
                             f"manifest says {entry.get('bytes')!r:.40} (an incomplete or mixed set "
                             f"of components)")
        if entry.get("sha256") != _file_sha256(fa.path):
            raise ValueError(f"components manifest {path!r}: {fname} does not match its SHA-256 "
                             f"(an incomplete or mixed set of components, or a changed file)")


# =========================================================================== estimators

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


def _common_checks(chunk, split_every, threads_per_task, client, scheduler, connect_timeout):
    chunk = _check_chunk(chunk)
    split_every = _check_split_every(split_every)
    threads_per_task = _check_threads(threads_per_task)
    _check_cluster_args(client, scheduler, connect_timeout)
    return chunk, split_every, threads_per_task


@contextlib.contextmanager
def _components_on_cluster(model, x_or_components, params, client, scheduler, connect_timeout):
    """``(p, comps, c)``: the parameters, the components (a _Components; data x is encoded with
    ``encode_all``, as the single-machine estimators do) and the client (None: this machine,
    else closed at the end if made here from ``scheduler``)."""
    p = _params(model, params)
    kind, obj = _data_or_components(model, x_or_components)
    with _cluster(client, scheduler, connect_timeout) as c:
        yield p, (_Components(*encode_all(model, obj, p)) if kind == "x" else obj), c


def aggregated_stats(model, x_or_components, rng, n_samples=1, *, params=None, n_queries=None,
                     client=None, scheduler=None, chunk=DEFAULT_CHUNK,
                     split_every=DEFAULT_SPLIT_EVERY, threads_per_task=1, progress=False,
                     connect_timeout=DEFAULT_CONNECT_TIMEOUT):
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
    chunk, split_every, threads_per_task = _common_checks(chunk, split_every, threads_per_task, client,
                                                          scheduler, connect_timeout)
    with _components_on_cluster(model, x_or_components, params, client, scheduler,
                                connect_timeout) as (p, comps, c):
        if M is not None and c is not None and comps.kind != "numpy":
            # components in files or Dask arrays: the same draws, but only the M drawn rows and
            # per-shard exact sums come to this machine (module docstring, "Drawn rows and exact sums")
            draws = _queries_on_cluster(c, model, p, comps, rng, M, chunk, progress)
        else:
            draws, comps = _draws_here(model, p, comps, rng, S, M, here=c is None)
        log_qz = _LogQz(comps, c, chunk, split_every, threads_per_task, progress)
        return _aggregated_estimates(model, p, *draws[:4], log_qz, *draws[4:])


def _closed_form_kl_rows(model, p, L):
    """A picklable ``(mu, lv) -> KL[q(z|x_n)||p]`` per row for the shard tasks when the prior has a
    closed form (:func:`refvae.estimators._closed_form_kl`, tried on one row), else None."""
    probe = np.zeros((1, L))
    if _closed_form_kl(model.prior, p, probe, probe) is None:
        return None
    return functools.partial(_closed_form_kl, model.prior, p)


def _queries_on_cluster(client, model, p, comps, rng, M, chunk, progress):
    """M draws from q(z) (``idx = rng.integers(0, N, M)``, then ``eps``) with the drawn rows and the
    exact sums of H[q(z|x_n)] (and of the closed-form KL) computed by the shards:
    ``(z, mu_q, lv_q, ent_q, h_cond, avg_kl)`` for :func:`refvae.estimators._aggregated_estimates`."""
    N, L = comps.N, comps.L
    idx = rng.integers(0, N, size=M)
    eps = rng.standard_normal((M, L))
    kl_rows = _closed_form_kl_rows(model, p, L)
    mu_q, lv_q, ent_sum, kl_sum = _drawn_rows_and_sums_on(client, comps, idx, kl_rows, chunk, progress)
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
          threads_per_task=1, progress=False, connect_timeout=DEFAULT_CONNECT_TIMEOUT):
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
    chunk, split_every, threads_per_task = _common_checks(chunk, split_every, threads_per_task, client,
                                                          scheduler, connect_timeout)
    with _components_on_cluster(model, x_or_components, params, client, scheduler,
                                connect_timeout) as (p, comps, c):
        log_qz = _LogQz(comps, c, chunk, split_every, threads_per_task, progress)
        return _prior_hole_estimates(model, p, rng, M, taus, log_qz)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("refvae.tools.distributed is a library; the command is `refvae stats`")
