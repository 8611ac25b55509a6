"""The report's identity rows (refvae.tools.report.identity_checks): each row can fail, each row is
labelled with its kind, and only the independent rows compare two computations.

The runs here are synthetic dicts with numbers chosen by hand (consistent: every row passes), then
one stored number is moved at a time; the end-to-end versions with a trained model and planted bugs
are in tests/test_report_mutations.py."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from refvae.priors.mixtures import AggregatedPosterior
from refvae.tolerances import U
from refvae.tools.profiles import PROFILES
from refvae.tools.report.identity_checks import KINDS, extra_inputs, identities
from refvae.vae import VAE


def est(value, se=0.01, n=1000):
    return {"value": value, "se": se, "n": n}


def consistent_run():
    """A run whose numbers satisfy every row: H[q(z)] = 3.0 and H[q(z|x)] = -2.0 on both sets,
    so I = 5.0; CE[q(z)||p] = 3.01, KL[q(z)||p] = 0.01, E_x KL[q(z|x)||p] = I + KL = 5.01;
    Omega = -CE + H = -5.0, ELBO = RE + Omega = -105.0."""
    return {
        "test": {"re": est(-100.0), "omega": est(-5.0), "elbo": est(-105.0), "cross_entropy": est(3.0),
                 "conditional_entropy": est(-2.0, 0.0)},
        "train_set": {"avg_kl": est(5.01), "kl_qz_p": est(0.01), "mutual_information": est(5.0),
                      "cross_entropy": est(3.01), "entropy_qz": est(3.0)},
        "log_likelihood": {"mean": est(-100.0), "mean_log_weight": -101.0, "jensen_min_margin": 0.5,
                           "jensen_allowed": 1e-12, "jensen_violations": 0},
        "identity_inputs": {
            "test": {"cross_entropy": est(3.0), "re": est(-100.0), "ln_p_by": "test",
                     "conditional_entropy": {"value": -2.0, "se": 0.0, "scale": 10.0}},
            "train_set": {"entropy_qz": est(3.0), "conditional_entropy": -2.0},
            "log_qz_points": {"available": True, "c": [0.5, 1.0], "c_allowed": 4.0, "report": [-3.0, -4.0],
                              "z": [[0.0, 0.0], [1.0, 1.0]]},
            "log_px_points": {"indices": [0, 1], "report": [-100.0, -101.0], "report_se": [0.01, 0.01],
                              "second": [-100.0, -101.0], "second_se": [0.01, 0.01], "second_slack": 0.0,
                              "report_S": 2000, "method": "test"}}}


def results(run):
    return {r["identity"].split(":")[0].split(" (")[0]: r["passed"] for r in identities(run, 1000)}


def test_a_consistent_run_passes_every_row_and_each_row_has_a_kind():
    rows = identities(consistent_run(), 1000)
    assert len(rows) == 12 and all(r["passed"] is True for r in rows), rows
    assert {r["kind"] for r in rows} == set(KINDS)
    assert sum(r["kind"] == "independent" for r in rows) == 8
    for r in rows:
        assert r["allowance"] and r["tolerance"] and r["allowed"] > 0
        assert set(r) >= {"lhs", "lhs_se", "rhs", "rhs_se", "diff", "allowed", "passed", "kind", "note"}


# (where, key, new value, the row that must fail); a +1 nat error in ln q(z) is "entropy_qz -1"
MOVES = [
    ("identity_inputs.log_qz_points", "c", [0.5, 5.5], "ln q(z)"),
    ("train_set", "entropy_qz", est(2.0), "H[q(z)]"),     # caught by H[q(z)] (and the bounds move)
    ("train_set", "avg_kl", est(6.0), "ELBO surgery"),
    ("test", "cross_entropy", est(3.1), "CE[q(z)||p]"),
    ("test", "conditional_entropy", est(-2.0 + 1e-12, 0.0), "H[q(z|x)]"),
    ("test", "omega", est(-5.1), "Omega"),
    ("identity_inputs.log_px_points", "report", [-100.0, -101.2], "ln p(x)"),
    ("test", "re", est(-100.1), "RE"),
    ("log_likelihood", "jensen_violations", 2, "Jensen"),
    ("train_set", "mutual_information", est(7.0), "0 <= I(x; z) <= ln N"),
    ("train_set", "kl_qz_p", est(-0.2), "Gibbs"),
]


@pytest.mark.parametrize("where,key,value,name", MOVES, ids=[m[3] for m in MOVES])
def test_moving_one_number_fails_its_row(where, key, value, name):
    run = consistent_run()
    d = run
    for part in where.split("."):
        d = d[part]
    d[key] = value
    res = results(run)
    assert res[name] is False, res
    if name in ("CE[q(z)||p]", "H[q(z|x)]", "ln q(z)", "ln p(x)", "ELBO surgery"):
        assert [k for k, v in res.items() if v is False] == [name]


def test_re_moved_alone_fails_the_arithmetic_row_too():
    run = consistent_run()
    run["test"]["re"] = est(-100.1)
    res = results(run)
    assert res["RE"] is False and res["ELBO = RE + Omega"] is False


def test_conditional_entropy_allowance_is_the_rounding_bound():
    row = [r for r in identities(consistent_run(), 1000) if r["identity"].startswith("H[q(z|x)]")][0]
    assert row["allowed"] == pytest.approx(64 * U * 10.0)


def test_monte_carlo_allowance_is_k_standard_errors_of_the_difference():
    run = consistent_run()
    run["test"]["cross_entropy"] = est(3.0, 0.03)
    row = [r for r in identities(run, 1000) if r["identity"].startswith("CE[")][0]
    assert row["allowed"] == pytest.approx(5 * math.hypot(0.03, 0.01))
    run["test"]["cross_entropy"] = est(3.0 + 0.99 * row["allowed"], 0.03)
    assert results(run)["CE[q(z)||p]"] is True
    run["test"]["cross_entropy"] = est(3.0 + 1.01 * row["allowed"], 0.03)
    assert results(run)["CE[q(z)||p]"] is False


def test_missing_parts_give_rows_that_neither_pass_nor_fail():
    rows = identities({}, n_train=1000)
    assert len(rows) == 12 and all(r["passed"] is None for r in rows)
    run = consistent_run()
    del run["identity_inputs"]
    rows = {r["identity"]: r["passed"] for r in identities(run, 1000)}
    assert sum(v is None for v in rows.values()) == 8        # every independent row needs the inputs


def test_bad_arguments():
    with pytest.raises(TypeError, match="run"):
        identities([1, 2], 10)
    with pytest.raises(ValueError, match="n_train"):
        identities({}, 0)


def test_extra_inputs_of_a_small_model_are_json_and_pass():
    rng = np.random.default_rng(0)
    model = VAE(4, 2, (7,), "leaky_relu", "gaussian", prior="mog", rng=rng, prior_kwargs={"num_components": 3})
    data = {"train": rng.normal(size=(30, 4)), "test": rng.normal(size=(10, 4))}
    agg = AggregatedPosterior.from_model(model, data["train"])
    x = extra_inputs(model, data, agg, PROFILES["tiny"], np.random.default_rng(1))
    text = json.dumps(x, allow_nan=False)
    again = extra_inputs(model, data, agg, PROFILES["tiny"], np.random.default_rng(1))
    assert json.dumps(again, allow_nan=False).replace(str(again["seconds"]), "") == \
        text.replace(str(x["seconds"]), "")                      # reproducible from the generator
    assert x["test"]["ln_p_by"].startswith("NumPy twin")        # a mixture prior: a second evaluator
    if x["log_qz_points"]["available"]:
        assert max(x["log_qz_points"]["c"]) <= 4.0
    with pytest.raises(TypeError, match="aggregated"):
        extra_inputs(model, data, None, PROFILES["tiny"], np.random.default_rng(1))
    with pytest.raises(TypeError, match="data"):
        extra_inputs(model, copy.copy(data["train"]), agg, PROFILES["tiny"], np.random.default_rng(1))
