"""Prior-only adapters and case handling in ``refvae verify`` (issue 16, items 6 and 8).

- a prior-only adapter (no ``run``) is detected, compared on ``log_pz``, ``prior.*`` and
  ``prior_sample.z`` at the golden z and draws, and runs the prior checks and the prior-gradient
  check; refvae's own prior behind that protocol passes every case;
- planted bugs in a prior-only adapter are reported at the right quantity and check (a dropped
  ln 2 pi, a wrong-sign gradient, the gradient of a wrong density);
- ``supports(config)`` / ``cases`` make cases *not applicable* (never counted as passes); a run
  with no applicable case, or where nothing was compared and no check ran, fails;
- ``--case`` takes fnmatch patterns and an unknown name lists the valid ones; an adapter's own
  folder is on ``sys.path`` while it is imported (a two-file adapter loads).
"""

from __future__ import annotations

import json
import os
import textwrap

import numpy as np
import pytest

from refvae.tools import golden, verify
from refvae.tools.cli_verify import run_verify
from refvae.tools.verify import RefvaePriorAdapter, run

from test_verify import ROOT, _parse, cases

EXAMPLE = os.path.join(ROOT, "examples", "prior_adapter.py")
LN_2PI = np.log(2 * np.pi)


def test_reference_prior_adapter_passes_in_prior_only_mode():
    rep = run(RefvaePriorAdapter(), cases=cases("mog-bernoulli", "flow-gaussian", "gtm_vamp-categorical",
                                                "standard-gaussian"))
    assert rep.passed, rep.format()
    for r in rep.results:
        assert r.mode == "prior-only"
        names = [q.name for q in r.quantities]
        assert names == verify.prior_quantities(golden.load_case(r.case))
        assert "log_pz" in names and "prior_sample.z" in names and "mu" not in names
        assert all(q.status == "pass" for q in r.quantities), r.case
        assert r.check("gradient").status == "skip"
        assert r.check("prior_gradient").status == "pass", r.check("prior_gradient").summary
    assert rep.case("mog-bernoulli").check("mixture").status == "pass"
    assert "prior-only adapter: 8 of 8 prior quantities reported" in rep.format()


class DroppedLn2Pi(RefvaePriorAdapter):
    def prior_log_prob(self, config, params, z):
        return super().prior_log_prob(config, params, z) + LN_2PI   # L = 2: -1/2 ln 2 pi per dim


class WrongSignGradient(RefvaePriorAdapter):
    def prior_log_prob_grad(self, config, params, z):
        g = super().prior_log_prob_grad(config, params, z)
        g["prior.means"] = -g["prior.means"]
        return g


class DoubledDensity(RefvaePriorAdapter):
    """log p doubled, with the (correct) gradient of the doubled function."""

    def prior_log_prob(self, config, params, z):
        return 2.0 * super().prior_log_prob(config, params, z)

    def prior_log_prob_grad(self, config, params, z):
        return {k: 2.0 * v for k, v in super().prior_log_prob_grad(config, params, z).items()}

    def prior_trace(self, config, params, z):
        return {}


def test_prior_only_dropped_ln_2pi_is_found_at_log_pz_and_normalisation():
    rep = run(DroppedLn2Pi(), cases=cases("mog-gaussian"),
              checks=("golden", "normalisation", "prior_gradient"))
    r = rep.results[0]
    assert not rep.passed
    # the trace (refvae's, inherited) agrees; the density the adapter evaluates does not
    assert r.first_divergence == "log_pz" and r.quantity("prior.log_p").status == "pass"
    assert r.quantity("prior_sample.z").status == "pass" and r.quantity("prior.means").status == "pass"
    assert r.check("normalisation").status == "fail"
    assert r.check("prior_gradient").status == "pass"          # a constant offset has no gradient


def test_prior_only_gradient_bugs_say_which_side_departs():
    r = run(WrongSignGradient(), cases=cases("mog-gaussian"), checks=("prior_gradient",)).results[0]
    c = r.check("prior_gradient")
    assert c.status == "fail" and "prior.means" in c.summary
    assert "disagrees with finite differences of your own prior_log_prob" in c.summary
    r = run(DoubledDensity(), cases=cases("mog-gaussian"), checks=("golden", "prior_gradient")).results[0]
    c = r.check("prior_gradient")
    assert c.status == "fail" and "agrees with finite differences of your own prior_log_prob" in c.summary
    assert "density itself departs" in c.summary
    assert r.first_divergence == "prior.log_p"       # no trace: prior.log_p is prior_log_prob's


def test_reproductions_of_a_prior_only_failure_run(capsys):
    rep = run(DroppedLn2Pi(), cases=cases("standard-bernoulli"), checks=("golden", "normalisation"),
              impl="refvae.tools.verify:RefvaePriorAdapter")
    r = rep.results[0]
    for q in r.quantities:
        if q.failed:
            exec(compile(q.reproduction, "<reproduction>", "exec"), {})
    for c in r.checks:
        if c.failed:
            exec(compile(c.reproduction, "<reproduction>", "exec"), {})
    capsys.readouterr()


class OnlyStandard(RefvaePriorAdapter):
    cases = ["standard-*"]


def test_cases_the_adapter_cannot_run_are_not_applicable():
    rep = run(OnlyStandard(), cases=cases("standard-bernoulli", "mog-bernoulli"),
              checks=("golden", "normalisation"))
    assert rep.passed, rep.format()
    assert rep.case("mog-bernoulli").not_applicable and not rep.case("mog-bernoulli").passed
    text = rep.format()
    assert "N/A   mog-bernoulli: not applicable" in text
    assert "PASSED: 1 of 1 applicable case(s) pass; 1 not applicable" in text
    assert rep.to_dict()["summary"]["not_applicable"] == ["mog-bernoulli"]
    # no applicable case: nothing was verified, which is not a pass
    rep = run(OnlyStandard(), cases=cases("mog-bernoulli"), checks=("golden",))
    assert not rep.passed and "no case was applicable" in rep.format()


def test_known_deviations_are_counted_not_called_within_tolerance():
    class Offset(RefvaePriorAdapter):
        def prior_log_prob(self, config, params, z):
            return super().prior_log_prob(config, params, z) + 1.0
    known = [{"case": "*", "quantity": "log_pz", "reason": "we drop a constant"}]
    rep = run(Offset(), cases=cases("mog-gaussian"), checks=("golden",), known_deviations=known)
    text = rep.format()
    assert rep.passed and "all within tolerance" not in text
    assert "1 known deviation(s), the others within tolerance" in text
    assert text.splitlines()[-1].startswith("PASSED: 1 of 1 case(s) pass; 1 known deviation(s)")


def test_supports_must_return_a_bool():
    class Bad(RefvaePriorAdapter):
        def supports(self, config):
            return "yes"
    rep = run(Bad(), cases=cases("standard-bernoulli"), checks=("golden",))
    assert not rep.passed and "expected True or False" in rep.results[0].error


def test_nothing_verified_is_a_failure():
    class OnlySampleFrom:   # a prior-only adapter whose only method makes no golden quantity here
        def prior_sample_from(self, config, params, noise):
            raise RuntimeError("not implemented")
    rep = run(OnlySampleFrom(), cases=cases("standard-bernoulli"), checks=("golden",))
    r = rep.results[0]
    assert not rep.passed
    assert r.quantity("prior_sample.z").status == "fail"
    assert "raised RuntimeError: not implemented" in r.quantity("prior_sample.z").message

    class Nothing:
        def prior_trace(self, config, params, z):
            return {}
    rep = run(Nothing(), cases=cases("standard-bernoulli"), checks=("golden", "normalisation"))
    q = rep.results[0].quantity("(any)")
    assert not rep.passed and "nothing was verified" in q.message
    code = q.reproduction.replace("adapter = ...  # the object your factory returns", "adapter = ADAPTER")
    assert "adapter = ADAPTER" in code        # no impl given: the snippet names the object to put
    exec(compile(code, "<reproduction of (any)>", "exec"), {"ADAPTER": Nothing()})   # it runs


@pytest.mark.torch
def test_example_prior_adapter_cli(tmp_path, capsys):
    pytest.importorskip("torch", reason="examples/prior_adapter.py is written in PyTorch (optional extra)")
    out = tmp_path / "r.json"
    code = run_verify(_parse(["--impl", f"{EXAMPLE}:factory", "--case", "standard-g*,mog-b*,flow-gaussian",
                              "--json", str(out)]))
    text = capsys.readouterr().out
    assert code == 0, text
    assert "PASSED: 3 of 3 applicable case(s) pass; 1 not applicable" in text
    rep = json.loads(out.read_text())
    assert rep["summary"]["not_applicable"] == ["flow-gaussian"]
    mog = [c for c in rep["cases"] if c["case"] == "mog-bernoulli"][0]
    assert mog["mode"] == "prior-only"
    assert {c["name"]: c["status"] for c in mog["checks"]} == {
        "gradient": "skip", "normalisation": "pass", "sampler": "pass", "mixture": "pass",
        "nll": "skip", "prior_gradient": "pass"}


def test_case_option_takes_patterns_and_lists_valid_names(tmp_path, capsys):
    code = run_verify(_parse(["--impl", "refvae.tools.verify:RefvaePriorAdapter", "--case", "*-gaussian",
                              "--checks", "golden", "--quiet"]))
    assert code == 0
    assert capsys.readouterr().out.startswith("PASSED: 6 of 6 case(s) pass")
    with pytest.raises(ValueError, match=r"no such case .*the cases are: standard-categorical, "):
        run_verify(_parse(["--impl", "refvae.tools.verify:RefvaePriorAdapter", "--case", "mog"]))


def test_two_file_adapter_imports_its_sibling(tmp_path):
    (tmp_path / "my_helpers_16a.py").write_text(
        "from refvae.tools.verify import RefvaePriorAdapter\nclass Mine(RefvaePriorAdapter):\n    pass\n")
    (tmp_path / "my_adapter_16a.py").write_text(textwrap.dedent("""
        from my_helpers_16a import Mine
        def factory():
            return Mine()
    """))
    adapter = verify.load_adapter(f"{tmp_path / 'my_adapter_16a.py'}:factory")
    assert verify.is_prior_only(adapter)
    assert str(tmp_path) not in __import__("sys").path     # removed again after loading


@pytest.mark.torch
def test_docs_prior_adapter_passes(tmp_path):
    """The prior-only adapter printed in docs/verify.md passes on the cases its command names."""
    pytest.importorskip("torch", reason="the documented prior adapter is written in PyTorch")
    import re
    with open(os.path.join(ROOT, "docs", "verify.md"), encoding="utf-8") as fh:
        blocks = re.findall(r"```python\n(.*?)```", fh.read(), flags=re.S)
    code = [b for b in blocks if "class MixturePrior" in b][0]
    path = tmp_path / "doc_prior_adapter.py"
    path.write_text(code)
    rep = run(f"{path}:factory", cases=cases("standard-gaussian", "mog-categorical", "vamp-bernoulli"))
    assert rep.passed, rep.format()
    assert rep.case("vamp-bernoulli").not_applicable
    assert rep.case("mog-categorical").check("prior_gradient").status == "pass"
    assert {q.status for q in rep.case("mog-categorical").quantities} == {"pass", "missing"}
