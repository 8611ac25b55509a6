#!/usr/bin/env python
r"""Benchmark of refvae's streaming mixture kernel against NumPy/SciPy and PyTorch (a script, not a test).

What it measures
----------------
For queries z (B, L) and K diagonal-Gaussian components (means, log-variances (K, L), log-weights
(K,)), the forward ``f_b = log sum_k exp(w_k + log N(z_b | mu_k, diag exp(v_k)))`` and its VJP
(gradients of ``sum_b g_b f_b`` with respect to z, means, log-variances and log-weights), in one run
on one machine with one thread count (default 2, set for Numba, PyTorch and -- through environment
variables set before NumPy is imported -- OpenBLAS/OpenMP), for

- refvae: ``mixture_log_prob`` and ``mixture_log_prob_vjp(g, ..., ans=f)``;
- SciPy: NumPy broadcasting + ``scipy.special.logsumexp`` chunked over queries so that a chunk's
  (b, K, L) array stays under ``--budget-mb`` (256 MiB), and a NumPy VJP on the same chunking
  (two (b, K, L) buffers, given f);
- PyTorch (CPU, float64, if importable): ``MixtureSameFamily(Categorical(logits),
  Independent(Normal(loc, scale), 1)).log_prob(z)`` under ``no_grad`` for the forward, and forward +
  ``backward()`` for the gradients with respect to z, means, log-variances (scale = exp(v / 2)) and
  logits. Chunked over queries on the same budget (unchunked, the (B, K, L) temporaries at
  (10000, 10000, 16) are 12.8 GB each); each chunk's graph is freed after its backward.

Reported: median times of ``--repeats`` runs after warm-up, ratios alternative / refvae, agreement
(max abs differences), refvae's peak extra memory (fresh subprocess per measurement), machine peaks
(matmul GFLOP/s, ns per ``math.exp`` in a Numba loop, optional ``refvae.kernels.fastexp``), the bound
"one exp per (query, component) pair + 3 flops per (query, component, dimension)", a breakdown of
where refvae's time goes, and PASS/FAIL lines for the targets of the issue.

Data
----
means ~ N(0, 1), log_vars ~ N(-2, 0.5^2) (component standard deviations around e^-1 ~ 0.37, an
aggregated-posterior-like spread), log-weights uniform (-ln K each; torch gets the same vector as
logits), queries drawn from the mixture itself (a uniformly chosen component, then
z = mu_k + exp(v_k / 2) eps), upstream gradient g ~ N(0, 1). The generator for size (B, K, L) is
``numpy.random.default_rng([seed, B, K, L])``, so every size and every memory subprocess regenerates
the same arrays.

Usage
-----
    python validation/bench_mixture.py              # full run, minutes
    python validation/bench_mixture.py --quick      # first size, one repeat, seconds
    python validation/bench_mixture.py --sizes 10000,10000,16 --repeats 3 --json out.json
    python validation/bench_mixture.py --wait-idle 300   # on a shared machine (see below)

On a shared machine, other processes distort the timings (refvae's two-thread kernels more than the
single-threaded NumPy path). Every timing phase therefore records how many cores other processes
used meanwhile; a phase where they used more than 0.25 cores is re-run (``--retries``, after waiting
for an idle machine within ``--max-total-wait``) and sizes that stay contended are flagged in the
output. ``--wait-idle`` also waits before the run and before every phase.

Results go to ``validation/results/bench_mixture.json`` and ``.md`` (``--quick`` writes
``bench_mixture_quick.*`` instead, so a smoke run does not overwrite the full results; ``--json`` /
``--md`` override either).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _bench.py sits next to this script
import _bench  # noqa: E402  (shared benchmark machinery; imports no NumPy)

THREADS = _bench.setup_threads(sys.argv[1:])  # BLAS thread env vars, before NumPy is imported

import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from _bench import (CONTENDED_CORES, WAIT_BUDGET, chunk_rows, contention, cpu_snapshot,  # noqa: E402
                    fmt_e, fmt_t, fmt_x, log, max_abs, med, run_timed)
from refvae.kernels.mixture import mixture_log_prob, mixture_log_prob_vjp  # noqa: E402

numba.set_num_threads(THREADS)

DEFAULT_SIZES = ((1797, 1797, 2), (10000, 10000, 16), (1000, 60000, 32))
TARGET_SIZE = (10000, 10000, 16)   # speed targets
MEMORY_SIZE = (1000, 60000, 32)    # memory target
LN_2PI = math.log(2.0 * math.pi)
MIB = 2.0 ** 20
SOURCE_HASHES = {}  # filled in main(); memory subprocesses compare against it
LARGE_ELEMENTS = 5e7  # B*K*L above this: the SciPy/torch paths run once, without a warm-up call

TARGETS = {
    "fwd_vs_torch": 15.0,      # forward speed-up over torch MixtureSameFamily at TARGET_SIZE
    "fwd_vs_scipy": 15.0,      # forward speed-up over NumPy broadcast + scipy logsumexp
    "fwdvjp_vs_torch": 10.0,   # forward + VJP speed-up over torch forward + backward
    "fwd_extra_mib": 64.0,     # refvae forward peak extra memory at MEMORY_SIZE
    "fwd_over_bound": 3.0,     # refvae forward time / (exp + flop) bound, every size
}


# ============================================================================ data

def make_inputs(B, K, L, seed):
    """Aggregated-posterior-like components and queries drawn from the mixture (module docstring)."""
    rng = np.random.default_rng([seed, B, K, L])
    means = rng.standard_normal((K, L))
    log_vars = -2.0 + 0.5 * rng.standard_normal((K, L))
    log_weights = np.full(K, -math.log(K))
    comp = rng.integers(0, K, size=B)
    z = means[comp] + np.exp(0.5 * log_vars[comp]) * rng.standard_normal((B, L))
    g = rng.standard_normal(B)
    return {"z": z, "means": means, "log_vars": log_vars, "log_weights": log_weights, "g": g}


# ============================================================================ SciPy / NumPy path

scipy_forward = _bench.scipy_mixture_log_prob  # NumPy broadcasting + scipy.special.logsumexp


def numpy_vjp(g, z, means, log_vars, log_weights, f, budget_bytes):
    """NumPy VJP given the forward f, same chunking (two (b, K, L) buffers: z - mu and its square)."""
    B, L = z.shape
    K = means.shape[0]
    inv_var = np.exp(-log_vars)
    inv_sd = np.exp(-0.5 * log_vars)
    const = log_weights - 0.5 * np.sum(LN_2PI + log_vars, axis=1)
    step = chunk_rows(K, L, budget_bytes)
    diff = np.empty((min(step, B), K, L))
    sq = np.empty_like(diff)
    dz = np.empty((B, L))
    dmeans = np.zeros((K, L))
    dlog_vars = np.zeros((K, L))
    dlog_weights = np.zeros(K)
    for b0 in range(0, B, step):
        sl = slice(b0, min(B, b0 + step))
        n = sl.stop - sl.start
        d, s = diff[:n], sq[:n]
        np.subtract(z[sl][:, None, :], means[None, :, :], out=d)
        np.multiply(d, inv_sd, out=s)
        np.square(s, out=s)                                    # (z - mu)^2 / var
        t = const - 0.5 * s.sum(axis=2)                        # (n, K)
        with np.errstate(under="ignore"):
            gr = g[sl, None] * np.exp(t - f[sl, None])         # g_b r_bk
        d *= inv_var                                           # (z - mu) / var
        dz[sl] = -np.einsum("bk,bkl->bl", gr, d)
        dmeans += np.einsum("bk,bkl->kl", gr, d)
        dlog_vars += 0.5 * np.einsum("bk,bkl->kl", gr, s)
        dlog_weights += gr.sum(axis=0)
    dlog_vars -= 0.5 * dlog_weights[:, None]
    return dz, dmeans, dlog_vars, dlog_weights


# ============================================================================ PyTorch path

def _torch_mixture(torch, means, log_vars, logits):
    D = torch.distributions
    comp = D.Independent(D.Normal(means, torch.exp(0.5 * log_vars), validate_args=False), 1,
                         validate_args=False)
    return D.MixtureSameFamily(D.Categorical(logits=logits, validate_args=False), comp,
                               validate_args=False)


def torch_forward(torch, z, means, log_vars, log_weights, budget_bytes):
    B, L = z.shape
    K = means.shape[0]
    step = chunk_rows(K, L, budget_bytes)
    zt = torch.from_numpy(z)
    out = torch.empty(B, dtype=torch.float64)
    with torch.no_grad():
        mix = _torch_mixture(torch, torch.from_numpy(means), torch.from_numpy(log_vars),
                             torch.from_numpy(log_weights))
        for b0 in range(0, B, step):
            out[b0:b0 + step] = mix.log_prob(zt[b0:b0 + step])
    return out.numpy()


def torch_forward_backward(torch, g, z, means, log_vars, log_weights, budget_bytes):
    """Forward + autograd backward of sum_b g_b f_b; returns f, dz, dmeans, dlog_vars, dlogits."""
    B, L = z.shape
    K = means.shape[0]
    step = chunk_rows(K, L, budget_bytes)
    zt = torch.from_numpy(z).clone().requires_grad_(True)
    mt = torch.from_numpy(means).clone().requires_grad_(True)
    lvt = torch.from_numpy(log_vars).clone().requires_grad_(True)
    lwt = torch.from_numpy(log_weights).clone().requires_grad_(True)
    gt = torch.from_numpy(g)
    f = np.empty(B)
    for b0 in range(0, B, step):
        # a fresh distribution per chunk, so that each chunk's graph is freed by its backward()
        mix = _torch_mixture(torch, mt, lvt, lwt)
        lp = mix.log_prob(zt[b0:b0 + step])
        (lp * gt[b0:b0 + step]).sum().backward()
        f[b0:b0 + step] = lp.detach().numpy()
    return f, zt.grad.numpy(), mt.grad.numpy(), lvt.grad.numpy(), lwt.grad.numpy()


# ============================================================================ machine peaks

@njit(fastmath=False)
def _exp_loop(x, out):
    for i in range(x.shape[0]):
        out[i] = math.exp(x[i])


def _make_scalar_loop(fn):
    @njit(fastmath=False)
    def loop(x, out):
        for i in range(x.shape[0]):
            out[i] = fn(x[i])
    return loop


def _time_samples(fn, repeats=7):
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return ts


def _time_median(fn, repeats=7):
    return float(np.median(_time_samples(fn, repeats)))


def _time_best(fn, repeats=7):
    return float(np.min(_time_samples(fn, repeats)))


EXP_ARGS = {  # name: (low, high) of uniformly drawn arguments
    "normal [-40, 1]": (-40.0, 1.0),
    "subnormal result [-744, -709]": (-744.0, -709.0),
    "underflow to 0 [-800, -746]": (-800.0, -746.0),
}


def probe_fastexp(x_by_kind, n):
    """Optional refvae.kernels.fastexp, probed for the APIs it may offer: a scalar Numba function (timed in
    a Numba loop), an array function ``fn(x) -> exp(x)``, ``fn(x, out)`` or ``fn(x, out, lo)``
    (``lo = -inf``: no cut-off). Array functions are timed with numba.set_num_threads(1), so every
    rate is ns per value on one thread. The fastest 'normal' rate is used for the second bound."""
    try:
        import refvae.kernels.fastexp as fe
    except ImportError:
        return {"status": "not present"}
    except Exception as exc:  # being written concurrently: report, do not fail the benchmark
        return {"status": f"import failed: {exc!r}"}
    names = [nm for nm in dir(fe) if not nm.startswith("_") and "exp" in nm.lower()
             and callable(getattr(fe, nm))]  # public functions only
    x_small = np.linspace(-30.0, 1.0, 257)
    ref = np.exp(x_small)
    styles = {"array fn(x)": lambda fn, x, o: fn(x),
              "array fn(x, out)": lambda fn, x, o: (fn(x, o), o)[1],
              "array fn(x, out, lo=-inf)": lambda fn, x, o: (fn(x, o, -np.inf), o)[1]}
    found, tried = {}, []
    for nm in names:
        fn = getattr(fe, nm)
        if hasattr(fn, "py_func"):  # scalar Numba function inside a Numba loop
            try:
                loop = _make_scalar_loop(fn)
                out = np.empty_like(x_small)
                loop(x_small, out)
                if np.allclose(out, ref, rtol=1e-13, atol=0.0):
                    res = {"api": "scalar, in a Numba loop"}
                    for kind, xs in x_by_kind.items():
                        buf = np.empty_like(xs)
                        res[kind] = _time_best(lambda: loop(xs, buf)) / n * 1e9
                    found[nm] = res
                    continue
                tried.append(f"{nm} (scalar): wrong values")
            except Exception as exc:
                tried.append(f"{nm} (scalar): {type(exc).__name__}")
        for style, call in styles.items():
            try:
                y = call(fn, x_small, np.empty_like(x_small))
                if not (isinstance(y, np.ndarray) and y.shape == x_small.shape
                        and np.allclose(y, ref, rtol=1e-13, atol=0.0)):
                    tried.append(f"{nm} ({style}): wrong values")
                    continue
                res = {"api": style}
                prev = numba.get_num_threads()
                numba.set_num_threads(1)
                try:
                    for kind, xs in x_by_kind.items():
                        buf = np.empty_like(xs)
                        res[kind] = _time_best(lambda: call(fn, xs, buf)) / n * 1e9
                finally:
                    numba.set_num_threads(prev)
                found[nm] = res
                break
            except Exception as exc:
                tried.append(f"{nm} ({style}): {type(exc).__name__}")
    if not found:
        return {"status": "present, no usable exp function recognised", "tried": tried,
                "attributes": [nm for nm in dir(fe) if not nm.startswith("__")]}
    best = min(found, key=lambda k: found[k]["normal [-40, 1]"])
    return {"status": "ok", "functions": found, "best": best,
            "normal [-40, 1]": found[best]["normal [-40, 1]"]}


def _fastexp_text(fe):
    if fe.get("status") != "ok":
        return str(fe.get("status"))
    return "; ".join(f"`{nm}` ({r['api']}): " + ", ".join(f"{k} {r[k]:.2f} ns" for k in EXP_ARGS)
                     for nm, r in fe["functions"].items())


def measure_peaks(seed, with_fastexp=True):
    """Machine peaks: float64 matmul GFLOP/s on THREADS threads, ns per exp on one thread.

    Each rate is sampled several times; 'best' (max GFLOP/s, min ns) is the machine's capability,
    'median' shows how much a shared host moves it. Measured at the start and at the end of a run.
    """
    res = {}
    snap = cpu_snapshot()
    n = 2000
    rng = np.random.default_rng([seed, 1])
    a = rng.standard_normal((n, n))
    b = rng.standard_normal((n, n))
    gf = [2.0 * n ** 3 / t / 1e9 for t in _time_samples(lambda: a @ b, repeats=9)]
    res["matmul_n"] = n
    res["matmul_gflops_samples"] = gf

    m = 1 << 22
    xs = {kind: rng.uniform(lo, hi, size=m) for kind, (lo, hi) in EXP_ARGS.items()}
    out = np.empty(m)
    res["exp_n"] = m
    res["numba_math_exp_ns_samples"] = {
        kind: [t / m * 1e9 for t in _time_samples(lambda: _exp_loop(x, out))] for kind, x in xs.items()}
    res["numpy_exp_ns_samples"] = {
        kind: [t / m * 1e9 for t in _time_samples(lambda: np.exp(x, out=out))] for kind, x in xs.items()}
    res["contention"] = contention(snap, cpu_snapshot())
    if with_fastexp:
        res["fastexp"] = probe_fastexp(xs, m)
    return res


def combine_peaks(*runs):
    """Best and median over the samples of several measure_peaks runs."""
    first = runs[0]
    gf = [v for r in runs for v in r["matmul_gflops_samples"]]
    out = {"matmul_n": first["matmul_n"], "exp_n": first["exp_n"], "runs": list(runs),
           "matmul_gflops": max(gf), "matmul_gflops_median": float(np.median(gf)),
           "matmul_gflops_min": min(gf)}
    for key in ("numba_math_exp_ns", "numpy_exp_ns"):
        samples = {k: [v for r in runs for v in r[f"{key}_samples"][k]] for k in EXP_ARGS}
        out[key] = {k: min(v) for k, v in samples.items()}
        out[f"{key}_median"] = {k: float(np.median(v)) for k, v in samples.items()}
    out["fastexp"] = first.get("fastexp", {"status": "not measured"})
    return out


def log_peaks(label, pk):
    ex = pk["numba_math_exp_ns_samples"]
    gf = pk["matmul_gflops_samples"]
    log(f"peaks ({label}): matmul {THREADS} threads best {max(gf):.1f}, median {np.median(gf):.1f}, "
        f"worst {min(gf):.1f} GFLOP/s; Numba math.exp best/median "
        + ", ".join(f"{k} {min(v):.2f}/{np.median(v):.2f} ns" for k, v in ex.items())
        + "; np.exp best " + ", ".join(f"{k} {min(v):.2f} ns"
                                       for k, v in pk["numpy_exp_ns_samples"].items())
        + f"; other processes used {pk['contention']['others_cores']:.2f} cores meanwhile")


def exp_bound(B, K, L, exp_ns, gflops, threads):
    """One exp per (query, component) at exp_ns (one thread) split over `threads`, plus 3 flops per
    (query, component, dimension) at the measured `threads`-thread matmul rate."""
    return B * K * exp_ns * 1e-9 / threads + 3.0 * B * K * L / (gflops * 1e9)


# ============================================================================ where the time goes

def term_statistics(X, f, n_sub=64):
    """Fractions of (query, component) pairs for which refvae's kernels call exp, from a subsample."""
    z, means, log_vars, log_weights = X["z"], X["means"], X["log_vars"], X["log_weights"]
    B, L = z.shape
    K = means.shape[0]
    idx = np.unique(np.linspace(0, B - 1, min(B, n_sub)).astype(np.int64))
    inv_sd = np.exp(-0.5 * log_vars)
    const = log_weights - 0.5 * np.sum(LN_2PI + log_vars, axis=1)
    t = np.empty((idx.size, K))
    for j, b in enumerate(idx):
        d = (z[b] - means) * inv_sd
        t[j] = const - 0.5 * np.einsum("kl,kl->k", d, d)
    tmax = t.max(axis=1, keepdims=True)
    skip = -(math.log(K) + 40.0)   # refvae.kernels.mixture.SKIP_MARGIN = 40
    rel = t - f[idx, None]
    return {
        "subsample_queries": int(idx.size),
        "forward_exp_fraction": float(np.mean(t - tmax >= skip)),   # reference m is within 1 of max
        "vjp_exp_fraction": float(np.mean(rel >= -746.0)),          # VJP_UNDERFLOW
        "responsibility_nonzero_fraction": float(np.mean(np.exp(rel) > 0.0)),
        "median_t_minus_f": float(np.median(rel)),
    }


def breakdown(X, f, repeats):
    """Time refvae's internal stages (private API; reported as unavailable if it changed)."""
    try:
        from refvae.kernels import mixture as M
        z, means, log_vars, lw, g = X["z"], X["means"], X["log_vars"], X["log_weights"], X["g"]
        K = means.shape[0]
        out = {}
        tiles, ts = run_timed(lambda: M._tile_components(means, log_vars, lw, M.TILE), repeats, False)
        out["tile_components_s"] = med(ts)
        muT, aT, const = tiles
        skip = M._skip_threshold(K)
        qb = M.QUERY_BLOCK
        for name, thr in (("forward_kernel_s", skip), ("forward_kernel_no_skip_s", -np.inf),
                          ("forward_kernel_no_exp_s", np.inf)):
            _, ts = run_timed(lambda: M._forward_partial_kernel(z, muT, aT, const, thr, qb),
                              repeats, False)
            out[name] = med(ts)
        _, ts = run_timed(lambda: M._vjp_z_kernel(g, z, f, muT, aT, const, qb), repeats, False)
        out["vjp_z_kernel_s"] = med(ts)
        _, ts = run_timed(lambda: M._vjp_components_kernel(g, z, f, muT, aT, const, K), repeats,
                          False)
        out["vjp_components_kernel_s"] = med(ts)
        out["tile"] = int(M.TILE)
        out["query_block"] = int(qb)
        return out
    except Exception as exc:
        return {"unavailable": f"{type(exc).__name__}: {exc}"}


# ============================================================================ memory (subprocess)

def _proc_status():
    d = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":")
                d[k] = int(v.split()[0]) * 1024  # kB -> bytes
    return d


def _malloc_trim():
    """Return freed heap memory to the OS (glibc), so the baseline RSS holds no reusable free pages."""
    try:
        import ctypes
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def _reset_peak_rss():
    """Reset VmHWM (and ru_maxrss) to the current RSS: 'echo 5 > /proc/self/clear_refs' (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def memprobe_child(kind, size, seed, f_file):
    """Runs in a fresh interpreter: print one JSON line with the peak extra memory of one call."""
    B, K, L = size
    X = make_inputs(B, K, L, seed)
    T = make_inputs(16, 300, L, seed + 1)  # tiny input: compiles (or loads from cache) the kernels
    ft = mixture_log_prob(T["z"], T["means"], T["log_vars"], T["log_weights"])
    mixture_log_prob_vjp(T["g"], T["z"], T["means"], T["log_vars"], T["log_weights"], ans=ft)
    f = np.load(f_file) if kind == "vjp" else None
    del T, ft
    gc.collect()
    _malloc_trim()
    reset_ok = _reset_peak_rss()
    st0 = _proc_status()
    ru0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if kind == "fwd":
        outs = (mixture_log_prob(X["z"], X["means"], X["log_vars"], X["log_weights"]),)
    else:
        outs = mixture_log_prob_vjp(X["g"], X["z"], X["means"], X["log_vars"], X["log_weights"],
                                    ans=f)
    st1 = _proc_status()
    ru1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    base = st0["VmRSS"]
    print(json.dumps({
        "kind": kind, "size": [B, K, L], "peak_reset_ok": reset_ok,
        "baseline_rss_bytes": base, "hwm_before_bytes": st0["VmHWM"], "hwm_after_bytes": st1["VmHWM"],
        "ru_maxrss_before_bytes": ru0, "ru_maxrss_after_bytes": ru1,
        "extra_bytes": st1["VmHWM"] - base,
        "output_bytes": int(sum(o.nbytes for o in outs)),
        "inputs_bytes": int(sum(v.nbytes for v in X.values())),
        "numba_threads": numba.get_num_threads(),
        "source_sha256_16": source_hashes(),
    }))


def measure_memory(kind, size, seed, f=None):
    with tempfile.TemporaryDirectory() as tmp:
        f_file = os.path.join(tmp, "f.npy")
        if f is not None:
            np.save(f_file, f)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_memprobe", kind,
               "--sizes", ",".join(map(str, size)), "--seed", str(seed), "--threads", str(THREADS),
               "--_f-file", f_file]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    r["extra_mib"] = r["extra_bytes"] / MIB
    r["same_sources_as_parent"] = r.get("source_sha256_16") == SOURCE_HASHES
    r["extra_minus_outputs_mib"] = (r["extra_bytes"] - r["output_bytes"]) / MIB
    return r


# ============================================================================ provenance

def source_hashes():
    """sha256 of the kernel sources actually imported (others may edit them during a run)."""
    import hashlib
    import importlib
    out = {}
    for mod in ("refvae.kernels.mixture", "refvae.kernels.fastexp"):
        try:
            path = importlib.import_module(mod).__file__
            out[mod] = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
        except Exception as exc:
            out[mod] = f"unavailable ({type(exc).__name__})"
    return out


def provenance(args, torch, torch_status):
    """_bench.provenance with the kernel sources' hashes."""
    return _bench.provenance(threads=THREADS, seed=args.seed, torch=torch, torch_status=torch_status,
                             sources=source_hashes())


# ============================================================================ one size

def add_bound(r, peaks):
    """forward time / (one exp per pair at the best math.exp rate over THREADS threads + 3 flops per
    (pair, dimension) at the best matmul rate); also at median rates and at refvae.kernels.fastexp's rate."""
    B, K, L = r["size"]
    exp_ns = peaks["numba_math_exp_ns"]["normal [-40, 1]"]
    gf = peaks["matmul_gflops"]
    r["bound_s"] = exp_bound(B, K, L, exp_ns, gf, THREADS)
    r["fwd_over_bound"] = r["refvae_fwd_s"] / r["bound_s"]
    r["bound_median_rates_s"] = exp_bound(B, K, L, peaks["numba_math_exp_ns_median"]["normal [-40, 1]"],
                                          peaks["matmul_gflops_median"], THREADS)
    r["fwd_over_bound_median_rates"] = r["refvae_fwd_s"] / r["bound_median_rates_s"]
    fe = peaks.get("fastexp", {})
    if fe.get("status") == "ok":
        r["bound_fastexp_s"] = exp_bound(B, K, L, fe["normal [-40, 1]"], gf, THREADS)
        r["fwd_over_bound_fastexp"] = r["refvae_fwd_s"] / r["bound_fastexp_s"]
    ts_ = r["term_statistics"]
    r["predicted_exp_time_fwd_s"] = B * K * ts_["forward_exp_fraction"] * exp_ns * 1e-9 / THREADS
    r["predicted_exp_time_vjp_s"] = 2 * B * K * ts_["vjp_exp_fraction"] * exp_ns * 1e-9 / THREADS
    log(f"bound ({B}, {K}, {L}): {fmt_t(r['bound_s'])} = B K x {exp_ns:.2f} ns / {THREADS} + 3 B K L / "
        f"{gf:.1f} GFLOP/s; forward {fmt_t(r['refvae_fwd_s'])} / bound = {r['fwd_over_bound']:.2f} "
        f"(at median rates {r['fwd_over_bound_median_rates']:.2f}"
        + (f"; at refvae.kernels.fastexp's rate {r['fwd_over_bound_fastexp']:.2f}"
           if "fwd_over_bound_fastexp" in r else "") + ")")


def bench_size(size, args, torch):
    B, K, L = size
    X = make_inputs(B, K, L, args.seed)
    z, means, log_vars, lw, g = X["z"], X["means"], X["log_vars"], X["log_weights"], X["g"]
    budget = args.budget_mb * MIB
    large = B * K * L > LARGE_ELEMENTS
    slow_reps = args.slow_repeats if large else args.repeats
    slow_warm = not large
    r = {"size": [B, K, L], "repeats_refvae": args.repeats, "repeats_alternatives": slow_reps,
         "warmup_alternatives": slow_warm, "chunk_queries": min(B, chunk_rows(K, L, budget)),
         "contention": {}}
    log(f"\n=== (B, K, L) = ({B}, {K}, {L}): {B * K:.3g} pairs, chunk of {r['chunk_queries']} queries"
        f" for the broadcast paths; refvae {args.repeats} repeat(s) after a warm-up call; "
        f"SciPy/torch {slow_reps} repeat(s){' after a warm-up call' if slow_warm else ', no warm-up'}")

    def phase(name, fn):
        """fn, re-run while contended (up to --retries times; see _bench.retry_phase)."""
        return _bench.retry_phase(name, fn, r["contention"], retries=args.retries,
                                  wait_idle=args.wait_idle)

    # ---- refvae
    def refvae_phase():
        out = {}
        t0 = time.perf_counter()
        f = mixture_log_prob(z, means, log_vars, lw)
        out["refvae_fwd_first_call_s"] = time.perf_counter() - t0
        f, out["refvae_fwd_times"] = run_timed(lambda: mixture_log_prob(z, means, log_vars, lw),
                                               args.repeats, False)
        t0 = time.perf_counter()
        mixture_log_prob_vjp(g, z, means, log_vars, lw, ans=f)
        out["refvae_vjp_first_call_s"] = time.perf_counter() - t0
        grads, out["refvae_vjp_times"] = run_timed(
            lambda: mixture_log_prob_vjp(g, z, means, log_vars, lw, ans=f), args.repeats, False)
        return out, f, grads

    out, f_ref, grads_ref = phase("refvae", refvae_phase)
    r.update(out)
    r["refvae_fwd_s"] = med(r["refvae_fwd_times"])
    r["refvae_vjp_s"] = med(r["refvae_vjp_times"])
    r["refvae_fwd_vjp_s"] = r["refvae_fwd_s"] + r["refvae_vjp_s"]
    log(f"refvae   forward {fmt_t(r['refvae_fwd_s'])}   VJP (given f) {fmt_t(r['refvae_vjp_s'])}   "
        f"sum {fmt_t(r['refvae_fwd_vjp_s'])}")

    # ---- SciPy / NumPy
    def scipy_phase():
        f, t1 = run_timed(lambda: scipy_forward(z, means, log_vars, lw, budget), slow_reps, slow_warm)
        grads, t2 = run_timed(lambda: numpy_vjp(g, z, means, log_vars, lw, f, budget), slow_reps,
                              slow_warm)
        return t1, t2, f, grads

    r["scipy_fwd_times"], r["numpy_vjp_times"], f_sp, grads_np = phase("scipy", scipy_phase)
    r["scipy_fwd_s"] = med(r["scipy_fwd_times"])
    r["numpy_vjp_s"] = med(r["numpy_vjp_times"])
    r["scipy_fwd_vjp_s"] = r["scipy_fwd_s"] + r["numpy_vjp_s"]
    r["ratio_fwd_scipy"] = r["scipy_fwd_s"] / r["refvae_fwd_s"]
    r["ratio_vjp_numpy"] = r["numpy_vjp_s"] / r["refvae_vjp_s"]
    r["ratio_fwd_vjp_scipy"] = r["scipy_fwd_vjp_s"] / r["refvae_fwd_vjp_s"]
    r["fwd_maxabs_vs_scipy"] = max_abs(f_ref, f_sp)
    r["fwd_maxabs_f"] = float(np.max(np.abs(f_sp)))
    names = ("dz", "dmeans", "dlog_vars", "dlog_weights")
    r["grad_maxabs_vs_numpy"] = {nm: max_abs(a, b) for nm, a, b in zip(names, grads_ref, grads_np)}
    log(f"SciPy    forward {fmt_t(r['scipy_fwd_s'])} ({fmt_x(r['ratio_fwd_scipy'])})   NumPy VJP "
        f"{fmt_t(r['numpy_vjp_s'])} ({fmt_x(r['ratio_vjp_numpy'])})   max|f_refvae - f_scipy| = "
        f"{fmt_e(r['fwd_maxabs_vs_scipy'])} (max|f| = {r['fwd_maxabs_f']:.3g})")
    del grads_np, f_sp

    # ---- torch
    if torch is not None:
        f_t, r["torch_fwd_times"] = phase("torch_fwd", lambda: run_timed(
            lambda: torch_forward(torch, z, means, log_vars, lw, budget), slow_reps, slow_warm))
        res_t, r["torch_fwd_bwd_times"] = phase("torch_fwd_bwd", lambda: run_timed(
            lambda: torch_forward_backward(torch, g, z, means, log_vars, lw, budget), slow_reps,
            slow_warm))
        r["torch_fwd_s"] = med(r["torch_fwd_times"])
        r["torch_fwd_bwd_s"] = med(r["torch_fwd_bwd_times"])
        r["ratio_fwd_torch"] = r["torch_fwd_s"] / r["refvae_fwd_s"]
        r["ratio_fwd_vjp_torch"] = r["torch_fwd_bwd_s"] / r["refvae_fwd_vjp_s"]
        r["fwd_maxabs_vs_torch"] = max_abs(f_ref, f_t)
        _, dz_t, dm_t, dv_t, dlogits_t = res_t
        # torch differentiates through log_softmax(logits); refvae uses the log-weights as given:
        # dlogits = dw - softmax(w) * sum(dw)
        dw = grads_ref[3]
        pi = np.exp(lw - np.logaddexp.reduce(lw))
        dlogits_ref = dw - pi * dw.sum()
        r["grad_maxabs_vs_torch"] = {
            "dz": max_abs(grads_ref[0], dz_t), "dmeans": max_abs(grads_ref[1], dm_t),
            "dlog_vars": max_abs(grads_ref[2], dv_t), "dlogits": max_abs(dlogits_ref, dlogits_t)}
        r["grad_maxabs_torch_scale"] = {
            "dz": float(np.max(np.abs(dz_t))), "dmeans": float(np.max(np.abs(dm_t))),
            "dlog_vars": float(np.max(np.abs(dv_t))), "dlogits": float(np.max(np.abs(dlogits_t)))}
        gd = r["grad_maxabs_vs_torch"]
        r["grad_maxabs_vs_torch_max"] = max(gd.values())
        r["grad_maxrel_vs_torch_max"] = max(gd[k] / max(r["grad_maxabs_torch_scale"][k], 1e-300)
                                            for k in gd)
        log(f"torch    forward {fmt_t(r['torch_fwd_s'])} ({fmt_x(r['ratio_fwd_torch'])})   forward+backward "
            f"{fmt_t(r['torch_fwd_bwd_s'])} ({fmt_x(r['ratio_fwd_vjp_torch'])} vs refvae forward+VJP)")
        log("         max|Δ| vs torch: f " + fmt_e(r["fwd_maxabs_vs_torch"]) + ", " + ", ".join(
            f"{k} {fmt_e(v)} (max|{k}| {r['grad_maxabs_torch_scale'][k]:.3g})" for k, v in gd.items()))
        del res_t, f_t

    # ---- where refvae's time goes
    r["term_statistics"] = term_statistics(X, f_ref)
    r["breakdown"] = phase("breakdown", lambda: breakdown(X, f_ref, 1 if large else args.repeats))
    ts_ = r["term_statistics"]
    bd = r["breakdown"]
    log(f"terms    forward calls exp for {100 * ts_['forward_exp_fraction']:.2f}% of pairs, the VJP for "
        f"{100 * ts_['vjp_exp_fraction']:.2f}% (twice: dz and component passes); median t - f = "
        f"{ts_['median_t_minus_f']:.1f}")
    if "unavailable" not in bd:
        log(f"stages   tiling {fmt_t(bd['tile_components_s'])}, forward kernel {fmt_t(bd['forward_kernel_s'])}"
            f" (every exp: {fmt_t(bd['forward_kernel_no_skip_s'])}, no exp: "
            f"{fmt_t(bd['forward_kernel_no_exp_s'])}), VJP dz kernel {fmt_t(bd['vjp_z_kernel_s'])}, "
            f"VJP component kernel {fmt_t(bd['vjp_components_kernel_s'])}")
    else:
        log(f"stages   {bd['unavailable']}")

    # ---- memory (not timing: no contention check)
    if not args.skip_memory:
        r["memory_fwd"] = measure_memory("fwd", size, args.seed)
        r["memory_vjp"] = measure_memory("vjp", size, args.seed, f=f_ref)
        for kind in ("fwd", "vjp"):
            mm = r[f"memory_{kind}"]
            if "error" in mm:
                log(f"memory   {kind}: subprocess failed: {mm['error']}")
            else:
                log(f"memory   {kind}: peak extra {mm['extra_mib']:.1f} MiB "
                    f"({mm['extra_minus_outputs_mib']:.1f} MiB without the {mm['output_bytes'] / MIB:.1f}"
                    f" MiB of outputs; inputs {mm['inputs_bytes'] / MIB:.1f} MiB; peak reset "
                    f"{'ok' if mm['peak_reset_ok'] else 'FAILED, value is an upper bound'})"
                    + ("" if mm["same_sources_as_parent"] else
                       " ** refvae sources changed since the start of the run **"))
    _bench.flag_contended(r, steal=True, loadavg=False, what="timings of this size are unreliable")
    return r


# ============================================================================ targets and report

def evaluate_targets(results, torch_status):
    by_size = {tuple(r["size"]): r for r in results}
    lines = []

    def add(name, value, thr, op, unit, size, missing=None):
        if missing:
            lines.append({"target": name, "status": "N/A", "detail": missing, "size": list(size)})
            return
        ok = value >= thr if op == ">=" else value <= thr
        lines.append({"target": name, "status": "PASS" if ok else "FAIL", "value": value,
                      "threshold": thr, "op": op, "size": list(size),
                      "detail": f"{value:.2f}{unit} {op} {thr:g}{unit}"})

    r = by_size.get(TARGET_SIZE)
    no_size = None if r else f"size {TARGET_SIZE} not run"
    no_torch = no_size or (None if (r and "torch_fwd_s" in r) else f"torch {torch_status}")
    add("forward >= 15x faster than torch MixtureSameFamily", r and r.get("ratio_fwd_torch"),
        TARGETS["fwd_vs_torch"], ">=", "×", TARGET_SIZE, no_torch)
    add("forward >= 15x faster than NumPy broadcast + scipy logsumexp",
        r and r.get("ratio_fwd_scipy"), TARGETS["fwd_vs_scipy"], ">=", "×", TARGET_SIZE, no_size)
    add("forward+VJP >= 10x faster than torch forward+backward", r and r.get("ratio_fwd_vjp_torch"),
        TARGETS["fwdvjp_vs_torch"], ">=", "×", TARGET_SIZE, no_torch)
    rm = by_size.get(MEMORY_SIZE)
    mm = rm.get("memory_fwd") if rm else None
    miss = (f"size {MEMORY_SIZE} not run" if rm is None else
            "memory not measured (--skip-memory)" if mm is None else
            f"probe failed: {mm['error'][-200:]}" if "error" in mm else None)
    add("forward peak extra memory <= 64 MiB", mm and mm.get("extra_mib"), TARGETS["fwd_extra_mib"],
        "<=", " MiB", MEMORY_SIZE, miss)
    for rr in results:
        add("forward within 3x of the exp+flop bound", rr["fwd_over_bound"], TARGETS["fwd_over_bound"],
            "<=", "", tuple(rr["size"]))
    return lines


def markdown(results, peaks, prov, targets, args, run_contention):
    out = _bench.md_header(
        "Mixture kernel benchmark (`validation/bench_mixture.py`)", prov, f", torch {prov['torch']}",
        f"everywhere (Numba {prov['numba_threads']} [{prov['numba_threading_layer']}], torch "
        f"{prov['torch_threads']}, BLAS env vars {prov['threads']})",
        " Kernel sources (sha256, 16 hex): "
        + ", ".join(f"`{k}` {v}" for k, v in prov["source_sha256_16"].items())
        + ("" if prov.get("source_sha256_16_end", prov["source_sha256_16"]) == prov["source_sha256_16"]
           else " (**changed during the run**)") + ".")
    out += ["Data: means ~ N(0, 1), log-variances ~ N(−2, 0.5²), uniform log-weights −ln K, queries "
            "drawn from the mixture, upstream gradient g ~ N(0, 1). refvae: median of "
            f"{args.repeats} repeat(s) after a warm-up call at the same size. SciPy/NumPy and torch: "
            "chunked over queries so one (b, K, L) float64 array stays under "
            f"{args.budget_mb:g} MiB; median of {args.repeats} repeat(s) after a warm-up call at sizes with "
            f"B·K·L ≤ {LARGE_ELEMENTS:.0e}, else {args.slow_repeats} run(s) without a warm-up call. "
            "VJP columns are given the forward result f; \"fwd+VJP\" for refvae and SciPy is the sum "
            "of the two medians, for torch one forward + `backward()` call. Ratios are alternative / "
            "refvae (higher = refvae faster). refvae cells show [min–max] of the repeats. The host is "
            "shared (see the spread of the matmul samples below), so single runs of the slow paths carry "
            "the same noise.", ""]
    bad = [r for r in results if r["contended"]]
    out += [f"Machine load: other processes used {run_contention['others_cores']:.2f} cores on average "
            f"during the run (hypervisor steal {run_contention['steal_cores']:.2f})"
            + (". **Contended sizes (other processes used > "
               f"{CONTENDED_CORES} cores in some phase; their timings are unreliable): "
               + ", ".join(_size(r) for r in bad) + "**." if bad else
               "; no phase was contended."), ""]
    out += ["## Times", ""] + _md_table(
        "| (B, K, L) | refvae fwd | SciPy fwd | torch fwd | refvae VJP | NumPy VJP | "
        "refvae fwd+VJP | SciPy fwd+VJP | torch fwd+bwd | fwd / bound |", results, _md_times_row)
    out += ["", "## Agreement and memory", ""] + _md_table(
        "| (B, K, L) | max\\|Δf\\| vs SciPy (max\\|f\\|) | max\\|Δf\\| vs torch | max\\|Δgrad\\| vs torch "
        "(dz, dmeans, dlog_vars, dlogits) | max rel. Δgrad vs torch | max\\|Δgrad\\| vs NumPy VJP | "
        "refvae fwd extra MiB | refvae VJP extra MiB |", results, _md_agreement_row)
    out += ["", "Memory: peak RSS (VmHWM, reset through /proc/self/clear_refs) minus the RSS after the "
            "inputs were created and the kernels warmed up on a tiny input, in a fresh subprocess per "
            "measurement; \"w/o outputs\" subtracts the returned arrays. dlogits: refvae's "
            "dlog_weights mapped through log_softmax (dw − π Σdw).", ""]
    out += _md_peaks(peaks)
    out += ["## Where refvae's time goes", ""] + _md_table(
        "| (B, K, L) | pairs with exp (fwd / VJP) | tiling | fwd kernel | fwd kernel, every exp | "
        "fwd kernel, no exp | VJP dz kernel | VJP component kernel |", results, _md_breakdown_row)
    out += ["", "## Targets", ""]
    for t in targets:
        out.append(f"- **{t['status']}** {t['target']} at ({', '.join(map(str, t['size']))}): {t['detail']}")
    out.append("")
    return "\n".join(out)


def _size(r):
    return "({}, {}, {})".format(*r["size"])


def _md_table(header, results, row):
    """A Markdown table: the header line, its separator, then ``row(r)`` for each result."""
    return [header, "|" + "---|" * (header.replace("\\|", "").count("|") - 1)] + [row(r) for r in results]


def _md_times_row(r):
    tf = (f"{fmt_t(r['torch_fwd_s'])} ({fmt_x(r['ratio_fwd_torch'])})" if "torch_fwd_s" in r
          else "not installed")
    tb = (f"{fmt_t(r['torch_fwd_bwd_s'])} ({fmt_x(r['ratio_fwd_vjp_torch'])})"
          if "torch_fwd_bwd_s" in r else "not installed")

    def spread(key):
        ts = r[key]
        return "" if len(ts) < 2 else f" [{fmt_t(min(ts))}–{fmt_t(max(ts))}]"
    return (f"| {_size(r)} | {fmt_t(r['refvae_fwd_s'])}{spread('refvae_fwd_times')} | {fmt_t(r['scipy_fwd_s'])} "
            f"({fmt_x(r['ratio_fwd_scipy'])}) | {tf} | {fmt_t(r['refvae_vjp_s'])}{spread('refvae_vjp_times')} | "
            f"{fmt_t(r['numpy_vjp_s'])} ({fmt_x(r['ratio_vjp_numpy'])}) | "
            f"{fmt_t(r['refvae_fwd_vjp_s'])} | {fmt_t(r['scipy_fwd_vjp_s'])} "
            f"({fmt_x(r['ratio_fwd_vjp_scipy'])}) | {tb} | "
            f"{r['fwd_over_bound']:.2f} (bound {fmt_t(r['bound_s'])}"
            + (f"; {r['fwd_over_bound_fastexp']:.2f} at _fastexp's rate"
               if "fwd_over_bound_fastexp" in r else "") + ") |")


def _md_agreement_row(r):
    if "grad_maxabs_vs_torch" in r:
        gt = ", ".join(fmt_e(v) for v in r["grad_maxabs_vs_torch"].values())
        ft = fmt_e(r["fwd_maxabs_vs_torch"])
        rel = fmt_e(r["grad_maxrel_vs_torch_max"])
    else:
        gt = ft = rel = "not installed"
    gn = fmt_e(max(r["grad_maxabs_vs_numpy"].values()))

    def mem(kind):
        m = r.get(f"memory_{kind}")
        if m is None:
            return "not measured"
        if "error" in m:
            return "probe failed"
        return f"{m['extra_mib']:.1f} ({m['extra_minus_outputs_mib']:.1f} w/o outputs)"
    return (f"| {_size(r)} | {fmt_e(r['fwd_maxabs_vs_scipy'])} ({r['fwd_maxabs_f']:.3g}) | {ft} | {gt} | "
            f"{rel} | {gn} | {mem('fwd')} | {mem('vjp')} |")


def _md_breakdown_row(r):
    ts_, bd = r["term_statistics"], r["breakdown"]
    fr = f"{100 * ts_['forward_exp_fraction']:.2f}% / {100 * ts_['vjp_exp_fraction']:.2f}%"
    if "unavailable" in bd:
        return f"| {_size(r)} | {fr} | {bd['unavailable']} | | | | | |"
    return (f"| {_size(r)} | {fr} | {fmt_t(bd['tile_components_s'])} | {fmt_t(bd['forward_kernel_s'])} | "
            f"{fmt_t(bd['forward_kernel_no_skip_s'])} | {fmt_t(bd['forward_kernel_no_exp_s'])} | "
            f"{fmt_t(bd['vjp_z_kernel_s'])} | {fmt_t(bd['vjp_components_kernel_s'])} |")


def _md_peaks(peaks):
    fe = peaks["fastexp"]
    ex = peaks["numba_math_exp_ns"]
    exm = peaks["numba_math_exp_ns_median"]
    return ["## Machine peaks (same run: sampled at the start and at the end)", "",
            f"- float64 matmul {peaks['matmul_n']}×{peaks['matmul_n']} @, {THREADS} threads: "
            f"**{peaks['matmul_gflops']:.1f} GFLOP/s** best, {peaks['matmul_gflops_median']:.1f} median, "
            f"{peaks['matmul_gflops_min']:.1f} worst of {sum(len(r['matmul_gflops_samples']) for r in peaks['runs'])}",
            "- Numba `math.exp` loop, one thread, ns per call (best / median): " + ", ".join(
                f"{k}: **{v:.2f}** / {exm[k]:.2f}" for k, v in ex.items()),
            "- NumPy `np.exp` (one thread), ns per value (best): " + ", ".join(
                f"{k}: {v:.2f}" for k, v in peaks["numpy_exp_ns"].items()),
            "- `refvae.kernels.fastexp` (one thread, ns per value): " + _fastexp_text(fe)
            + (f" — the second bound uses `{fe['best']}`" if fe.get("status") == "ok" else ""),
            f"- Bound = B·K·{ex['normal [-40, 1]']:.2f} ns / {THREADS} + 3·B·K·L / "
            f"{peaks['matmul_gflops']:.1f} GFLOP/s (best rates; the JSON also has it at median rates, "
            "`fwd_over_bound_median_rates`).", ""]


# ============================================================================ main

def parse_sizes(items):
    triples = _bench.parse_triples(
        items, "--sizes", "B,K,L", lambda it: it.replace("x", ",").replace("(", "").replace(")", ""))
    return [tuple(int(p) for p in t) for t in triples]


def build_parser():
    p = _bench.arg_parser(__doc__, "first size only, one repeat (a smoke run in seconds)")
    p.add_argument("--sizes", nargs="+", default=None,
                   help="B,K,L triples (default: 1797,1797,2 10000,10000,16 1000,60000,32)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats for refvae (median); default 5")
    p.add_argument("--slow-repeats", type=int, default=1,
                   help="repeats of the SciPy/torch paths at large sizes (B*K*L > 5e7); default 1")
    p.add_argument("--budget-mb", type=float, default=256.0,
                   help="MiB per (b, K, L) chunk of the broadcast paths; default 256")
    p.add_argument("--skip-memory", action="store_true", help="do not run the memory subprocesses")
    _bench.add_run_options(p, "bench_mixture",
                           wait_help="before the run and before each timing phase, wait up to this "
                                     "long until other processes use < 0.25 cores (default 0: do not wait)")
    p.add_argument("--max-total-wait", type=float, default=1800.0, metavar="SECONDS",
                   help="cap on all waiting for an idle machine in one run; default 1800")
    p.add_argument("--retries", type=int, default=2,
                   help="re-run a timing phase during which other processes used > 0.25 cores "
                        "(after waiting up to max(--wait-idle, 60 s) for an idle machine); default 2")
    p.add_argument("--_memprobe", choices=("fwd", "vjp"), default=None, help=argparse.SUPPRESS)
    p.add_argument("--_f-file", dest="f_file", default=None, help=argparse.SUPPRESS)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args._memprobe:
        memprobe_child(args._memprobe, parse_sizes(args.sizes)[0], args.seed, args.f_file)
        return 0
    sizes = parse_sizes(args.sizes) if args.sizes else list(DEFAULT_SIZES)
    if args.quick:
        sizes = sizes[:1]
        args.repeats = 1
        args.slow_repeats = 1
    json_path, md_path = _bench.output_paths(args, "bench_mixture")

    torch, torch_status = _bench.import_torch(args.no_torch, THREADS)
    WAIT_BUDGET["left_s"] = args.max_total_wait
    _bench.wait_before_run(args.wait_idle)
    t_start = time.perf_counter()
    snap_run = cpu_snapshot()

    # compile (or load from Numba's cache) on a tiny input; warms up the thread pools too
    T = make_inputs(16, 300, 3, args.seed)
    t0 = time.perf_counter()
    ft = mixture_log_prob(T["z"], T["means"], T["log_vars"], T["log_weights"])
    mixture_log_prob_vjp(T["g"], T["z"], T["means"], T["log_vars"], T["log_weights"], ans=ft)
    t_compile = time.perf_counter() - t0
    scipy_forward(T["z"], T["means"], T["log_vars"], T["log_weights"], args.budget_mb * MIB)
    numpy_vjp(T["g"], T["z"], T["means"], T["log_vars"], T["log_weights"], ft, args.budget_mb * MIB)
    if torch is not None:
        torch_forward_backward(torch, T["g"], T["z"], T["means"], T["log_vars"], T["log_weights"],
                               args.budget_mb * MIB)

    prov = provenance(args, torch, torch_status)
    SOURCE_HASHES.update(prov["source_sha256_16"])
    log(f"refvae {prov['refvae']} ({prov['git_revision']}); Python {prov['python']}, NumPy "
        f"{prov['numpy']}, Numba {prov['numba']}, SciPy {prov['scipy']}, torch {prov['torch']}")
    log(f"CPU {prov['cpu_model']} ({prov['cpu_count']} logical, "
        f"{'/'.join(prov['simd'])}); {prov['platform']}")
    log(f"threads: requested {THREADS}; numba {prov['numba_threads']} ({prov['numba_threading_layer']}), "
        f"torch {prov['torch_threads']} (interop {prov['torch_interop_threads']}), env "
        + ", ".join(f"{k}={v}" for k, v in prov["thread_env"].items())
        + (f"; BLAS pools {prov['threadpools']}" if isinstance(prov["threadpools"], list) else ""))
    log(f"seed {args.seed}; refvae kernels compiled/loaded in {t_compile:.2f} s; sources "
        + ", ".join(f"{k} {v}" for k, v in prov["source_sha256_16"].items()))

    peaks_start = measure_peaks(args.seed)
    log_peaks("start", peaks_start)
    log("refvae.kernels.fastexp (best of 7, one thread): " + _fastexp_text(peaks_start["fastexp"]))

    results = []
    for size in sizes:
        results.append(bench_size(size, args, torch))
        gc.collect()

    log("\n=== machine peaks again (end of run)")
    peaks_end = measure_peaks(args.seed, with_fastexp=False)
    log_peaks("end", peaks_end)
    peaks = combine_peaks(peaks_start, peaks_end)
    for r in results:
        add_bound(r, peaks)

    run_contention = contention(snap_run, cpu_snapshot())
    end_hashes = source_hashes()
    if end_hashes != prov["source_sha256_16"]:
        log(f"WARNING: refvae kernel sources changed during the run: {end_hashes}")
    prov["source_sha256_16_end"] = end_hashes
    contended = [tuple(r["size"]) for r in results if r["contended"]]
    log(f"whole run: other processes used {run_contention['others_cores']:.2f} cores on average, steal "
        f"{run_contention['steal_cores']:.2f}" + (f"; CONTENDED sizes: {contended}" if contended else ""))
    targets = evaluate_targets(results, torch_status)
    log("\n=== targets")
    for t in targets:
        log(f"{t['status']}: {t['target']} at ({', '.join(map(str, t['size']))}): {t['detail']}")
    total = time.perf_counter() - t_start
    log(f"\ntotal time {total:.0f} s (of which {WAIT_BUDGET['waited_s']:.0f} s waiting for an idle machine)")

    report = {"provenance": prov, "settings": {
        "sizes": [list(s) for s in sizes], "repeats": args.repeats, "slow_repeats": args.slow_repeats,
        "large_elements_threshold": LARGE_ELEMENTS, "budget_mib": args.budget_mb, "quick": args.quick,
        "data": "means ~ N(0,1), log_vars ~ N(-2, 0.5^2), log_weights = -ln K, z drawn from the mixture, "
                "g ~ N(0,1); rng = numpy.random.default_rng([seed, B, K, L])",
        "torch_options": "validate_args=False, chunked over queries like the SciPy path",
        "compile_s": t_compile, "total_s": total, "contention": run_contention,
        "waited_for_idle_s": WAIT_BUDGET["waited_s"], "wait_idle_s": args.wait_idle,
        "retries": args.retries,
        "contended_sizes": [list(c) for c in contended]},
        "targets_thresholds": TARGETS, "peaks": peaks, "results": results, "targets": targets}
    _bench.write_report(json_path, md_path, report,
                        markdown(results, peaks, prov, targets, args, run_contention))
    return 0


if __name__ == "__main__":
    sys.exit(main())
