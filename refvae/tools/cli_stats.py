"""``refvae stats``: aggregated-posterior statistics of a saved model on a data file.

    refvae stats --model DIR (--data FILE.npy|npz | --components DIR|FILE.npz) [--scheduler ADDRESS | --scheduler-file FILE]
                 [--chunk N] [--samples S] [--queries M] [--holes M] [--seed N] [--out FILE.json]
                 [--threads N] [--connect-timeout T] [--worker-timeout T] [--allow-large] [--quiet]
    refvae stats --model DIR --data FILE.npy|npz --write-components OUTDIR|X.zarr|X.h5 [--scheduler ADDRESS]

Loads the model (``VAE.load(DIR)``) and either the data x (N, D) (``.npy``, or ``.npz`` with
``--key``, an array named ``x``, or a single array), which this machine then encodes, or the
components of q(z) themselves (``--components``: a directory holding ``means.npy`` and
``log_vars.npy`` as written by :func:`refvae.tools.distributed.encode_to_shards` or by
``--write-components``, or an ``.npz`` file with arrays ``means`` and ``log_vars``), and reports H[q(z)], CE[q(z)||p], KL[q(z)||p],
I_q(x; z), H[q(z|x)], E_x KL[q(z|x)||p] and its split (SPEC section 5) with standard errors, by
:func:`refvae.tools.distributed.aggregated_stats` -- on this machine by default, on a Dask cluster with
``--scheduler``. ``--holes M`` adds KL[p||q(z)] and the hole masses for tau = 0.1, 0.01 from M
prior draws (a second generator, ``default_rng([seed, 1])``, so the statistics above do not depend
on it). Generator of the statistics: ``numpy.random.default_rng(seed)``.

Exactly one of ``--data`` and ``--components`` is given. With ``--components``, ``--queries M`` and
``--scheduler``, the components are read only by the Dask workers (the files must be visible to
them at the same path) and this machine holds O(M L + shards), never an (N, L) array (module
docstring of :mod:`refvae.tools.distributed`, "Drawn rows and exact sums"). ``--write-components OUTDIR``
(with ``--data``) only encodes the data into ``OUTDIR/means.npy`` and ``OUTDIR/log_vars.npy``
(:func:`~refvae.tools.distributed.encode_to_shards`, in the batches of ``encode_all``, so the statistics
from ``--components OUTDIR`` on this machine are bit-identical to those from ``--data``) and exits;
the files are fsynced and readable by other users (umask permissions), and
``OUTDIR/components.json`` (N, L, dtype, sizes and SHA-256 of both files) is written last, so
``--components OUTDIR`` can tell a complete set from a partial or mixed one (it checks the
manifest when present).

The work is printed before it starts: the number of (query, component) pairs -- S N^2 without
``--queries`` (every one of the N S draws needs ln q(z) over all N components), M N with
``--queries M``, plus M_holes N for ``--holes`` -- and the core-hours at :data:`PAIR_RATE` pairs per
core-second (measured: the kernel at L = 16 on one core). Above :data:`LARGE_PAIRS` pairs (about 9
core-minutes) the run is refused in one line that names the way out (``--queries M``) unless
``--allow-large`` is given; so is ``--data`` with ``--scheduler`` when the data and its components
held here (8 N D + 16 N L bytes, the components then also travel in the scheduler's task graph)
exceed :data:`DATA_ON_CLIENT_BYTES` (the way out: ``--write-components`` once, then
``--components --queries --scheduler``, which holds nothing of size N here).

On a cluster, every failure of the cluster is one line on stderr and exit code 2, no traceback
(Dask's own log records are silenced during the run; ``REFVAE_TRACEBACK=1`` keeps them): no worker
within ``--worker-timeout`` seconds (default 60) or none left mid-run (all lost, or all paused for
memory), a worker with another refvae/NumPy/Numba/Python or without refvae, the scheduler lost, an
address that is not a Dask scheduler (the dashboard's port) -- see "Failure modes" in
:mod:`refvae.tools.distributed`. The progress goes to stderr: redrawn on a terminal, at most one
line per 10 s in a log file.

Sizes are checked before anything is allocated: a ``--samples``, ``--queries`` or ``--holes``
whose arrays on this machine would exceed the available memory (``MemAvailable``) is refused in
one line that says how much it needs and how much fits; ``--chunk`` larger than N is one shard.
``--connect-timeout`` must be a finite number of seconds > 0.

``--out FILE.json`` is written only after everything has been computed, to a temporary file that
is moved into place, so an error (an unreachable scheduler, bad input) leaves no file.

The subcommand is :data:`STATS` (a :class:`refvae.tools.cli.Subcommand`: :func:`options` adds the
flags, :func:`run` runs it), listed in ``COMMANDS`` for ``refvae.tools.cli``; a stand-alone parser
adds it with ``STATS.add_to(subparsers)``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time

from .cli import Subcommand

__all__ = ["HELP", "STATS", "COMMANDS", "options", "run"]

MAX_TASK_THREADS = 4096  #: the largest --threads with --scheduler (the workers' cores are not known here)
#: (query, component) pairs per core-second of the mixture kernel (refvae.kernels.mixture), measured
#: with time.process_time at L = 16, 1 Numba thread, 10^8 and 10^9 pairs per call: 1.94-1.97e8
#: (AMD EPYC, 2026-12-02; validation/SCALING.md). Used only for the core-hours printed before a run.
PAIR_RATE = 1.9e8
#: above this many pairs (about 9 core-minutes at PAIR_RATE) ``refvae stats`` needs --allow-large
LARGE_PAIRS = 10**11
#: with --data and --scheduler, the data x (N D 8 bytes) and the components (16 N L bytes) are held
#: here and the components travel in the scheduler's task graph: above this many bytes, --allow-large
DATA_ON_CLIENT_BYTES = 10**9

HELP = "aggregated-posterior statistics (H[q(z)], KL[q(z)||p], I(x;z), holes) of a saved model"


def options(p):
    """Add the options of ``refvae stats`` to an argparse parser."""
    p.add_argument("--model", required=True, help="directory of a saved model (VAE.save)")
    p.add_argument("--data", default=None,
                   help="data x (N, D): a .npy file, or an .npz file (exactly one of --data and "
                        "--components)")
    p.add_argument("--components", default=None,
                   help="the components of q(z) instead of the data: a directory with means.npy and "
                        "log_vars.npy (written by --write-components or "
                        "refvae.tools.distributed.encode_to_shards(model, x, out_dir=DIR)), or an .npz "
                        "file with arrays 'means' and 'log_vars'; with --scheduler they are read "
                        "only by the workers (a shared file system)")
    p.add_argument("--write-components", default=None, metavar="OUTDIR",
                   help="only encode --data into OUTDIR/means.npy and OUTDIR/log_vars.npy (for "
                        "--components OUTDIR) and exit")
    p.add_argument("--key", default=None,
                   help="array of an .npz --data file to use (default: 'x', or its only array)")
    p.add_argument("--scheduler", default=None,
                   help="address of a Dask scheduler (e.g. tcp://host:8786); default: this machine")
    p.add_argument("--scheduler-file", default=None, metavar="FILE",
                   help="the JSON file a scheduler started with `dask scheduler --scheduler-file "
                        "FILE` wrote (its key 'address' is used as --scheduler)")
    p.add_argument("--chunk", type=int, default=None,
                   help="components per shard on the cluster (default 65536); fixes the rounding: "
                        "the result is bit-identical for any number of workers")
    p.add_argument("--samples", type=int, default=1, help="draws per data point S (default 1)")
    p.add_argument("--queries", type=int, default=None,
                   help="evaluate q(z) at M draws from q(z) instead of all N*S (cost M*N pairs)")
    p.add_argument("--holes", type=int, default=0,
                   help="prior draws for KL[p||q(z)] and the hole masses (default 0: not computed)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generator (default 0)")
    p.add_argument("--out", default=None, help="write the results as JSON to this file")
    p.add_argument("--threads", type=int, default=1,
                   help="Numba and BLAS threads on this machine (default 1; at most "
                        "NUMBA_NUM_THREADS); on the cluster each shard task uses this many Numba "
                        "threads too")
    p.add_argument("--connect-timeout", type=float, default=10.0,
                   help="seconds to wait for the scheduler (default 10)")
    p.add_argument("--worker-timeout", type=float, default=60.0,
                   help="seconds to wait for a running Dask worker, at the start and whenever none "
                        "is left (all lost, or all paused for memory) mid-run (default 60)")
    p.add_argument("--allow-large", action="store_true",
                   help=f"run even above {LARGE_PAIRS:.0e} (query, component) pairs, or with --data "
                        f"and --scheduler above {DATA_ON_CLIENT_BYTES / 1e9:g} GB of data and "
                        f"components on this machine (the count and core-hours are printed first)")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="with --scheduler: save each shard's partial ln q(z) in DIR (shared "
                        "storage, writable by the workers) and reuse those already there: a run "
                        "whose client died, started again with the same arguments, gives the same "
                        "bits without redoing the finished shards")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")


def _check_int(value, flag, minimum):
    if value is not None and value < minimum:
        raise ValueError(f"{flag} must be an integer >= {minimum}, got {value}")
    return value


def _gb(n):
    return f"{n / 1e9:,.1f} GB" if n >= 1e8 else f"{n / 1e6:,.1f} MB"


def _prior_bytes_per_point(model, n=512):
    """Bytes the prior's forward pass (``log p(z)``, as the estimators call it) allocates per row
    of z: the peak traced by ``tracemalloc`` over a call on n rows (after a warm-up call), divided
    by n. Where ``tracemalloc`` is already in use, a formula: 8 (4 K L + 2 L) bytes (K the
    prior's components, 0 without)."""
    import tracemalloc

    import numpy as np

    from ..estimators import _prior_log_prob
    L = model.latent_dim
    K = int(getattr(model.prior, "K", 0) or 0)
    if tracemalloc.is_tracing():
        return 8 * (4 * K * L + 2 * L)
    z = np.zeros((n, L))
    _prior_log_prob(model, model.params, z)
    tracemalloc.start()
    try:
        _prior_log_prob(model, model.params, z)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return -(-peak // n)


def _check_memory(args, N, L, prior_bytes, components_here, available=None):
    """Refuse (``ValueError``, one line) a ``--samples``/``--queries``/``--holes`` request whose
    arrays on this machine would not fit in the available memory, before anything is allocated.

    The bytes are those of the arrays that would be allocated: for each of the N*S draws of
    q(z|x) (``--samples``, without ``--queries``) or each of the M ``--queries`` draws, 8 (6 + 3L)
    (z and its noise, the Gaussian log-density's temporaries, log q(z), log p(z) and the
    estimators' temporaries; with ``--queries`` also the drawn mean and log-variance, 16 L) plus
    ``prior_bytes``, what the prior's forward pass allocates per point
    (:func:`_prior_bytes_per_point`); for each of the M ``--holes`` prior draws 8 (4 + 3L) plus
    ``prior_bytes``; plus the (N, L) means and log-variances (16 N L) when they are held here
    (``components_here``). ``available``: bytes (default:
    :func:`refvae._validation.available_memory`).
    """
    if available is None:
        from .._validation import available_memory
        available, source = available_memory()
    else:
        source = "given"
    if not available:
        return
    base = 16 * N * L if components_here else 0
    per_draw = 8 * (6 + 3 * L) + prior_bytes
    requests = []
    if args.queries is None:
        requests.append(("--samples", args.samples, N, per_draw, "N*S draws of q(z|x)"))
    else:
        requests.append(("--queries", args.queries, 1, per_draw + 16 * L, "M draws from q(z)"))
    if args.holes:
        requests.append(("--holes", args.holes, 1, 8 * (4 + 3 * L) + prior_bytes, "M prior draws"))
    for flag, value, times, each, what in requests:
        need = base + value * times * each
        if need > available:
            fits = max(0, (available - base) // (times * each))
            raise ValueError(
                f"{flag} {value} with N = {N}, L = {L} needs about {_gb(need)} on this machine for the "
                f"{what} ({each} bytes each{', plus the (N, L) components' if base else ''}); at "
                f"most {flag} {fits} fits in the {_gb(available)} available ({source})")


def _write_json_atomic(path, obj):
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"--out: directory {directory!r} does not exist")
    from ..io import _atomic_write_bytes  # numpy-free start-up: imported when a file is written
    text = json.dumps(obj, indent=1, allow_nan=False) + "\n"
    _atomic_write_bytes(path, text.encode("utf-8"))


def _num(v):
    v = float(v)
    return v if math.isfinite(v) else None


def _est(e):
    return {"value": _num(e.value), "se": _num(e.se), "n": int(e.n)}


LABELS = {"entropy_qz": "H[q(z)]", "cross_entropy": "CE[q(z)||p]",
          "conditional_entropy": "H[q(z|x)]", "kl_qz_p": "KL[q(z)||p]",
          "mutual_information": "I_q(x;z)", "avg_kl": "E_x KL[q(z|x)||p]",
          "avg_kl_split": "I + KL[q(z)||p]"}


def _scheduler_from_file(args):
    """``--scheduler-file FILE``: set ``args.scheduler`` to the ``address`` that ``dask scheduler
    --scheduler-file FILE`` wrote there (JSON, read without pickle); a named ``ValueError`` for both
    flags at once, a missing or unreadable file, or a file without a string ``address``."""
    import json
    path = getattr(args, "scheduler_file", None)
    if path is None:
        return
    if args.scheduler is not None:
        raise ValueError("give --scheduler ADDRESS or --scheduler-file FILE, not both")
    if not str(path).strip():
        raise ValueError("--scheduler-file: empty path")
    try:
        with open(path, encoding="utf-8") as fh:
            info = json.load(fh)
    except FileNotFoundError:
        raise ValueError(f"--scheduler-file: {path!r} does not exist (start the scheduler with "
                         f"`dask scheduler --scheduler-file {path}` first, on shared storage)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"--scheduler-file: {path!r} is not a scheduler file written by dask "
                         f"scheduler ({type(e).__name__}: {e})") from None
    address = info.get("address") if isinstance(info, dict) else None
    if not isinstance(address, str) or not address.strip():
        raise ValueError(f"--scheduler-file: {path!r} has no 'address' string (a JSON object "
                         f"written by `dask scheduler --scheduler-file`)")
    args.scheduler = address


def run(args) -> int:
    """Run ``refvae stats`` on parsed arguments; returns the exit code (0). Errors raise
    ``ValueError``/``TypeError``/``OSError`` (``ConnectionError`` for an unreachable scheduler) or
    ``ImportError`` (Dask missing with ``--scheduler``), which ``refvae.tools.cli.main`` prints in one line."""
    import numpy as np

    from . import distributed as dist
    from .distributed._shards import _resume_from
    from .provenance import limit_threads
    from ..vae import VAE

    _scheduler_from_file(args)
    chunk, timeout = _check_options(args, dist)
    data, components, write_to = _check_sources(args)
    if getattr(args, "resume", None) is not None and (args.scheduler is None or write_to is not None):
        raise ValueError("--resume DIR keeps the partials of the shards of a run on a cluster: it "
                         "needs --scheduler (and no --write-components)")
    if write_to is not None:
        return _write_components(args, write_to)
    comps = None
    if components is not None:
        comps = _check_components(components, dist)
    if args.scheduler is not None:
        dist._require_dask()
    quiet = bool(getattr(args, "quiet", False))
    started = time.perf_counter()
    with limit_threads(args.threads):
        model = VAE.load(args.model)
        if comps is None:
            x = dist.load_array(data, getattr(args, "key", None), name="--data")
            if x.shape[1] != model.x_dim:
                raise ValueError(f"--data has D = {x.shape[1]} columns but the model expects "
                                 f"x_dim = {model.x_dim}")
            N = x.shape[0]
            source = f"D = {x.shape[1]}"
        else:
            if comps.L != model.latent_dim:
                raise ValueError(f"--components have L = {comps.L} columns but the model's "
                                 f"latent_dim is {model.latent_dim}")
            x = os.fspath(components)  # read by aggregated_stats / holes (on the workers)
            N = comps.N
            source = f"components {x}"
        # what does not fit in memory is refused first (it could never run), then what is large
        _check_memory(args, N, model.latent_dim, _prior_bytes_per_point(model),
                      components_here=not (comps is not None and args.scheduler is not None
                                           and args.queries is not None))
        pairs, what = _pair_count(args, N)
        _check_work(args, pairs, what, None if comps is not None else x.shape[1], N, model.latent_dim)
        if not quiet:
            print(f"refvae stats: {pairs:.2e} (query, component) pairs ({what}), about "
                  f"{_core_hours(pairs):.2g} core-hours at {PAIR_RATE:.2g} pairs per core-second "
                  f"(measured at L = 16)", flush=True)
        chunk = min(chunk, N)  # a chunk >= N is one shard (the same result); keeps Dask's sizes small
        where = f"Dask scheduler {args.scheduler}" if args.scheduler else "this machine"
        if not quiet:
            print(f"refvae stats: N = {N}, {source}, L = {model.latent_dim}, prior "
                  f"{model.prior.name}, S = {args.samples}"
                  + (f", {args.queries} queries" if args.queries else "")
                  + f", seed {args.seed}, on {where}" + (f", chunk {chunk}" if args.scheduler else ""),
                  flush=True)
        # one connection (closed at the end) for both computations when a scheduler is given
        worker_timeout = getattr(args, "worker_timeout", dist.DEFAULT_WORKER_TIMEOUT)
        with _quiet_dask_logs(args.scheduler is not None), \
                dist._cluster(None, args.scheduler, timeout, worker_timeout) as client, \
                _resume_from(getattr(args, "resume", None) if args.scheduler else None):
            kw = dict(client=client, chunk=chunk, threads_per_task=args.threads,
                      progress=client is not None and not quiet, worker_timeout=worker_timeout)
            rng = np.random.default_rng(args.seed)
            stats = dist.aggregated_stats(model, x, rng, args.samples, n_queries=args.queries,
                                          **kw)
            hole = None
            if args.holes:
                hole = dist.holes(model, x, np.random.default_rng([args.seed, 1]), args.holes,
                                  **kw)
    seconds = time.perf_counter() - started
    if not quiet:
        _print_results(stats, hole, seconds)
    if args.out is not None:
        result = _result_json(args, data, components, N, model, chunk, stats, hole, seconds)
        _write_json_atomic(args.out, result)
        if not quiet:
            print(f"wrote {args.out}")
    return 0


def _pair_count(args, N):
    """``(pairs, formula)``: the (query, component) pairs of the run -- each evaluation of ln q(z)
    at a point costs N of them: S N^2 without ``--queries`` (every draw z_ns), M N with it, plus
    M_holes N for ``--holes``."""
    if args.queries is None:
        pairs, what = args.samples * N * N, f"S N^2 = {args.samples} x {N}^2, all N S draws; --queries M costs M N"
    else:
        pairs, what = args.queries * N, f"M N = {args.queries} x {N}"
    if args.holes:
        pairs += args.holes * N
        what += f", plus {args.holes} x {N} for --holes"
    return pairs, what


def _core_hours(pairs):
    return pairs / PAIR_RATE / 3600.0


@contextlib.contextmanager
def _quiet_dask_logs(on):
    """Dask's own log records (a lost scheduler is logged with tracebacks by the client) are
    silenced while ``refvae stats`` runs on a cluster: refvae reports what went wrong in one line.
    ``REFVAE_TRACEBACK=1`` keeps them."""
    import logging
    if not on or os.environ.get("REFVAE_TRACEBACK"):
        yield
        return
    # every "distributed..." logger: some have their own level, which a parent's would not override
    names = ["distributed"] + [n for n in logging.root.manager.loggerDict if n.startswith("distributed.")]
    saved = [(log, log.level) for log in map(logging.getLogger, names)]
    for log, _ in saved:
        log.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for log, level in saved:
            log.setLevel(level)


def _check_work(args, pairs, what, D, N, L):
    """Refuse (``ValueError``, one line with the way out) a run above :data:`LARGE_PAIRS` pairs, or
    one with ``--data`` and ``--scheduler`` holding more than :data:`DATA_ON_CLIENT_BYTES` here,
    unless ``--allow-large``. ``D``: the data's columns (None with ``--components``)."""
    if getattr(args, "allow_large", False):
        return
    if pairs > LARGE_PAIRS:
        way = ("use --queries M (M N pairs: --queries 100000 gives "
               f"{100000 * N:.1e}) or " if args.queries is None else "")
        raise ValueError(f"this run needs {pairs:.2e} (query, component) pairs ({what}), about "
                         f"{_core_hours(pairs):.2g} core-hours at {PAIR_RATE:.2g} pairs per "
                         f"core-second, above {LARGE_PAIRS:.0e}: {way}pass --allow-large to run it")
    if D is not None and args.scheduler is not None:
        held = 8 * N * D + 16 * N * L
        if held > DATA_ON_CLIENT_BYTES:
            raise ValueError(
                f"--data with --scheduler holds the data and its components on this machine "
                f"({held / 1e9:.1f} GB for N = {N}, D = {D}, L = {L}) and sends the components in "
                f"the task graph: write them once (refvae stats --model DIR --data FILE "
                f"--write-components COMPS) and run with --components COMPS --queries M --scheduler "
                f"ADDRESS (nothing of size N here), or pass --allow-large")


def _check_options(args, dist):
    """The numeric options, the scheduler address and the paths of ``refvae stats``; returns
    ``(chunk, timeout)`` (``ValueError`` naming the flag otherwise)."""
    _check_int(args.seed, "--seed", 0)
    _check_int(args.samples, "--samples", 1)
    _check_int(args.queries, "--queries", 1)
    _check_int(args.holes, "--holes", 0)
    if args.holes == 1:
        raise ValueError("--holes must be 0 (off) or >= 2 prior draws, got 1")
    _check_int(args.threads, "--threads", 1)
    chunk = dist.DEFAULT_CHUNK if args.chunk is None else args.chunk
    if chunk < 1:
        raise ValueError(f"--chunk must be a positive integer (components per shard), got {chunk}")
    timeout = getattr(args, "connect_timeout", 10.0)
    if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"--connect-timeout must be a finite number of seconds > 0, got {timeout}")
    timeout = float(timeout)
    worker_timeout = getattr(args, "worker_timeout", 60.0)
    if not (isinstance(worker_timeout, (int, float)) and math.isfinite(worker_timeout)
            and worker_timeout > 0):
        raise ValueError(f"--worker-timeout must be a finite number of seconds > 0, got {worker_timeout}")
    if args.scheduler is not None and not args.scheduler.strip():
        raise ValueError("--scheduler: empty address; give one such as tcp://host:8786 (or omit "
                         "--scheduler to compute on this machine)")
    for flag, value in (("--model", args.model), ("--data", getattr(args, "data", None)),
                        ("--components", getattr(args, "components", None)),
                        ("--out", args.out), ("--write-components", getattr(args, "write_components", None))):
        if value is not None and not str(value).strip():
            raise ValueError(f"{flag}: empty path")
    if not os.path.isdir(args.model):
        raise ValueError(f"--model: {args.model!r} "
                         + ("is not a directory" if os.path.exists(args.model) else "does not exist")
                         + " (a directory written by VAE.save or refvae train)")
    if getattr(args, "data", None) is not None and os.path.isdir(args.data):
        raise ValueError(f"--data: {args.data!r} is a directory; expected a .npy or .npz file")
    key = getattr(args, "key", None)
    if key is not None and not str(getattr(args, "data", None) or "").endswith(".npz"):
        raise ValueError(f"--key {key!r}: only an .npz --data file has named arrays"
                         + (" (--components uses the arrays 'means' and 'log_vars')"
                            if getattr(args, "components", None) is not None else ""))
    if args.scheduler is None:
        import numba
        most = int(numba.config.NUMBA_NUM_THREADS)
        if args.threads > most:
            raise ValueError(f"--threads {args.threads}: this machine runs at most {most} threads "
                             f"(NUMBA_NUM_THREADS)")
    elif args.threads > MAX_TASK_THREADS:
        raise ValueError(f"--threads {args.threads}: at most {MAX_TASK_THREADS} threads per shard task")
    if args.out is not None:
        if os.path.isdir(args.out):
            raise ValueError(f"--out: {args.out!r} is a directory; expected the path of a JSON file")
        out_dir = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(out_dir):
            raise ValueError(f"--out: directory {out_dir!r} does not exist")
    return chunk, timeout


def _check_sources(args):
    """Exactly one of ``--data`` and ``--components``; ``--write-components`` only with ``--data``
    and none of the options it would ignore. Returns ``(data, components, write_to)``."""
    data = getattr(args, "data", None)
    components = getattr(args, "components", None)
    write_to = getattr(args, "write_components", None)
    if (data is None) == (components is None):
        raise ValueError("give exactly one of --data FILE and --components DIR|FILE.npz"
                         + (" (got both)" if data is not None else ""))
    if write_to is not None:
        if data is None:
            raise ValueError("--write-components encodes --data; it cannot be used with --components")
        given = [f for f, v in (("--out", args.out), ("--queries", args.queries)) if v is not None]
        given += ["--holes"] if args.holes else []
        if given:
            raise ValueError(f"--write-components only writes the components and exits; drop "
                             f"{', '.join(given)} (then run refvae stats --components {write_to})")
    return data, components, write_to


def _print_results(stats, hole, seconds):
    """The estimates (value, standard error, n) and the time, one line each."""
    for k, e in stats.items():
        print(f"  {LABELS[k]:<20s} {e.value: .6f} ± {e.se:.6f}   (n = {e.n})")
    if hole is not None:
        e = hole["reverse_kl"]
        print(f"  {'KL[p||q(z)]':<20s} {e.value: .6f} ± {e.se:.6f}   (n = {e.n})")
        for t, e in hole["hole_mass"].items():
            print(f"  {f'P_p[q/p < {t:g}]':<20s} {e.value: .6f} ± {e.se:.6f}")
    print(f"done in {seconds:.1f} s", flush=True)


def _result_json(args, data, components, N, model, chunk, stats, hole, seconds):
    """The JSON record of a ``refvae stats`` run (inputs, rng, path, estimates, provenance)."""
    from .provenance import provenance
    return {"command": "refvae stats", "model": os.fspath(args.model),
            "data": None if data is None else os.fspath(data),
            "components": None if components is None else os.fspath(components),
            "N": int(N), "latent_dim": int(model.latent_dim), "prior": model.prior.name,
            "samples": int(args.samples), "queries": args.queries, "seed": int(args.seed),
            "rng": f"numpy.random.default_rng({args.seed})",
            "path": "dask" if args.scheduler else "single-machine",
            "scheduler": args.scheduler, "chunk": int(chunk) if args.scheduler else None,
            "stats": {k: _est(e) for k, e in stats.items()},
            "holes": None if hole is None else {
                "rng": f"numpy.random.default_rng([{args.seed}, 1])",
                "reverse_kl": _est(hole["reverse_kl"]),
                "hole_mass": {f"{t:g}": _est(e) for t, e in hole["hole_mass"].items()}},
            "seconds": seconds, "provenance": provenance()}


def _check_components(path, dist):
    """The components of ``--components`` (headers only): a ``_Components`` of kind 'file'."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise ValueError(f"--components: {p!r} does not exist (a directory with means.npy and "
                         f"log_vars.npy, or an .npz file with arrays 'means' and 'log_vars')")
    if not os.path.isdir(p) and not p.lower().endswith((".npz", ".h5", ".hdf5")):
        raise ValueError(f"--components: {p!r} is neither a directory with means.npy and "
                         f"log_vars.npy (written by --write-components), a zarr group (.zarr), nor "
                         f"an .npz or HDF5 (.h5) file with arrays 'means' and 'log_vars'")
    try:
        return dist._Components(p, None)
    except ValueError as exc:
        raise ValueError(f"--components: {exc}") from None


def _write_components(args, out_dir):
    """``--write-components OUTDIR``: encode ``--data`` with the model into OUTDIR; exit code 0."""
    from . import distributed as dist
    from .provenance import limit_threads
    from ..vae import VAE

    data = os.fspath(args.data)
    key = getattr(args, "key", None)
    quiet = bool(getattr(args, "quiet", False))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir) and not out_dir.lower().endswith((".h5", ".hdf5")):
        raise ValueError(f"--write-components: {out_dir!r} exists and is not a directory")
    started = time.perf_counter()
    with limit_threads(args.threads):
        model = VAE.load(args.model)
        if data.endswith(".npz") or not os.path.isfile(data):
            x = dist.load_array(data, key, name="--data")  # also: "--data: file ... does not exist"
        else:
            x = data  # a .npy file: memory-mapped (with --scheduler: read by the workers)
        # with --scheduler the rows are encoded on the workers (the same batches: the same bits)
        timeout = getattr(args, "connect_timeout", dist.DEFAULT_CONNECT_TIMEOUT)
        worker_timeout = getattr(args, "worker_timeout", dist.DEFAULT_WORKER_TIMEOUT)
        with dist._cluster(None, args.scheduler, timeout, worker_timeout) as client:
            try:
                means, log_vars = dist.encode_to_shards(model, x, out_dir=out_dir, client=client)
            except ValueError as exc:
                raise ValueError(f"--data: {exc}") from None
    if not quiet:
        what = (out_dir if means == log_vars else  # a zarr group or HDF5 file
                f"{means}, {log_vars} and (last) {os.path.join(out_dir, dist.COMPONENTS_MANIFEST)}")
        print(f"refvae stats: wrote {what} in {time.perf_counter() - started:.1f} s; use "
              f"--components {out_dir}", flush=True)
    return 0


STATS = Subcommand("stats", HELP, options, run)
COMMANDS = (STATS,)


if __name__ == "__main__":  # pragma: no cover
    import argparse
    parser = argparse.ArgumentParser(prog="refvae-stats", description=HELP)
    options(parser)
    sys.exit(run(parser.parse_args()))
