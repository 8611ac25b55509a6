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
  end): the **cluster path**. Before computing, it waits up to ``worker_timeout`` seconds for a
  running worker and checks every worker's refvae, NumPy, Numba and Python against this machine's
  (section "Failure modes").
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
  uncompressed ``.npz`` file with keys ``means`` and ``log_vars`` (``log_vars=None``; a compressed
  one is refused with the reason: every shard would decompress it from its start), a zarr group or
  an HDF5 file with arrays ``means`` and ``log_vars``, or a directory holding ``means.npy`` and
  ``log_vars.npy`` (as written by :func:`encode_to_shards`; ``log_vars=None``). Each shard task
  reads only its own rows on its worker (a memory map of the ``.npy`` file or of the stored
  ``.npz`` member; a chunk-aligned slice of zarr/HDF5), so the files must be visible to the
  workers (a shared file system); paths are made absolute on the client and each worker checks
  the content fingerprint before reading. The client reads only the headers
  (and, for a directory with the ``components.json`` manifest that :func:`encode_to_shards`
  writes last, checks N, L, dtype, sizes and the files' SHA-256 against it: a partial or mixed
  set is a ``ValueError``). Every read of rows re-checks the file's shape, dtype and size on
  disk against those of the header first read: a file swapped in meanwhile is a ``ValueError``
  "component file X changed: expected ..., found ...", never silently fewer rows.

*Queries* z (M, L) travel in the task graph as one key of their own (a fresh name per call): the
scheduler keeps them, sends them to the first worker that needs them (the others fetch them from
it) and can send them again if every worker holding them dies -- a ``client.scatter``-ed copy would
be lost with its workers (``FutureCancelledError ... already forgotten``). Cost measured at
M = 10^5, L = 16 (12.8 MB) on a local 2-worker cluster: 0.8-1.9 s per call against 0.8-0.9 s
scattered, the scheduler's memory +13 MiB while the call runs. The prior's closed-form KL of
:func:`aggregated_stats` travels the same way.

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
``ConnectionError`` naming the address (after ``connect_timeout`` seconds); a malformed address, or
an ``http://`` one, is a ``ValueError``. A ``tcp://`` address that accepts the connection but sends
no Dask handshake within ``connect_timeout`` (the dashboard's HTTP port, any other service) is a
``ConnectionError`` saying so (``distributed.Client`` alone waited for minutes). A missing Dask gives
an ``ImportError`` that names the ``scale`` extra (``pip install refvae[scale]``).

The cluster itself (:class:`ClusterError`, a ``ConnectionError``; one line, naming the workers):

- no running worker within ``worker_timeout`` seconds (default 60) of connecting; the message
  says whether none joined or which are paused, with their memory and limit;
- a worker whose refvae (version and a SHA-256 of its source files), NumPy, Numba or Python differs
  from this machine's, or that cannot import refvae: checked when connecting and for every worker
  that joins later (the probe is pickled by value, so it runs where refvae is missing);
- during a computation, which is watched once a second from the scheduler's task and worker
  states: no worker left (all lost) or every worker paused for memory, for ``worker_timeout``
  seconds without progress; workers running but no task running while tasks are pending (the
  scheduler cannot run them), likewise; the scheduler lost (the connection closed); a task whose
  worker died ``distributed.scheduler.allowed-failures`` times (``KilledWorker``).

A worker lost mid-run is otherwise harmless: its tasks are recomputed from the graph (same bits).
With ``progress``, the progress goes to stderr, redrawn in place on a terminal and otherwise (a log
file) at most one line per 10 s and per tenth of the elapsed time; a line says what the workers are
doing when no task has finished for ``worker_timeout`` seconds. Nothing is written in any of these
cases.

References
----------
SPEC.md sections 4 (``aggregated``) and 5; :mod:`refvae.kernels.mixture` (the kernel, its sharding API and
its error bound); :mod:`refvae.estimators` (the single-machine estimators);
``validation/SCALING.md`` (sizes, bytes moved and worker counts for N = 10^7).

Layout
------
This package re-exports the public names (and the few private ones the tests and ``refvae stats``
use) of its modules, one per job: ``_base`` (constants, the optional Dask dependency, argument
checks), ``_files`` (arrays on disk), ``_components`` (NumPy, Dask or file components),
``_shards`` (shard tasks and the combination tree), ``_cluster`` (connecting, computing,
:func:`log_mixture`, :func:`log_qz`, the ln q(z) evaluator), ``_exact`` (drawn rows and exact
sums), ``_encode`` (:func:`encode_to_shards`) and ``_estimators`` (:func:`aggregated_stats`,
:func:`holes`: the draws, then the estimates of :mod:`refvae.estimators`).
"""

from __future__ import annotations

from ...estimators import Estimate
from ._base import (COMPONENT_FILES, COMPONENTS_FORMAT, COMPONENTS_MANIFEST, DEFAULT_CHUNK,
                    DEFAULT_CONNECT_TIMEOUT, DEFAULT_SPLIT_EVERY, DEFAULT_WORKER_TIMEOUT, ENCODE_CHUNK,
                    ClusterError, _require_dask, shard_bounds)
from ._cluster import _cluster, log_mixture, log_qz
from ._components import _Components, components_to_dask
from ._encode import encode_to_shards
from ._estimators import aggregated_stats, holes
from ._exact import _combine_exact_sums, _exact_sum
from ._files import _FileArray, _read_rows, load_array
from ._shards import _shard_partial, combine_tree

__all__ = ["log_qz", "log_mixture", "aggregated_stats", "holes", "encode_to_shards",
           "components_to_dask", "shard_bounds", "combine_tree", "load_array",
           "DEFAULT_CHUNK", "DEFAULT_SPLIT_EVERY", "DEFAULT_CONNECT_TIMEOUT", "DEFAULT_WORKER_TIMEOUT",
           "ClusterError", "Estimate"]

_PRIVATE_REEXPORTS = (COMPONENT_FILES, COMPONENTS_FORMAT, COMPONENTS_MANIFEST, ENCODE_CHUNK,
                      _require_dask, _cluster, _Components, _combine_exact_sums, _exact_sum,
                      _FileArray, _read_rows, _shard_partial)

# the public functions are documented (and listed by the hostile-input tests) under this package's
# name, where users import them from, not under the private module that defines them
for _name in __all__:
    _obj = globals()[_name]
    if callable(_obj) and getattr(_obj, "__module__", "").startswith(__name__ + "."):
        _obj.__module__ = __name__
del _name, _obj
