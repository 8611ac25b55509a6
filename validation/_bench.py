r"""Shared machinery of the benchmark scripts in ``validation/`` (a helper module, not a benchmark).

``bench_mixture.py``, ``bench_epoch.py``, ``bench_aggregated.py``, ``bench_estimators.py`` and
``bench_distributed.py`` import it as ``import _bench`` after putting their own directory on
``sys.path`` (so they run from any working directory); it holds the one implementation of

- **threads**: :func:`setup_threads` parses ``--threads`` before NumPy is imported and sets the
  BLAS/OpenMP environment variables (they are read when the libraries load), :func:`import_torch`;
- **machine load** (the machine may be shared with other processes, other VMs on the host):
  :func:`cpu_snapshot` / :func:`contention` (cores used by *other* processes = the machine's busy
  time from ``/proc/stat`` minus this process's and its children's CPU time, and the hypervisor's
  steal time), :func:`wait_for_idle` (within a run-wide budget, :data:`WAIT_BUDGET`),
  :class:`LoadTracker` (contention per named phase), :func:`retry_phase` (re-run a contended
  timing phase), :func:`flag_contended` (the per-case "load" line and ``CONTENDED`` flag);
- **timing and formatting**: :func:`run_timed`, :func:`med`, :func:`fmt_t`, :func:`fmt_x`,
  :func:`fmt_e`, :func:`max_abs`, :func:`chunk_rows`;
- **provenance**: :func:`provenance` (:func:`refvae.tools.provenance.provenance`, the package's
  one record, plus the run's threads, seed, command, load and thread pools), :func:`cpu_simd`;
- **output**: :func:`arg_parser`, :func:`add_run_options`, :func:`parse_triples`, :func:`output_paths`,
  :func:`write_report` and the Markdown fragments :func:`md_header`, :func:`md_versions`,
  :func:`md_run`, :func:`md_machine_load`.

Nothing here imports NumPy at module level: the scripts import this module *before* NumPy, so
that :func:`setup_threads` can still set the thread environment variables.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LN_2PI = math.log(2.0 * math.pi)
REPO = HERE.parent
RESULTS = HERE / "results"


def log(*a):
    print(*a, flush=True)


# ============================================================================ threads

THREAD_ENV_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                   "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def early_threads(argv, default=2):
    """The ``--threads`` value of argv (at least 1), parsed before the script's full parser runs."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--threads", type=int, default=default)
    ns, _ = p.parse_known_args(argv)
    return max(1, ns.threads)


def setup_threads(argv=None):
    """Parse ``--threads`` from argv (default ``sys.argv[1:]``) and set the BLAS/OpenMP thread
    environment variables to it; returns the thread count.

    Must run before NumPy is imported (BLAS reads its environment variables at load time). Numba's
    pool defaults to the core count, so ``NUMBA_NUM_THREADS`` is raised when more threads are
    requested than there are cores. The caller still calls ``numba.set_num_threads`` (and
    :func:`import_torch` sets torch's count).
    """
    threads = early_threads(sys.argv[1:] if argv is None else argv)
    for var in THREAD_ENV_VARS:
        os.environ[var] = str(threads)
    if threads > (os.cpu_count() or 1):
        os.environ["NUMBA_NUM_THREADS"] = str(threads)
    return threads


def import_torch(disabled, threads):
    """(torch, version) with torch set to `threads` threads, or (None, why not)."""
    if disabled:
        return None, "disabled (--no-torch)"
    try:
        import torch
    except ImportError as exc:  # the columns then say "not installed"
        return None, f"not installed ({exc})"
    torch.set_num_threads(threads)
    return torch, torch.__version__


# ============================================================================ machine load

_CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
CONTENDED_CORES = 0.25  # others using more than this on average: the phase's timings are suspect


def _own_cpu_times():
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def cpu_snapshot(own_cpu=None):
    """(wall clock, machine busy CPU s, machine steal CPU s, own CPU s) now.

    Busy = user + nice + system + irq + softirq of the first line of ``/proc/stat`` (NaN where it
    cannot be read). Own = ``own_cpu()`` if given (e.g. a process tree's CPU time), else this
    process's and its waited children's CPU time (``os.times``).
    """
    try:
        with open("/proc/stat") as fh:
            vals = [int(v) for v in fh.readline().split()[1:]]
        busy = (vals[0] + vals[1] + vals[2] + vals[5] + vals[6]) / _CLK  # user nice system irq softirq
        steal = (vals[7] if len(vals) > 7 else 0) / _CLK
    except (OSError, ValueError, IndexError):
        busy = steal = float("nan")
    own = own_cpu() if own_cpu is not None else _own_cpu_times()
    return time.perf_counter(), busy, steal, own


def contention(s0, s1, steal=True):
    """Cores used by other processes (machine busy time minus ours) and steal, averaged over
    [s0, s1] (two :func:`cpu_snapshot`); ``steal=False`` leaves out ``steal_cores``."""
    wall = max(s1[0] - s0[0], 1e-9)
    own = s1[3] - s0[3]
    c = {"wall_s": wall, "own_cores": own / wall,
         "others_cores": max(0.0, (s1[1] - s0[1]) - own) / wall}
    if steal:
        c["steal_cores"] = (s1[2] - s0[2]) / wall
    c["loadavg"] = list(os.getloadavg())
    return c


# All waiting for an idle machine in one run: left_s is the budget left (a script with
# --max-total-wait sets it; unlimited otherwise), waited_s what was spent.
WAIT_BUDGET = {"left_s": float("inf"), "waited_s": 0.0}


def wait_for_idle(max_wait, window=5.0, quiet=False):
    """Wait (up to max_wait seconds, and within the run's total budget WAIT_BUDGET) until other
    processes use < CONTENDED_CORES cores over a window of `window` seconds. Returns the last
    window's :func:`contention`, or None when no waiting was allowed (budget used up)."""
    t_begin = time.perf_counter()
    t_end = t_begin + min(max_wait, max(0.0, WAIT_BUDGET["left_s"]))
    if t_end <= t_begin:
        return None
    try:
        while True:
            s0 = cpu_snapshot()
            time.sleep(window)
            c = contention(s0, cpu_snapshot())
            if c["others_cores"] < CONTENDED_CORES or time.perf_counter() >= t_end:
                return c
            if not quiet:
                log(f"waiting for an idle machine: others use {c['others_cores']:.2f} cores, load "
                    f"{c['loadavg'][0]:.2f}")
    finally:
        spent = time.perf_counter() - t_begin
        WAIT_BUDGET["left_s"] -= spent
        WAIT_BUDGET["waited_s"] += spent


def wait_before_run(seconds):
    """``--wait-idle``: before the run, wait up to `seconds` for an idle machine and log the load."""
    if seconds > 0:
        c = wait_for_idle(seconds)
        if c is not None:
            log(f"machine before the run: others use {c['others_cores']:.2f} cores, load "
                f"{c['loadavg'][0]:.2f}")


class LoadTracker:
    """Contention per phase: ``phase(name)`` stores in ``record[name]`` the :func:`contention` since
    the previous call (or since the tracker was made)."""

    def __init__(self, record):
        self.record = record
        self.snap = cpu_snapshot()

    def phase(self, name):
        now = cpu_snapshot()
        self.record[name] = contention(self.snap, now)
        self.snap = now


def retry_phase(name, fn, record, *, retries, wait_idle):
    """Run fn (a timing phase) and store its :func:`contention` (with ``attempt``) in
    ``record[name]``; if other processes used > CONTENDED_CORES meanwhile, wait for an idle machine
    (up to max(wait_idle, 60 s)) and run it again, up to `retries` times; returns the result of
    the least contended attempt. With wait_idle > 0 the first attempt waits too."""
    best = None
    for attempt in range(1 + max(0, retries)):
        if attempt > 0 or wait_idle > 0:
            wait_for_idle(max(wait_idle, 60.0 if attempt else 0.0), quiet=True)
        gc.collect()
        s0 = cpu_snapshot()
        res = fn()
        c = contention(s0, cpu_snapshot())
        c["attempt"] = attempt + 1
        if best is None or c["others_cores"] < best[1]["others_cores"]:
            best = (res, c)
        if c["others_cores"] <= CONTENDED_CORES:
            break
        log(f"         ({name}: other processes used {c['others_cores']:.2f} cores; "
            + ("retrying)" if attempt < retries else "giving up, keeping the least contended)"))
        res = None
    record[name] = best[1]
    return best[0]


def flag_contended(r, *, steal=False, loadavg=True, what="timings are unreliable"):
    """Set ``r["contended"]`` (some phase in ``r["contention"]`` above CONTENDED_CORES) and log the
    per-phase load line: cores used by others per phase (with the attempt where a phase was
    re-run), then in parentheses the largest steal (`steal`) and the 1-minute load average
    (`loadavg`), then ``** CONTENDED: <what> **`` if contended."""
    phases = r["contention"]
    r["contended"] = max(c["others_cores"] for c in phases.values()) > CONTENDED_CORES
    extra = []
    if steal:
        extra.append(f"steal {max(c['steal_cores'] for c in phases.values()):.2f}")
    if loadavg:
        extra.append(f"load average {os.getloadavg()[0]:.2f}")
    log("load     other processes used " + ", ".join(
        f"{k} {c['others_cores']:.2f}" + (f" (attempt {c['attempt']})" if c.get("attempt", 1) > 1 else "")
        for k, c in phases.items())
        + " cores on average" + (f" ({', '.join(extra)})" if extra else "")
        + (f"  ** CONTENDED: {what} **" if r["contended"] else ""))
    return r["contended"]


# ============================================================================ timing and formatting

def run_cases(bench, cases, snap_run, t_start):
    """``[bench(case) for case in cases]`` (a ``gc.collect()`` after each), then the whole run's
    :func:`contention` since ``snap_run`` and its total time since ``t_start`` (logged):
    ``(results, run_contention, total_s)``."""
    results = []
    for case in cases:
        results.append(bench(case))
        gc.collect()
    run_contention = contention(snap_run, cpu_snapshot())
    total = time.perf_counter() - t_start
    log(f"\nwhole run: other processes used {run_contention['others_cores']:.2f} cores on average; "
        f"total {total:.0f} s")
    return results, run_contention, total


def run_timed(fn, repeats, warmup):
    """(last result, list of wall times of max(1, repeats) calls); one untimed call first if
    warmup. The previous result is dropped and the garbage collector run before every timed call."""
    if warmup:
        fn()
        gc.collect()
    times, out = [], None
    for _ in range(max(1, repeats)):
        out = None
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, times


def med(ts):
    """Median of a list of times (None for an empty list)."""
    import numpy as np
    return float(np.median(ts)) if ts else None


def fmt_t(t, minutes=False):
    """A duration as µs, ms or s (by its magnitude; negative differences too); with `minutes`,
    600 s and above as minutes."""
    if t is None:
        return "-"
    a = abs(t)
    if a < 1e-3:
        return f"{t * 1e6:.0f} µs"
    if a < 1.0:
        return f"{t * 1e3:.1f} ms"
    if minutes and a >= 600:
        return f"{t / 60:.1f} min"
    return f"{t:.2f} s"


def fmt_x(x):
    return "-" if x is None else f"{x:.1f}×"


def fmt_e(x):
    return "-" if x is None else f"{x:.1e}"


def max_abs(a, b):
    import numpy as np
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def chunk_rows(n_components, L, budget_bytes):
    """Queries per chunk so that one (b, n_components, L) float64 array stays under the budget."""
    return max(1, int(budget_bytes // (8 * n_components * L)))


def scipy_mixture_log_prob(z, means, log_vars, log_weights, budget_bytes):
    """The baseline of the mixture benchmarks: ``log sum_k exp(w_k + log N(z_b | mu_k, diag
    e^{v_k}))`` by NumPy broadcasting + ``scipy.special.logsumexp``, chunked over the queries z
    (B, L) so that one (b, K, L) float64 buffer stays under ``budget_bytes``."""
    import numpy as np
    from scipy.special import logsumexp
    B, L = z.shape
    K = means.shape[0]
    inv_sd = np.exp(-0.5 * log_vars)
    const = log_weights - 0.5 * np.sum(LN_2PI + log_vars, axis=1)
    step = chunk_rows(K, L, budget_bytes)
    buf = np.empty((min(step, B), K, L))
    out = np.empty(B)
    for b0 in range(0, B, step):
        zc = z[b0:b0 + step]
        n = zc.shape[0]
        d = buf[:n]
        np.subtract(zc[:, None, :], means[None, :, :], out=d)
        d *= inv_sd
        np.square(d, out=d)                       # (z - mu)^2 / var
        t = const - 0.5 * d.sum(axis=2)           # (n, K)
        out[b0:b0 + n] = logsumexp(t, axis=1)
    return out


# ============================================================================ provenance

def cpu_simd():
    """The SIMD extensions of the CPU that matter for the kernels (``/proc/cpuinfo`` flags)."""
    flags = set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return [fl for fl in ("sse4_2", "avx", "avx2", "fma", "avx512f") if fl in flags]


def numba_threading_layer():
    import numba
    try:
        return numba.threading_layer()
    except ValueError:
        return "not yet initialised"


def torch_blas(torch):
    """The BLAS line of torch's build configuration (None without torch)."""
    if torch is None:
        return None
    try:
        cfg = torch.__config__.show()
        for line in cfg.splitlines():
            if "BLAS_INFO" in line:
                return line.strip()
        return "mkl" if torch.backends.mkl.is_available() else "unknown"
    except Exception:
        return "unknown"


def threadpools(keys=("internal_api", "num_threads", "version")):
    """threadpoolctl's view of the loaded BLAS/OpenMP pools (the given keys of each)."""
    try:
        from threadpoolctl import threadpool_info
        return [{k: p.get(k) for k in keys} for p in threadpool_info()]
    except Exception:
        return "threadpoolctl unavailable"


def provenance(*, seed, threads=None, torch=None, torch_status=None, extra_versions=(), sources=None,
               with_torch_blas=False, pool_keys=("internal_api", "num_threads", "version")):
    """What ran, where: :func:`refvae.tools.provenance.provenance` (the package's one record:
    ``refvae``, ``git_revision``, ``git_dirty``, the versions of Python, NumPy, Numba, SciPy and the
    optional packages, ``platform``, ``machine``, ``cpu_model``, ``cpu_count``, ``numba_threads``,
    ``blas_threads``), then what a benchmark run adds, in this order (optional ones in brackets):

    [``source_sha256_16`` = `sources`], [`extra_versions`, e.g. ``dask``, that the record lacks],
    [``torch`` and, with `with_torch_blas`, ``torch_blas``, if the script uses torch: `torch` or
    `torch_status` given], ``simd`` (:func:`cpu_simd`), ``threads`` (the ``--threads`` asked for),
    ``numba_threading_layer``, [``torch_threads``, ``torch_interop_threads`` with torch],
    ``thread_env``, ``seed``, ``command``, ``date_utc``, ``loadavg_start``, ``threadpools``
    (`pool_keys` of each pool). A JSON-able dict.
    """
    import importlib

    from refvae.tools.provenance import provenance as package_provenance
    with_torch = torch is not None or torch_status is not None
    prov = package_provenance()
    if sources is not None:
        prov["source_sha256_16"] = sources
    for name in extra_versions:
        if name not in prov:
            prov[name] = importlib.import_module(name).__version__
    if with_torch:
        prov["torch"] = torch.__version__ if torch is not None else torch_status
        if with_torch_blas:
            prov["torch_blas"] = torch_blas(torch)
    prov.update(simd=cpu_simd(), threads=threads, numba_threading_layer=numba_threading_layer())
    if with_torch:
        prov["torch_threads"] = torch.get_num_threads() if torch is not None else None
        prov["torch_interop_threads"] = torch.get_num_interop_threads() if torch is not None else None
    prov.update(thread_env={v: os.environ.get(v) for v in THREAD_ENV_VARS}, seed=seed,
                command=" ".join([Path(sys.executable).name] + sys.argv),
                date_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                loadavg_start=list(os.getloadavg()), threadpools=threadpools(pool_keys))
    return prov


def log_uncommitted(prov):
    if prov.get("git_dirty"):
        log("note: the checkout has uncommitted changes (git_dirty); what was measured may differ "
            f"from {prov['git_revision']}")


# ============================================================================ output

def arg_parser(doc, quick=None):
    """The scripts' argument parser: the module docstring's first paragraph as the description;
    with ``quick`` (its help text) the ``--quick`` flag."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    if quick is not None:
        p.add_argument("--quick", action="store_true", help=quick)
    return p


def add_run_options(p, stem, *, torch=True, wait_help="first wait up to this long until other "
                    "processes use < 0.25 cores"):
    """The options every benchmark script takes: ``--threads`` (default 2), ``--seed``, ``--json``,
    ``--md`` (:func:`output_paths`), [``--no-torch``], ``--wait-idle``."""
    p.add_argument("--threads", type=int, default=2, help="threads for Numba, torch and BLAS; default 2")
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--json", default=None, help=f"output JSON (default validation/results/{stem}.json)")
    p.add_argument("--md", default=None, help="output Markdown (default: the JSON path with .md)")
    if torch:
        p.add_argument("--no-torch", action="store_true", help="behave as if torch were not installed")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS", help=wait_help)
    return p


def parse_triples(items, flag, what, normalise=None):
    """Each of ``items`` split at commas into three stripped fields (``normalise(item)`` first, if
    given), or ``SystemExit`` naming ``flag`` and ``what`` the triples are."""
    out = []
    for it in items:
        parts = [q.strip() for q in (normalise(it) if normalise else it).split(",") if q.strip()]
        if len(parts) != 3:
            raise SystemExit(f"{flag} expects {what} triples, got {it!r}")
        out.append(parts)
    return out


def md_header(title, prov, versions, threads, run_extra=""):
    """The first lines of a report: ``# title``, then :func:`md_versions` + ``versions`` (the
    script's other versions), ``**T threads** (threads)`` and :func:`md_run` + ``run_extra``."""
    return [f"# {title}", "",
            md_versions(prov) + f"{versions}. **{prov['threads']} threads** {threads}. " + md_run(prov)
            + run_extra, ""]


def output_paths(args, stem):
    """(JSON path, Markdown path): ``--json`` or ``validation/results/<stem>[_quick].json``, and
    ``--md`` or the JSON path with ``.md``."""
    name = f"{stem}_quick" if args.quick else stem
    json_path = Path(args.json) if args.json else RESULTS / f"{name}.json"
    md_path = Path(args.md) if args.md else json_path.with_suffix(".md")
    return json_path, md_path


def write_report(json_path, md_path, report, md_text):
    """Write the JSON report (indent 1; non-JSON numbers through float) and the Markdown text,
    creating their directories, and log where."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=1, default=float) + "\n")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(md_text)
    log(f"wrote {json_path} and {md_path}")


def md_versions(prov):
    """Markdown: "refvae V at `rev` [(uncommitted changes)], date; CPU (...), platform; Python
    V, NumPy V, Numba V, SciPy V" -- the script continues with its other versions."""
    return (f"refvae {prov['refvae']} at `{prov['git_revision']}`"
            + (" (uncommitted changes)" if prov.get("git_dirty") else "")
            + f", {prov['date_utc']}; {prov['cpu_model']} ({prov['cpu_count']} logical CPUs, "
            f"{'/'.join(prov['simd'])}), {prov['platform']}; Python {prov['python']}, NumPy {prov['numpy']}, "
            f"Numba {prov['numba']}, SciPy {prov['scipy']}")


def md_run(prov):
    """Markdown: "Seed S. Command: `cmd`. [Load average at start X.]"."""
    return (f"Seed {prov['seed']}. Command: `{prov['command']}`."
            + (f" Load average at start {prov['loadavg_start'][0]:.2f}." if "loadavg_start" in prov else ""))


def md_machine_load(run_contention, contended=None):
    """Markdown: the run's machine load; `contended` (e.g. "Contended sizes (timings unreliable):
    ...") is set in bold, else "no phase was contended"."""
    rc = run_contention
    return (f"Machine load: other processes used {rc['others_cores']:.2f} cores on average "
            f"during the run (steal {rc['steal_cores']:.2f}; load average at the end "
            f"{rc['loadavg'][0]:.2f})"
            + (f". **{contended}**." if contended else "; no phase was contended."))
