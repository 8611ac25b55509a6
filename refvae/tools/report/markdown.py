"""``report.md``: the report dict (as written to ``report.json``) rendered as Markdown, one
function per section (readable on its own; figures by relative path)."""

from __future__ import annotations

from ...tolerances import TOLERANCES
from ..provenance import REPRODUCIBILITY

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
    return f"{run['prior']} (L = {run['latent_dim']})"


def render_markdown(r):
    """The report as Markdown (readable on its own; figures by relative path)."""
    out = _header(r) + _setup(r)
    for L in r["profile"]["latent_dims"]:
        runs = [run for run in r["runs"] if run["latent_dim"] == L]
        out += _results(L, runs, r["profile"], r["data"]) + _training(L, runs)
    out += (_identities(r["runs"]) + _gradcheck(r["runs"]) + _kernel(r.get("kernel_accuracy"))
            + _figures(r) + _failed_runs(r["runs"]) + _missing(r.get("missing") or [])
            + _wall_time(r.get("timing") or {}, r["runs"]))
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
           f"(holes); S = {prof['n_importance']} importance samples per test point (ln p(x)).",
           f"- Seed {r['seed']}; every part draws from `numpy.random.default_rng([seed, L, "
           f"prior index, part])`.", ""]
    out += ["Provenance: " + ", ".join(f"{k} `{prov.get(k)}`" for k in
            ("refvae", "git_revision", "git_dirty", "python", "numpy", "numba", "scipy", "platform",
             "cpu_model", "numba_threads", "blas_threads")), "",
            f"Reproducibility: {prov.get('reproducibility') or REPRODUCIBILITY}.", ""]
    return out


def _results(L, runs, prof, dd):
    """``## Results, L = ...``: the estimates of the runs of one latent dimension."""
    rows = []
    for run in runs:
        t = run.get("test") or {}
        a = run.get("train_set") or {}
        h = run.get("holes") or {}
        ll = (run.get("log_likelihood") or {}).get("mean")
        hm = h.get("hole_mass") or {}
        rows.append([f"`{run['prior']}`", _pm(ll, 2), _pm(t.get("neg_elbo"), 2), _pm(t.get("re"), 2),
                     _pm(t.get("omega"), 2), _pm(a.get("cross_entropy"), 3),
                     _pm(a.get("conditional_entropy"), 3), _pm(a.get("entropy_qz"), 3),
                     _pm(a.get("kl_qz_p"), 3), _pm(a.get("mutual_information"), 3),
                     _pm(h.get("reverse_kl"), 3)]
                    + [_hole(hm.get(str(t_))) for t_ in prof["taus"]])
    return [f"## Results, L = {L}", "",
            "Nats. *Test* columns: averages over the test set. *q(z)* columns: the aggregated "
            "posterior q(z) = 1/N Σₙ q(z|xₙ) built from the **training-set** encodings (N = "
            f"{dd['n_train']}), with draws z ~ q(z|xₙ) from the training points; CE[q(z)‖p] = "
            "−E_q(z) ln p(z), H[q(z|x)] the average closed-form posterior entropy (no Monte "
            "Carlo error; CE is closed form too for the standard prior), "
            "I(x; z) = H[q(z)] − H[q(z|x)]. Holes: KL[p‖q(z)] and the prior mass where "
            "q(z)/p(z) < τ, from prior draws. ± one Monte Carlo standard error. The negative "
            "ELBO is an upper bound on −ln p(x), not a log-likelihood.", "",
            _table(["prior", "test ln p(x) (IS)", "test −ELBO", "test RE", "test Ω",
                    "CE[q(z)‖p]", "H[q(z|x)]", "H[q(z)]", "KL[q(z)‖p]", "I(x; z)", "KL[p‖q(z)]"]
                   + [f"hole mass τ={t_:g}" for t_ in prof["taus"]], rows), ""]


def _training(L, runs):
    """Training and importance sampling of the runs of one latent dimension."""
    rows = []
    for run in runs:
        tr = run.get("training") or {}
        ll = run.get("log_likelihood") or {}
        rows.append([f"`{run['prior']}`", run["status"], _fmt(tr.get("epochs_run")),
                     _fmt(tr.get("best_epoch")), _fmt(tr.get("stopped_early")),
                     _fmt(tr.get("best_val_loss"), 2), _fmt(ll.get("ess_mean"), 1),
                     _fmt(ll.get("ess_min"), 1),
                     "—" if ll.get("ess_below_10") is None else f"{ll['ess_below_10']}/{ll['n_test']}",
                     _fmt(tr.get("seconds"), 1)])
    return [f"Training and importance sampling, L = {L}:", "",
            _table(["prior", "status", "epochs run", "best epoch", "stopped early",
                    "best val −ELBO", "IS ESS mean", "IS ESS min", "IS ESS < 10", "train s"], rows),
            "", "IS ESS: effective sample size (Σw)²/Σw² of the importance weights per test point; "
            "where it is small the estimate of ln p(x) for that point rests on a few draws (its "
            "standard error is then itself unreliable).", ""]


def _identities(runs):
    """``## Correctness`` and its first part, the identities of SPEC section 5."""
    out = ["## Correctness", "", "### Identities of SPEC §5", "",
           "Tolerances from `refvae.tolerances` (reasons in report.json); Monte Carlo checks use "
           f"k = {TOLERANCES['monte_carlo_k_sigma'].k:g} standard errors (false-failure "
           "probability ≤ 1e-6 per check).", ""]
    rows = []
    for run in runs:
        for i in run.get("identities", []):
            rows.append([_run_label(run), i["identity"], i["data"], _fmt(i["lhs"], 4), _fmt(i["rhs"], 4),
                         _sci(i["diff"]), _sci(i["allowed"]), f"`{i['tolerance']}`", _ok(i["passed"])])
    return out + [_table(["run", "identity", "data", "lhs", "rhs", "diff", "allowed", "tolerance",
                          "result"], rows) if rows else "No run reached the identities.", ""]


def _gradcheck_cell(groups, name):
    x = groups.get(name)
    if x is None:
        return "— (no parameters)"
    return f"{_sci(x['max_rel_err'])} / {_sci(x['max_err_ratio'])} ({x['n']} arrays)"


def _gradcheck(runs):
    """The gradient check of the trained models."""
    out = ["### Gradient check (trained models)", "",
           f"`check_vjp` (random direction, central differences, rtol "
           f"{TOLERANCES['vjp_central_difference'].rtol:g}, `vjp_central_difference`) of the batch-mean "
           "negative ELBO w.r.t. every parameter, on a small training batch; worst relative error "
           "per parameter group, then the largest abs err / allowed (< 1 passes; allowed = rtol "
           "max(|analytic|, |numeric|) plus the rounding floor 10 eps (|φ(h)| + |φ(−h)|) / h of the "
           "difference quotient, which dominates for arrays whose directional derivative is tiny "
           "compared with the loss, so their relative error is mostly rounding noise). "
           "The batch is chosen so that no relu/leaky_relu pre-activation lies "
           f"within {TOLERANCES['gradcheck_kink_margin'].d:g} of its kink "
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
            what = ("prior density with encoded test points; holes; training curves; samples"
                    if L == 2 else "training curves; samples")
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


def _wall_time(tm, runs):
    rows = [[_run_label(run)] + [_secs(run["timing"].get(p)) for p in
                                 ("train", "elbo", "omega", "aggregated", "holes", "loglik", "gradcheck",
                                  "figure")] for run in runs]
    return ["## Wall time (seconds)", "",
            f"Total {_secs(tm.get('total_seconds'))} s; kernel check "
            f"{_secs(tm.get('kernel_accuracy'))} s.", "",
            _table(["run", "train", "ELBO", "Ω/CE", "q(z) stats", "holes", "ln p(x)", "gradcheck",
                    "figure"], rows), ""]
