"""The VAE's unchecked fast path (one log_softmax per step, private kernels) gives the same bits
as the checked public path it replaces, and the in-place optimisers the same bits as the
textbook-order expressions."""

import numpy as np
import pytest

from refvae import gaussian, likelihoods
from refvae.layers import mlp_backward
from refvae.vae import VAE


def _public_backward(m, cache):
    """``VAE.backward`` rebuilt from the checked public functions: the seven steps of the module
    docstring, each gradient summed into zeros in path order (likelihood, decoder, prior, encoder)."""
    p, x, out, mu, log_var, z, eps = (cache.params, cache.x, cache.out, cache.mu, cache.log_var,
                                      cache.z, cache.eps)
    c = np.full(x.shape[0], 1.0 / x.shape[0])
    g_lik = {}
    if m.likelihood.name == "categorical":
        dout = likelihoods.categorical_log_prob_vjp(-c, x, out, m.num_vals)
    elif m.likelihood.name == "bernoulli":
        dout = likelihoods.bernoulli_log_prob_vjp(-c, x, out)
    else:
        dout, g_lik["decoder.log_var"] = likelihoods.gaussian_log_prob_vjp(-c, x, out, p["decoder.log_var"])
    dz, g_dec = mlp_backward(dout, cache.dec)
    zeros = np.zeros(m.latent_dim)
    g_prior = {}
    if m.kl == "analytic":
        dmu, dlog_var, _, _ = gaussian.kl_vjp(c, mu, log_var, zeros, zeros)
    else:
        dz_p, g_prior = m.prior.backward(-c, cache.prior)
        dz_q, dmu, dlog_var = gaussian.log_prob_vjp(c, z, mu, log_var)
        dz = dz + dz_p + dz_q
    dmu_r, dlog_var_r, _ = gaussian.reparameterize_vjp(dz, mu, log_var, eps)
    _, g_enc = m.encoder.backward(dmu + dmu_r, dlog_var + dlog_var_r, cache.enc)
    total = {k: np.zeros_like(v) for k, v in p.items()}
    for grads in (g_lik, g_dec, g_prior, g_enc):
        for k, v in grads.items():
            total[k] += v
    return total


@pytest.mark.parametrize("likelihood", ["categorical", "bernoulli", "gaussian"])
@pytest.mark.parametrize("prior,kl", [("standard", "mc"), ("standard", "analytic"), ("vamp", "mc")])
def test_backward_matches_public_functions(likelihood, prior, kl):
    """VAE.forward/backward (unchecked arithmetic, the likelihood object, gradients reused in
    place) give the bits, signed zeros included, of the checked public functions summed into
    zeros."""
    rng = np.random.default_rng(3)
    m = VAE(6, 2, hidden=(5,), likelihood=likelihood, num_vals=4, prior=prior, kl=kl, rng=rng)
    x = {"categorical": rng.integers(0, 4, (5, 6)).astype(float),
         "bernoulli": rng.uniform(size=(5, 6)), "gaussian": rng.normal(size=(5, 6))}[likelihood]
    cache = m.forward(x, rng.standard_normal((5, 2)))
    assert np.array_equal(cache.log_px_z, m.decoder.log_prob(m.params, x, cache.out))
    assert np.array_equal(cache.log_qz_x, gaussian.log_prob(cache.z, cache.mu, cache.log_var))
    fast = m.backward(cache)
    checked = _public_backward(m, cache)
    assert list(fast) == list(checked) == list(m.params)
    for k in fast:
        assert np.array_equal(fast[k], checked[k]) and np.array_equal(np.signbit(fast[k]), np.signbit(checked[k])), k


def test_categorical_private_pair_matches_public():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 5, (7, 3)).astype(float)
    logits = 30 * rng.normal(size=(7, 15))
    g = rng.normal(size=7)
    xi = likelihoods._check_categorical_x(x, 5)
    lp, cache = likelihoods._categorical_log_prob_and_cache(xi, logits.reshape(7, 3, 5))
    assert cache[0] == "p"   # the fused kernel, as in the public functions
    assert np.array_equal(lp, likelihoods.categorical_log_prob(x, logits, 5))
    d = likelihoods._categorical_vjp_from_cache(g, xi, cache).reshape(7, 15)
    assert np.array_equal(d, likelihoods.categorical_log_prob_vjp(g, x, logits, 5))


def test_vae_forward_rejects_bad_categorical_x_naming_x():
    m = VAE(4, 2, hidden=(3,), num_vals=3, rng=np.random.default_rng(0))
    eps = np.zeros((1, 2))
    with pytest.raises(ValueError, match="x must hold integer category indices"):
        m.forward([[0, 1.5, 0, 0]], eps)
    with pytest.raises(ValueError, match=r"x must hold category indices in 0\.\.2"):
        m.forward([[0, 3, 0, 0]], eps)


@pytest.mark.parametrize("name", ["adam", "adamax"])
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.3, 0.9)])
def test_inplace_optimiser_matches_expression_order(name, betas):
    from refvae.optim import make_optimizer
    rng = np.random.default_rng(5)
    p = {"a": rng.normal(size=(9, 4)), "b": np.array(rng.normal())}
    ref = {k: v.copy() for k, v in p.items()}
    opt = make_optimizer(name, p, lr=3e-3, betas=betas)
    b1, b2, eps = betas[0], betas[1], 1e-8
    m = {k: np.zeros_like(v) for k, v in ref.items()}
    s = {k: np.zeros_like(v) for k, v in ref.items()}
    for t in range(1, 8):
        g = {k: rng.normal(size=v.shape) for k, v in ref.items()}
        opt.step(g)
        for k in ref:
            w = 1.0 - b1
            m[k] = m[k] + w * (g[k] - m[k]) if w < 0.5 else g[k] - (g[k] - m[k]) * (1.0 - w)
            if name == "adamax":
                s[k] = np.maximum(s[k] * b2, np.abs(g[k]) + eps)
                ref[k] = ref[k] + (-(opt.lr / (1.0 - b1 ** t)) * m[k]) / s[k]
            else:
                s[k] = s[k] * b2 + ((1.0 - b2) * g[k]) * g[k]
                denom = np.sqrt(s[k]) / (1.0 - b2 ** t) ** 0.5 + eps
                ref[k] = ref[k] + (-(opt.lr / (1.0 - b1 ** t)) * m[k]) / denom
            assert np.array_equal(p[k], ref[k]), (k, t)
