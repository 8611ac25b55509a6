"""The report's conclusions, from its runs: per latent dimension the mean over seeds of every
quantity with its uncertainty sources kept apart, the paired comparison of every pair of priors
(ln p(x) and -ELBO per test image, :func:`refvae.tools.report.verdicts.paired_interval`, Holm over
the pairs), the holes verdict of each learnable prior against the standard one (paired by seed,
:func:`~refvae.tools.report.verdicts.seed_interval`, Holm over the tests of one L), and the
importance sampler's measured bias. Computed from whatever runs are done (a partial report gets
the comparisons its finished seeds allow)."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np

from .verdicts import ALPHA, MIN_SEEDS_FOR_VERDICT, holm, paired_interval, seed_interval

__all__ = []  # called by writing.write_report

#: the scalar quantities summarised over seeds: name -> (where in the run, how to get it); each
#: getter returns (value, Monte Carlo se) or None
_TEST = ("test", "Test set")
_TRAIN = ("train", "Training set (aggregated posterior of the training encodings)")


def _get(run, *keys):
    d = run
    for k in keys:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    if not isinstance(d, dict) or d.get("value") is None:
        return None
    return float(d["value"]), float(d.get("se") or 0.0)


def _neg(e):
    return None if e is None else (-e[0], e[1])


def _omega_train(run):
    """Omega of the learned prior on the training set: -CE[q(z)||p] + H[q(z|x)] (same draws)."""
    ce, h = _get(run, "train_set", "cross_entropy"), _get(run, "train_set", "conditional_entropy")
    return None if ce is None or h is None else (-ce[0] + h[0], ce[1])


QUANTITIES = {
    "log_px": ("test ln p(x) (IS)", lambda r: _get(r, "log_likelihood", "mean")),
    "neg_elbo_is": ("test −ELBO (IS draws)", lambda r: None if _get(r, "log_likelihood", "mean") is None
                    else (-r["log_likelihood"]["mean_log_weight"], 0.0)),
    "neg_elbo": ("test −ELBO", lambda r: _get(r, "test", "neg_elbo")),
    "re": ("test RE", lambda r: _get(r, "test", "re")),
    "omega": ("test Ω", lambda r: _get(r, "test", "omega")),
    "ce_test": ("test CE[q(z)‖p]", lambda r: _get(r, "test", "cross_entropy")),
    "h_test": ("test H[q(z|x)]", lambda r: _get(r, "test", "conditional_entropy")),
    "ce": ("CE[q(z)‖p]", lambda r: _get(r, "train_set", "cross_entropy")),
    "h_cond": ("H[q(z|x)]", lambda r: _get(r, "train_set", "conditional_entropy")),
    "omega_train": ("Ω = −CE + H[q(z|x)]", _omega_train),
    "h_qz": ("H[q(z)]", lambda r: _get(r, "train_set", "entropy_qz")),
    "omega_opt": ("Ω with p = q(z): −I(x; z)", lambda r: _neg(_get(r, "train_set", "mutual_information"))),
    "kl_qz_p": ("KL[q(z)‖p]", lambda r: _get(r, "train_set", "kl_qz_p")),
    "mi": ("I(x; z)", lambda r: _get(r, "train_set", "mutual_information")),
    "reverse_kl": ("KL[p‖q(z)]", lambda r: _get(r, "holes", "reverse_kl")),
}


def _hole_getter(tau):
    return lambda r: _get(r, "holes", "hole_mass", tau)


def _quantities(taus):
    q = dict(QUANTITIES)
    for t in taus:
        q[f"hole_mass_{t:g}"] = (f"hole mass τ={t:g}", _hole_getter(str(float(t))))
    return q


def _done(runs, prior, L):
    """{seed: run} of the finished runs of one prior and L."""
    return {r["seed"]: r for r in runs
            if r["prior"] == prior and r["latent_dim"] == L and r["status"] == "done"}


def _summary(by_seed, quantities):
    """Mean over seeds, per-seed values, seed SD and Monte Carlo se of each quantity."""
    out = {"n_seeds": len(by_seed), "seeds": sorted(by_seed)}
    for key, (_, get) in quantities.items():
        vals = [get(by_seed[s]) for s in sorted(by_seed)]
        vals = [v for v in vals if v is not None]
        if not vals:
            out[key] = None
            continue
        v = np.array([x[0] for x in vals])
        se = np.array([x[1] for x in vals])
        out[key] = {"mean": float(v.mean()), "per_seed": [float(x) for x in v],
                    "seed_sd": float(v.std(ddof=1)) if len(v) > 1 else None,
                    "mc_se": float(math.sqrt(np.sum(se * se)) / len(v))}
    for key in ("log_px", "neg_elbo_is"):  # per-image values: the image part of the uncertainty
        per = _per_image(by_seed, key)
        if per is not None and out.get(key):
            avg = per.mean(axis=0)
            out[key]["image_se"] = float(np.std(avg, ddof=1) / math.sqrt(len(avg)))
            out[key]["image_sd"] = float(np.std(avg, ddof=1))
            if per.shape[0] >= 2 and np.all(np.isfinite(per)):  # seeds and images
                iv = paired_interval(per, level=1 - ALPHA)
                out[key]["interval"] = {k: iv[k] for k in ("se", "df", "lo", "hi", "seeds_only")}
    capped = [s for s, r in by_seed.items() if (r.get("training") or {}).get("hit_epoch_cap")]
    out["seeds_at_epoch_cap"] = sorted(capped)
    out["epochs_run"] = [(by_seed[s].get("training") or {}).get("epochs_run") for s in sorted(by_seed)]
    return out


def _per_image(by_seed, key, seeds=None):
    """(m, N) per-image ln p(x) ("log_px") or -ELBO ("neg_elbo_is") of the given seeds, or None."""
    name = {"log_px": "log_px", "neg_elbo_is": "neg_elbo"}[key]
    rows = []
    for s in (sorted(by_seed) if seeds is None else seeds):
        pi = ((by_seed[s].get("log_likelihood") or {}).get("per_image") or {})
        if pi.get(name) is None:
            return None
        rows.append(np.asarray(pi[name], dtype=float))
    return np.array(rows) if rows else None


def _per_image_se(by_seed, seeds):
    rows = [np.asarray(by_seed[s]["log_likelihood"]["per_image"]["se"], dtype=float) for s in seeds]
    return np.array(rows)


def _pairs(done, priors, key, higher_is_better):
    """Paired comparisons of every pair of priors on the seeds both finished."""
    out = []
    for a, b in combinations(priors, 2):
        seeds = sorted(set(done[a]) & set(done[b]))
        entry = {"a": a, "b": b, "quantity": key, "n_seeds": len(seeds), "seeds": seeds}
        if len(seeds) >= 2:
            da, db = _per_image(done[a], key, seeds), _per_image(done[b], key, seeds)
            if da is not None and db is not None and np.all(np.isfinite(da - db)):
                mc = None
                if key == "log_px":
                    sa, sb = _per_image_se(done[a], seeds), _per_image_se(done[b], seeds)
                    if np.all(np.isfinite(sa)) and np.all(np.isfinite(sb)):
                        mc = np.hypot(sa, sb)
                entry.update(paired_interval(da - db, mc_se=mc, level=1 - ALPHA))
        out.append(entry)
    _holm_verdicts(out, lambda e: _pair_words(e, higher_is_better))
    return out


def _holm_verdicts(entries, words):
    """Holm over the entries that have a p-value; then each entry's verdict in words."""
    tested = [e for e in entries if e.get("p") is not None]
    for e, rej in zip(tested, holm([e["p"] for e in tested], ALPHA) if tested else []):
        e["holm_reject"] = bool(rej)
    for e in entries:
        e.setdefault("holm_reject", None)
        e["verdict"] = words(e)


def _no_verdict(e):
    if e.get("p") is None:
        return f"not computed ({e['n_seeds']} seed(s) with both runs done; needs 2)"
    if e["n_seeds"] < MIN_SEEDS_FOR_VERDICT:
        return (f"no verdict: {e['n_seeds']} seeds (a verdict needs {MIN_SEEDS_FOR_VERDICT}); "
                f"interval for orientation only")
    return None


def _pair_words(e, higher_is_better):
    nv = _no_verdict(e)
    if nv:
        return nv
    if not e["holm_reject"]:
        return "not distinguishable at this size"
    a_better = (e["mean"] > 0) == higher_is_better
    return f"{e['a'] if a_better else e['b']} better"


def _hole_words(e):
    nv = _no_verdict(e)
    if nv:
        return nv
    if not e["holm_reject"]:
        return "not distinguishable at this size"
    return "supported: fewer holes" if e["mean"] < 0 else "contradicted: more holes"


def _holes(done, priors, baseline, taus):
    """Each learnable prior vs the baseline: per-seed differences of KL[p||q(z)] and the hole
    masses, a t interval over seeds, Holm over the tests of this L."""
    metrics = [("reverse_kl", ("holes", "reverse_kl"))] + \
        [(f"hole_mass_{t:g}", ("holes", "hole_mass", str(float(t)))) for t in taus]
    out = []
    for p in priors:
        if p == baseline:
            continue
        seeds = sorted(set(done[p]) & set(done.get(baseline, {})))
        for name, path in metrics:
            entry = {"prior": p, "baseline": baseline, "metric": name, "n_seeds": len(seeds),
                     "seeds": seeds}
            vals = [(_get(done[p][s], *path), _get(done[baseline][s], *path)) for s in seeds]
            if len(seeds) >= 2 and all(a is not None and b is not None for a, b in vals):
                d = [a[0] - b[0] for a, b in vals]
                se = [math.hypot(a[1], b[1]) for a, b in vals]
                entry.update(seed_interval(d, mc_se=se, level=1 - ALPHA))
            out.append(entry)
    _holm_verdicts(out, _hole_words)
    return out


def _bias(done, priors):
    """The importance sampler's measured bias per prior: the S vs S/2 difference on the same
    draws (every seed; it estimates -bias(S) to first order) and, on the first seed, the reference
    estimate (n_importance_ref draws) minus the S estimate."""
    out = {}
    for p in priors:
        halves = [(r["log_likelihood"] or {}).get("half_difference") for r in done[p].values()
                  if r.get("log_likelihood")]
        halves = [h for h in halves if h and h.get("value") is not None]
        refs = [(s, r["log_likelihood"]["reference"]) for s, r in sorted(done[p].items())
                if (r.get("log_likelihood") or {}).get("reference")]
        entry = {}
        if halves:
            v = np.array([h["value"] for h in halves])
            se = np.array([h["se"] for h in halves])
            entry["half_difference"] = {"value": float(v.mean()),
                                        "se": float(math.sqrt(np.sum(se * se)) / len(v)),
                                        "n_seeds": len(v)}
        if refs:
            s, ref = refs[0]
            entry["reference"] = {"seed": s, "n_importance": ref["n_importance"],
                                  "minus_main": ref["minus_main"], "curve": ref["curve"]}
        out[p] = entry
    return out


def _baseline(runs, priors):
    """The one prior without learnable parameters (N(0, I) among the built-in ones), the
    baseline of the holes verdicts; None when there is not exactly one."""
    fixed = [p for p in priors
             if any(r["prior"] == p and r.get("prior_learnable") is False for r in runs)]
    return fixed[0] if len(fixed) == 1 else None


def analyse(report):
    """The ``analysis`` of a report dict (module docstring)."""
    runs = report.get("runs") or []
    prof = report.get("profile") or {}
    taus = tuple(prof.get("taus") or ())
    priors = list(dict.fromkeys(r["prior"] for r in runs))
    quantities = _quantities(taus)
    out = {"alpha": ALPHA, "min_seeds_for_verdict": MIN_SEEDS_FOR_VERDICT,
           "seeds": report.get("seeds"), "labels": {k: v[0] for k, v in quantities.items()},
           "per_L": {}}
    capped = [r for r in runs if r["status"] == "done" and (r.get("training") or {}).get("hit_epoch_cap")]
    out["runs_at_epoch_cap"] = len(capped)
    out["runs_done"] = sum(r["status"] == "done" for r in runs)
    for L in prof.get("latent_dims") or sorted({r["latent_dim"] for r in runs}):
        done = {p: _done(runs, p, L) for p in priors}
        baseline = _baseline(runs, priors)
        out["per_L"][str(L)] = {
            "summary": {p: _summary(done[p], quantities) for p in priors},
            "pairs": _pairs(done, priors, "log_px", higher_is_better=True),
            "pairs_neg_elbo": _pairs(done, priors, "neg_elbo_is", higher_is_better=False),
            "holes": _holes(done, priors, baseline, taus) if baseline else [],
            "bias": _bias(done, priors),
        }
    return out
