"""The report's verdicts (``refvae.tools.report.verdicts``, ``comparisons``, ``markdown``): the
two-level interval's coverage by simulation with a known answer, Holm's rule on a worked example,
the ln p(x) blocks' combination, the verdicts of a synthetic report with planted differences, the
report's statements about what it can conclude, and the worker processes' bit-identity.

Tolerances: coverage is estimated from 1000 simulated data sets (fixed seeds), binomial SD 0.0069
at 0.95; the band [0.925, 0.975] is +-3.6 SD. The planted bugs (the seeds-only variance when the
image effect dominates, the images-only variance when the seed effect dominates) give 0.87 and
0.45, far outside it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from refvae.tools.report import comparisons, markdown, verdicts
from refvae.tools.report.single_run import _combine_blocks


def _simulate(m, n, s_seed, s_image, s_eps, reps=1000, mu=0.3, seed=0):
    """Coverage of the 95 % interval of paired_interval for d = mu + beta_s + alpha_n + eps."""
    rng = np.random.default_rng(seed)
    hit = 0
    for _ in range(reps):
        d = (mu + s_seed * rng.standard_normal((m, 1)) + s_image * rng.standard_normal((1, n))
             + s_eps * rng.standard_normal((m, n)))
        r = verdicts.paired_interval(d)
        hit += r["lo"] <= mu <= r["hi"]
    return hit / reps


@pytest.mark.parametrize("m, n, s_seed, s_image, s_eps", [
    (5, 447, 0.0, 0.5, 1.0),   # images dominate: a seeds-only interval covers ~0.87
    (5, 447, 0.5, 0.05, 1.0),  # seeds dominate: an images-only interval covers far less
    (5, 200, 0.3, 0.3, 2.0),   # both
    (5, 447, 0.0, 0.0, 1.0),   # no effect but the noise
])
def test_two_level_interval_covers_the_known_mean(m, n, s_seed, s_image, s_eps):
    cov = _simulate(m, n, s_seed, s_image, s_eps)
    assert 0.925 <= cov <= 0.975, cov


def test_two_level_variance_is_the_mean_squares_formula():
    """V = (MS_seeds + MS_images - MS_resid) / (m N), computed here from the definitions."""
    rng = np.random.default_rng(1)
    m, n = 4, 30
    d = 0.2 * rng.standard_normal((m, 1)) + rng.standard_normal((1, n)) + rng.standard_normal((m, n))
    r = verdicts.paired_interval(d)
    g = d.mean()
    ms_s = n * ((d.mean(1) - g) ** 2).sum() / (m - 1)
    ms_n = m * ((d.mean(0) - g) ** 2).sum() / (n - 1)
    e = d - d.mean(1, keepdims=True) - d.mean(0, keepdims=True) + g
    ms_e = (e ** 2).sum() / ((m - 1) * (n - 1))
    v = (ms_s + ms_n - ms_e) / (m * n)
    assert not r["seeds_only"]
    assert r["se"] == pytest.approx(math.sqrt(v), rel=1e-12)
    assert r["mean"] == pytest.approx(g, rel=1e-14)
    assert r["seed_sd"] == pytest.approx(np.std(d.mean(1), ddof=1), rel=1e-12)
    assert r["image_se"] == pytest.approx(np.std(d.mean(0), ddof=1) / math.sqrt(n), rel=1e-12)


def test_seed_effect_only_gives_the_t_interval_over_seeds():
    """No image effect and no noise: the interval is the t interval of the per-seed means."""
    per_seed = np.array([0.3, -0.1, 0.5, 0.2, 0.0])
    d = np.repeat(per_seed[:, None], 50, axis=1)
    r = verdicts.paired_interval(d)
    lo, hi = stats.t.interval(0.95, 4, loc=per_seed.mean(), scale=stats.sem(per_seed))
    assert r["seeds_only"] and r["df"] == 4
    assert (r["lo"], r["hi"]) == (pytest.approx(lo, rel=1e-12), pytest.approx(hi, rel=1e-12))
    s = verdicts.seed_interval(per_seed)
    assert (s["lo"], s["hi"]) == (pytest.approx(lo, rel=1e-12), pytest.approx(hi, rel=1e-12))
    assert s["p"] == pytest.approx(stats.ttest_1samp(per_seed, 0.0).pvalue, rel=1e-10)


def test_holm_worked_example():
    """Sorted p: 0.005 <= 0.05/4, 0.01 <= 0.05/3, 0.03 > 0.05/2: the rule stops there (0.04 is
    not rejected although 0.04 <= 0.05; Bonferroni would reject only the first two as well, an
    unordered rule the fourth too)."""
    assert verdicts.holm([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    assert verdicts.holm([0.01, 0.015, 0.02, 0.04]) == [True, True, True, True]  # each <= 0.05/(4 - i)
    assert verdicts.holm([0.01, 0.02, 0.03, 0.04]) == [True, False, False, False]  # 0.02 > 0.05/3
    assert verdicts.holm([0.5]) == [False]


@pytest.mark.parametrize("call, words", [
    (lambda: verdicts.paired_interval(np.zeros((1, 5))), "at least 2 seeds"),
    (lambda: verdicts.paired_interval(np.zeros(5)), "d"),
    (lambda: verdicts.paired_interval([[0, 1], [np.nan, 2]]), "d"),
    (lambda: verdicts.paired_interval(np.zeros((2, 3)), mc_se=np.zeros((2, 2))), "mc_se"),
    (lambda: verdicts.paired_interval(np.zeros((2, 3)), mc_se=-np.ones((2, 3))), "mc_se"),
    (lambda: verdicts.paired_interval(np.zeros((2, 3)), level=1.0), "level"),
    (lambda: verdicts.seed_interval([1.0]), "at least 2"),
    (lambda: verdicts.holm([0.1, 1.5]), "pvalues"),
    (lambda: verdicts.holm([0.1], alpha=0.0), "alpha"),
])
def test_bad_input_is_refused_naming_the_argument(call, words):
    with pytest.raises((ValueError, TypeError), match=words):
        call()


def _blocks_from(lw, k):
    """Per-block estimates as estimators.log_likelihood computes them, from raw log-weights."""
    out = []
    for part in np.split(lw, k, axis=1):
        b = part.shape[1]
        m = part.max(axis=1, keepdims=True)
        w = np.exp(part - m)
        s1, s2 = w.sum(1), (w * w).sum(1)
        var = np.maximum(s2 - s1 * s1 / b, 0) / (b - 1)
        out.append({"log_px": m[:, 0] + np.log(s1) - math.log(b),
                    "se": np.sqrt(var / b) / (s1 / b), "ess": s1 * s1 / s2, "elbo": part.mean(1)})
    return out


def test_blocks_combine_to_the_estimate_of_all_their_draws():
    """ln p over k blocks of b draws = logmeanexp of all k b log-weights, to rounding; so do the
    ESS and the mean log-weight; the delta-method se agrees with the pooled one within 10 % (two
    estimators of the same quantity; they differ by sampling noise of the variance estimate)."""
    rng = np.random.default_rng(3)
    lw = -100 + 1.5 * rng.standard_normal((7, 2000))
    for k in (2, 4, 10):
        c = _combine_blocks(_blocks_from(lw, k))
        (full,) = _blocks_from(lw, 1)
        np.testing.assert_allclose(c["log_px"], full["log_px"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(c["ess"], full["ess"], rtol=1e-12)
        np.testing.assert_allclose(c["elbo"], full["elbo"], rtol=1e-14)
        np.testing.assert_allclose(c["se"], full["se"], rtol=0.1)


# --------------------------------------------------------------------------- synthetic reports

def _run(prior, seed, lp, hole, capped=False, learnable=True):
    est = {"value": 0.0, "se": 0.01, "n": 10}
    return {"prior": prior, "latent_dim": 2, "seed": seed, "status": "done",
            "prior_learnable": learnable,
            "training": {"hit_epoch_cap": capped, "epochs_run": 100},
            "log_likelihood": {"mean": {"value": float(np.mean(lp)), "se": 0.01, "n": 100},
                               "mean_log_weight": float(np.mean(lp)) - 2,
                               "per_image": {"log_px": lp, "se": np.full(len(lp), 0.05),
                                             "neg_elbo": -lp + 2},
                               "half_difference": {"value": 0.02, "se": 0.005, "n": len(lp)}},
            "holes": {"reverse_kl": {**est, "value": hole},
                      "hole_mass": {"0.1": {**est, "value": hole / 10}}},
            "train_set": {"cross_entropy": {**est, "value": 3.0},
                          "conditional_entropy": {**est, "value": 1.0},
                          "entropy_qz": {**est, "value": 2.5},
                          "mutual_information": {**est, "value": 1.5},
                          "kl_qz_p": {**est, "value": 0.5}}}


def _report(n_seeds, shift, hole_shift, capped=False):
    """standard, a (ln p higher by ``shift`` on every image) and b (equal to standard up to
    noise); a's holes differ by ``hole_shift`` from standard's."""
    rng = np.random.default_rng(7)
    base = -98 + 3 * rng.standard_normal(200)
    runs = []
    for s in range(n_seeds):
        seed_eff = 0.3 * rng.standard_normal()
        std = base + seed_eff + 0.5 * rng.standard_normal(200)
        a = std + shift + 0.1 * rng.standard_normal() + 0.5 * rng.standard_normal(200)
        b = std + 0.1 * rng.standard_normal() + 0.5 * rng.standard_normal(200)
        h = 1.0 + 0.01 * rng.standard_normal()
        runs += [_run("standard", s, std, h, capped, learnable=False),
                 _run("a", s, a, h + hole_shift + 0.01 * rng.standard_normal(), capped),
                 _run("b", s, b, h + 0.01 * rng.standard_normal(), capped)]
    return {"runs": runs, "seeds": list(range(n_seeds)),
            "profile": {"latent_dims": [2], "taus": [0.1], "max_epochs": 100, "patience": 20,
                        "n_importance": 1000}}


def _verdicts(an):
    pairs = {(e["a"], e["b"]): e["verdict"] for e in an["per_L"]["2"]["pairs"]}
    holes = {(e["prior"], e["metric"]): e["verdict"] for e in an["per_L"]["2"]["holes"]}
    return pairs, holes


def test_planted_differences_get_their_verdicts():
    pairs, holes = _verdicts(comparisons.analyse(_report(5, shift=1.0, hole_shift=-0.2)))
    assert pairs[("standard", "a")] == "a better" and pairs[("a", "b")] == "a better"
    assert pairs[("standard", "b")] == "not distinguishable at this size"
    assert holes[("a", "reverse_kl")] == "supported: fewer holes"
    assert holes[("a", "hole_mass_0.1")] == "supported: fewer holes"
    assert holes[("b", "reverse_kl")] == "not distinguishable at this size"
    _, holes = _verdicts(comparisons.analyse(_report(5, shift=1.0, hole_shift=+0.2)))
    assert holes[("a", "reverse_kl")] == "contradicted: more holes"


def test_a_small_difference_within_the_seed_spread_is_not_a_verdict():
    """A difference of 0.1 nats with a seed SD of ~0.14 and 5 seeds: not distinguishable."""
    pairs, _ = _verdicts(comparisons.analyse(_report(5, shift=0.1, hole_shift=0.0)))
    assert pairs[("standard", "a")] == "not distinguishable at this size"


def test_three_seeds_give_no_verdict_and_the_report_says_it_cannot_rank():
    rep = _report(3, shift=1.0, hole_shift=-0.2, capped=True)
    an = comparisons.analyse(rep)
    pairs, holes = _verdicts(an)
    assert all(v.startswith("no verdict: 3 seeds") for v in list(pairs.values()) + list(holes.values()))
    text = "\n".join(markdown._scope(rep, an))
    assert "cannot rank the priors" in text and "Under-trained" in text and "9 of 9" in text
    full = _report(5, shift=1.0, hole_shift=-0.2)
    text = "\n".join(markdown._scope(full, comparisons.analyse(full)))
    assert "cannot rank" not in text and "Under-trained" not in text and "Holm" in text


def test_summary_keeps_the_uncertainty_sources_apart():
    an = comparisons.analyse(_report(5, shift=1.0, hole_shift=0.0))
    q = an["per_L"]["2"]["summary"]["a"]["log_px"]
    assert q["mc_se"] == pytest.approx(0.01 / math.sqrt(5))  # sqrt(5 * 0.01^2) / 5
    assert 0.1 < q["seed_sd"] < 0.6 and 0.15 < q["image_se"] < 0.3  # 3/sqrt(200) = 0.21
    assert q["interval"]["lo"] < q["mean"] < q["interval"]["hi"]
    opt = an["per_L"]["2"]["summary"]["a"]
    # Omega of the learned prior -CE + H = -2; with q(z) as the prior -I = -1.5; gap KL = 0.5
    assert opt["omega_train"]["mean"] == pytest.approx(-2.0) and opt["omega_opt"]["mean"] == -1.5
    assert an["per_L"]["2"]["bias"]["a"]["half_difference"]["value"] == pytest.approx(0.02)


def test_settings_table_renders_the_records():
    from collections import namedtuple
    Row = namedtuple("Row", "name refvae companion why")
    text = "\n".join(markdown._settings_rows([Row("GTM activation", "leaky_relu", "tanh", "kinks")]))
    assert "## Settings: refvae vs the companion code" in text
    assert "| GTM activation | leaky_relu | tanh | kinks |" in text


# --------------------------------------------------------------------------- worker processes

_WORKERS = r'''
import json, sys
from dataclasses import replace
from refvae.tools.report import run_validation, PROFILES
p = replace(PROFILES["tiny"], seeds=2)
rc = run_validation(p, out=sys.argv[1], priors=("standard", "mog", "flow"), plots=False, quiet=True,
                    workers=int(sys.argv[2]), threads=1)
sys.exit(rc)
'''


def _numbers(path):
    doc = json.loads(path.read_text())
    runs = []
    for r in doc["runs"]:
        r = {k: v for k, v in r.items() if k not in ("timing", "cpu_seconds")}
        r["training"] = {k: v for k, v in r["training"].items() if k != "seconds"}
        if isinstance(r.get("identity_inputs"), dict):  # its own timing
            r["identity_inputs"] = {k: v for k, v in r["identity_inputs"].items() if k != "seconds"}
        runs.append(r)
    return runs, doc["analysis"]


def test_runs_in_two_worker_processes_are_bit_identical_to_a_serial_run(tmp_path):
    """Every number of every run (and the analysis built from them) is the same with 2 worker
    processes as in one process; only the timings differ."""
    script = tmp_path / "w.py"
    script.write_text(_WORKERS)
    for workers in (1, 2):
        proc = subprocess.run([sys.executable, str(script), str(tmp_path / f"w{workers}"), str(workers)],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    one, two = _numbers(tmp_path / "w1" / "report.json"), _numbers(tmp_path / "w2" / "report.json")
    assert len(one[0]) == 6 and one == two
    doc = json.loads((tmp_path / "w2" / "report.json").read_text())
    assert doc["workers"] == 2 and doc["cpu_seconds"]["start_workers"] >= 0 and "workers_note" not in doc


def test_findings_name_the_separated_pairs_and_the_holes_claim():
    """With 5 seeds the scope section ends with one findings bullet per L: the pairs Holm's rule
    separates (a is planted 1 nat better than standard and b) and the priors with fewer holes (a,
    planted); b, equal to standard up to noise, is in neither list."""
    rep = _report(5, shift=1.0, hole_shift=-0.2)
    text = "\n".join(markdown._scope(rep, comparisons.analyse(rep)))
    line = next(ln for ln in text.splitlines() if ln.startswith("- **Findings, L = 2:**"))
    assert "separates 2 of 3 pairs" in line and "standard − a" in line and "a − b" in line, line
    assert "standard − b" not in line
    holes = text.splitlines()[text.splitlines().index(line) + 1]
    assert "Fewer holes than the standard prior (Holm over the 4 tests): a (reverse_kl), a (hole_mass_0.1);" \
        in holes, holes
    assert "more: none" in holes
    nothing = _report(5, shift=0.0, hole_shift=0.0)
    text = "\n".join(markdown._scope(nothing, comparisons.analyse(nothing)))
    assert "no prior can be ranked above another" in text and "tests): none;" in text


def _decodes(hole_lp, covered_lp, se):
    grp = lambda v: {"fraction": {"value": 0.01, "se": 0.001, "n": 20000}, "n": 64,  # noqa: E731
                     "log_px": {"value": v, "se": se, "n": 64}, "nn_rms": {"value": 2.0, "se": 0.05, "n": 64}}
    return {"tau": 0.1, "groups": {"hole": grp(hole_lp), "covered": grp(covered_lp)},
            "data": {"n": 64, "log_px": {"value": -100.0, "se": 1.5, "n": 64}},
            "difference": {"log_px": {"value": hole_lp - covered_lp, "se": se * math.sqrt(2)},
                           "nn_rms": {"value": 0.0, "se": 0.07}}}


def test_hole_decode_verdicts_follow_the_difference_and_its_se():
    """Holes 10 nats worse than covered (se 1.4): 'worse'; 10 better: 'better (against the text)';
    1 nat apart: not distinguishable; only the first seed's runs are used; the count line agrees."""
    runs = [{"prior": p, "latent_dim": 2, "seed": 0, "hole_decodes": _decodes(-100 + d, -100, 1.0)}
            for p, d in (("w", -10.0), ("b", 10.0), ("n", 1.0))]
    runs.append({"prior": "w", "latent_dim": 2, "seed": 1, "hole_decodes": _decodes(-50, -100, 1.0)})
    text = "\n".join(markdown._hole_decodes(2, runs, 0))
    rows = {ln.split("|")[1].strip(): ln for ln in text.splitlines() if ln.startswith("| `")}
    assert set(rows) == {"`w`", "`b`", "`n`"}
    assert "holes decode **worse**" in rows["`w`"] and "against the text" in rows["`b`"]
    assert "not distinguishable" in rows["`n`"]
    assert "says *worse* for 1 of 3 priors and *better* for 1" in text


def test_a_kept_pair_whose_unadjusted_interval_excludes_zero_says_so():
    """Holm keeps p = 0.004 among 15 pairs although its unadjusted CI excludes 0: the cell says
    both, so the table does not look self-contradictory; a CI across 0 or a rejected pair: as is."""
    kept = {"verdict": "not distinguishable at this size", "holm_reject": False, "lo": 0.26, "hi": 0.98}
    assert "unadjusted 95 % CI excludes 0" in markdown._verdict_cell(kept)
    assert "unadjusted" not in markdown._verdict_cell({**kept, "lo": -0.1})
    assert markdown._verdict_cell({**kept, "holm_reject": True, "verdict": "a better"}) == "a better"
