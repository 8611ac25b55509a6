"""The report's gradient check (refvae.tools.report.gradient_check.gradcheck_model): Richardson
quotients taken only where no relu/leaky_relu pre-activation changes sign, an allowance of rounding
floor + truncation bound (no relative tolerance, no difference-based truncation estimate), and a 1%
error in any parameter group of every prior's model of the report's size fails it."""

import math

import numpy as np
import pytest

from refvae.gradcheck import check_vjp
from refvae.priors import PRIORS
from refvae.tools.profiles import PROFILES, build_model
from refvae.tools.report import gradcheck_model
from refvae.tools.report.gradient_check import gradcheck_summary, group_of
from refvae.vae import VAE

BUILTIN = ("standard", "mog", "vamp", "gtm", "gtm_vamp", "flow")


def vamp_on_a_kink(at=1e-6):
    rng = np.random.default_rng(3)
    model = VAE(6, 2, (7,), "leaky_relu", "gaussian", prior="vamp", rng=rng,
                prior_kwargs={"num_components": 3})
    u = model.params["prior.pseudo_inputs"][0]
    W, b = model.params["encoder.0.W"], model.params["encoder.0.b"]
    b[0] = at - u @ W[:, 0]          # pre-activation of unit 0 at pseudo-input 0: `at`
    x = rng.normal(size=(4, 6))
    eps = rng.standard_normal((4, 2))
    return model, x, eps


def planted(model, factor, groups=None):
    """Make model.neg_elbo_and_grad return the analytic gradient of ``groups`` (all: None) times
    ``factor`` (the bug a test plants)."""
    orig = model.neg_elbo_and_grad

    def wrong(*a, **k):
        value, grads = orig(*a, **k)
        return value, {n: g * factor if groups is None or group_of(n) in groups else g
                       for n, g in grads.items()}
    model.neg_elbo_and_grad = wrong
    return model


def test_plain_central_differences_fail_across_the_kink():
    """Control: check_vjp's central differences cross the kink (so the halving below does work)."""
    model, x, eps = vamp_on_a_kink()

    def f(p):
        return np.asarray(model.neg_elbo(x, eps, params=p).value)

    def vjp(g, p):
        return {k: float(g) * v for k, v in model.neg_elbo_and_grad(x, eps, params=p)[1].items()}

    assert not check_vjp(f, vjp, dict(model.params), rng=np.random.default_rng(0)).passed


def test_near_a_kink_the_step_is_halved_and_the_check_passes():
    model, x, eps = vamp_on_a_kink()
    rep = gradcheck_model(model, x, eps, np.random.default_rng(0), near_kink_fixed=1)
    assert rep.passed, str(rep)
    assert rep.halved and set(rep.halved) <= {"encoder.0.W", "encoder.0.b", "prior.pseudo_inputs"}
    for e in rep.entries:
        if e.name in rep.halved:
            assert e.halvings >= 1 and e.step < 1e-6


@pytest.mark.parametrize("factor", [1.01, 1.001])
def test_near_a_kink_a_small_error_still_fails(factor):
    """The committed flow report passed encoder.1.W with a 5% error next to a kink (its allowance
    held 2 |D(h) - D(h/2)|, which grows across a kink). Here the arrays next to the kink carry a
    planted 1% (and 0.1%) error: each one fails."""
    model, x, eps = vamp_on_a_kink()
    rep = gradcheck_model(planted(model, factor), x, eps, np.random.default_rng(0), near_kink_fixed=1)
    failed = {e.name for e in rep.entries if not e.passed}
    assert failed == {e.name for e in rep.entries}, str(rep)


def test_a_pre_activation_exactly_on_the_kink_fails_the_check():
    model, x, eps = vamp_on_a_kink(at=0.0)
    rep = gradcheck_model(model, x, eps, np.random.default_rng(0), near_kink_fixed=1)
    assert not rep.passed
    assert all("exactly 0" in r for r in rep.failed_reasons.values()) and rep.failed_reasons


def test_allowance_is_rounding_floor_plus_truncation_bound():
    model, x, eps = vamp_on_a_kink()
    rep = gradcheck_model(model, x, eps, np.random.default_rng(0), near_kink_fixed=1)
    assert rep.rtol == 0.0
    for e in rep.entries:
        assert e.allowed == e.floor + e.truncation
        assert e.truncation <= 1e-12 * abs(e.numeric)        # far below the floor at these steps
        assert e.truncation == pytest.approx(abs(e.numeric) * (2 * e.max_move / math.pi) ** 4 / 4)


@pytest.fixture(scope="module")
def report_size_models():
    """Every built-in prior's model at the report's sizes (hidden 256, 256; K = 16; digits-shaped
    categorical data), its batch and the unplanted report."""
    out = {}
    profile = PROFILES["quick"]
    for i, prior in enumerate(BUILTIN):
        rng = np.random.default_rng([15, i])
        model = build_model(prior, 2, 64, profile, rng)
        x = rng.integers(0, 17, size=(4, 64)).astype(float)
        eps = rng.standard_normal((4, 2))
        out[prior] = (model, x, eps)
    return out


@pytest.mark.parametrize("prior", BUILTIN)
def test_a_one_percent_error_in_any_group_fails(prior, report_size_models):
    """A planted 1% error (the analytic gradient times 1.01) in any parameter group fails the check.
    The error is planted in every group at once: each array's entry depends only on its own
    gradient, its direction (drawn in the same order either way) and the loss, so an entry of group
    G is the same number whether or not the other groups are planted; the run stands for one run
    per planted group. Without the plant the same check passes, and each group's ``detects``
    (smallest failing relative error) is below 1e-3: a 0.1% error in a group fails as well."""
    if prior not in PRIORS:
        pytest.fail(f"built-in prior {prior} is not registered")
    model, x, eps = report_size_models[prior]
    clean = gradcheck_summary(gradcheck_model(model, x, eps, np.random.default_rng(7)))
    assert clean["passed"], clean
    for g in clean["groups"].values():
        assert g["detects"] < 1e-3, clean["groups"]
    bad = gradcheck_model(planted(model, 1.01), x, eps, np.random.default_rng(7))
    model.__dict__.pop("neg_elbo_and_grad")
    groups = {group_of(e.name) for e in bad.entries}
    assert groups >= {"encoder", "decoder"}
    for grp in groups:
        assert any(not e.passed for e in bad.entries if group_of(e.name) == grp), (prior, grp, str(bad))


def test_a_one_percent_error_in_one_array_with_a_small_gradient_fails():
    """A flow prior whose couplings' last layers are 1e-4 N(0, 1) (trained flows look like this: the
    couplings' first layers then get gradients ~1e-4 of the loss's scale, and a random direction
    alone saw only a 5% error in one of them in the committed quick report). Each array is also
    checked along its own gradient, so every array's ``detects`` (the group's worst is reported)
    is below 1%, and a 1% error planted in that worst array alone fails the check."""
    rng = np.random.default_rng([15, 5])
    model = build_model("flow", 2, 64, PROFILES["quick"], rng)
    for name, p in model.params.items():
        if name.startswith("prior.flow.") and (".s.2." in name or ".t.2." in name):
            p[...] = 1e-4 * rng.standard_normal(p.shape)
    x = rng.integers(0, 17, size=(4, 64)).astype(float)
    eps = rng.standard_normal((4, 2))
    clean = gradcheck_summary(gradcheck_model(model, x, eps, np.random.default_rng(7)))
    assert clean["passed"], clean["groups"]
    worst = clean["groups"]["prior"]["detects_worst"]
    assert clean["groups"]["prior"]["detects"] < 1e-2, clean["groups"]["prior"]
    assert any(e["direction"] == "gradient" for e in clean["entries"])
    orig = model.neg_elbo_and_grad

    def wrong(*a, **k):
        value, grads = orig(*a, **k)
        return value, {n: g * 1.01 if n == worst else g for n, g in grads.items()}

    model.neg_elbo_and_grad = wrong
    bad = gradcheck_model(model, x, eps, np.random.default_rng(7))
    assert [e.name for e in bad.entries if not e.passed] == [worst], str(bad)
