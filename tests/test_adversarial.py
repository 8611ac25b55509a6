"""refvae.tools.verify.adversarial: adversarial inputs for a user's mixture log-density.

- the exact reference (mpmath) agrees with refvae's kernel and its VJP on every input, so refvae
  passes every input (the check can pass) -- and a straightforward NumPy log-sum-exp passes too;
- each plausible mistake fails on the input made for it, and the verdict names the element and the
  exact value: a log-sum-exp without the shift (far-query), log-weights routed through probabilities
  (dominant), NaN gradients from inf * 0 (far-apart), a gradient with a missing factor;
- a function that raises NotImplementedError is skipped (not passed), one that raises otherwise fails;
- every reproduction runs on its own and prints the function's values next to the exact ones.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from scipy.special import logsumexp

from refvae.kernels.mixture import mixture_log_prob, mixture_log_prob_vjp
from refvae.tools.verify.adversarial import ADVERSARIAL_INPUTS, adversarial_input, check_adversarial

LN_2PI = float(np.log(2 * np.pi))


def kernel(z, means, log_vars, log_weights):
    return mixture_log_prob(z, means, log_vars, log_weights)


def kernel_grad(z, means, log_vars, log_weights):
    dz, dm, dv, dw = mixture_log_prob_vjp(np.ones(z.shape[0]), z, means, log_vars, log_weights)
    return {"z": dz, "means": dm, "log_vars": dv, "log_weights": dw}


def _terms(z, means, log_vars, log_weights):
    """t_bk with exp(-v) (no overflow of (z - mu)^2 e^{-v} handled: inf is the right limit)."""
    with np.errstate(over="ignore", invalid="ignore"):
        q = ((z[:, None, :] - means[None]) ** 2 * np.exp(-log_vars)[None]).sum(-1)
    return log_weights[None] - 0.5 * (z.shape[1] * LN_2PI + log_vars.sum(-1)[None] + q)


def numpy_shifted(z, means, log_vars, log_weights):
    """A careful NumPy implementation: ((z - mu) e^{-v/2})^2 (no (z - mu)^2 to underflow, no e^{-v}
    to overflow for |v| <= 1416) and a shifted log-sum-exp."""
    with np.errstate(over="ignore"):
        q = (((z[:, None, :] - means[None]) * np.exp(-0.5 * log_vars)[None]) ** 2).sum(-1)
    return logsumexp(log_weights[None] - 0.5 * (z.shape[1] * LN_2PI + log_vars.sum(-1)[None] + q), axis=1)


def naive_unshifted(z, means, log_vars, log_weights):
    """log(sum(exp(t))) without the shift: underflows to -inf far from the components."""
    with np.errstate(divide="ignore", under="ignore"):
        return np.log(np.exp(_terms(z, means, log_vars, log_weights)).sum(1))


def through_probabilities(z, means, log_vars, log_weights):
    """Weights as probabilities (exp, then log again): e^-800 underflows and its component is lost."""
    with np.errstate(divide="ignore", under="ignore"):
        w = np.exp(log_weights)
        return logsumexp(_terms(z, means, log_vars, np.log(w)), axis=1)


@pytest.fixture(scope="module")
def kernel_results():
    return {r.name: r for r in check_adversarial(kernel, kernel_grad)}


def test_the_inputs_are_what_they_say():
    assert len(ADVERSARIAL_INPUTS) >= 9
    z, m, v, w = adversarial_input("zero-weight")
    assert np.isneginf(w).sum() == 1 and np.isclose(logsumexp(w), 0.0)
    assert np.max(np.abs(adversarial_input("log-var+700")[2])) == 700.0
    assert np.max(np.abs(adversarial_input("log-var-700")[2])) == 700.0
    z, m, v, w = adversarial_input("far-apart")
    assert np.ptp(m[:, 0]) == 1e300
    assert adversarial_input("K=1")[1].shape[0] == 1
    with pytest.raises(ValueError, match="name must be one of"):
        adversarial_input("bogus")


def test_refvae_kernel_passes_every_input_value_and_gradient(kernel_results):
    assert set(kernel_results) == {f"adversarial.{n}" for n in ADVERSARIAL_INPUTS}
    for r in kernel_results.values():
        assert r.status == "pass", (r.name, r.summary)
        assert "gradients" in r.summary
        # the kernel and the exact values agree far inside the stated tolerance (c <= 26 u proven)
        got = np.array(r.details["got"])
        exact = np.array(r.details["exact"])
        assert np.all(np.abs(got - exact) <= 1e-3 * np.array(r.details["allowed"])), r.name


def test_a_careful_numpy_implementation_passes_the_values():
    results = check_adversarial(numpy_shifted)
    assert all(r.status == "pass" for r in results), [(r.name, r.summary) for r in results if r.status != "pass"]


def test_unshifted_logsumexp_fails_far_from_the_components():
    r = {x.name: x for x in check_adversarial(naive_unshifted)}
    assert r["adversarial.far-query"].status == "fail"
    assert "= -inf, exact -499003.5" in r["adversarial.far-query"].summary
    assert r["adversarial.K=1"].status == "pass"  # it is right where nothing underflows


def test_weights_through_probabilities_fail_on_the_dominant_component():
    r = {x.name: x for x in check_adversarial(through_probabilities)}
    assert r["adversarial.dominant"].status == "fail", r["adversarial.dominant"].summary
    assert "exact -801.8" in r["adversarial.dominant"].summary
    assert r["adversarial.zero-weight"].status == "pass"


def test_nan_gradient_from_inf_times_zero_is_named():
    def grad_inf_times_zero(z, means, log_vars, log_weights):
        g = kernel_grad(z, means, log_vars, log_weights)
        t = _terms(z, means, log_vars, log_weights)
        r = np.exp(t - logsumexp(t, axis=1, keepdims=True))
        with np.errstate(over="ignore", invalid="ignore"):  # d/dv of -(z - mu)^2 e^-v / 2 without the r = 0 guard
            q = (z[:, None, :] - means[None]) ** 2 * np.exp(-log_vars)[None]
            g["log_vars"] = (r[..., None] * 0.5 * (q - 1)).sum(0)
        return g
    r = {x.name: x for x in check_adversarial(kernel, grad_inf_times_zero, inputs=["far-apart", "K=1"])}
    assert r["adversarial.far-apart"].status == "fail"
    assert "grad log_vars" in r["adversarial.far-apart"].summary and "NaN" in r["adversarial.far-apart"].summary
    assert r["adversarial.K=1"].status == "pass"


def test_a_gradient_with_a_missing_factor_fails_everywhere():
    def half_dz(z, means, log_vars, log_weights):
        g = kernel_grad(z, means, log_vars, log_weights)
        g["z"] = 0.5 * g["z"]
        return g
    results = check_adversarial(kernel, half_dz, inputs=["K=1", "log-var-700"])
    assert all(r.status == "fail" and "grad z" in r.summary for r in results)


def test_logits_gradient_is_judged_as_normalised():
    """A function that normalises its log-weights reports d/dlogits = sum_b r_bk - B pi_k."""
    def logits_grad(z, means, log_vars, log_weights):
        g = kernel_grad(z, means, log_vars, log_weights)
        g["logits"] = g.pop("log_weights") - z.shape[0] * np.exp(log_weights)
        return g
    assert all(r.status == "pass" for r in check_adversarial(kernel, logits_grad, inputs=["K=1", "dominant"]))
    wrong = check_adversarial(kernel, lambda *a: {"logits": kernel_grad(*a)["log_weights"]}, inputs=["dominant"])
    assert wrong[0].status == "fail" and "grad logits" in wrong[0].summary


def test_skips_errors_and_shapes():
    def not_here(*a):
        raise NotImplementedError("uniform weights only")
    r = check_adversarial(not_here, inputs=["K=1"])[0]
    assert r.status == "skip" and "uniform weights only" in r.summary

    def boom(*a):
        raise ValueError("invalid logits")
    r = check_adversarial(boom, inputs=["zero-weight"])[0]
    assert r.status == "fail" and "raised ValueError: invalid logits" in r.summary
    r = check_adversarial(lambda z, *a: np.zeros(z.shape[0] + 1), inputs=["K=1"])[0]
    assert r.status == "fail" and "shape" in r.summary


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="log_prob must be callable"):
        check_adversarial(None)
    with pytest.raises(TypeError, match="log_prob_grad"):
        check_adversarial(kernel, "grad")
    with pytest.raises(ValueError, match="inputs: unknown"):
        check_adversarial(kernel, inputs=["bogus"])
    with pytest.raises(TypeError, match="inputs must be a list"):
        check_adversarial(kernel, inputs="K=1")


def test_reproductions_run_standalone_and_show_the_failure():
    source = ("import numpy as np\n"
              "def log_prob(z, means, log_vars, log_weights):\n"
              "    q = ((z[:, None, :] - means[None]) ** 2 * np.exp(-log_vars)[None]).sum(-1)\n"
              "    t = log_weights[None] - 0.5 * (z.shape[1] * np.log(2 * np.pi) + log_vars.sum(-1)[None] + q)\n"
              "    return np.log(np.exp(t).sum(1))\n")
    ns = {}
    exec(source, ns)
    with np.errstate(all="ignore"):
        results = check_adversarial(ns["log_prob"], source=source)
    failed = [r for r in results if r.status == "fail"]
    assert failed and all(r.reproduction for r in results)
    for r in failed:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), np.errstate(all="ignore"):
            exec(r.reproduction, {"__name__": "__repro__"})
        printed = out.getvalue()
        assert "log_prob" in printed and "exact" in printed, r.name
        assert "-inf" in printed or "nan" in printed, (r.name, printed)
