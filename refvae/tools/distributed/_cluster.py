"""The cluster path: connecting to a scheduler, computing a graph, the log-density of a mixture over
the shards (:func:`log_mixture`, :func:`log_qz`) and the ln q(z) evaluator that
:mod:`refvae.estimators` takes (:class:`_LogQz`) (:mod:`refvae.tools.distributed`)."""

from __future__ import annotations

import contextlib
import gc
import math
import socket
import sys
import time
import uuid
import warnings
import weakref
from concurrent.futures import CancelledError

from ..._validation import as_float_array
from ...kernels.mixture import finalize_partials, mixture_log_prob
from ._base import (DEFAULT_CHUNK, DEFAULT_CONNECT_TIMEOUT, DEFAULT_SPLIT_EVERY,
                    DEFAULT_WORKER_TIMEOUT, ClusterError, _check_chunk, _check_cluster_args,
                    _check_split_every, _check_threads, _check_worker_timeout, _is_dask_array,
                    _is_path, _require_dask, shard_bounds)
from ._components import _Components
from ._shards import _combine_group, _shard_tasks, combine_tree


# =========================================================================== connecting

def _probe_scheduler(address, timeout):
    """Check that ``address`` (tcp:// or no scheme) answers like a Dask scheduler, within ``timeout``.

    A Dask scheduler sends its handshake as soon as it accepts a connection; a server that accepts
    and stays silent (the dashboard's HTTP port, any other service) would make ``distributed.Client``
    wait far beyond its timeout (minutes). Refused connections are retried until the deadline (a
    scheduler may still be starting). Other schemes (tls://, ucx://, inproc://) are left to Dask.
    """
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "tcp", address
    if scheme in ("http", "https"):
        raise ValueError(f"scheduler address {address!r} is a web (HTTP) address, probably the "
                         f"dashboard; give the scheduler's address, tcp://host:port (port 8786 by default)")
    if scheme != "tcp":
        return
    from distributed.comm.addressing import parse_host_port
    try:
        host, port = parse_host_port(rest, default_port=8786)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"scheduler address {address!r} is not valid: {exc}") from None
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=max(0.1, deadline - time.monotonic()))
            break
        except OSError as exc:
            if time.monotonic() + 0.2 >= deadline:
                raise ConnectionError(f"cannot reach the Dask scheduler at {address!r} within {timeout:g} s "
                                      f"({exc}); is it running and reachable from here?") from None
            time.sleep(0.2)
    with sock:
        wait = max(1.0, deadline - time.monotonic())
        sock.settimeout(wait)
        try:
            head = sock.recv(16)
        except socket.timeout:
            raise ConnectionError(
                f"{address!r} accepted the connection but sent no Dask handshake within {wait:.0f} s: "
                f"it is not a Dask scheduler (the dashboard's HTTP port, 8787 by default? the "
                f"scheduler listens on 8786 by default)") from None
        except OSError as exc:
            head = b""
            reason = str(exc)
        else:
            reason = "it closed the connection"
    if not head or head.startswith(b"HTTP"):
        raise ConnectionError(f"{address!r} is not a Dask scheduler ("
                              + ("it answered like a web server: the dashboard?" if head else reason)
                              + "); give the scheduler's address (port 8786 by default)")


@contextlib.contextmanager
def _cluster(client, scheduler, connect_timeout, worker_timeout=DEFAULT_WORKER_TIMEOUT):
    """Yields the client to use (None: single machine); a client made here is closed at the end.

    Before yielding a client: at least one worker within ``worker_timeout`` seconds, and every
    worker with this machine's refvae, NumPy, Numba and Python (:func:`_check_workers`), else a
    :class:`ClusterError` naming the worker."""
    if scheduler is None:
        if client is not None:
            _check_workers(client, worker_timeout)
        yield client
        return
    _require_dask()
    from distributed import Client
    _probe_scheduler(scheduler, connect_timeout)
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
        _check_workers(own, worker_timeout)
        yield own
    finally:
        own.close()


# =========================================================================== the workers' environment

def _environment_probe():
    """A function that returns ``{package: version}`` for refvae (with a hash of its source files),
    NumPy, Numba and Python where it runs. Defined locally, so that Dask pickles it by value: it runs
    on a worker that cannot import refvae (and says so) instead of failing to unpickle."""
    def probe():
        import hashlib
        import importlib
        import os
        import sys
        out = {"python": "%d.%d.%d" % sys.version_info[:3]}
        for name in ("refvae", "numpy", "numba"):
            try:
                mod = importlib.import_module(name)
            except Exception as exc:  # noqa: BLE001 - any failure to import is the answer
                out[name] = f"not importable ({type(exc).__name__}: {exc})"
                continue
            version = str(getattr(mod, "__version__", "unknown"))
            if name == "refvae":
                root = os.path.dirname(os.path.abspath(mod.__file__))
                files = []
                for d, dirs, names in os.walk(root):
                    dirs[:] = [x for x in dirs if x != "__pycache__"]
                    files += [os.path.join(d, f) for f in names if f.endswith(".py")]
                h = hashlib.sha256()
                for f in sorted(files, key=lambda f: os.path.relpath(f, root)):
                    h.update(os.path.relpath(f, root).replace(os.sep, "/").encode() + b"\0")
                    with open(f, "rb") as fh:
                        h.update(fh.read())
                version += f" (source sha256 {h.hexdigest()[:12]})"
            out[name] = version
        return out
    return probe


_CHECKED = weakref.WeakKeyDictionary()    # client -> addresses of the workers already checked


def _worker_label(address, name):
    return address if name in (None, "", address) else f"{address} (name {name})"


def _check_environments(client, addresses=None):
    """Run the environment probe on ``addresses`` (default: every worker) not checked before;
    ClusterError naming the first worker whose environment differs from this machine's."""
    try:
        done = _CHECKED.setdefault(client, set())
    except TypeError:  # pragma: no cover - a client that cannot be weakly referenced
        done = set()
    if addresses is not None and all(a in done for a in addresses):
        return  # the watch asks every second: nothing to do unless a worker joined
    info = client.scheduler_info(n_workers=-1)["workers"]
    todo = [a for a in (info if addresses is None else addresses) if a not in done and a in info]
    if not todo:
        return
    here = _environment_probe()()  # not cached: the source files may have changed since the last check
    found = client.run(_environment_probe(), workers=todo, on_error="return")
    for address in todo:
        env = found.get(address)
        if env is None:  # the worker left meanwhile
            continue
        label = _worker_label(address, info[address].get("name"))
        if isinstance(env, BaseException):
            raise ClusterError(f"worker {label} could not report its versions ({type(env).__name__}: "
                               f"{env}); is refvae installed there?")
        diff = [k for k in ("refvae", "numpy", "numba", "python") if env.get(k) != here[k]]
        if diff:
            raise ClusterError(
                f"worker {label} has " + ", ".join(f"{k} {env.get(k)}" for k in diff)
                + "; this machine has " + ", ".join(f"{k} {here[k]}" for k in diff)
                + ": install the same refvae, NumPy, Numba and Python on every worker (the results "
                  "are reproducible only on a homogeneous cluster)")
        done.add(address)


def _check_workers(client, worker_timeout):
    """At least one running worker within ``worker_timeout`` seconds, each with this machine's
    environment (:func:`_check_environments`); else a ClusterError."""
    try:
        client.wait_for_workers(1, timeout=worker_timeout)
    except TimeoutError:
        address = client.scheduler.address
        workers = client.scheduler_info(n_workers=-1)["workers"]
        if workers:
            raise ClusterError(
                f"no Dask worker of the scheduler {address} is running after {worker_timeout:g} s: "
                + "; ".join(f"{_worker_label(a, w.get('name'))} is {w.get('status')}, memory "
                            f"{_mb(w.get('metrics', {}).get('memory', 0))} of {_mb(w.get('memory_limit') or 0)}"
                            for a, w in workers.items())
                + " (a worker pauses when its memory passes distributed.worker.memory.pause of its "
                  "limit: give the workers more memory, dask worker --memory-limit)") from None
        raise ClusterError(
            f"no Dask worker has joined the scheduler {address} after {worker_timeout:g} s; start "
            f"workers (dask worker {address}) or wait longer (worker_timeout, refvae stats "
            f"--worker-timeout)") from None
    _check_environments(client)


# =========================================================================== computing

def _scheduler_probe():
    """A function run on the scheduler (pickled by value: the scheduler needs no refvae): the
    number of tasks not yet in memory among ``keys`` and their dependencies, and per worker
    ``(address, name, status, process memory, memory limit, tasks processing)``."""
    def state(keys, dask_scheduler=None):
        tasks = dask_scheduler.tasks
        known = all(k in tasks for k in keys)  # the graph may not have reached the scheduler yet
        seen, stack, pending, erred = set(), list(keys), 0, 0
        while stack:
            k = stack.pop()
            if k in seen:
                continue
            seen.add(k)
            ts = tasks.get(k)
            if ts is None or ts.state == "memory":  # forgotten after use, or done
                continue
            pending += 1
            erred += ts.state == "erred"
            stack.extend(d.key for d in ts.dependencies)
        workers = [(ws.address, str(ws.name), getattr(ws.status, "name", str(ws.status)),
                    int(ws.memory.process), int(ws.memory_limit or 0), len(ws.processing))
                   for ws in dask_scheduler.workers.values()]
        return {"known": known, "pending": pending, "erred": erred, "workers": workers}
    return state


def _mb(n):
    return f"{n / 2**20:,.0f} MiB"


class _Watch:
    """Waits for futures while watching the cluster: progress on stderr (``progress``), and a
    ClusterError when the cluster cannot finish (no worker, or every worker paused for memory,
    for more than ``worker_timeout`` s; a new worker with another environment; the scheduler lost)."""

    POLL = 1.0  #: seconds between looks at the scheduler
    clock = staticmethod(time.monotonic)

    def __init__(self, client, futures, total, progress, message, worker_timeout):
        self.client, self.futures, self.total = client, futures, max(1, total)
        self.progress, self.message, self.timeout = progress, message, worker_timeout
        self.address = client.scheduler.address
        self.started = self.clock()
        self.done = 0
        self.last_change = self.started
        self.idle_since = None        # no running worker since
        self.nothing_running_since = None  # running workers but no task processing since
        self.had_workers = False
        self.last_line = None
        self.last_stall_note = self.started
        self.tty = progress and sys.stderr.isatty()
        self.probe = _scheduler_probe()

    def elapsed(self):
        return self.clock() - self.started

    def wait(self):
        next_poll = 0.0
        while not all(f.done() for f in self.futures):
            now = self.clock()
            if now >= next_poll:
                self.poll()
                next_poll = now + self.POLL
            time.sleep(0.05)

    def lost_scheduler(self):
        return ClusterError(
            f"lost the connection to the Dask scheduler at {self.address} after {self.elapsed():.0f} s "
            f"({self.done} of {self.total} tasks done): the scheduler stopped or the network failed")

    def poll(self):
        if self.client.status != "running":
            raise self.lost_scheduler()
        try:
            st = self.client.run_on_scheduler(self.probe, [f.key for f in self.futures])
        except Exception:  # noqa: BLE001 - the scheduler went away while we asked
            if self.client.status != "running":
                raise self.lost_scheduler() from None
            return
        now = self.clock()
        if st["known"]:
            self.total = max(self.total, st["pending"])
            done = self.total - st["pending"]
            if done != self.done:
                self.done, self.last_change = done, now
        workers = st["workers"]
        running = [w for w in workers if w[2] == "running"]
        if workers:
            self.had_workers = True
            _check_environments(self.client, [w[0] for w in workers])
        if running:
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = now
        elif now - self.idle_since > self.timeout and now - self.last_change > self.timeout:
            raise self.no_workers(workers)
        # running workers, tasks pending, none running anywhere: the scheduler cannot run them
        if running and st["pending"] and not any(w[5] for w in workers):
            if self.nothing_running_since is None:
                self.nothing_running_since = now
            elif (now - self.nothing_running_since > self.timeout
                  and now - self.last_change > self.timeout):
                raise ClusterError(
                    f"nothing has run for {self.timeout:g} s although {len(running)} worker(s) are "
                    f"running and {st['pending']} tasks are pending ({self.done} of {self.total} "
                    f"done; scheduler {self.address}): the scheduler cannot run them (lost "
                    f"dependencies? see its log); workers: " + self.describe(workers))
        else:
            self.nothing_running_since = None
        if self.progress:
            self.show()
            if now - self.last_change > self.timeout and now - self.last_stall_note > self.timeout:
                self.last_stall_note = now
                self.note("no task finished in the last "
                          f"{now - self.last_change:.0f} s; workers: " + self.describe(workers))

    def describe(self, workers):
        if not workers:
            return "none"
        return "; ".join(f"{_worker_label(a, n)} {s}, memory {_mb(m)}"
                         + (f" of {_mb(lim)}" if lim else "") + f", {k} task(s) running"
                         for a, n, s, m, lim, k in workers)

    def no_workers(self, workers):
        t = self.timeout
        done = f"{self.done} of {self.total} tasks done"
        if not workers:
            what = ("every worker left the cluster mid-run" if self.had_workers
                    else "the cluster has no workers")
            return ClusterError(f"{what} and none joined for {t:g} s ({done}, scheduler "
                                f"{self.address}): start workers (dask worker {self.address}) and "
                                f"run again; see the workers' logs for why they stopped")
        paused = [w for w in workers if w[2] == "paused"]
        if paused and len(paused) == len(workers):
            return ClusterError(
                f"every worker has been paused for {t:g} s ({done}): "
                + self.describe(paused) + ". A worker pauses when its memory passes the pause "
                "fraction of its limit (distributed.worker.memory.pause): give the workers more "
                "memory (dask worker --memory-limit) or use a smaller chunk")
        return ClusterError(f"no worker has been running for {t:g} s ({done}): " + self.describe(workers))

    def note(self, text):
        if self.tty and self.last_line is not None:
            sys.stderr.write("\n")
        print(f"refvae: {text}", file=sys.stderr, flush=True)
        self.last_line = None

    def show(self, final=False):
        """The progress: redrawn in place on a terminal; elsewhere (a log file) one line at most
        every 10 s, and at most one per tenth of the time elapsed so far, so a long run writes a few
        dozen lines, not thousands."""
        now = self.clock()
        elapsed = now - self.started
        if final:
            self.done = self.total
        frac = self.done / self.total
        if self.tty:
            bar = "#" * int(30 * frac)
            sys.stderr.write(f"\r[{bar:<30s}] {100 * frac:3.0f}% | {self.done}/{self.total} tasks | "
                             f"{elapsed:.0f} s")
            if final:
                sys.stderr.write("\n")
            sys.stderr.flush()
            self.last_line = now
            return
        if not final and self.last_line is not None and now - self.last_line < max(10.0, elapsed / 10):
            return
        if self.last_line is None and not final and elapsed < 10.0:
            return
        print(f"refvae: {self.done}/{self.total} tasks done ({100 * frac:.0f}%) after {elapsed:.0f} s",
              file=sys.stderr, flush=True)
        self.last_line = now


def _dashboard(client):
    try:
        link = client.dashboard_link
    except Exception:  # noqa: BLE001 - no dashboard (e.g. bokeh missing)
        link = None
    return link


def _in_graph(value, what):
    """``value`` as a Delayed of its own, under a fresh key: it travels in the task graph, so the
    scheduler keeps it and can send it again if every worker holding it is lost (a scattered future
    would be gone with them)."""
    dask, _, _ = _require_dask()
    return dask.delayed(value, name=f"refvae-{what}-{uuid.uuid4().hex}", traverse=False)


def _graph_size(graph):
    items = graph if isinstance(graph, (list, tuple)) else [graph]
    try:
        return sum(len(g.__dask_graph__()) for g in items)
    except Exception:  # noqa: BLE001 - only used for the progress fraction
        return 1


def _compute_on(client, graph, progress, message, worker_timeout=DEFAULT_WORKER_TIMEOUT):
    """``client.compute(graph)`` and its gathered result, watching the cluster (:class:`_Watch`):
    a ClusterError instead of a hang when no worker can run it, with a progress bar if asked.

    NumPy components and the queries travel in the graph on purpose (see components_to_dask): the
    scheduler keeps them, so a shard lost with a worker -- or with every worker -- can be re-sent;
    the "Sending large graph" warning is silenced for this reason. With ``progress``, prints the
    dashboard link and ``message`` first.
    """
    _, _, distributed = _require_dask()
    total = _graph_size(graph)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        futs = client.compute(graph)
    flist = list(futs) if isinstance(futs, (list, tuple)) else [futs]
    watch = _Watch(client, flist, total, progress, message, worker_timeout)
    try:
        if progress:
            link = _dashboard(client)
            if link:
                print(f"Dask dashboard: {link}", flush=True)
            print(message, flush=True)
        watch.wait()
        if any(f.status == "cancelled" for f in flist):
            if client.status != "running":
                raise watch.lost_scheduler()
            raise ClusterError(f"the computation was cancelled on the Dask scheduler at "
                               f"{watch.address} after {watch.elapsed():.0f} s")
        try:
            result = client.gather(futs)
            if progress:
                watch.show(final=True)
            return result
        except distributed.KilledWorker as exc:
            raise ClusterError(
                f"a task killed every worker that ran it ({exc}): the worker processes died while "
                f"running it (out of memory? see their logs; distributed.scheduler.allowed-failures "
                f"sets how many)") from None
        except CancelledError:
            if client.status != "running":
                raise watch.lost_scheduler() from None
            raise
    finally:
        del futs, flist


def _shard_blocks(comps, chunk):
    """``(bounds, mblocks, lblocks)``: the shards' row ranges [a, b) and the delayed blocks of the
    means and log-variances, one per shard (a _Components as Dask arrays chunked by ``chunk``)."""
    return comps.shard_blocks(chunk)  # files: one task reads both blocks of a shard (H17b)


def _log_mixture_on(client, z, comps, log_weights, chunk, split_every, threads_per_task, progress,
                    worker_timeout=DEFAULT_WORKER_TIMEOUT):
    """The cluster path on checked inputs (z (M, L) float64, comps a _Components)."""
    dask, _, _ = _require_dask()
    bounds, mblocks, lblocks = _shard_blocks(comps, chunk)
    w0 = -math.log(comps.N)  # the kernel's uniform weight, computed once here
    zd = _in_graph(z, "queries")  # recoverable: not client.scatter (lost with its workers)
    # _shard_partial tasks (H17b: inside _shards._resume_from, saved and reloaded partials)
    parts = _shard_tasks(zd, z, comps, bounds, mblocks, lblocks, w0, log_weights, threads_per_task, chunk)
    root, _ = combine_tree(parts, split_every, dask.delayed(_combine_group, pure=True))
    del parts, zd
    m, s = _compute_on(client, root, progress,
                       f"log q(z): {len(z)} queries x {comps.N} components in {len(bounds)} "
                       f"shards of <= {chunk}", worker_timeout)
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


def _evaluate(z, comps, log_weights, client, chunk, split_every, threads_per_task, progress,
              worker_timeout=DEFAULT_WORKER_TIMEOUT):
    if client is None:
        means, log_vars = comps.to_numpy()
        return mixture_log_prob(z, means, log_vars, log_weights)
    return _log_mixture_on(client, z, comps, log_weights, chunk, split_every, threads_per_task, progress,
                           worker_timeout)


class _LogQz:
    """The ln q(z) evaluator that :mod:`refvae.estimators` takes (``log_qz(z) -> (B,)``): the
    aggregated posterior of the components ``comps`` (a _Components), sharded over the cluster of
    ``client``, or on this machine (``client`` None)."""

    def __init__(self, comps, client, chunk, split_every, threads_per_task, progress,
                 worker_timeout=DEFAULT_WORKER_TIMEOUT):
        self.comps, self.client, self.chunk = comps, client, chunk
        self.split_every, self.threads_per_task, self.progress = split_every, threads_per_task, progress
        self.worker_timeout = worker_timeout

    def __call__(self, z):
        return _evaluate(z, self.comps, None, self.client, self.chunk, self.split_every,
                         self.threads_per_task, self.progress, self.worker_timeout)


def log_mixture(z, means, log_vars=None, log_weights=None, *, client=None, scheduler=None,
                chunk=DEFAULT_CHUNK, split_every=DEFAULT_SPLIT_EVERY, threads_per_task=1,
                progress=False, connect_timeout=DEFAULT_CONNECT_TIMEOUT,
                worker_timeout=DEFAULT_WORKER_TIMEOUT):
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
    progress : bool. Print the dashboard link, and the progress on stderr (cluster path; redrawn
        on a terminal, else one line at most every 10 s).
    connect_timeout : seconds to reach ``scheduler``.
    worker_timeout : seconds to wait for a running worker, at the start and whenever none is left
        (all lost, or all paused for memory) while nothing progresses; then a ``ClusterError``.
        Every worker must have this machine's refvae, NumPy, Numba and Python (``ClusterError``
        naming the worker otherwise).

    Returns
    -------
    (M,) float64. Error ``<= c u (|f| + S + ln n) + D (k + 3 + ln k) u + 2 u`` (module docstring).
    """
    chunk = _check_chunk(chunk)
    split_every = _check_split_every(split_every)
    threads_per_task = _check_threads(threads_per_task)
    _check_cluster_args(client, scheduler, connect_timeout)
    worker_timeout = _check_worker_timeout(worker_timeout)
    comps = _Components(means, log_vars)
    z = _check_queries(z, comps.L)
    log_weights = _check_log_weights(log_weights, comps.N)
    with _cluster(client, scheduler, connect_timeout, worker_timeout) as c:
        return _evaluate(z, comps, log_weights, c, chunk, split_every, threads_per_task, progress,
                         worker_timeout)


def log_qz(z, means, log_vars=None, *, client=None, scheduler=None, chunk=DEFAULT_CHUNK,
           split_every=DEFAULT_SPLIT_EVERY, threads_per_task=1, progress=False,
           connect_timeout=DEFAULT_CONNECT_TIMEOUT, worker_timeout=DEFAULT_WORKER_TIMEOUT):
    r"""``log q(z) = log (1/N) sum_n N(z | mu_n, diag e^{v_n})``, the aggregated posterior (eq. 4.44),
    at each row of z: :func:`log_mixture` with uniform log-weights ``-ln N``.

    On the single-machine path (neither ``client`` nor ``scheduler``) this is exactly
    ``AggregatedPosterior(L, means, log_vars).log_prob(z)``; on a cluster with ``chunk >= N`` too.
    """
    return log_mixture(z, means, log_vars, None, client=client, scheduler=scheduler, chunk=chunk,
                       split_every=split_every, threads_per_task=threads_per_task,
                       progress=progress, connect_timeout=connect_timeout,
                       worker_timeout=worker_timeout)
