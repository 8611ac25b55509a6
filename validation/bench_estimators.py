#!/usr/bin/env python
r"""Estimators of section 4.4.1 over the aggregated posterior: refvae against plain NumPy/SciPy
(a script, not a test).

What it measures
----------------
The time to compute, in one run on one machine with one thread count (default 2: Numba, and
BLAS/OpenMP through environment variables set before NumPy is imported),

- ``refvae.estimators.aggregated_posterior_stats(model, x, rng, n_samples=S)``: H[q(z)] (and, from
  the same draws, CE[q(z)||p], H[q(z|x)], KL[q(z)||p], I_q(x; z), E_x KL[q(z|x)||p] and its split),
  with q(z) = 1/N sum_n q(z|x_n) evaluated exactly by the streaming kernel at the N*S stratified
  draws z_ns ~ q(z|x_n);
- ``refvae.estimators.hole_metrics(model, x, rng, n_samples=M)``: KL[p||q(z)] and the hole masses
  P_p[q(z)/p(z) < tau] for tau = 0.1, 0.01 at M = 10^4 draws from the prior,

against **the obvious NumPy/SciPy path**: the same encoder output and the same draws (same
generator, same order), q(z) by broadcasting ``(z_b - mu_n) / sigma_n`` over a chunk of queries and
``scipy.special.logsumexp`` over n, chunked so that one (b, N, L) float64 array stays under
``--budget-mb`` (256 MiB), and the estimates by NumPy means and standard deviations. (NumPy's
elementwise ufuncs and scipy's logsumexp run on one thread; refvae's kernel uses ``--threads``.)

Cases: N = 1000 (the digits training set, scikit-learn's first 1000 images, encoded by a refvae
VAE trained for ``--train-epochs`` epochs -- any trained state will do) and N = 10^5 synthetic
encoded points, each with L = 2 and L = 16. The standard prior throughout.

The synthetic case uses a duck-typed stand-in for a VAE (``LookupModel``): its "encoder" returns
stored (mu_n, v_n) for row indices x_n = n (means ~ N(0, 1), log-variances ~ N(-2, 0.5^2)), so the
estimator functions run unchanged while encoding costs nothing; its prior is refvae's
``StandardPrior``.

Agreement: every returned :class:`Estimate` (value and standard error) against the NumPy/SciPy
values, and the per-query log q(z) on the first ``--check-queries`` draws. Hole masses are counts
over the same draws: they agree exactly unless a log-ratio lies within rounding of log(tau) (the
number of such draws is reported).

The NumPy/SciPy path costs about 10-20x refvae's (18 s for 10^8 (query, component) pairs at
L = 16 on these machines; H[q(z)] at N = 10^5 with S = 1 is 10^10 pairs). When its time, estimated
by timing the first ``--probe`` queries, exceeds ``--baseline-max-s`` (default 1200 s; 0 = no
limit), it runs on a prefix of the queries chosen to take about ``--baseline-subset-s`` (60 s);
its full time is then *extrapolated* linearly in the number of queries (reported as such), and
agreement is checked on that prefix only. refvae always runs in full.

Timing: one warm-up call of every path at a tiny size (Numba compilation or cache load, thread
pools), then for N = 1000 a warm-up call at the size and the median of ``--repeats`` calls; for
N = 10^5 a single timed call (``--slow-repeats``).

Usage
-----
    python validation/bench_estimators.py            # N = 1000 and 1e5, L = 2 and 16 (long: see above)
    python validation/bench_estimators.py --quick    # N = 1000, L = 2 and 16, 1 training epoch (seconds)
    python validation/bench_estimators.py --baseline-max-s 0   # always run the NumPy/SciPy path in full

Results go to ``validation/results/bench_estimators.json`` and ``.md`` (``--quick`` writes
``bench_estimators_quick.*``; ``--json`` / ``--md`` override either).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _bench.py sits next to this script
import _bench  # noqa: E402  (shared benchmark machinery; imports no NumPy)

THREADS = _bench.setup_threads(sys.argv[1:])  # BLAS thread env vars, before NumPy is imported

import math  # noqa: E402
import time  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

from _bench import chunk_rows, cpu_snapshot, log, med, run_timed  # noqa: E402
from refvae import estimators  # noqa: E402
from refvae.kernels.mixture import mixture_log_prob  # noqa: E402
from refvae.priors.mixtures import AggregatedPosterior  # noqa: E402
from refvae.priors import StandardPrior  # noqa: E402

numba.set_num_threads(THREADS)

LN_2PI = math.log(2.0 * math.pi)
TITLE = "Estimators over the aggregated posterior: refvae vs NumPy/SciPy (`validation/bench_estimators.py`)"
MIB = 2.0 ** 20
DEFAULT_CASES = (("digits", 1000, 2), ("digits", 1000, 16), ("synthetic", 100_000, 2),
                 ("synthetic", 100_000, 16))
TAUS = (0.1, 0.01)
SMALL_PAIRS = 5e7  # N*S*N + M*N below this: warm-up at the size and --repeats timed calls


def fmt_t(t):
    """_bench.fmt_t, 600 s and above in minutes (extrapolated baselines run for hours)."""
    return _bench.fmt_t(t, minutes=True)


# ============================================================================ models

class _LookupEncoder:
    """``forward(params, x)`` returns the stored (mu, log_var) of the row indices in ``x[:, 0]``."""

    def __init__(self, means, log_vars):
        self.means, self.log_vars = means, log_vars
        self.latent_dim = means.shape[1]
        self.x_dim = 1

    def forward(self, params, x):
        idx = np.asarray(x[:, 0], dtype=np.intp)
        return self.means[idx], self.log_vars[idx], None


class LookupModel:
    """A duck-typed VAE for the estimators: stored encoder output, refvae's StandardPrior."""

    def __init__(self, means, log_vars):
        self.encoder = _LookupEncoder(means, log_vars)
        self.decoder = None  # the aggregated-posterior estimators do not decode
        self.latent_dim = means.shape[1]
        self.x_dim = 1
        self.params = {}
        self.prior = StandardPrior(self.latent_dim).bind(self.params)

    @staticmethod
    def rows(N):
        return np.arange(N, dtype=np.float64)[:, None]


def make_case(kind, N, L, args):
    """(model, x, description) for one case."""
    if kind == "digits":
        from refvae.data import load_digits_split
        from refvae.train import fit
        from refvae.vae import VAE
        split = load_digits_split()
        x = split["train"][:N]
        model = VAE(x.shape[1], L, (256, 256), "leaky_relu", "categorical", 17, "standard",
                    rng=np.random.default_rng([args.seed, L]))
        t0 = time.perf_counter()
        res = fit(model, x, split["val"], rng=np.random.default_rng([args.seed, L, 1]),
                  optimizer="adamax", lr=1e-3, batch_size=64, max_epochs=args.train_epochs,
                  patience=args.train_epochs, quiet=True)
        desc = (f"digits train set (first {N}), VAE (256, 256) leaky ReLU, categorical, trained "
                f"{res.epochs_run} epoch(s) with Adamax (val loss {res.best_val_loss:.2f}, "
                f"{time.perf_counter() - t0:.1f} s)")
        return model, x, desc
    rng = np.random.default_rng([args.seed, N, L])
    means = rng.standard_normal((N, L))
    log_vars = -2.0 + 0.5 * rng.standard_normal((N, L))
    return LookupModel(means, log_vars), LookupModel.rows(N), \
        "synthetic: means ~ N(0, 1), log-variances ~ N(-2, 0.5^2), LookupModel"


# ============================================================================ the NumPy/SciPy path

def scipy_log_q(z, means, log_vars, budget_bytes):
    """log q(z_b) = logsumexp_n [-ln N + log N(z_b | mu_n, diag exp(v_n))], broadcast over chunks."""
    N = means.shape[0]
    return _bench.scipy_mixture_log_prob(z, means, log_vars, np.full(N, -math.log(N)), budget_bytes)


def _est(v):
    """(value, se) of the mean of v (N, S): stratified se for S >= 2, std/sqrt(N) for S = 1."""
    v = np.asarray(v, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    N, S = v.shape
    if S >= 2:
        se = math.sqrt(float(np.sum(np.var(v, axis=1, ddof=1))) / S) / N
    else:
        se = float(np.std(v[:, 0], ddof=1)) / math.sqrt(N)
    return {"value": float(np.mean(v)), "se": se}


def std_normal_log_prob(z):
    return -0.5 * np.sum(LN_2PI + z * z, axis=-1)


def baseline_stats(model, x, seed, S, budget, n_queries=None):
    """aggregated_posterior_stats the obvious way; with n_queries, q(z) at that prefix only."""
    mu, lv = estimators.encode_all(model, x)
    N, L = mu.shape
    rng = np.random.default_rng(seed)
    z = mu[:, None, :] + np.exp(0.5 * lv)[:, None, :] * rng.standard_normal((N, S, L))
    flat = z.reshape(N * S, L)
    if n_queries is not None:
        return {"partial": True, "n_queries": n_queries,
                "log_q": scipy_log_q(flat[:n_queries], mu, lv, budget)}
    lqz = scipy_log_q(flat, mu, lv, budget).reshape(N, S)
    lpz = std_normal_log_prob(z)
    h_n = 0.5 * np.sum(LN_2PI + 1.0 + lv, axis=1)
    kl_n = 0.5 * np.sum(np.expm1(lv) - lv + mu * mu, axis=1)
    return {"partial": False, "log_q": lqz.ravel(), "estimates": {
        "entropy_qz": _est(-lqz), "cross_entropy": _est(-lpz),
        "conditional_entropy": {"value": float(np.mean(h_n)), "se": 0.0},
        "kl_qz_p": _est(lqz - lpz), "mutual_information": _est(-lqz - h_n[:, None]),
        "avg_kl": {"value": float(np.mean(kl_n)), "se": 0.0},
        "avg_kl_split": _est(-lqz - h_n[:, None] + (lqz - lpz))}}


def baseline_holes(model, x, seed, M, budget, n_queries=None):
    """hole_metrics the obvious way (standard prior); with n_queries, q(z) at that prefix only."""
    mu, lv = estimators.encode_all(model, x)
    L = mu.shape[1]
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((M, L))                       # StandardPrior.sample
    if n_queries is not None:
        return {"partial": True, "n_queries": n_queries,
                "log_q": scipy_log_q(z[:n_queries], mu, lv, budget)}
    lpz = std_normal_log_prob(z)
    lqz = scipy_log_q(z, mu, lv, budget)
    log_ratio = lqz - lpz
    out = {"reverse_kl": _est(-log_ratio)}
    for t in TAUS:
        frac = float(np.mean(log_ratio < math.log(t)))
        out[f"hole_mass_{t:g}"] = {"value": frac, "se": math.sqrt(frac * (1 - frac) / M)}
    return {"partial": False, "log_q": lqz, "log_ratio": log_ratio, "estimates": out}


def refvae_queries(model, x, seed, S, kind, n):
    """The first n query points of the stats (kind 'stats') or hole (kind 'holes') computation,
    with refvae's log q(z) there (untimed; for the per-query agreement)."""
    mu, lv = estimators.encode_all(model, x)
    N, L = mu.shape
    rng = np.random.default_rng(seed)
    if kind == "stats":
        z = (mu[:, None, :] + np.exp(0.5 * lv)[:, None, :] * rng.standard_normal((N, S, L))).reshape(N * S, L)
    else:
        z = rng.standard_normal((n, L))
    z = z[:n]
    return z, AggregatedPosterior(L, mu, lv).log_prob(z)


def flatten_refvae(stats=None, holes=None):
    out = {}
    if stats is not None:
        for k, e in stats.items():
            out[k] = {"value": e.value, "se": e.se}
    if holes is not None:
        out["reverse_kl"] = {"value": holes["reverse_kl"].value, "se": holes["reverse_kl"].se}
        for t, e in holes["hole_mass"].items():
            out[f"hole_mass_{t:g}"] = {"value": e.value, "se": e.se}
    return out


# ============================================================================ timing

def compare(ref, base):
    """Per estimate: |Δvalue|, relative Δvalue, |Δse|."""
    out = {}
    for k, b in base.items():
        a = ref[k]
        dv = abs(a["value"] - b["value"])
        out[k] = {"refvae": a["value"], "numpy": b["value"], "abs_diff": dv,
                  "rel_diff": dv / max(abs(b["value"]), 1e-300),
                  "se_refvae": a["se"], "se_numpy": b["se"], "se_abs_diff": abs(a["se"] - b["se"])}
    return out


def bench_baseline(name, call, n_total, args, small):
    """Time the NumPy/SciPy path (full, or a prefix with an extrapolated time)."""
    r = {"n_queries_total": n_total}
    probe = min(n_total, args.probe)
    t0 = time.perf_counter()
    call(n_queries=probe)
    t_probe = time.perf_counter() - t0
    est = t_probe * n_total / probe
    r["probe_queries"], r["probe_s"], r["estimate_s"] = probe, t_probe, est
    if args.baseline_max_s <= 0 or est <= args.baseline_max_s or probe >= n_total:
        res, ts = run_timed(lambda: call(), args.repeats if small else args.slow_repeats, small)
        r["times"] = ts
        r["s"] = med(ts)
        r["extrapolated"] = False
        return r, res
    n_sub = int(min(n_total, max(probe, probe * args.baseline_subset_s / max(t_probe, 1e-9))))
    res, ts = run_timed(lambda: call(n_queries=n_sub), 1, False)
    r["subset_queries"] = n_sub
    r["subset_s"] = ts[0]
    r["s"] = ts[0] * n_total / n_sub
    r["extrapolated"] = True
    log(f"{name}: estimated {fmt_t(est)} > --baseline-max-s {args.baseline_max_s:g} s; ran {n_sub} of "
        f"{n_total} queries in {fmt_t(ts[0])}, extrapolated to {fmt_t(r['s'])}")
    return r, res


def log_q_breakdown(model, x, seed_stats, seed_holes, S, M, reps):
    """Where the estimators' log q(z) time goes: ``AggregatedPosterior.log_prob`` (as the estimators
    call it) against the streaming kernel alone and against an AggregatedPosterior built with
    ``component_trace_limit=0``. ``log_prob`` runs the prior's ``forward``, which also builds the
    (B, N) matrix ``prior.component_log_prob`` for its trace when N <= component_trace_limit (4096)
    and B N <= 2**24 -- with NumPy broadcasting -- and then discards it."""
    mu, lv = estimators.encode_all(model, x)
    N, L = mu.shape
    out = {}
    for label, seed in (("stats", seed_stats), ("holes", seed_holes)):
        rng = np.random.default_rng(seed)
        if label == "stats":
            z = (mu[:, None, :] + np.exp(0.5 * lv)[:, None, :]
                 * rng.standard_normal((N, S, L))).reshape(N * S, L)
        else:
            z = rng.standard_normal((M, L))
        ap = AggregatedPosterior(L, mu, lv)
        ap0 = AggregatedPosterior(L, mu, lv, component_trace_limit=0)
        _, t_ap = run_timed(lambda: ap.log_prob(z), reps, True)
        _, t_ap0 = run_timed(lambda: ap0.log_prob(z), reps, True)
        _, t_k = run_timed(lambda: mixture_log_prob(z, mu, lv), reps, True)
        try:
            traced = bool(ap._want_component_trace(z.shape[0], N))
        except Exception:  # private API changed
            traced = None
        out[label] = {"queries": int(z.shape[0]), "trace_matrix_built": traced,
                      "aggregated_log_prob_s": med(t_ap), "no_trace_log_prob_s": med(t_ap0),
                      "kernel_s": med(t_k)}
    return out


def bench_case(kind, N, L, args):
    S, M = args.n_samples, args.holes_samples
    load = _bench.LoadTracker({})  # load.phase(name): contention since the last phase (or now)
    phase = load.phase
    model, x, desc = make_case(kind, N, L, args)
    pairs = N * S * N + M * N
    small = pairs <= SMALL_PAIRS
    reps = args.repeats if small else args.slow_repeats
    seed_stats, seed_holes = [args.seed, N, L, 2], [args.seed, N, L, 3]
    budget = args.budget_mb * MIB
    r = {"kind": kind, "N": N, "L": L, "n_samples": S, "holes_samples": M, "description": desc,
         "pairs_stats": N * S * N, "pairs_holes": M * N, "repeats": reps, "warmup_at_size": small,
         "chunk_queries": chunk_rows(N, L, budget), "contention": load.record}
    log(f"\n=== {kind}, N = {N}, L = {L}: {desc}")
    log(f"         H[q(z)]: {N * S} queries x {N} components; holes: {M} x {N}; refvae {reps} timed "
        f"call(s){' after a warm-up call at this size' if small else ''}")

    phase("setup (model, training)")
    # ---- refvae
    stats, ts = run_timed(lambda: estimators.aggregated_posterior_stats(
        model, x, np.random.default_rng(seed_stats), n_samples=S), reps, small)
    r["refvae_stats_times"], r["refvae_stats_s"] = ts, med(ts)
    holes, ts = run_timed(lambda: estimators.hole_metrics(
        model, x, np.random.default_rng(seed_holes), n_samples=M, taus=TAUS), reps, small)
    r["refvae_holes_times"], r["refvae_holes_s"] = ts, med(ts)
    _, ts = run_timed(lambda: estimators.encode_all(model, x), args.repeats, True)
    r["encode_s"] = med(ts)
    ref = flatten_refvae(stats, holes)
    r["refvae_estimates"] = ref
    if small:
        r["log_q_breakdown"] = log_q_breakdown(model, x, seed_stats, seed_holes, S, M, reps)
    log(f"refvae   aggregated_posterior_stats {fmt_t(r['refvae_stats_s'])}   hole_metrics "
        f"{fmt_t(r['refvae_holes_s'])}   (encoding alone {fmt_t(r['encode_s'])}); H[q(z)] = "
        f"{ref['entropy_qz']['value']:.6f} ± {ref['entropy_qz']['se']:.6f}, KL[p||q] = "
        f"{ref['reverse_kl']['value']:.4f}, hole mass (0.1) = {ref['hole_mass_0.1']['value']:.4f}")
    if "log_q_breakdown" in r:
        log("log q    " + "; ".join(
            f"{k} ({v['queries']} queries): AggregatedPosterior.log_prob {fmt_t(v['aggregated_log_prob_s'])}"
            f" (trace matrix built: {v['trace_matrix_built']}), with component_trace_limit=0 "
            f"{fmt_t(v['no_trace_log_prob_s'])}, kernel alone {fmt_t(v['kernel_s'])}"
            for k, v in r["log_q_breakdown"].items()))
    phase("refvae")

    # ---- NumPy / SciPy
    bs, res_s = bench_baseline("NumPy/SciPy H[q(z)]",
                               lambda n_queries=None: baseline_stats(model, x, seed_stats, S, budget,
                                                                     n_queries),
                               N * S, args, small)
    bh, res_h = bench_baseline("NumPy/SciPy holes",
                               lambda n_queries=None: baseline_holes(model, x, seed_holes, M, budget,
                                                                     n_queries),
                               M, args, small)
    r["numpy_stats"], r["numpy_holes"] = bs, bh
    r["ratio_stats"] = bs["s"] / r["refvae_stats_s"]
    r["ratio_holes"] = bh["s"] / r["refvae_holes_s"]
    phase("numpy")

    # ---- agreement
    agree = {}
    base = {}
    if not res_s["partial"]:
        base.update(res_s["estimates"])
    if not res_h["partial"]:
        base.update(res_h["estimates"])
        lr = res_h["log_ratio"]
        agree["hole_borderline_draws"] = {f"{t:g}": int(np.sum(np.abs(lr - math.log(t)) < 1e-9 *
                                                              np.maximum(1.0, np.abs(lr))))
                                          for t in TAUS}
    agree["estimates"] = compare(ref, base)
    for label, res, kind_q, seed in (("stats", res_s, "stats", seed_stats),
                                     ("holes", res_h, "holes", seed_holes)):
        n = min(len(res["log_q"]), args.check_queries)
        zq, lq_ref = refvae_queries(model, x, seed, S, kind_q, n)
        agree[f"log_q_{label}_queries"] = n
        agree[f"log_q_{label}_maxabs"] = float(np.max(np.abs(lq_ref - res["log_q"][:n])))
        agree[f"log_q_{label}_maxabs_value"] = float(np.max(np.abs(lq_ref)))
    r["agreement"] = agree
    est = agree["estimates"]
    worst = max(est.items(), key=lambda kv: kv[1]["rel_diff"]) if est else None
    log(f"NumPy    H[q(z)] path {fmt_t(bs['s'])}{' (extrapolated)' if bs['extrapolated'] else ''} "
        f"({r['ratio_stats']:.1f}× refvae)   holes path {fmt_t(bh['s'])}"
        f"{' (extrapolated)' if bh['extrapolated'] else ''} ({r['ratio_holes']:.1f}× refvae)")
    log(f"agree    per-query max|Δ log q|: H[q(z)] draws {agree['log_q_stats_maxabs']:.1e} on "
        f"{agree['log_q_stats_queries']} (max|log q| {agree['log_q_stats_maxabs_value']:.3g}), prior draws "
        f"{agree['log_q_holes_maxabs']:.1e} on {agree['log_q_holes_queries']} (max|log q| "
        f"{agree['log_q_holes_maxabs_value']:.3g})"
        + (f"; estimates: worst rel. diff {worst[1]['rel_diff']:.1e} ({worst[0]}), max |Δse| "
           f"{max(v['se_abs_diff'] for v in est.values()):.1e}" if worst else
           "; estimates not compared (NumPy path extrapolated)"))
    phase("agreement")
    _bench.flag_contended(r)
    return r


# ============================================================================ report

def markdown(results, prov, args, run_contention):
    out = _bench.md_header(TITLE, prov, f", scikit-learn {prov['sklearn']}",
                           f"(Numba {prov['numba_threads']} [{prov['numba_threading_layer']}], BLAS env "
                           f"vars {prov['threads']}; NumPy ufuncs and scipy's logsumexp are single-threaded)")
    out += [f"`aggregated_posterior_stats(model, x, rng, n_samples={args.n_samples})` (H[q(z)] and the "
            f"other terms from the same draws) and `hole_metrics(model, x, rng, n_samples="
            f"{args.holes_samples}, taus={TAUS})`, end to end (encoding included), against the same "
            "computation in NumPy with q(z) by broadcasting + `scipy.special.logsumexp`, chunked so one "
            f"(b, N, L) array stays under {args.budget_mb:g} MiB, on the same draws. Median of "
            f"{args.repeats} call(s) after a warm-up at the size when N·S·N + M·N ≤ {SMALL_PAIRS:.0e} "
            f"pairs, else {args.slow_repeats} call(s). NumPy/SciPy runs estimated above "
            f"{args.baseline_max_s:g} s ran on a prefix of the queries and are extrapolated (marked "
            "\"extrap.\"). Ratios are NumPy / refvae (higher = refvae faster).", ""]
    bad = [f"({r['kind']}, N={r['N']}, L={r['L']})" for r in results if r["contended"]]
    out += [_bench.md_machine_load(run_contention, "Contended cases (timings unreliable): " + ", ".join(bad)
                                   if bad else None), ""]
    out += ["## Times", "",
            "| data | N | L | refvae H[q(z)] stats | NumPy/SciPy | ratio | refvae holes | NumPy/SciPy | ratio | encoding alone |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        def b(d):
            return fmt_t(d["s"]) + (f" (extrap. from {d['subset_queries']} queries)" if d["extrapolated"] else "")
        out.append(f"| {r['kind']} | {r['N']} | {r['L']} | {fmt_t(r['refvae_stats_s'])} | {b(r['numpy_stats'])} | "
                   f"{r['ratio_stats']:.1f}× | {fmt_t(r['refvae_holes_s'])} | {b(r['numpy_holes'])} | "
                   f"{r['ratio_holes']:.1f}× | {fmt_t(r['encode_s'])} |")
    bd = [r for r in results if "log_q_breakdown" in r]
    if bd:
        out += ["", "## Where refvae's log q(z) time goes (cases with N·S·N + M·N ≤ "
                f"{SMALL_PAIRS:.0e})", "",
                "`AggregatedPosterior.log_prob` as the estimators call it, the same with "
                "`component_trace_limit=0`, and the streaming kernel `mixture_log_prob` alone, on the "
                "same queries. With N ≤ 4096 and B·N ≤ 2²⁴, `log_prob` goes through the prior's "
                "`forward`, which also builds the (B, N) trace matrix `prior.component_log_prob` by "
                "NumPy broadcasting, then discards it.", "",
                "| data | N | L | queries | trace matrix built | AggregatedPosterior.log_prob | "
                "trace limit 0 | kernel alone |", "|---|---|---|---|---|---|---|---|"]
        for r in bd:
            for k, v in r["log_q_breakdown"].items():
                out.append(f"| {r['kind']} | {r['N']} | {r['L']} | {v['queries']} ({k}) | "
                           f"{v['trace_matrix_built']} | {fmt_t(v['aggregated_log_prob_s'])} | "
                           f"{fmt_t(v['no_trace_log_prob_s'])} | {fmt_t(v['kernel_s'])} |")
    out += ["", "## Values and agreement", ""]
    for r in results:
        a = r["agreement"]
        out += [f"**{r['kind']}, N = {r['N']}, L = {r['L']}** ({r['description']}). Per-query max|Δ log q|: "
                f"{a['log_q_stats_maxabs']:.1e} on {a['log_q_stats_queries']} posterior draws (max|log q| "
                f"{a['log_q_stats_maxabs_value']:.3g}), {a['log_q_holes_maxabs']:.1e} on "
                f"{a['log_q_holes_queries']} prior draws (max|log q| {a['log_q_holes_maxabs_value']:.3g})."
                + (f" Draws within rounding of log τ: {a['hole_borderline_draws']}."
                   if "hole_borderline_draws" in a else ""), "",
                "| estimate | refvae value ± se | NumPy/SciPy value ± se | rel. Δvalue | \\|Δse\\| |",
                "|---|---|---|---|---|"]
        for k, e in r["refvae_estimates"].items():
            c = a["estimates"].get(k)
            if c is None:
                out.append(f"| {k} | {e['value']:.10g} ± {e['se']:.3g} | (extrapolated: not compared) | | |")
            else:
                out.append(f"| {k} | {e['value']:.10g} ± {e['se']:.3g} | {c['numpy']:.10g} ± {c['se_numpy']:.3g} | "
                           f"{c['rel_diff']:.1e} | {c['se_abs_diff']:.1e} |")
        out.append("")
    return "\n".join(out)


def parse_cases(items):
    cases = _bench.parse_triples(items, "--cases", "kind,N,L (kind digits or synthetic)")
    for it, (kind, _, _) in zip(items, cases):
        if kind not in ("digits", "synthetic"):
            raise SystemExit(f"--cases expects kind,N,L with kind digits or synthetic, got {it!r}")
    return [(kind, int(float(n)), int(L)) for kind, n, L in cases]


def build_parser():
    p = _bench.arg_parser(__doc__, "digits N = 1000 with L = 2 and 16 only, 1 training epoch, 1 repeat")
    p.add_argument("--cases", nargs="+", default=None,
                   help="kind,N,L triples (default digits,1000,2 digits,1000,16 synthetic,1e5,2 synthetic,1e5,16)")
    p.add_argument("--n-samples", type=int, default=1, help="S, draws per data point for H[q(z)]; default 1")
    p.add_argument("--holes-samples", type=int, default=10_000, help="M, prior draws; default 10^4")
    p.add_argument("--train-epochs", type=int, default=5, help="training epochs of the digits VAE; default 5")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--slow-repeats", type=int, default=1)
    p.add_argument("--budget-mb", type=float, default=256.0)
    p.add_argument("--probe", type=int, default=500,
                   help="queries timed first on the NumPy/SciPy path to estimate its time; default 500")
    p.add_argument("--baseline-max-s", type=float, default=1200.0,
                   help="above this estimate the NumPy/SciPy path runs on a prefix and is extrapolated "
                        "(0: always in full); default 1200")
    p.add_argument("--baseline-subset-s", type=float, default=60.0,
                   help="target time of that prefix run; default 60")
    p.add_argument("--check-queries", type=int, default=2000,
                   help="per-query agreement of log q(z) on this many draws; default 2000")
    return _bench.add_run_options(p, "bench_estimators", torch=False)


def main(argv=None):
    args = build_parser().parse_args(argv)
    cases = parse_cases(args.cases) if args.cases else list(DEFAULT_CASES)
    if args.quick:
        cases = [c for c in cases if c[1] <= 1000] or cases[:1]
        args.train_epochs = min(args.train_epochs, 1)
        args.repeats = 1
    json_path, md_path = _bench.output_paths(args, "bench_estimators")
    _bench.wait_before_run(args.wait_idle)
    t_start = time.perf_counter()
    snap_run = cpu_snapshot()
    # warm-up of every path at a tiny size (Numba compilation or cache load, thread pools)
    rng0 = np.random.default_rng(0)
    m0 = LookupModel(rng0.standard_normal((300, 3)), -2.0 + 0.5 * rng0.standard_normal((300, 3)))
    x0 = LookupModel.rows(300)
    t0 = time.perf_counter()
    estimators.aggregated_posterior_stats(m0, x0, np.random.default_rng(1))
    estimators.hole_metrics(m0, x0, np.random.default_rng(2), n_samples=100)
    t_compile = time.perf_counter() - t0
    baseline_stats(m0, x0, 1, 1, args.budget_mb * MIB)
    baseline_holes(m0, x0, 2, 100, args.budget_mb * MIB)
    prov = _bench.provenance(threads=THREADS, seed=args.seed)
    log(f"refvae {prov['refvae']} ({prov['git_revision']}); Python {prov['python']}, NumPy "
        f"{prov['numpy']}, Numba {prov['numba']}, SciPy {prov['scipy']}")
    _bench.log_uncommitted(prov)
    log(f"CPU {prov['cpu_model']} ({prov['cpu_count']} logical); threads {THREADS} (numba "
        f"{prov['numba_threads']} [{prov['numba_threading_layer']}]); seed {args.seed}; kernels "
        f"compiled/loaded in {t_compile:.2f} s; load average {prov['loadavg_start']}")
    results, run_contention, total = _bench.run_cases(lambda c: bench_case(*c, args), cases,
                                                      snap_run, t_start)
    report = {"provenance": prov, "settings": {
        "cases": [list(c) for c in cases], "n_samples": args.n_samples,
        "holes_samples": args.holes_samples, "taus": list(TAUS), "train_epochs": args.train_epochs,
        "repeats": args.repeats, "slow_repeats": args.slow_repeats, "budget_mib": args.budget_mb,
        "probe": args.probe, "baseline_max_s": args.baseline_max_s,
        "baseline_subset_s": args.baseline_subset_s, "quick": args.quick, "compile_s": t_compile,
        "total_s": total, "contention": run_contention,
        "generators": "model: default_rng([seed, L]); training: default_rng([seed, L, 1]); synthetic "
                      "components: default_rng([seed, N, L]); stats draws: default_rng([seed, N, L, 2]); "
                      "prior draws: default_rng([seed, N, L, 3])"},
        "results": results}
    _bench.write_report(json_path, md_path, report, markdown(results, prov, args, run_contention))
    return 0


if __name__ == "__main__":
    sys.exit(main())
