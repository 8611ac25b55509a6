"""One run of the report: train the model of one prior and latent dimension (part 1 of the module
docstring of :mod:`refvae.tools.report`) and evaluate it (parts 2-5), each part storing its result
in the run's dict as soon as it is done."""

from __future__ import annotations

import os
import time

import numpy as np

from ... import estimators as est
from ...tolerances import tolerance
from ..profiles import prior_index
from .figures import plot_run
from .gradient_check import choose_gradcheck_batch, gradcheck_model, gradcheck_summary

__all__ = []  # used by runner; nothing here is public API

#: the parts of a run, each with its own generator ``default_rng([seed, L, prior index, part])``
RNG_PARTS = {"train": 0, "elbo": 1, "omega": 2, "aggregated": 3, "holes": 4, "loglik": 5,
             "gradcheck": 6, "figure": 7}


def _rng(seed, latent_dim, prior, part):
    """The generator of one part of a run: ``default_rng([seed, L, prior index, part])``."""
    return np.random.default_rng([seed, latent_dim, prior_index(prior), RNG_PARTS[part]])


def _estimate(e):
    return {"value": float(e.value), "se": float(e.se), "n": int(e.n)}


def _timed(run, part, fn):
    t0 = time.perf_counter()
    out = fn()
    run["timing"][part] = time.perf_counter() - t0
    return out


def _evaluate(run, model, data, profile, seed, out_dir, plots, say):
    """Parts 2-5 of the module docstring, each stored in ``run`` as soon as it is done."""
    L, prior = model.latent_dim, run["prior"]
    xtr, xte = data["train"], data["test"]

    def r(part):
        return _rng(seed, L, prior, part)

    say("  estimating RE, Omega, ELBO on the test set")
    # chunks of ~max_rows decoder rows: 512 rows measured 1.7x faster than 8192 for S = 5000 (large
    # temporaries are mmap-ed and zeroed on every call: sys time); the results do not depend on it
    t = _timed(run, "elbo", lambda: est.elbo_terms(model, xte, r("elbo"), n_samples=profile.n_elbo,
                                                   batch_size=max(1, profile.max_rows // profile.n_elbo)))
    run["test"] = {k: _estimate(v) for k, v in t.items()}
    run["test"]["n_samples_per_point"] = profile.n_elbo
    o = _timed(run, "omega", lambda: est.omega_decomposition(model, xte, r("omega"),
                                                             n_samples=profile.n_elbo))
    run["test"]["cross_entropy"] = _estimate(o["cross_entropy"])
    run["test"]["conditional_entropy"] = _estimate(o["conditional_entropy"])
    run["test"]["omega_decomposition"] = _estimate(o["omega"])

    say("  aggregated posterior of the training encodings: H[q(z)], KL, I, holes")
    from ...priors.mixtures import AggregatedPosterior
    agg = AggregatedPosterior.from_model(model, xtr)
    a = _timed(run, "aggregated", lambda: est.aggregated_posterior_stats(
        model, xtr, r("aggregated"), n_samples=profile.n_agg, aggregated=agg))
    run["train_set"] = {k: _estimate(v) for k, v in a.items()}
    run["train_set"]["n_samples_per_point"] = profile.n_agg
    h = _timed(run, "holes", lambda: est.hole_metrics(model, xtr, r("holes"), n_samples=profile.n_holes,
                                                      taus=profile.taus, aggregated=agg))
    run["holes"] = {"reverse_kl": _estimate(h["reverse_kl"]),
                    "hole_mass": {str(tau): _estimate(e) for tau, e in h["hole_mass"].items()},
                    "n_prior_samples": profile.n_holes}

    say(f"  ln p(x) by importance sampling, S = {profile.n_importance}")
    ll = _timed(run, "loglik", lambda: est.log_likelihood(model, xte, r("loglik"),
                                                          n_samples=profile.n_importance,
                                                          max_rows=profile.max_rows))
    tol = tolerance("report_jensen")
    margin = ll["log_px"] - ll["elbo"]
    allowed = tol.atol + tol.rtol * np.abs(ll["elbo"])
    run["log_likelihood"] = {
        "mean": _estimate(ll["mean"]), "n_importance": profile.n_importance,
        "ess_mean": float(np.mean(ll["ess"])), "ess_min": float(np.min(ll["ess"])),
        "ess_below_10": int(np.sum(ll["ess"] < 10)), "n_test": int(len(ll["ess"])),
        "mean_log_weight": float(np.mean(ll["elbo"])),
        "jensen_min_margin": float(np.min(margin)), "jensen_allowed": float(np.max(allowed)),
        "jensen_violations": int(np.sum(margin < -allowed))}

    say("  gradient check on a training batch")
    grng = r("gradcheck")

    def do_gc():
        xb, eps, info = choose_gradcheck_batch(model, xtr, grng, profile.n_gradcheck,
                                               profile.gradcheck_candidates)
        rep = gradcheck_model(model, xb, eps, grng, info.get("near_kink_batch_independent", 0))
        return {**info, "batch_size": int(len(xb)), **gradcheck_summary(rep),
                "kink_rechecked": list(rep.kink_rechecked)}
    run["gradcheck"] = _timed(run, "gradcheck", do_gc)

    if plots:
        say("  figure")
        path = os.path.join(out_dir, "figures", f"{prior}_L{L}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        run["figure"] = "figures/" + _timed(run, "figure", lambda: plot_run(
            path, run, model, data, agg, profile, r("figure")))


def _train(run, model, data, profile, seed, quiet):
    from ...train import fit
    res = fit(model, data["train"], data["val"], rng=_rng(seed, model.latent_dim, run["prior"], "train"),
              optimizer=profile.optimizer, lr=profile.lr, batch_size=profile.batch_size,
              max_epochs=profile.max_epochs, patience=profile.patience, quiet=quiet, progress=True)
    run["training"] = {"train_loss": list(res.train_loss), "val_loss": list(res.val_loss),
                       "initial_val_loss": res.initial_val_loss, "best_epoch": res.best_epoch,
                       "best_val_loss": res.best_val_loss, "epochs_run": res.epochs_run,
                       "stopped_early": res.stopped_early, "max_epochs": profile.max_epochs,
                       "patience": profile.patience, "seconds": res.seconds}
    run["timing"]["train"] = res.seconds


