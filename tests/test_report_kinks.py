"""The report's gradient check near a kink that no batch choice can move (a VampPrior's
pseudo-input sitting on a leaky-ReLU kink of the encoder)."""

import numpy as np

from refvae.gradcheck import check_vjp
from refvae.tools.report import gradcheck_model
from refvae.vae import VAE


def vamp_on_a_kink():
    rng = np.random.default_rng(3)
    model = VAE(6, 2, (7,), "leaky_relu", "gaussian", prior="vamp", rng=rng,
                prior_kwargs={"num_components": 3})
    u = model.params["prior.pseudo_inputs"][0]
    W, b = model.params["encoder.0.W"], model.params["encoder.0.b"]
    b[0] = 1e-6 - u @ W[:, 0]          # pre-activation of unit 0 at pseudo-input 0: 1e-6
    x = rng.normal(size=(4, 6))
    eps = rng.standard_normal((4, 2))
    return model, x, eps


def test_plain_central_differences_fail_across_the_kink():
    """Control: the plain check crosses the kink (so the re-check below is doing the work)."""
    model, x, eps = vamp_on_a_kink()

    def f(p):
        return np.asarray(model.neg_elbo(x, eps, params=p).value)

    def vjp(g, p):
        return {k: float(g) * v for k, v in model.neg_elbo_and_grad(x, eps, params=p)[1].items()}

    assert not check_vjp(f, vjp, dict(model.params), rng=np.random.default_rng(0)).passed


def test_recheck_with_a_small_step_passes_and_is_reported():
    model, x, eps = vamp_on_a_kink()
    rep = gradcheck_model(model, x, eps, np.random.default_rng(0), near_kink_fixed=1)
    assert rep.passed, str(rep)
    assert rep.kink_rechecked and all(n.startswith(("encoder.", "prior.")) for n in rep.kink_rechecked)
