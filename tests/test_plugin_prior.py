"""A prior from outside the package: defined here, registered with ``register_prior``, and used by
training, the golden cases, the verification harness and the tiny report with no edit to refvae.

The toy prior has independent logistic coordinates with a learned scale (smooth, light-tailed,
not a mixture, no closed-form cross-entropy): it exercises every default of the Prior protocol
that a new prior leaves alone, and every method that it must provide.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import special

import refvae
from refvae.priors import PRIORS, Prior, register_prior
from refvae.train import fit
from refvae.tools import golden, verify


class ToyLogisticPrior(Prior):
    """Independent logistic coordinates: log p(z) = sum_l [-tau(y_l) - log_scale_l], y = z e^-log_scale."""

    name = "toy"
    formula = ("log p(z) = sum_l [-|y_l| - 2 ln(1 + e^-|y_l|) - log_scale_l] with y = z exp(-log_scale); "
               "z = exp(log_scale) (ln Phi(eps) - ln Phi(-eps)) from eps = draw.prior_sample.eps")

    @property
    def param_shapes(self):
        return {"prior.log_scale": (self.latent_dim,)}

    def init_params(self, rng):
        return {"prior.log_scale": np.full(self.latent_dim, math.log(0.3))}

    def randomize_params(self, params, rng):
        params["prior.log_scale"][:] += 0.2 * rng.standard_normal(self.latent_dim)

    def forward(self, params, z):
        y = z * np.exp(-params["prior.log_scale"])
        a = np.abs(y)
        log_p = np.sum(-a - 2.0 * np.log1p(np.exp(-a)) - params["prior.log_scale"], axis=-1)
        return log_p, {"y": y, "ls": params["prior.log_scale"], "trace": [("prior.log_p", log_p)]}

    def backward(self, g, cache):
        y, th = cache["y"], np.tanh(0.5 * cache["y"])   # d/dy log logistic(y) = -tanh(y/2)
        dz = -g[:, None] * th * np.exp(-cache["ls"])
        return dz, {"prior.log_scale": np.sum(g[:, None] * (y * th - 1.0), axis=0)}

    def sample_from_noise(self, params, noise):
        eps = self._check_noise(noise)
        return np.exp(params["prior.log_scale"]) * (special.log_ndtr(eps) - special.log_ndtr(-eps))

    def sample(self, params, n, rng):
        return self.sample_from_noise(params, self.draw_noise(n, rng))

    def support_box(self, params):
        s, R = np.exp(params["prior.log_scale"]), 30.0
        return -R * s, R * s, float(s.min()) / 4, 2 * self.latent_dim * math.exp(-R)


class BuggyToyPrior(ToyLogisticPrior):
    """The toy prior with a planted bug: the log-density forgets the -log_scale term."""

    def forward(self, params, z):
        log_p, cache = super().forward(params, z)
        log_p = log_p + np.sum(params["prior.log_scale"])
        cache["trace"] = [("prior.log_p", log_p)]
        return log_p, cache


@pytest.fixture
def toy():
    """The toy prior registered for one test (removed from the registry afterwards)."""
    register_prior(ToyLogisticPrior)
    try:
        yield ToyLogisticPrior
    finally:
        PRIORS.pop(ToyLogisticPrior.name, None)


@pytest.fixture
def toy_case(toy, tmp_path):
    """A golden case of the toy prior written to disk and its directory."""
    path = golden.write_case(tmp_path, "toy", "bernoulli")
    return path


def test_toy_prior_trains(toy):
    rng = np.random.default_rng(0)
    x = (rng.random((40, 6)) < 0.5).astype(np.float64)
    model = refvae.VAE(6, 2, (5,), "tanh", "bernoulli", prior="toy", rng=rng)
    before = model.params["prior.log_scale"].copy()
    result = fit(model, x[:30], x[30:], rng=rng, batch_size=10, max_epochs=3, quiet=True)
    assert len(result.val_loss) == 3 and np.all(np.isfinite(result.val_loss))
    assert not np.array_equal(model.params["prior.log_scale"], before)   # the prior learned


def test_toy_golden_case_builds_and_loads(toy_case):
    case = golden.load_case(toy_case)
    assert case.name == "toy-bernoulli" and case.prior == "toy"
    assert case.manifest["conventions"]["toy"] == ToyLogisticPrior.formula
    assert {"prior.log_p", "grad.prior.log_scale", "prior_sample.z"} <= set(case.order)
    assert golden.verify_checksums(str(toy_case.rsplit("/", 1)[0])) == []
    # a rebuild reproduces it; and the built-in cases are unaffected by the registration
    assert golden.compare_cases(golden.build_case("toy", "bernoulli"), case) == []
    assert golden.list_cases()[-1].endswith("flow-gaussian")


def test_toy_case_verifies_with_the_reference_adapter(toy_case):
    report = verify.run(verify.RefvaeAdapter(), cases=[toy_case])
    r = report.results[0]
    assert report.passed, report.format()
    assert {c.name: c.status for c in r.checks} == {"gradient": "pass", "normalisation": "pass",
                                                    "sampler": "pass", "nll": "pass",
                                                    "prior_gradient": "pass"}
    assert r.quantity("prior_sample.z").status == "pass"


def test_a_planted_bug_in_the_toy_prior_fails_verification(toy_case, monkeypatch):
    monkeypatch.setitem(PRIORS, "toy", BuggyToyPrior)   # the reference adapter builds the buggy one
    report = verify.run(verify.RefvaeAdapter(), cases=[toy_case], checks=("golden", "normalisation"))
    r = report.results[0]
    assert not report.passed
    assert r.first_divergence == "prior.log_p"
    assert r.check("normalisation").status == "fail"


def test_tiny_report_runs_the_toy_prior(toy, tmp_path):
    from refvae.tools.report import PROFILES, run_validation
    code = run_validation(PROFILES["tiny"], priors=("toy",), plots=False, out=str(tmp_path / "r"),
                          quiet=True)
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert code in (0, 1) and report["status"] == "complete"
    assert report["runs"] and {r["prior"] for r in report["runs"]} == {"toy"}
    assert all(r["status"] == "done" for r in report["runs"]), report["runs"]
