"""Mutation tests of the report's correctness tables: a planted error in each reported quantity --
ln q(z), CE, H[q(z|x)], RE, Omega, ln p(x), one gradient group, the mixture kernel -- makes at
least one row FAIL, and the same evaluation without the plant passes every row.

The run is evaluated as ``refvae.tools.report.single_run`` does it (the same estimator functions,
looked up through their modules, so that a monkeypatched function is the one the report would
call), on a small model trained for a few seconds (module fixture). Each plant is the error a
plausible bug would make, of the size named in the test; the smallest size each row detects is its
``allowed`` (printed by ``python -m pytest tests/test_report_mutations.py -s``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from refvae import estimators as est
from refvae.kernels import mixture as kernel_module
from refvae.priors.mixtures import AggregatedPosterior
from refvae.tolerances import U
from refvae.tools.profiles import PROFILES, build_model, load_data
from refvae.tools.report import gradcheck_model, kernel_accuracy
from refvae.tools.report.gradient_check import group_of
from refvae.tools.report.identity_checks import extra_inputs, identities

#: small data and networks, enough draws that the Monte Carlo rows are sharp
PROFILE = dataclasses.replace(PROFILES["tiny"], n_train=150, n_val=40, n_test=60, hidden=(16, 16),
                              max_epochs=10, n_elbo=40, n_agg=20, n_importance=100,
                              **({"n_importance_ref": 0} if "n_importance_ref" in
                                 {f.name for f in dataclasses.fields(PROFILES["tiny"])} else {}))
PRIORS = ("standard", "mog")


@pytest.fixture(scope="module", autouse=True)
def fewer_importance_samples():
    """The ln p(x) row's samplers with 500 draws instead of 2000 (seconds; the row's allowance is
    computed from the draws either way)."""
    from refvae.tools.report import identity_checks
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(identity_checks, "IS_SAMPLES", 500)
        mp.setattr(identity_checks, "IS2_SAMPLES", 500)
        yield


def _e(e):
    return {"value": float(e.value), "se": float(e.se), "n": int(e.n)}


def evaluate(model, data, seed=0):
    """The report's estimates of a run (as single_run computes them) and its identity rows."""
    xtr, xte = data["train"], data["test"]
    rng = np.random.default_rng([seed, 1])
    run = {"test": {k: _e(v) for k, v in est.elbo_terms(model, xte, rng, n_samples=PROFILE.n_elbo).items()}}
    o = est.omega_decomposition(model, xte, np.random.default_rng([seed, 2]), n_samples=PROFILE.n_elbo)
    run["test"]["cross_entropy"] = _e(o["cross_entropy"])
    run["test"]["conditional_entropy"] = _e(o["conditional_entropy"])
    agg = AggregatedPosterior.from_model(model, xtr)
    a = est.aggregated_posterior_stats(model, xtr, np.random.default_rng([seed, 3]),
                                       n_samples=PROFILE.n_agg, aggregated=agg)
    run["train_set"] = {k: _e(v) for k, v in a.items()}
    ll = est.log_likelihood(model, xte, np.random.default_rng([seed, 5]), n_samples=PROFILE.n_importance)
    margin = ll["log_px"] - ll["elbo"]
    run["log_likelihood"] = {"mean": _e(ll["mean"]), "mean_log_weight": float(np.mean(ll["elbo"])),
                             "jensen_min_margin": float(np.min(margin)),
                             "jensen_allowed": float(np.max(64 * 2.0 ** -52 * np.abs(ll["elbo"]))),
                             "jensen_violations": int(np.sum(margin < -64 * 2.0 ** -52 * np.abs(ll["elbo"])))}
    run["identity_inputs"] = extra_inputs(model, data, agg, PROFILE, np.random.default_rng([seed, 8]))
    return identities(run, len(xtr))


@pytest.fixture(scope="module")
def trained():
    data, _ = load_data(PROFILE, 0)
    out = {}
    from refvae.train import fit
    for i, prior in enumerate(PRIORS):
        model = build_model(prior, 2, data["train"].shape[1], PROFILE, np.random.default_rng([7, i]))
        fit(model, data["train"], data["val"], rng=np.random.default_rng([8, i]), max_epochs=PROFILE.max_epochs,
            patience=PROFILE.patience, quiet=True, progress=False)
        out[prior] = model
    return data, out


def failed(rows):
    return [r["identity"] for r in rows if r["passed"] is False]


def row(rows, start):
    (r,) = [r for r in rows if r["identity"].startswith(start)]
    return r


@pytest.fixture(scope="module")
def clean(trained):
    data, models = trained
    return {p: evaluate(m, data) for p, m in models.items()}


@pytest.mark.parametrize("prior", PRIORS)
def test_without_a_plant_every_row_passes(prior, clean):
    rows = clean[prior]
    assert not failed(rows), rows
    indep = [r for r in rows if r["kind"] == "independent"]
    assert len(indep) == 8 and all(r["passed"] is True for r in indep), indep
    for r in rows:
        print(f"{prior:9s} {r['kind']:11s} {r['identity'][:60]:60s} diff {r['diff']:+.2e} allowed {r['allowed']:.2e}")


def shifted(obj, name, keys, delta, monkeypatch):
    """Monkeypatch ``obj.name`` so that the Estimates under ``keys`` of its result are moved by delta."""
    orig = getattr(obj, name)

    def wrong(*a, **k):
        out = orig(*a, **k)
        if isinstance(out, est.Estimate):
            return est.Estimate(out.value + delta, out.se, out.n)
        out = dict(out)
        for key in keys:
            v = out[key]
            out[key] = est.Estimate(v.value + delta, v.se, v.n) if isinstance(v, est.Estimate) else v + delta
        return out
    monkeypatch.setattr(obj, name, wrong)


@pytest.mark.parametrize("prior,delta", [("standard", 1.0), ("mog", 1.0), ("mog", 0.05), ("mog", 1e-9)])
def test_ln_qz_error_fails(prior, delta, trained, monkeypatch):
    """ln q(z) + delta (the aggregated posterior's evaluator, used for H[q(z)], KL, I, holes):
    caught down to 1e-9 nats by the row against mpmath; +1 nat also by the Monte Carlo rows."""
    data, models = trained
    orig = AggregatedPosterior.log_prob
    monkeypatch.setattr(AggregatedPosterior, "log_prob", lambda self, z, params=None: orig(self, z, params) + delta)
    rows = evaluate(models[prior], data)
    assert row(rows, "ln q(z)")["passed"] is False
    if delta >= 1.0:
        assert row(rows, "H[q(z)]")["passed"] is False and row(rows, "ELBO surgery")["passed"] is False


@pytest.mark.parametrize("prior", PRIORS)
def test_cross_entropy_error_fails(prior, clean, trained, monkeypatch):
    """CE + delta, delta = 1.5x the row's allowed (about 0.01-0.03 nats here)."""
    data, models = trained
    delta = 1.5 * row(clean[prior], "CE[")["allowed"] + abs(row(clean[prior], "CE[")["diff"])
    shifted(est, "cross_entropy", (), delta, monkeypatch)
    rows = evaluate(models[prior], data)
    assert failed(rows) == [row(rows, "CE[")["identity"]]


def test_conditional_entropy_error_fails(trained, monkeypatch):
    """H[q(z|x)] + 1e-10 nats fails the closed-form row (allowed ~2e-14)."""
    data, models = trained
    delta = 1e-10
    shifted(est, "conditional_entropy", (), delta, monkeypatch)
    rows = evaluate(models["mog"], data)
    assert row(rows, "H[q(z|x)]")["passed"] is False


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("what,start", [("re", "RE:"), ("omega", "Omega")])
def test_re_and_omega_errors_fail(prior, what, start, clean, trained, monkeypatch):
    """ln p(x|z) + delta (or ln p(z) - ln q(z|x) + delta) in elbo_terms: RE (Omega) and the ELBO
    move together; delta = 1.5x the row's allowed."""
    data, models = trained
    r = row(clean[prior], start)
    shifted(est, "elbo_terms", (what, "elbo"), 1.5 * r["allowed"] + abs(r["diff"]), monkeypatch)
    rows = evaluate(models[prior], data)
    assert row(rows, start)["passed"] is False


@pytest.mark.parametrize("prior", PRIORS)
def test_log_likelihood_error_fails(prior, clean, trained, monkeypatch):
    data, models = trained
    r = row(clean[prior], "ln p(x)")
    delta = 1.5 * r["allowed"] + abs(r["diff"])
    orig = est.log_likelihood

    def wrong(*a, **k):
        out = dict(orig(*a, **k))
        out["log_px"] = out["log_px"] + delta
        out["mean"] = est.Estimate(out["mean"].value + delta, out["mean"].se, out["mean"].n)
        return out
    monkeypatch.setattr(est, "log_likelihood", wrong)
    rows = evaluate(models[prior], data)
    assert row(rows, "ln p(x)")["passed"] is False


@pytest.mark.parametrize("prior", PRIORS)
def test_one_percent_gradient_error_in_a_group_fails(prior, trained):
    data, models = trained
    model = models[prior]
    xb, eps = data["train"][:4], np.random.default_rng(0).standard_normal((4, 2))
    assert gradcheck_model(model, xb, eps, np.random.default_rng(1)).passed
    orig = model.neg_elbo_and_grad
    for grp in ("encoder", "decoder", "prior"):
        def wrong(*a, grp=grp, **k):
            v, g = orig(*a, **k)
            return v, {n: x * 1.01 if group_of(n) == grp else x for n, x in g.items()}
        model.neg_elbo_and_grad = wrong
        try:
            rep = gradcheck_model(model, xb, eps, np.random.default_rng(1))
        finally:
            del model.neg_elbo_and_grad
        if not any(group_of(e.name) == grp for e in rep.entries):
            continue      # the standard prior has no parameters
        assert not rep.passed
        assert {group_of(e.name) for e in rep.entries if not e.passed} == {grp}


@pytest.mark.parametrize("rel", [16 * U, 1e-12])
def test_kernel_error_fails_the_kernel_check(rel, monkeypatch):
    """The mixture kernel's result times (1 + rel): rel = 16 u (c up to 16 |f| / (|f| + S)) fails
    the c <= 4 check on some point; the unplanted kernel passes."""
    pytest.importorskip("mpmath")
    assert kernel_accuracy(np.random.default_rng(0), 12)["passed"]
    orig = kernel_module.mixture_log_prob
    monkeypatch.setattr(kernel_module, "mixture_log_prob", lambda *a, **k: orig(*a, **k) * (1 + rel))
    ka = kernel_accuracy(np.random.default_rng(0), 12)
    assert not ka["passed"] and ka["max_c"] > ka["c_allowed"]


@pytest.mark.slow
def test_kernel_error_of_4u_fails_at_the_report_size(monkeypatch):
    """At the quick report's 300 random points (with its generator), the kernel's result times
    (1 + 4 u) fails the check (measured max c = 4.71 > 4; 2 u and 3 u pass at 12 or 24 points)."""
    pytest.importorskip("mpmath")
    orig = kernel_module.mixture_log_prob
    monkeypatch.setattr(kernel_module, "mixture_log_prob", lambda *a, **k: orig(*a, **k) * (1 + 4 * U))
    ka = kernel_accuracy(np.random.default_rng([0, 7777]), PROFILES["quick"].kernel_points)
    assert not ka["passed"]
