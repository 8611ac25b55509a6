"""The VAE's unchecked fast path (one log_softmax per step, private kernels) gives the same bits
as the checked public path it replaces, and the in-place optimisers the same bits as the
textbook-order expressions."""

import numpy as np
import pytest

from refvae import gaussian, likelihoods
from refvae.vae import VAE


@pytest.mark.parametrize("likelihood", ["categorical", "bernoulli", "gaussian"])
@pytest.mark.parametrize("prior,kl", [("standard", "mc"), ("standard", "analytic"), ("vamp", "mc")])
def test_fast_backward_matches_checked_path(likelihood, prior, kl):
    rng = np.random.default_rng(3)
    m = VAE(6, 2, hidden=(5,), likelihood=likelihood, num_vals=4, prior=prior, kl=kl, rng=rng)
    x = {"categorical": rng.integers(0, 4, (5, 6)).astype(float),
         "bernoulli": rng.uniform(size=(5, 6)), "gaussian": rng.normal(size=(5, 6))}[likelihood]
    cache = m.forward(x, rng.standard_normal((5, 2)))
    fast = m.backward(cache)
    checked = m.backward({k: v for k, v in cache.items() if not k.startswith("_")})
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
