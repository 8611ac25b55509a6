#!/usr/bin/env python
r"""The aggregated posterior's density and its gradient: refvae against PyTorch (a script, not a test).

What it measures
----------------
For the aggregated posterior q(z) = 1/N sum_n N(z | mu_n, diag exp(v_n)) of N encoded points
(N = 10^4 and 10^5) in L = 2, 16 and 32 dimensions, and B = 1000 queries drawn from q(z), in one run
on one machine with one thread count (default 2: Numba, PyTorch, and BLAS/OpenMP through
environment variables set before NumPy is imported):

- **refvae**: ``AggregatedPosterior.log_prob(z)`` (the streaming kernel ``mixture_log_prob``) and
  ``AggregatedPosterior.log_prob_vjp(g, z)`` (forward + ``mixture_log_prob_vjp``; returns dz and an
  empty parameter dict). For reference also the kernel's VJP alone, ``mixture_log_prob_vjp(g, z,
  means, log_vars, ans=f)`` (all four gradients, given f), and -- through the private kernel
  ``refvae.kernels.mixture._vjp_z_kernel``, reported as unavailable if that changes -- what a dz-only pass
  costs (``log_prob_vjp`` also computes the component gradients, which an aggregated posterior
  discards).
- **PyTorch** (CPU, float64, when importable): ``MixtureSameFamily(Categorical(logits=0),
  Independent(Normal(mu, exp(v/2)), 1)).log_prob(z)`` under ``no_grad``, and forward +
  ``backward()`` of ``sum_b g_b log q(z_b)`` with respect to z only (the components do not require
  grad). Chunked over queries so that one (b, N, L) float64 array stays under ``--budget-mb``
  (256 MiB; torch makes several such temporaries per chunk): e.g. 10 queries per chunk at
  (N, L) = (10^5, 32), the whole batch at (10^4, 2). Unchunked, (1000, 10^5, 32) would need
  25.6 GB per temporary.

Torch cases that would take longer than ``--torch-max-s`` (120 s) are skipped: their time is
*estimated* by timing the first ``--probe`` queries (at least one chunk) at the same (N, L) and
scaling linearly in the number of queries (the chunked computation is linear in B), and the
estimate is reported instead. The probe's values are still compared with refvae's on those queries.

Reported: median times of ``--repeats`` runs after a warm-up call (torch: 1 run when its estimate
exceeds 10 s; the probe is its warm-up), ratios torch / refvae (higher = refvae faster), agreement
(max |Δ log q|, max |Δ dz| and max |Δ dz| / max |dz|), and how many cores other processes used
during each phase (the machine may be shared).

Data
----
``--data synthetic`` (default): means ~ N(0, 1), log-variances ~ N(-2, 0.5^2) (component standard
deviations around 0.37). ``--data encoder``: the digits (scikit-learn's 1797 images) resampled
with replacement to N rows plus uniform noise in [-0.5, 0.5], encoded by a randomly initialised
refvae encoder (hidden (64,), leaky ReLU; PyTorch's default initialisation), so means and
log-variances have the correlations of an encoder's output. Queries: ``n ~ U{0..N-1}``,
``z = mu_n + exp(v_n / 2) eps``; upstream gradient g ~ N(0, 1). Generator for (N, L):
``numpy.random.default_rng([seed, N, L])``.

Usage
-----
    python validation/bench_aggregated.py              # N = 1e4, 1e5 x L = 2, 16, 32 (minutes)
    python validation/bench_aggregated.py --quick      # N = 1e4, L = 2, one repeat (seconds)
    python validation/bench_aggregated.py --sizes 100000,32 --queries 1000 --torch-max-s 600

Results go to ``validation/results/bench_aggregated.json`` and ``.md`` (``--quick`` writes
``bench_aggregated_quick.*``; ``--json`` / ``--md`` override either).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _bench.py sits next to this script
import _bench  # noqa: E402  (shared benchmark machinery; imports no NumPy)

THREADS = _bench.setup_threads(sys.argv[1:])  # BLAS thread env vars, before NumPy is imported

import gc  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

from _bench import (chunk_rows, cpu_snapshot, fmt_t, fmt_x, log, max_abs,  # noqa: E402
                    med, run_timed)
from refvae.kernels.mixture import mixture_log_prob_vjp  # noqa: E402
from refvae.priors.mixtures import AggregatedPosterior  # noqa: E402

numba.set_num_threads(THREADS)

DEFAULT_SIZES = tuple((N, L) for N in (10_000, 100_000) for L in (2, 16, 32))
MIB = 2.0 ** 20
SLOW_S = 10.0  # a torch run estimated above this is timed once (no further repeats)


# ============================================================================ data

def make_components(N, L, seed, kind):
    rng = np.random.default_rng([seed, N, L])
    if kind == "synthetic":
        means = rng.standard_normal((N, L))
        log_vars = -2.0 + 0.5 * rng.standard_normal((N, L))
    else:
        from sklearn.datasets import load_digits

        from refvae.vae import Encoder
        digits = np.asarray(load_digits().data, dtype=np.float64)
        x = digits[rng.integers(0, digits.shape[0], size=N)] + rng.uniform(-0.5, 0.5, size=(N, 64))
        enc = Encoder(64, L, (64,), "leaky_relu")
        params = enc.init_params(rng)
        means = np.empty((N, L))
        log_vars = np.empty((N, L))
        for n0 in range(0, N, 4096):
            mu, lv, _ = enc.forward(params, x[n0:n0 + 4096])
            means[n0:n0 + 4096] = mu
            log_vars[n0:n0 + 4096] = lv
    return means, log_vars, rng


def make_queries(means, log_vars, B, rng):
    N, L = means.shape
    idx = rng.integers(0, N, size=B)
    z = means[idx] + np.exp(0.5 * log_vars[idx]) * rng.standard_normal((B, L))
    g = rng.standard_normal(B)
    return z, g


# ============================================================================ PyTorch

def torch_mixture(torch, means_t, log_vars_t):
    D = torch.distributions
    N = means_t.shape[0]
    comp = D.Independent(D.Normal(means_t, torch.exp(0.5 * log_vars_t), validate_args=False), 1,
                         validate_args=False)
    cat = D.Categorical(logits=torch.zeros(N, dtype=means_t.dtype), validate_args=False)
    return D.MixtureSameFamily(cat, comp, validate_args=False)


def torch_forward(torch, z, means, log_vars, step):
    B = z.shape[0]
    zt = torch.from_numpy(z)
    out = torch.empty(B, dtype=torch.float64)
    with torch.no_grad():
        mix = torch_mixture(torch, torch.from_numpy(means), torch.from_numpy(log_vars))
        for b0 in range(0, B, step):
            out[b0:b0 + step] = mix.log_prob(zt[b0:b0 + step])
    return out.numpy()


def torch_forward_backward(torch, g, z, means, log_vars, step):
    """log q and d(sum_b g_b log q(z_b))/dz by autograd, chunk by chunk (each graph freed)."""
    B = z.shape[0]
    mt, lvt = torch.from_numpy(means), torch.from_numpy(log_vars)
    scale = torch.exp(0.5 * lvt)
    D = torch.distributions
    f = np.empty(B)
    dz = np.empty_like(z)
    for b0 in range(0, B, step):
        zc = torch.from_numpy(z[b0:b0 + step]).clone().requires_grad_(True)
        comp = D.Independent(D.Normal(mt, scale, validate_args=False), 1, validate_args=False)
        cat = D.Categorical(logits=torch.zeros(mt.shape[0], dtype=mt.dtype), validate_args=False)
        lp = D.MixtureSameFamily(cat, comp, validate_args=False).log_prob(zc)
        (lp * torch.from_numpy(g[b0:b0 + step])).sum().backward()
        f[b0:b0 + step] = lp.detach().numpy()
        dz[b0:b0 + step] = zc.grad.numpy()
    return f, dz


# ============================================================================ one size

def dz_only_time(ap, g, z, f, repeats):
    """The private dz-only VJP kernel (what a z-only gradient would cost); None if the API changed."""
    try:
        from refvae.kernels import mixture as M
        means, log_vars = ap.means, ap.log_vars
        lw = np.full(means.shape[0], -math.log(means.shape[0]))
        tiles = M._tile_components(means, log_vars, lw, M.TILE)
        muT, aT, const = tiles
        fn = lambda: M._vjp_z_kernel(g, z, f, muT, aT, const, M.QUERY_BLOCK)  # noqa: E731
        (dz, _), ts = run_timed(fn, repeats, True)  # the kernel returns (dz, max term)
        return {"dz_kernel_s": med(ts), "dz_kernel_times": ts}, dz
    except Exception as exc:
        return {"unavailable": f"{type(exc).__name__}: {exc}"}, None


def bench_size(N, L, args, torch):
    B = args.queries
    means, log_vars, rng = make_components(N, L, args.seed, args.data)
    z, g = make_queries(means, log_vars, B, rng)
    budget = args.budget_mb * MIB
    step = min(B, chunk_rows(N, L, budget))
    r = {"N": N, "L": L, "B": B, "torch_chunk_queries": step, "contention": {}}
    log(f"\n=== N = {N}, L = {L}, B = {B}: {B * N:.3g} (query, component) pairs; torch chunk "
        f"{step} queries ({step * N * L * 8 / MIB:.0f} MiB per (b, N, L) temporary)")
    phase = _bench.LoadTracker(r["contention"]).phase  # phase(name): contention since the last phase

    # ---- refvae
    ap = AggregatedPosterior(L, means, log_vars)
    f_ref, ts = run_timed(lambda: ap.log_prob(z), args.repeats, True)
    r["refvae_log_prob_times"] = ts
    r["refvae_log_prob_s"] = med(ts)
    (dz_ref, grads_ref), ts = run_timed(lambda: ap.log_prob_vjp(g, z), args.repeats, True)
    assert grads_ref == {}
    r["refvae_log_prob_vjp_times"] = ts
    r["refvae_log_prob_vjp_s"] = med(ts)
    kv, ts = run_timed(lambda: mixture_log_prob_vjp(g, z, means, log_vars, None, ans=f_ref),
                       args.repeats, True)
    r["refvae_kernel_vjp_times"] = ts
    r["refvae_kernel_vjp_s"] = med(ts)
    r["kernel_vjp_dz_vs_log_prob_vjp_maxabs"] = max_abs(kv[0], dz_ref)
    r["dz_only"], dz_only = dz_only_time(ap, g, z, f_ref, args.repeats)
    if dz_only is not None:
        r["dz_only"]["maxabs_vs_log_prob_vjp"] = max_abs(dz_only, dz_ref)
    log(f"refvae   log_prob {fmt_t(r['refvae_log_prob_s'])}   log_prob_vjp (forward + dz-only VJP) "
        f"{fmt_t(r['refvae_log_prob_vjp_s'])}   kernel VJP given f (all gradients) "
        f"{fmt_t(r['refvae_kernel_vjp_s'])}   dz-only kernel "
        + (fmt_t(r["dz_only"]["dz_kernel_s"]) if "dz_kernel_s" in r["dz_only"]
           else r["dz_only"]["unavailable"]))
    phase("refvae")

    # ---- torch
    if torch is None:
        r["torch_status"] = "not installed / disabled"
        phase("torch")
    else:
        n_probe = min(B, max(step, args.probe))
        zp, gp = z[:n_probe], g[:n_probe]
        torch_forward(torch, zp[:min(step, n_probe)], means, log_vars, step)  # allocator, pools
        t0 = time.perf_counter()
        fp = torch_forward(torch, zp, means, log_vars, step)
        t_fp = time.perf_counter() - t0
        t0 = time.perf_counter()
        fbp, dzp = torch_forward_backward(torch, gp, zp, means, log_vars, step)
        t_bp = time.perf_counter() - t0
        scale = B / n_probe
        r["torch_probe_queries"] = n_probe
        r["torch_fwd_estimate_s"] = t_fp * scale
        r["torch_fwd_bwd_estimate_s"] = t_bp * scale
        r["probe_log_q_maxabs"] = max(max_abs(fp, f_ref[:n_probe]), max_abs(fbp, f_ref[:n_probe]))
        r["probe_dz_maxabs"] = max_abs(dzp, dz_ref[:n_probe])
        r["probe_dz_maxrel"] = r["probe_dz_maxabs"] / max(float(np.max(np.abs(dzp))), 1e-300)
        log(f"torch    probe of {n_probe} queries: forward {fmt_t(t_fp)}, forward+backward {fmt_t(t_bp)}"
            f" -> estimates for B = {B}: {fmt_t(r['torch_fwd_estimate_s'])} and "
            f"{fmt_t(r['torch_fwd_bwd_estimate_s'])}; on the probe max|Δ log q| = "
            f"{r['probe_log_q_maxabs']:.1e}, max|Δdz| = {r['probe_dz_maxabs']:.1e} "
            f"({r['probe_dz_maxrel']:.1e} of max|dz|)")
        for kind, est in (("fwd", r["torch_fwd_estimate_s"]), ("fwd_bwd", r["torch_fwd_bwd_estimate_s"])):
            if args.torch_max_s > 0 and est > args.torch_max_s:
                r[f"torch_{kind}_skipped"] = (f"estimated {est:.0f} s > {args.torch_max_s:g} s (from "
                                              f"{n_probe} queries, scaled linearly to {B})")
                log(f"torch    {kind}: SKIPPED, {r[f'torch_{kind}_skipped']}")
                continue
            reps = args.repeats if est <= SLOW_S else args.slow_repeats
            if kind == "fwd":
                f_t, ts = run_timed(lambda: torch_forward(torch, z, means, log_vars, step), reps, False)
                r["torch_fwd_times"] = ts
                r["torch_fwd_s"] = med(ts)
                r["ratio_fwd"] = r["torch_fwd_s"] / r["refvae_log_prob_s"]
                r["log_q_maxabs_vs_torch"] = max_abs(f_t, f_ref)
                r["log_q_maxabs"] = float(np.max(np.abs(f_ref)))
            else:
                (f_t, dz_t), ts = run_timed(
                    lambda: torch_forward_backward(torch, g, z, means, log_vars, step), reps, False)
                r["torch_fwd_bwd_times"] = ts
                r["torch_fwd_bwd_s"] = med(ts)
                r["ratio_fwd_bwd"] = r["torch_fwd_bwd_s"] / r["refvae_log_prob_vjp_s"]
                r["dz_maxabs_vs_torch"] = max_abs(dz_t, dz_ref)
                r["dz_maxabs"] = float(np.max(np.abs(dz_t)))
                r["dz_maxrel_vs_torch"] = r["dz_maxabs_vs_torch"] / max(r["dz_maxabs"], 1e-300)
                r["log_q_maxabs_vs_torch_bwd_pass"] = max_abs(f_t, f_ref)
            del f_t
            gc.collect()
        if "torch_fwd_s" in r:
            log(f"torch    forward {fmt_t(r['torch_fwd_s'])} ({fmt_x(r['ratio_fwd'])} refvae's log_prob); "
                f"max|Δ log q| = {r['log_q_maxabs_vs_torch']:.1e} (max|log q| {r['log_q_maxabs']:.3g})")
        if "torch_fwd_bwd_s" in r:
            log(f"torch    forward+backward (dz) {fmt_t(r['torch_fwd_bwd_s'])} ({fmt_x(r['ratio_fwd_bwd'])} "
                f"refvae's log_prob_vjp); max|Δdz| = {r['dz_maxabs_vs_torch']:.1e} "
                f"({r['dz_maxrel_vs_torch']:.1e} of max|dz| = {r['dz_maxabs']:.3g})")
        phase("torch")
    _bench.flag_contended(r)
    return r


# ============================================================================ report

def markdown(results, prov, args, run_contention):
    threads = (f"(Numba {prov['numba_threads']} [{prov['numba_threading_layer']}], torch "
               f"{prov['torch_threads']}, BLAS env vars {prov['threads']})")
    out = _bench.md_header("Aggregated posterior: log q(z) and its gradient, refvae vs PyTorch "
                           "(`validation/bench_aggregated.py`)", prov, f", torch {prov['torch']}", threads)
    out += [f"Data: {args.data} components ("
            + ("means ~ N(0, 1), log-variances ~ N(−2, 0.5²)" if args.data == "synthetic" else
               "resampled digits + U(−0.5, 0.5) noise through a random encoder, hidden (64,)")
            + f"); B = {args.queries} queries drawn from q(z); g ~ N(0, 1). refvae: median of "
            f"{args.repeats} repeat(s) after a warm-up call. torch: float64, `MixtureSameFamily`, "
            f"chunked over queries so one (b, N, L) float64 array stays under {args.budget_mb:g} MiB; "
            f"timed after a probe of ≥ {args.probe} queries that also serves as warm-up; cases "
            f"estimated above {args.torch_max_s:g} s skipped (estimate = probe time × B / probe "
            "size). Ratios are torch / refvae (higher = refvae faster). `log_prob_vjp` is refvae's "
            "forward + the kernel's dz-only VJP (`z_only=True`: the components are data, their gradients "
            "are not computed); torch's forward+backward differentiates with respect to z only.", ""]
    bad = [f"(N={r['N']}, L={r['L']})" for r in results if r["contended"]]
    out += [_bench.md_machine_load(run_contention, "Contended sizes (timings unreliable): " + ", ".join(bad)
                                   if bad else None), ""]
    out += ["## Times", "",
            "| N | L | refvae log_prob | torch forward | refvae log_prob_vjp | torch fwd+bwd (dz) | "
            "kernel VJP given f | dz-only kernel | torch chunk |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        def tcell(kind, ratio):
            if f"torch_{kind}_s" in r:
                return f"{fmt_t(r[f'torch_{kind}_s'])} ({fmt_x(r[ratio])})"
            if f"torch_{kind}_skipped" in r:
                est = r[f"torch_{kind}_estimate_s"]
                base = r["refvae_log_prob_s"] if kind == "fwd" else r["refvae_log_prob_vjp_s"]
                return f"skipped: est. {fmt_t(est)} (≈{fmt_x(est / base)})"
            return r.get("torch_status", "-")
        dzo = r["dz_only"]
        out.append(f"| {r['N']} | {r['L']} | {fmt_t(r['refvae_log_prob_s'])} | {tcell('fwd', 'ratio_fwd')} | "
                   f"{fmt_t(r['refvae_log_prob_vjp_s'])} | {tcell('fwd_bwd', 'ratio_fwd_bwd')} | "
                   f"{fmt_t(r['refvae_kernel_vjp_s'])} | "
                   f"{fmt_t(dzo['dz_kernel_s']) if 'dz_kernel_s' in dzo else 'n/a'} | "
                   f"{r['torch_chunk_queries']} |")
    out += ["", "## Agreement with torch", "",
            "| N | L | max\\|Δ log q\\| (max\\|log q\\|) | max\\|Δdz\\| (rel. to max\\|dz\\|) | "
            "on the probe: max\\|Δ log q\\|, max\\|Δdz\\| rel. |", "|---|---|---|---|---|"]
    for r in results:
        lq = (f"{r['log_q_maxabs_vs_torch']:.1e} ({r['log_q_maxabs']:.3g})"
              if "log_q_maxabs_vs_torch" in r else "-")
        dz = (f"{r['dz_maxabs_vs_torch']:.1e} ({r['dz_maxrel_vs_torch']:.1e})"
              if "dz_maxabs_vs_torch" in r else "-")
        pr = (f"{r['probe_log_q_maxabs']:.1e}, {r['probe_dz_maxrel']:.1e} ({r['torch_probe_queries']} queries)"
              if "probe_log_q_maxabs" in r else "-")
        out.append(f"| {r['N']} | {r['L']} | {lq} | {dz} | {pr} |")
    out += ["", "Skipped torch cases are estimates, not measurements: the probe's time scaled linearly "
            "to B queries (torch's chunked computation is linear in the number of queries).", ""]
    return "\n".join(out)


def parse_sizes(items):
    sizes = []
    for it in items:
        parts = [p for p in it.replace("x", ",").split(",") if p.strip()]
        if len(parts) != 2:
            raise SystemExit(f"--sizes expects N,L pairs, got {it!r}")
        sizes.append((int(float(parts[0])), int(parts[1])))
    return sizes


def build_parser():
    p = _bench.arg_parser(__doc__, "N = 1e4, L = 2, one repeat (seconds)")
    p.add_argument("--sizes", nargs="+", default=None, help="N,L pairs (default 1e4 and 1e5 x 2, 16, 32)")
    p.add_argument("--queries", type=int, default=1000, help="B, queries drawn from q(z); default 1000")
    p.add_argument("--data", choices=("synthetic", "encoder"), default="synthetic")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (median); default 3")
    p.add_argument("--slow-repeats", type=int, default=1,
                   help=f"repeats of torch runs estimated above {SLOW_S:g} s; default 1")
    p.add_argument("--budget-mb", type=float, default=256.0,
                   help="MiB per (b, N, L) float64 chunk of the torch path; default 256")
    p.add_argument("--probe", type=int, default=20,
                   help="queries timed first in torch to estimate its full time; default 20 (at least one chunk)")
    p.add_argument("--torch-max-s", type=float, default=120.0,
                   help="skip torch runs estimated above this many seconds (0: never skip); default 120")
    return _bench.add_run_options(p, "bench_aggregated")


def main(argv=None):
    args = build_parser().parse_args(argv)
    sizes = parse_sizes(args.sizes) if args.sizes else list(DEFAULT_SIZES)
    if args.quick:
        sizes = sizes[:1]
        args.repeats = 1
    json_path, md_path = _bench.output_paths(args, "bench_aggregated")
    torch, torch_status = _bench.import_torch(args.no_torch, THREADS)
    _bench.wait_before_run(args.wait_idle)
    t_start = time.perf_counter()
    snap_run = cpu_snapshot()
    # compile (or load from Numba's cache) on a tiny input
    m0, v0, rng0 = make_components(300, 3, args.seed, "synthetic")
    z0, g0 = make_queries(m0, v0, 16, rng0)
    t0 = time.perf_counter()
    ap0 = AggregatedPosterior(3, m0, v0)
    ap0.log_prob_vjp(g0, z0)
    dz_only_time(ap0, g0, z0, ap0.log_prob(z0), 1)
    t_compile = time.perf_counter() - t0
    prov = _bench.provenance(threads=THREADS, seed=args.seed, torch=torch, torch_status=torch_status)
    log(f"refvae {prov['refvae']} ({prov['git_revision']}); Python {prov['python']}, NumPy "
        f"{prov['numpy']}, Numba {prov['numba']}, torch {prov['torch']}")
    _bench.log_uncommitted(prov)
    log(f"CPU {prov['cpu_model']} ({prov['cpu_count']} logical); threads {THREADS} (numba "
        f"{prov['numba_threads']} [{prov['numba_threading_layer']}], torch {prov['torch_threads']}); seed "
        f"{args.seed}; kernels compiled/loaded in {t_compile:.2f} s; load average {prov['loadavg_start']}")
    results, run_contention, total = _bench.run_cases(lambda s: bench_size(*s, args, torch), sizes,
                                                      snap_run, t_start)
    report = {"provenance": prov, "settings": {
        "sizes": [list(s) for s in sizes], "queries": args.queries, "data": args.data,
        "repeats": args.repeats, "slow_repeats": args.slow_repeats, "budget_mib": args.budget_mb,
        "probe": args.probe, "torch_max_s": args.torch_max_s, "quick": args.quick,
        "compile_s": t_compile, "total_s": total, "contention": run_contention,
        "generator": "numpy.random.default_rng([seed, N, L]): components, then query indices, eps, g"},
        "results": results}
    _bench.write_report(json_path, md_path, report, markdown(results, prov, args, run_contention))
    return 0


if __name__ == "__main__":
    sys.exit(main())
