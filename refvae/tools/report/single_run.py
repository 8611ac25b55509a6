"""One run of the report: train the model of one prior, latent dimension and training seed (part 1
of the module docstring of :mod:`refvae.tools.report`) and evaluate it (parts 2-5), each part
storing its result in the run's dict as soon as it is done, with its wall and CPU seconds.

ln p(x) is estimated in blocks of ``b = n_importance / 2`` importance samples, each block from its
own generator ``default_rng([seed, L, prior index, 5, j])``: every run has blocks 0 and 1 (S = 2b
draws), the first seed of a report also the blocks up to ``n_importance_ref``. The estimate over
the first k blocks is ``ln p_k = logsumexp_j ln p_j - ln k`` -- exactly the S = k b estimate of
those draws -- so the S and S/2 estimates share their draws and their difference measures the
estimator's bias (:func:`_combine_blocks`)."""

from __future__ import annotations

import math
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
             "gradcheck": 6, "figure": 7, "identity": 8}


def _rng(seed, latent_dim, prior, part, *more):
    """The generator of one part of a run: ``default_rng([seed, L, prior index, part, *more])``."""
    return np.random.default_rng([seed, latent_dim, prior_index(prior), RNG_PARTS[part], *more])


def _estimate(e):
    return {"value": float(e.value), "se": float(e.se), "n": int(e.n)}


def _timed(run, part, fn):
    """Call ``fn``; record its wall seconds in ``run["timing"][part]`` and the CPU seconds of this
    process (all its threads) in ``run["cpu_seconds"][part]``."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    run["timing"][part] = time.perf_counter() - t0
    run.setdefault("cpu_seconds", {})[part] = time.process_time() - c0
    return out


def _combine_blocks(blocks):
    """The ln p(x) estimate of the union of equal-size blocks of importance draws, per image:
    ``log_px = logsumexp_j lp_j - ln k``; its delta-method standard error
    ``sqrt(sum_j (se_j e^{lp_j - log_px})^2) / k`` (the blocks are independent; se_j is the
    relative standard error of block j's mean weight); ESS ``(sum_j r_j)^2 / sum_j r_j^2 / ess_j``
    with ``r_j = e^{lp_j - max}`` (the blocks' weight sums, on a common scale); the mean log-weight
    (the per-image ELBO estimate) ``mean_j elbo_j``."""
    lp = np.array([b["log_px"] for b in blocks])          # (k, N)
    se = np.array([b["se"] for b in blocks])
    ess = np.array([b["ess"] for b in blocks])
    k = lp.shape[0]
    top = np.max(lp, axis=0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r = np.exp(lp - np.where(np.isfinite(top), top, 0.0))
        log_px = np.where(np.isfinite(top), top + np.log(np.sum(r, axis=0)) - math.log(k), -np.inf)
        rel = np.exp(lp - np.where(np.isfinite(log_px), log_px, 0.0))
        se_c = np.where(np.isfinite(log_px), np.sqrt(np.sum((se * rel) ** 2, axis=0)) / k, np.inf)
        denom = np.sum(np.where(ess > 0, r * r / np.where(ess > 0, ess, 1.0), 0.0), axis=0)
        ess_c = np.where(denom > 0, np.sum(r, axis=0) ** 2 / np.where(denom > 0, denom, 1.0), 0.0)
    elbo = np.mean([b["elbo"] for b in blocks], axis=0)
    return {"log_px": log_px, "se": se_c, "ess": ess_c, "elbo": elbo}


def _paired_mean(d):
    """(mean, se over images) of per-image differences ``d``."""
    d = np.asarray(d, dtype=float)
    return {"value": float(np.mean(d)), "se": float(np.std(d, ddof=1) / math.sqrt(len(d)))
            if len(d) > 1 else 0.0, "n": int(len(d))}


def _loglik(run, model, xte, profile, first_seed):
    """ln p(x) of the test set by importance sampling in blocks (module docstring): the S =
    n_importance estimate per image (kept in the run for the paired comparisons), the measured
    difference between it and the mean of its two S/2 halves (the same draws: ln p_S - (ln p_A +
    ln p_B) / 2 estimates -bias(S) to first order, bias(S) ~ -Var/(2S)), and on the first seed the
    estimates at S, 2S, ... up to n_importance_ref on nested blocks."""
    L, prior, seed = model.latent_dim, run["prior"], run["seed"]
    S = profile.n_importance
    b = S // 2
    n_blocks = profile.n_importance_ref // b if (first_seed and profile.n_importance_ref) else 2
    blocks = []
    t0, c0 = time.perf_counter(), time.process_time()
    for j in range(n_blocks):
        blocks.append(est.log_likelihood(model, xte, _rng(seed, L, prior, "loglik", j), n_samples=b,
                                         max_rows=profile.max_rows))
        if j == 1:  # the comparison estimate is ready: its time apart from the reference's
            t1, c1 = time.perf_counter(), time.process_time()
    t2, c2 = time.perf_counter(), time.process_time()
    run["timing"]["loglik"], run["cpu_seconds"]["loglik"] = t1 - t0, c1 - c0
    run["timing"]["loglik_reference"], run["cpu_seconds"]["loglik_reference"] = t2 - t1, c2 - c1
    main = _combine_blocks(blocks[:2])
    lp, se = main["log_px"], main["se"]
    n = len(lp)
    tol = tolerance("report_jensen")
    margin = lp - main["elbo"]
    allowed = tol.atol + tol.rtol * np.abs(main["elbo"])
    out = {
        "mean": {"value": float(np.mean(lp)), "se": float(np.sqrt(np.sum(se * se)) / n), "n": n * S},
        "mc_se_note": "Monte Carlo only: sqrt(sum_n se_n^2) / N, se_n the delta-method se of image n",
        "n_importance": S, "block_size": b,
        "ess_mean": float(np.mean(main["ess"])), "ess_min": float(np.min(main["ess"])),
        "ess_below_10": int(np.sum(main["ess"] < 10)), "n_test": n,
        "mean_log_weight": float(np.mean(main["elbo"])),
        "jensen_min_margin": float(np.min(margin)), "jensen_allowed": float(np.max(allowed)),
        "jensen_violations": int(np.sum(margin < -allowed)),
        "half_difference": _paired_mean(lp - 0.5 * (blocks[0]["log_px"] + blocks[1]["log_px"])),
        "per_image": {"log_px": lp, "se": se, "neg_elbo": -main["elbo"]},
    }
    if n_blocks > 2:
        curve = []
        k = 1
        while k <= n_blocks:
            c = _combine_blocks(blocks[:k])
            curve.append({"n_importance": k * b, "mean": float(np.mean(c["log_px"])),
                          "mc_se": float(np.sqrt(np.sum(c["se"] ** 2)) / n)})
            k = k * 2 if k * 2 <= n_blocks or k == n_blocks else n_blocks
        ref = _combine_blocks(blocks)
        out["reference"] = {
            "n_importance": n_blocks * b,
            "mean": {"value": float(np.mean(ref["log_px"])),
                     "se": float(np.sqrt(np.sum(ref["se"] ** 2)) / n), "n": n * n_blocks * b},
            "minus_main": _paired_mean(ref["log_px"] - lp),
            "curve": curve}
    return out


def _evaluate(run, model, data, profile, out_dir, plots, say, first_seed=True, snapshots=None):
    """Parts 2-5 of the module docstring, each stored in ``run`` as soon as it is done. Figures
    only when ``plots`` and ``first_seed`` (one seed's figures are enough)."""
    L, prior, seed = model.latent_dim, run["prior"], run["seed"]
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

    from . import identity_checks
    extra = getattr(identity_checks, "extra_inputs", None)
    if extra is not None and first_seed:  # the identity rows' second computations (first seed)
        import inspect
        kw = {"profile": profile} if "profile" in inspect.signature(extra).parameters else {}
        run["identity_inputs"] = _timed(run, "identity_inputs",
                                        lambda: extra(model, data, agg, rng=r("identity"), **kw))

    ref = profile.n_importance_ref if first_seed and profile.n_importance_ref else profile.n_importance
    say(f"  ln p(x) by importance sampling, S = {profile.n_importance}"
        + (f" (and up to {ref} for the estimator's bias)" if ref > profile.n_importance else ""))
    run.setdefault("cpu_seconds", {})
    run["log_likelihood"] = _loglik(run, model, xte, profile, first_seed)

    if first_seed:  # the correctness checks run on the first seed's models
        _gradient_check(run, model, xtr, profile, r("gradcheck"), say)

    if plots and first_seed:  # one seed's figures are enough
        say("  figure")
        path = os.path.join(out_dir, "figures", f"{prior}_L{L}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        run["figure"] = "figures/" + _timed(run, "figure", lambda: _plot(
            path, run, model, data, agg, profile, r("figure"), snapshots))


def _gradient_check(run, model, xtr, profile, grng, say):
    """Part 4: the gradient check on a training batch away from the activations' kinks."""
    say("  gradient check on a training batch")

    def do_gc():
        xb, eps, info = choose_gradcheck_batch(model, xtr, grng, profile.n_gradcheck,
                                               profile.gradcheck_candidates)
        rep = gradcheck_model(model, xb, eps, grng, info.get("near_kink_batch_independent", 0))
        return {**info, "batch_size": int(len(xb)), **gradcheck_summary(rep),
                "kink_rechecked": list(rep.kink_rechecked)}
    run["gradcheck"] = _timed(run, "gradcheck", do_gc)


def _plot(path, run, model, data, agg, profile, rng, snapshots):
    """plot_run, with the training snapshots when there are any."""
    if snapshots is None:
        return plot_run(path, run, model, data, agg, profile, rng)
    return plot_run(path, run, model, data, agg, profile, rng, snapshots=snapshots)


def _snapshot_recorder(model, data, profile, first_seed):
    """The training callback that records snapshots for the figures of the text's Figs. 4.6-4.7
    (``report.snapshots.Snapshots``), for L = 2 runs of the first seed; None otherwise or when
    that module is not there."""
    if not first_seed or model.latent_dim != 2:
        return None
    try:
        from .snapshots import Snapshots
    except ImportError:
        return None
    return Snapshots(data["train"], epochs=_snapshot_epochs(profile.max_epochs))


def _snapshot_epochs(max_epochs):
    """Epochs 1, 10, 50 (those within ``max_epochs``); the trained state is added at the end."""
    return tuple(e for e in (1, 10, 50) if e <= max_epochs) or (1,)


def _train(run, model, data, profile, quiet, callback=None):
    from ...train import fit
    kwargs = {} if callback is None else {"callback": callback}
    t0, c0 = time.perf_counter(), time.process_time()
    res = fit(model, data["train"], data["val"], rng=_rng(run["seed"], model.latent_dim, run["prior"],
                                                           "train"),
              optimizer=profile.optimizer, lr=profile.lr, batch_size=profile.batch_size,
              max_epochs=profile.max_epochs, patience=profile.patience, quiet=quiet, progress=True,
              val_noise=profile.val_noise, **kwargs)
    run["training"] = {"train_loss": list(res.train_loss), "val_loss": list(res.val_loss),
                       "initial_val_loss": res.initial_val_loss, "best_epoch": res.best_epoch,
                       "best_val_loss": res.best_val_loss, "epochs_run": res.epochs_run,
                       "stopped_early": res.stopped_early, "max_epochs": profile.max_epochs,
                       "patience": profile.patience, "seconds": res.seconds,
                       "hit_epoch_cap": bool(not res.stopped_early
                                             and res.epochs_run >= profile.max_epochs)}
    run["timing"]["train"] = time.perf_counter() - t0
    run.setdefault("cpu_seconds", {})["train"] = time.process_time() - c0
