"""The JAX example adapter (examples/jax_adapter.py) against the golden cases, like the PyTorch one
in tests/test_verify.py: it passes every case (all priors, likelihoods, the analytic-KL and
confident-pixel cases) and every check it supports, and a planted bug in it is reported at the
quantity and by the check that the bug affects, and nowhere before.

Runtime: JAX executes op by op (no jit; examples/jax_adapter.py says why); every primitive is
compiled once per shape and reused across cases, so the module-scoped adapter warms up once.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from refvae.tools import golden
from refvae.tools.verify import CHECKS, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "jax_adapter.py")


@pytest.fixture(scope="module")
def ja():
    pytest.importorskip("jax", reason="jax is an optional extra (pip install refvae[jax]); the JAX adapter "
                                      "tests need it")
    spec = importlib.util.spec_from_file_location("refvae_example_jax_adapter", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_jax_adapter_passes_every_case_within_half_the_tolerance(ja):
    """The golden comparison on every committed case (every prior and likelihood, the analytic-KL and
    confident-pixel cases): every quantity reported, each within half its tolerance."""
    rep = run(ja.factory(), checks=("golden",), impl=f"{EXAMPLE}:factory")
    assert rep.passed, rep.format()
    assert len(rep.results) == len(golden.list_cases()) >= 18
    assert all(q.status == "pass" for r in rep.results for q in r.quantities), rep.format()  # nothing missing
    assert max(q.ratio for r in rep.results for q in r.quantities) < 0.5  # >= 2x below the tolerance


def test_jax_adapter_passes_the_checks_without_golden_values(ja):
    """gradient (jax.grad against finite differences), normalisation, sampler, mixture and nll on a
    mixture case and a flow case (the checks on the other priors run the same code paths; the
    golden comparison above covers every case)."""
    rep = run(ja.factory(), cases=["mog-categorical", "flow-bernoulli"],
              checks=("gradient", "normalisation", "sampler", "mixture", "nll"))
    assert rep.passed, rep.format()
    ran = {(r.case, c.name) for r in rep.results for c in r.checks if c.status == "pass"}
    assert ran == {(case, check) for case in ("mog-categorical", "flow-bernoulli")
                   for check in ("gradient", "normalisation", "sampler", "nll")} | {("mog-categorical", "mixture")}


def _planted(ja):
    """name -> subclass of the JAX adapter with one mistake (the same bugs as the PyTorch tests)."""
    import jax
    import jax.numpy as jnp
    J = ja.JaxVAE

    class SamplerExpLogVar(J):  # the log-variance used as a standard deviation in the sampler
        def sample_mixture(self, means, log_vars, log_w, index, eps):
            return means[index] + jnp.exp(log_vars[index]) * eps

    class MixturePerDimension(J):  # logsumexp over k per latent dimension, then a sum over l
        def mixture_log_prob(self, z, means, log_vars, log_w, trace=None):
            per = -0.5 * (ja.LN_2PI + log_vars[None] + (z[:, None] - means[None]) ** 2 * jnp.exp(-log_vars[None]))
            if trace is not None:
                trace["prior.component_log_prob"] = per.sum(-1)
            return jax.scipy.special.logsumexp(log_w[None, :, None] + per, axis=1).sum(-1)

    class LogDetPerDimension(J):  # the coupling's log-det added once per latent dimension
        @staticmethod
        def coupling_log_det(s, latent_dim):
            return -latent_dim * s.sum(-1)

    class BatchSum(J):
        @staticmethod
        def reduce(per_example):
            return per_example.sum()

    class WrongSignGradient(J):
        def run(self, config, params, x, eps):
            out = super().run(config, params, x, eps)
            out["grad.decoder.0.b"] = -out["grad.decoder.0.b"]
            return out

    class McKlInAnalyticCase(J):  # ignores the case's kl = "analytic"
        @staticmethod
        def kl(cfg, mu, log_var, log_qz_x, log_pz):
            return log_qz_x - log_pz

    return {k: v for k, v in locals().items() if isinstance(v, type) and issubclass(v, J) and v is not J}


def _bug(case, first, fail_checks, checks, pass_quantities=()):
    return {"case": case, "first": first, "fail_checks": set(fail_checks), "checks": checks,
            "pass_quantities": pass_quantities}


#: bug -> case, where it must be reported (first divergence, failing checks), what it must not touch
PLANTED = {
    "SamplerExpLogVar": _bug("mog-categorical", "prior_sample.z", {"sampler"}, ("golden", "sampler", "mixture"),
                             ["prior.log_p", "loss", "grad.prior.means"]),
    "MixturePerDimension": _bug("mog-categorical", "prior.log_p", {"mixture"}, ("golden", "mixture", "normalisation"),
                                ["prior.component_log_prob", "prior.log_weights", "log_qz_x", "prior_sample.z"]),
    "LogDetPerDimension": _bug("flow-bernoulli", "prior.flow.0.log_det", {"normalisation"},
                               ("golden", "normalisation"), ["prior.flow.0.out", "prior.flow.base_log_prob",
                                                             "prior_sample.z"]),
    "BatchSum": _bug("standard-bernoulli", "loss", set(), ("golden", "gradient"), ["neg_elbo", "kl"]),
    "WrongSignGradient": _bug("vamp-gaussian", "grad.decoder.0.b", {"gradient"}, ("golden", "gradient"),
                              ["loss", "grad.decoder.0.W", "grad.decoder.1.b"]),
    "McKlInAnalyticCase": _bug("standard-bernoulli-analytic_kl", "kl", set(), ("golden",),
                               ["log_pz", "log_qz_x", "log_px_z"]),
}


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_planted_bug_is_reported_where_it_is(bug, ja):
    spec = PLANTED[bug]
    assert set(spec["checks"]) <= set(CHECKS)
    rep = run(_planted(ja)[bug](), cases=[spec["case"]], checks=spec["checks"], impl=f"tests/test_jax_adapter.py:{bug}")
    assert not rep.passed, bug
    r = rep.results[0]
    detail = f"{bug}:\n{rep.format()}"
    assert r.error is None, detail
    assert r.first_divergence == spec["first"], detail
    pos = r.quantity(spec["first"]).position
    assert all(q.status == "pass" for q in r.quantities[:pos]), detail  # nothing before it is blamed
    for name in spec["pass_quantities"]:
        assert r.quantity(name).status == "pass", (name, detail)
    assert set(r.failed_checks) == spec["fail_checks"], detail
