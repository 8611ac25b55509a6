"""``report.md``: the report dict (as written to ``report.json``) rendered as Markdown, one
function per section (readable on its own; figures by relative path)."""

from __future__ import annotations

from ...tolerances import TOLERANCES
from ..provenance import REPRODUCIBILITY
from .gradient_check import PROSE as GRADCHECK_PROSE
from .identity_checks import PROSE as IDENTITY_PROSE

__all__ = []  # render_markdown is called by writing.write_report


def _fmt(x, digits=3):
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    ax = abs(x)
    if ax != 0 and (ax < 1e-3 or ax >= 1e6):
        return f"{x:.3e}"
    return f"{x:.{digits}f}"


def _pm(e, digits=3):
    """value ± se; just the value when se is 0 (closed forms) or unknown."""
    if not e or e.get("value") is None:
        return "—"
    if not e.get("se"):
        return _fmt(e["value"], digits)
    return f"{_fmt(e['value'], digits)} ± {_fmt(e['se'], digits)}"


def _cell(c):
    return str(c).replace("|", "\\|")


def _table(header, rows):
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _sci(x):
    if x is None:
        return "—"
    return "0" if x == 0 else f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.2e}"


def _secs(x):
    return "—" if x is None else f"{x:.1f}"


def _hole(e):
    if not e or e.get("value") is None:
        return "—"
    if e["value"] == 0:
        return f"0 (0 of {e['n']} draws)"
    return f"{e['value']:.4f} ± {e['se']:.4f}"


def _ok(p):
    return "—" if p is None else ("pass" if p else "**FAIL**")


def _run_label(run):
    seed = f", seed {run['seed']}" if run.get("seed") is not None else ""
    return f"{run['prior']} (L = {run['latent_dim']}{seed})"


def render_markdown(r):
    """The report as Markdown (readable on its own; figures by relative path)."""
    an = r.get("analysis") or {}
    out = _header(r) + _scope(r, an) + _setup(r) + _settings_table()
    for L in r["profile"]["latent_dims"]:
        runs = [run for run in r["runs"] if run["latent_dim"] == L]
        a = (an.get("per_L") or {}).get(str(L)) or {}
        out += (_results(L, a, r["profile"], r["data"]) + _comparisons(L, a, an)
                + _holes_verdicts(L, a) + _hole_decodes(L, runs, r["seed"]) + _bias(L, a, r["profile"])
                + _training(L, runs))
    first = [run for run in r["runs"] if run.get("seed", r["seed"]) == r["seed"]]
    out += (_identities(r["runs"], first) + _gradcheck(first) + _kernel(r.get("kernel_accuracy"))
            + _figures(r) + _failed_runs(r["runs"]) + _missing(r.get("missing") or [])
            + _time_spent(r))
    return "\n".join(out)


def _header(r):
    """Title, status line, error and command."""
    out = [f"# {r['title']}", ""]
    by = r.get("interrupted_by")
    why = "terminated by SIGTERM" if by == "SIGTERM" else f"interrupted ({by or 'Ctrl-C'})"
    proc = r.get("process") or {}
    status = {"complete": "complete", "partial": f"**PARTIAL** ({why}; see *Missing* below)",
              "running": f"in progress (written after each prior; pid {proc.get('pid')} on "
                         f"{proc.get('host')}; if that process is gone, the run was killed)"
              }.get(r["status"], r["status"])
    s = r["summary"]
    out += [f"Status: {status}. Runs done: {s['runs_done']}/{s['runs_total']}; failed runs: "
            f"{s['runs_failed']}; failed checks: {s['checks_failed']}.", ""]
    if r.get("error"):
        out += [f"Error: `{r['error']}`", ""]
    if r.get("command"):
        out += [f"Command: `{r['command']}`", ""]
    return out


def _setup(r):
    """``## Set-up``: data, profile, model, training, estimators, seed; provenance."""
    prof, dd, prov = r["profile"], r["data"], r["provenance"]
    out = ["## Set-up", "",
           f"- Data: **{dd['name']}** — {dd['source']}; {dd['split']}; "
           f"N_train = {dd['n_train']}, N_val = {dd['n_val']}, N_test = {dd['n_test']}, "
           f"D = {dd['D']}, {dd['num_vals']} values per pixel.",
           f"- Profile **{prof['name']}**: {prof['description']}.",
           f"- Model: encoder MLP {prof['hidden']} → 2L, decoder reversed, {prof['activation']}, "
           f"{prof['likelihood']} likelihood with {prof['num_vals']} values. Priors: K = "
           f"{prof['num_components']} (mog, vamp); GTM {prof['gtm_grid']}×{prof['gtm_grid']} grid on "
           f"[{prof['gtm_range'][0]:g}, {prof['gtm_range'][1]:g}]²; flow {prof['flow_couplings']} "
           f"couplings; prior MLPs hidden {prof['prior_hidden']}.",
           f"- Training: {prof['optimizer']} lr {prof['lr']:g}, batch {prof['batch_size']}, at most "
           f"{prof['max_epochs']} epochs, early stopping with patience {prof['patience']} on the "
           f"validation negative ELBO (fixed noise); the best epoch's parameters are kept.",
           f"- Estimators: {prof['n_elbo']} draws per test point (RE, Ω, ELBO, CE); "
           f"{prof['n_agg']} per training point (q(z) statistics); {prof['n_holes']} prior draws "
           f"(holes); S = {prof['n_importance']} importance samples per test point (ln p(x)) on "
           f"every seed, in two blocks of {prof['n_importance'] // 2}"
           + (f", and S = {prof.get('n_importance_ref')} on the first seed (the estimator's bias)"
              if (prof.get("n_importance_ref") or 0) > prof["n_importance"] else "") + ".",
           f"- Seeds: {_seed_list(r)} (each trains every prior and L; the data and test images are "
           f"those of seed {r['seed']}); every part of a run draws from `numpy.random.default_rng("
           f"[seed, L, prior index, part])`. Runs shared among {r.get('workers', 1)} worker "
           f"process(es); a run's numbers do not depend on which process computed it.", ""]
    out += ["Provenance: " + ", ".join(f"{k} `{prov.get(k)}`" for k in
            ("refvae", "git_revision", "git_dirty", "python", "numpy", "numba", "scipy", "platform",
             "cpu_model", "numba_threads", "blas_threads")), "",
            f"Reproducibility: {prov.get('reproducibility') or REPRODUCIBILITY}.", ""]
    return out


def _seed_list(r):
    seeds = r.get("seeds") or [r["seed"]]
    return ", ".join(str(x) for x in seeds)


def _sd(q, digits=2):
    """mean (seed SD) of a summarised quantity."""
    if not q:
        return "—"
    if q.get("seed_sd") is None:
        return _fmt(q["mean"], digits)
    return f"{_fmt(q['mean'], digits)} (sd {_fmt(q['seed_sd'], digits)})"


def _ci(lo, hi, digits=2):
    return f"[{_fmt(lo, digits)}, {_fmt(hi, digits)}]"


def _scope(r, an):
    """``## What this report can conclude``: seeds, the verdict rule, under-training, the bias."""
    prof = r["profile"]
    seeds = r.get("seeds") or [r["seed"]]
    m = len(seeds)
    need = an.get("min_seeds_for_verdict", 5)
    out = ["## What this report can conclude", ""]
    if m < need:
        out.append(f"- **This report cannot rank the priors.** It trains {m} seed(s) per prior and L; "
                   f"a verdict needs at least {need} (with fewer, the seed part of each interval has "
                   f"{max(m - 1, 0)} degree(s) of freedom and one unusual seed decides). Its "
                   "intervals are given for orientation only.")
    else:
        out.append(f"- {m} training seeds per prior and L. A pair of priors is called different "
                   "only when Holm's rule over all pairs of one L (family-wise error 5 %) rejects "
                   "equality; otherwise it is *not distinguishable at this size*.")
    capped, done = an.get("runs_at_epoch_cap", 0), an.get("runs_done", 0)
    if capped:
        out.append(f"- **Under-trained:** {capped} of {done} finished runs stopped at the epoch cap "
                   f"({prof['max_epochs']} epochs) while the validation loss was still improving; "
                   "their ln p(x) is lower than training to convergence gives (biased), so these "
                   "numbers are not the priors' trained values.")
    else:
        out.append(f"- Every finished run ({done}) stopped early (patience {prof['patience']}), "
                   f"none at the epoch cap ({prof['max_epochs']}).")
    out.append(f"- ln p(x) is an importance-sampling estimate with S = {prof['n_importance']} "
               "draws per test image; it is biased low by about Var/(2S) per image. The *Bias of "
               "ln p(x)* tables give the measured bias. A \"MC se\" is the Monte Carlo standard "
               "error only (not the spread over images or seeds).")
    out.append(f"- The correctness checks (identities, gradient check) and the figures use the "
               f"first seed's models (seed {seeds[0]}).")
    if m >= need:
        out += _findings(an)
    return out + [""]


def _findings(an):
    """One bullet per L: which pairs Holm's rule separates, and the holes claim's verdicts."""
    out = []
    for L, a in sorted((an.get("per_L") or {}).items(), key=lambda kv: int(kv[0])):
        pairs = [e for e in a.get("pairs") or [] if e.get("p") is not None]
        diff = [e for e in pairs if e.get("holm_reject")]
        txt = ", ".join(f"{e['a']} − {e['b']} {e['mean']:+.2f} [{e['lo']:.2f}, {e['hi']:.2f}] "
                        f"({e['a'] if e['mean'] > 0 else e['b']} higher)" for e in diff)
        out.append(f"- **Findings, L = {L}:** ln p(x) separates {len(diff)} of {len(pairs)} pairs of "
                   "priors (Holm, 5 %)" + (f": {txt} nats" if diff else "; no prior can be ranked "
                                           "above another at this size") + ".")
        holes = [e for e in a.get("holes") or [] if e.get("p") is not None]
        fewer = [f"{e['prior']} ({e['metric']})" for e in holes if e.get("holm_reject") and e["mean"] < 0]
        more = [f"{e['prior']} ({e['metric']})" for e in holes if e.get("holm_reject") and e["mean"] > 0]
        if holes:
            out.append(f"  Fewer holes than the standard prior (Holm over the {len(holes)} tests): "
                       f"{', '.join(fewer) or 'none'}; more: {', '.join(more) or 'none'}; every other "
                       "prior and metric not distinguishable (table *Do the learnable priors leave "
                       "fewer holes?*).")
    return out


def _settings_table():
    """``## Settings: refvae vs the companion code`` from ``refvae.tools.companion.SETTINGS``
    (nothing when that module is not there)."""
    try:
        from ..companion import SETTINGS
    except ImportError:
        return []
    return _settings_rows(SETTINGS)


def _settings_rows(settings):
    rows = [[s.name, s.refvae, s.companion, s.why] for s in settings]
    return ["## Settings: refvae vs the companion code", "",
            "The text (§4.4.1) gives no training settings. refvae follows the companion code of the "
            "text (jmtomczak/intro_dgm) except where this table says otherwise.", "",
            _table(["setting", "refvae", "companion code", "why"], rows), ""]


def _results(L, a, prof, dd):
    """``## Results, L = ...``: means over seeds with their uncertainty sources kept apart."""
    summ = a.get("summary") or {}
    if not summ:
        return [f"## Results, L = {L}", "", "No run of this L finished.", ""]
    rows = []
    for p, q in summ.items():
        lp = q.get("log_px")
        if not lp:
            rows.append([f"`{p}`", "0"] + ["—"] * 7)
            continue
        iv = lp.get("interval")
        rows.append([f"`{p}`", str(q["n_seeds"]), _fmt(lp["mean"], 2),
                     ", ".join(_fmt(v, 2) for v in lp["per_seed"]), _fmt(lp["mc_se"], 3),
                     _fmt(lp.get("image_se"), 2), _fmt(lp.get("seed_sd"), 2),
                     _ci(iv["lo"], iv["hi"]) if iv else "—", _sd(q.get("neg_elbo_is"))])
    out = [f"## Results, L = {L}", "",
           f"### Test ln p(x), L = {L}", "",
           "Nats, averages over the N = " + str(dd["n_test"]) + " test images. Uncertainty "
           "sources apart: **MC se** the Monte Carlo standard error of the mean (importance "
           "sampling only); **images** the SD over images of the seed-averaged ln p(x) / √N (which "
           "test images were drawn); **seed SD** the SD of the per-seed means (training "
           "randomness). The 95 % CI of the mean includes seeds and images (two-level interval, "
           "*Paired comparisons* below). −ELBO from the same importance draws (mean log-weight), "
           "mean (SD over seeds).", "",
           _table(["prior", "seeds", "ln p(x) mean", "per seed", "MC se", "images SD/√N",
                   "seed SD", "95 % CI (seeds + images)", "−ELBO"], rows), ""]
    rows = []
    for p, q in summ.items():
        rows.append([f"`{p}`"] + [_sd(q.get(k)) for k in ("neg_elbo", "re", "omega", "ce_test",
                                                           "h_test")]
                    + [_fmt(-q["ce_test"]["mean"] + q["h_test"]["mean"], 2)
                       if q.get("ce_test") and q.get("h_test") else "—"])
    out += [f"### Test set: RE, Ω and eq. (4.43), L = {L}", "",
            f"One data set per row (the test set), mean (SD over seeds). RE and Ω from "
            f"{prof['n_elbo']} draws per image; CE and H[q(z|x)] from independent draws, so "
            "Ω ≈ −CE + H[q(z|x)] holds within Monte Carlo error (checked per run in *Identities*).",
            "", _table(["prior", "−ELBO", "RE", "Ω", "CE[q(z)‖p]", "H[q(z|x)]", "−CE + H"], rows), ""]
    rows = []
    for p, q in summ.items():
        rows.append([f"`{p}`"] + [_sd(q.get(k), 3) for k in ("ce", "h_cond", "omega_train", "h_qz",
                                                              "omega_opt", "kl_qz_p", "mi")])
    out += [f"### Training set: the aggregated posterior and the optimal prior, L = {L}", "",
            "The aggregated posterior q(z) = 1/N Σₙ q(z|xₙ) of the **training-set** encodings (N = "
            f"{dd['n_train']}); every column from the same draws z ~ q(z|xₙ), mean (SD over seeds). "
            "Ω = −CE[q(z)‖p] + H[q(z|x)] (eq. 4.43) for the learned prior p; with q(z) itself as "
            "the prior, CE = H[q(z)] and Ω = −I(x; z), the largest Ω any prior can reach; the gap "
            "is KL[q(z)‖p] ≥ 0.", "",
            _table(["prior", "CE[q(z)‖p]", "H[q(z|x)]", "Ω (learned p)", "H[q(z)]",
                    "Ω (p = q(z)) = −I", "KL[q(z)‖p] = gap", "I(x; z)"], rows), ""]
    rows = []
    for p, q in summ.items():
        rows.append([f"`{p}`", _sd(q.get("reverse_kl"), 3)]
                    + [_sd(q.get(f"hole_mass_{t:g}"), 4) for t in prof["taus"]])
    out += [f"### Holes, L = {L}", "",
            f"KL[p‖q(z)] and the prior mass where q(z)/p(z) < τ, from {prof['n_holes']} prior "
            "draws per run, mean (SD over seeds).", "",
            _table(["prior", "KL[p‖q(z)]"] + [f"hole mass τ={t:g}" for t in prof["taus"]], rows), ""]
    return out


def _verdict_cell(e):
    """The verdict, and when Holm's rule keeps a pair whose unadjusted 95 % interval excludes 0,
    say so (a reader sees the interval; the verdict is the adjusted test)."""
    v = e["verdict"]
    lo, hi = e.get("lo"), e.get("hi")
    if (not e.get("holm_reject") and lo is not None and hi is not None and (lo > 0 or hi < 0)
            and v.startswith("not distinguishable")):
        v += " (the unadjusted 95 % CI excludes 0; not significant after Holm's correction)"
    return v


def _pm_ci(e, digits=2):
    """+0.30 ± 0.60 (the 95 % CI's half width)."""
    return f"{e['mean']:+.{digits}f} ± {(e['hi'] - e['lo']) / 2:.{digits}f}"


def _comparisons(L, a, an):
    """``### Paired comparisons``: every pair of priors on the same test images and seeds."""
    pairs = a.get("pairs") or []
    if not pairs:
        return []
    rows = []
    for e in pairs:
        if e.get("p") is None:
            rows.append([f"{e['a']} − {e['b']}", str(e["n_seeds"])] + ["—"] * 6 + [e["verdict"]])
            continue
        rows.append([f"{e['a']} − {e['b']}", str(e["n_seeds"]), _pm_ci(e), _ci(e["lo"], e["hi"]),
                     _fmt(e["mc_se"], 3), _fmt(e["image_se"], 2), _fmt(e["seed_sd"], 2),
                     f"{e['p']:.2g}", _verdict_cell(e)])
    out = [f"### Paired comparisons of ln p(x), L = {L}", "",
           "For each pair a − b: the per-image difference ln p_a(x) − ln p_b(x) on the same test "
           "images, per seed. Mean over seeds and images ± the half width of its 95 % CI, from the "
           "two-level variance (seeds × images; derivation in `refvae.tools.report.verdicts`): "
           "Var = (MS_seeds + MS_images − MS_resid)/(m N), never below the seeds-only variance, "
           "Satterthwaite degrees of freedom. The parts: MC se (importance sampling), images SD/√N, "
           "seed SD (of the per-seed mean differences). Verdicts by Holm's rule over the "
           f"{len(pairs)} pairs (family-wise error {an.get('alpha', 0.05):g}); the CIs are not "
           "adjusted.", "",
           _table(["a − b", "seeds", "difference ± 95 %", "95 % CI", "MC se", "images SD/√N",
                   "seed SD", "p", "verdict"], rows), ""]
    ne = a.get("pairs_neg_elbo") or []
    rows = [[f"{e['a']} − {e['b']}", _pm_ci(e) if e.get("p") is not None else "—",
             f"{e['p']:.2g}" if e.get("p") is not None else "—", _verdict_cell(e)] for e in ne]
    if rows:
        out += [f"Paired comparisons of the test −ELBO (per image, from the importance draws; lower "
                f"is better), L = {L}, same method:", "",
                _table(["a − b", "difference ± 95 %", "p", "verdict"], rows), ""]
    return out


def _holes_verdicts(L, a):
    """``### Do learnable priors leave fewer holes?``"""
    hs = a.get("holes") or []
    if not hs:
        return []
    rows = []
    for e in hs:
        base = e["baseline"]
        if e.get("p") is None:
            rows.append([f"{e['prior']} − {base}", e["metric"], str(e["n_seeds"]), "—", "—", "—", "—",
                         e["verdict"]])
            continue
        digits = 3 if e["metric"] == "reverse_kl" else 4
        rows.append([f"{e['prior']} − {base}", e["metric"], str(e["n_seeds"]), _pm_ci(e, digits),
                     _fmt(e["mc_se"], digits), _fmt(e["seed_sd"], digits), f"{e['p']:.2g}",
                     _verdict_cell(e)])
    return [f"### Do the learnable priors leave fewer holes? L = {L}", "",
            "The text's claim. Per seed, the learnable prior's KL[p‖q(z)] and hole masses minus "
            "those of the prior without parameters on the same seed; mean over seeds ± the half "
            "width of the 95 % t interval over seeds (it includes each estimate's Monte Carlo "
            "error, shown apart). Negative: fewer holes. Holm's rule over the "
            f"{len(hs)} tests of this L.", "",
            _table(["prior − baseline", "metric", "seeds", "difference ± 95 %", "MC se", "seed SD", "p",
                    "verdict"], rows), ""]


def _decode_verdict(d):
    """Words for a hole-minus-covered difference with its SE (z = 2: about 95 %, one seed)."""
    if d is None or d.get("value") is None or not d.get("se"):
        return "—"
    v, se = d["value"], d["se"]
    if abs(v) <= 2 * se:
        return "not distinguishable (|difference| ≤ 2 se)"
    return "holes decode **worse**" if v < 0 else "holes decode **better** (against the text)"


def _hole_decodes(L, runs, seed):
    """``### Do samples from holes decode badly?``: the text's point, tested on the first seed."""
    rows, by_lp, by_nn = [], [], []
    for run in runs:
        h = run.get("hole_decodes")
        if not h or run.get("seed", seed) != seed:
            continue
        g, diff = h.get("groups") or {}, (h.get("difference") or {})
        hole, cov = g.get("hole") or {}, g.get("covered") or {}

        def v(grp, key, digits=1):
            q = grp.get(key) or {}
            return _fmt(q.get("value"), digits) + (f" ± {_fmt(q.get('se'), digits)}" if q.get("se") else "")

        dl, dn = diff.get("log_px") or {}, diff.get("nn_rms") or {}
        by_lp.append(_decode_verdict(dl))
        # a larger distance to the nearest training image is worse: the difference's sign flipped
        by_nn.append(_decode_verdict({"value": -dn["value"], "se": dn["se"]}) if dn.get("se") else "—")
        rows.append([f"`{run['prior']}`", _fmt((hole.get("fraction") or {}).get("value"), 4),
                     str(hole.get("n", 0)), v(hole, "log_px"), v(cov, "log_px"),
                     v(h.get("data") or {}, "log_px"),
                     (_fmt(dl.get("value"), 1) + f" ± {_fmt(dl.get('se'), 1)}") if dl else "—",
                     by_lp[-1], v(hole, "nn_rms", 2), v(cov, "nn_rms", 2), by_nn[-1]])
    if not rows:
        return []
    tau = next((run["hole_decodes"]["tau"] for run in runs if run.get("hole_decodes")), None)
    return [f"### Do samples from holes decode badly? L = {L}", "",
            "The text's point (holes: regions where the prior puts mass and the aggregated posterior "
            "does not, so the decoder never learned them). For the first seed's model, prior draws "
            f"z ~ p(z) with q(z)/p(z) < {tau:g} (*holes*) and with q(z)/p(z) ≥ 1 (*covered*), 64 of "
            "each, decoded: ln p(x̂) of a decoded draw x̂ ~ p(x|z) under the model (importance "
            "sampling), and the RMS pixel distance from E[x|z] to the nearest training image "
            "(model-free). ± is the standard error over the 64 draws; one seed, so the seed-to-seed "
            "spread is not in it: the verdict is about this trained model, not the prior in "
            "general. Both numbers favour sharp, confident images, so a hole's decode can score "
            "well without looking like a digit (the figure shows both groups).", "",
            f"In this report: the ln p verdict says *worse* for "
            f"{sum('worse' in x for x in by_lp)} of {len(rows)} priors and *better* for "
            f"{sum('better' in x for x in by_lp)}; the nearest-image distance says *worse* for "
            f"{sum('worse' in x for x in by_nn)} and *better* for "
            f"{sum('better' in x for x in by_nn)}. The text's claim that samples from holes "
            "decode badly is supported here only where a row says *worse*.", "",
            _table(["prior", "hole mass (draws)", "n", "ln p(x̂), holes", "ln p(x̂), covered",
                    "ln p(x), 64 test images (yardstick)", "holes − covered", "verdict (ln p)", "NN RMS, holes", "NN RMS, covered",
                    "verdict (NN RMS)"], rows), ""]


def _bias(L, a, prof):
    """``### Bias of ln p(x)``: S vs S/2 on the same draws, and the first seed's reference."""
    b = a.get("bias") or {}
    if not b:
        return []
    S = prof["n_importance"]
    rows = []
    for p, e in b.items():
        h = e.get("half_difference")
        ref = e.get("reference")
        curve = "; ".join(f"S={c['n_importance']}: {c['mean']:.3f}" for c in ref["curve"]) if ref else "—"
        rows.append([f"`{p}`", _pm(h, 3) if h else "—",
                     _pm(ref["minus_main"], 3) if ref else "—", curve])
    ref_s = prof.get("n_importance_ref") or S
    return [f"### Bias of ln p(x), L = {L}", "",
            f"ln p̂ with S draws is biased low, about −Var/(2S) per image. **S vs S/2**: ln p̂_S minus "
            f"the mean of its two S/2 halves (the same draws), averaged over images and seeds ± se: "
            f"it estimates the bias of the S = {S} estimate with the sign reversed (first order). "
            f"**S_ref − S**: on the first seed, the estimate with S_ref = {ref_s} draws (which "
            f"include the S draws) minus the S estimate. The curve: ln p̂ at nested S on the first "
            "seed.", "",
            _table(["prior", f"S vs S/2 (S = {S})", "S_ref − S", "ln p̂ by S (first seed)"], rows), ""]


def _training(L, runs):
    """Training and importance sampling of the runs of one latent dimension."""
    rows = []
    for run in runs:
        tr = run.get("training") or {}
        ll = run.get("log_likelihood") or {}
        rows.append([f"`{run['prior']}`", str(run.get("seed", "—")), run["status"],
                     _fmt(tr.get("epochs_run")), _fmt(tr.get("best_epoch")),
                     _fmt(tr.get("stopped_early")), _fmt(tr.get("best_val_loss"), 2),
                     _pm(ll.get("mean"), 2), _fmt(ll.get("ess_mean"), 1), _fmt(ll.get("ess_min"), 1),
                     "—" if ll.get("ess_below_10") is None else f"{ll['ess_below_10']}/{ll['n_test']}",
                     _fmt(tr.get("seconds"), 1)])
    return [f"### Training and importance sampling per run, L = {L}", "",
            _table(["prior", "seed", "status", "epochs run", "best epoch", "stopped early",
                    "best val −ELBO", "ln p(x) ± MC se", "IS ESS mean", "IS ESS min", "IS ESS < 10",
                    "train s"], rows),
            "", "IS ESS: effective sample size (Σw)²/Σw² of the importance weights per test image; "
            "where it is small the estimate of ln p(x) for that image rests on a few draws (its "
            "standard error is then itself unreliable). *stopped early* no: the run stopped at the "
            "epoch cap.", ""]


def _identities(runs, first=None):
    """``## Correctness`` and its first part, the identities of SPEC section 5: every row of the
    first seed's runs (``first``), and of the other runs only the rows that failed."""
    first = runs if first is None else first
    ids = {id(run) for run in first}
    others = [run for run in runs if id(run) not in ids]
    n_other = sum(len(run.get("identities", [])) for run in others)
    failed_other = [(run, i) for run in others for i in run.get("identities", [])
                    if i.get("passed") is False]
    out = ["## Correctness", "", "### Identities of SPEC §5", "",
           IDENTITY_PROSE + " Tolerances from `refvae.tolerances` (reasons in report.json)."
           + (f" Rows of the first seed's runs; the other seeds' {n_other} rows: "
              f"{len(failed_other)} failed" + (" (listed below)." if failed_other else ".")
              if others else ""), ""]
    rows = []
    for run, i in [(run, i) for run in first for i in run.get("identities", [])] + failed_other:
        rows.append([_run_label(run), i["identity"], i.get("kind", "—"), i["data"],
                     _value_se(i["lhs"], i.get("lhs_se")), _value_se(i["rhs"], i.get("rhs_se")), _sci(i["diff"]), _sci(i["allowed"]),
                     f"`{i['tolerance']}`", _ok(i["passed"])])
    return out + [_table(["run", "identity", "kind", "data", "lhs ± se", "rhs ± se", "diff", "allowed",
                          "tolerance", "result"], rows) if rows else "No run reached the identities.", ""]


def _value_se(value, se):
    """``value ± se`` (the se only when it is a positive number)."""
    return _fmt(value, 4) + (f" ± {_sci(se)}" if value is not None and se else "")


def _gradcheck_cell(groups, name):
    x = groups.get(name)
    if x is None:
        return "— (no parameters)"
    return (f"{_sci(x['max_rel_err'])} / {_sci(x['max_err_ratio'])} ({x['n']} arrays"
            + (f", {x['halved']} halved" if x.get("halved") else "") + ")"
            + (f"; detects {_sci(x['detects'])}" if x.get("detects") is not None else "")
            + (f" (worst: `{x['detects_worst']}`)" if x.get("detects_worst") and x["detects"] > 1e-3 else ""))


def _gradcheck(runs):
    """The gradient check of the trained models."""
    out = ["### Gradient check (trained models)", "",
           GRADCHECK_PROSE + " The batch is chosen so that few relu/leaky_relu pre-activations lie "
           f"within {TOLERANCES['gradcheck_kink_margin'].d:g} of a kink "
           "(`gradcheck_kink_margin`); pre-activations of a prior's component network at fixed "
           "inputs do not depend on the batch and are counted separately.", ""]
    rows = []
    for run in runs:
        gc = run.get("gradcheck")
        if not gc:
            continue
        g = gc["groups"]
        rows.append([_run_label(run), _gradcheck_cell(g, "encoder"), _gradcheck_cell(g, "decoder"),
                     _gradcheck_cell(g, "prior"), str(gc["batch_size"]),
                     f"{gc['near_kink']} ({gc['near_kink_batch_independent']} fixed)",
                     f"{gc['candidates_tried']} ({gc['chosen_candidate']})", _ok(gc["passed"])])
    return out + [_table(["run", "encoder: rel err / err ratio", "decoder", "prior", "batch", "near kink",
                          "batches tried (chosen)",
                          "result"], rows) if rows else "Not computed.", ""]


def _kernel(ka):
    """The mixture kernel against mpmath."""
    out = ["### Mixture kernel vs mpmath", ""]
    if ka is None:
        return out + ["Not computed (interrupted).", ""]
    if not ka.get("available"):
        return out + [ka["note"] + ".", ""]
    return out + [
        f"Forward error of `refvae.kernels.mixture.mixture_log_prob` on {ka['n_points']} points "
        f"({ka['n_random']} random, {ka['n_adversarial']} adversarial), as c = |f̂ − f| / "
        f"(u (|f| + S)), u = 2⁻⁵³ (`mixture_kernel_c`: c ≤ {ka['c_allowed']:g}). Oracle: "
        f"{ka['oracle']}. Worst: c = {_fmt(ka['max_c'])} ({ka['worst_case']}): "
        f"{_ok(ka['passed'])}.", "",
        _table(["case", "kind", "B", "K", "L", "max c", "result"],
               [[c["name"], c["kind"], c["B"], c["K"], c["L"], _fmt(c["max_c"]), _ok(c["passed"])]
                for c in ka["cases"]]), ""]


def _figures(r):
    """``## Figures``: the note (if any) and each run's figure by relative path."""
    out = ["## Figures", ""]
    if r.get("figures_note"):
        out += [f"Note: {r['figures_note']}.", ""]
    for run in r["runs"]:
        if run.get("figure"):
            L = run["latent_dim"]
            what = ("prior density with encoded test points; Fig. 4.5 posteriors q(z|x_n) under q(z); "
                    "Fig. 4.8 holes with encoder samples; Figs. 4.6-4.7 q(z) and the prior during "
                    "training; decodes from holes vs covered regions; training curves; samples"
                    if L == 2 else "decodes from holes vs covered regions; training curves; samples")
            out += [f"### {_run_label(run)}", "", f"![{_run_label(run)}: {what}]({run['figure']})", ""]
    return out


def _failed_runs(runs):
    errs = [run for run in runs if run.get("error")]
    if not errs:
        return []
    return ["## Failed runs", ""] + [f"- {_run_label(x)}: `{x['error']}`" for x in errs] + [""]


def _missing(miss):
    out = ["## Missing", ""]
    out += ([f"- `{m['path']}`: {m['reason']}" for m in miss] if miss else ["Nothing: every part was computed."])
    return out + [""]


#: the parts of a run in the time table, with their labels
_PARTS = (("train", "training"), ("elbo", "RE, Ω, ELBO (test)"), ("omega", "CE, H (test)"),
          ("aggregated", "q(z) statistics (train)"), ("holes", "holes"),
          ("identity_inputs", "identity rows' second computations"),
          ("loglik", "ln p(x), S draws (every seed)"),
          ("loglik_reference", "ln p(x), extra draws up to S_ref (first seed)"),
          ("gradcheck", "gradient check"), ("figure", "figures"))


def _time_spent(r):
    """``## Time spent``: CPU and wall seconds per part, summed over the runs."""
    tm, cpu = r.get("timing") or {}, r.get("cpu_seconds") or {}
    rows = []
    tot_cpu = 0.0
    for key, label in _PARTS:
        has = [run for run in r["runs"] if (run.get("timing") or {}).get(key) is not None
               and (key != "loglik_reference" or run.get("seed", r["seed"]) == r["seed"])]
        w = [run["timing"][key] for run in has]
        c = [(run.get("cpu_seconds") or {}).get(key) for run in has]
        c = [x for x in c if x is not None]
        if w:
            tot_cpu += sum(c)
            rows.append([label, str(len(w)), _secs(sum(c)) if c else "—", _secs(sum(w))])
    for key, label in (("kernel_accuracy", "mixture kernel vs mpmath"),
                       ("start_workers", "starting the worker processes")):
        if tm.get(key) is not None:
            rows.append([label, "1", _secs(cpu.get(key)), _secs(tm.get(key))])
    main = cpu.get("main_process")
    total_cpu = (tot_cpu + main) if main is not None else None
    return ["## Time spent", "",
            f"End to end: {_secs(tm.get('total_seconds'))} s wall; CPU "
            f"{_secs(total_cpu)} s (the runs' parts, measured in the process that ran them, plus "
            f"{_secs(main)} s in the main process: kernel check, writing the report, waiting). "
            f"{r.get('workers', 1)} worker process(es); the parts' wall seconds are summed over "
            "the runs, which ran side by side when there were workers. CPU seconds are the "
            "measure to compare with a budget on a quiet machine (wall time grows on a shared one).",
            "", _table(["part", "runs", "CPU s", "wall s (summed)"], rows), ""]
