"""The prior protocol (refvae.priors.base) and the registry (refvae.priors.PRIORS).

What is checked, and how each check could fail
----------------------------------------------
* **Registry**: the built-in names in the text's order; ``register_prior`` refuses what is not a
  ``Prior`` subclass, an unnamed or taken name, and accepts the same class twice.
* **Sampling from given noise** (``draw_noise`` + ``sample_from_noise``): the map inverts exactly
  what the density standardises -- for a mixture ``(z - mu_k) e^{-v_k/2} = eps`` row by row (a
  sampler using ``e^{v}`` as the sd fails), for the flow ``f(z) = eps`` (a wrong inverse fails),
  for N(0, I) ``z = eps``; the mixture's indices are stratified (each component n/K times).
* **Support box**: the density integrates over ``support_box`` (trapezoid rule with the box's own
  spacing ``h``) to ``1 - outside`` within 1e-6 -- a box that misses mass, or a density that does
  not integrate to one, fails.
* **Closed-form cross-entropy** (standard prior): equals the Monte Carlo mean of ``-ln p(z)``,
  z ~ q, within 5 standard errors (false-failure probability 6e-7 per value, fixed seed); every
  other built-in prior returns ``None``.
* **Settings**: ``settings(profile)`` and ``tiny_settings(...)`` construct every built-in prior.
"""

from __future__ import annotations

import numpy as np
import pytest

from refvae.priors import PRIORS, Prior, StandardPrior, make_prior, register_prior

BUILTIN = ("standard", "mog", "vamp", "gtm", "gtm_vamp", "flow")


def _tiny(name, seed=0):
    """A tiny L = 2 VAE with the prior's tiny settings and randomised prior parameters."""
    from refvae.vae import VAE
    rng = np.random.default_rng([seed, BUILTIN.index(name)])
    model = VAE(6, 2, (5,), "leaky_relu", "bernoulli", 5, name, rng=rng,
                prior_kwargs=PRIORS[name].tiny_settings("leaky_relu", (0.0, 1.0)))
    model.prior.randomize_params(model.params, rng)
    return model


def test_registry_holds_the_text_order():
    assert tuple(PRIORS)[:len(BUILTIN)] == BUILTIN
    assert all(PRIORS[n].name == n for n in PRIORS)


def test_register_prior_refuses_what_it_cannot_register():
    with pytest.raises(TypeError, match="subclass of refvae.priors.Prior"):
        register_prior(object)
    with pytest.raises(TypeError, match="subclass"):
        register_prior(StandardPrior(2))

    class Unnamed(Prior):
        pass

    with pytest.raises(ValueError, match="its own class attribute name"):
        register_prior(Unnamed)

    class Taken(Prior):
        name = "mog"

    with pytest.raises(ValueError, match="'mog' is taken by MoGPrior"):
        register_prior(Taken)
    assert register_prior(StandardPrior) is StandardPrior  # the same class again: allowed
    assert tuple(PRIORS)[:len(BUILTIN)] == BUILTIN


def test_register_prior_adds_a_name_that_make_prior_builds():
    class Toy(StandardPrior):
        name = "toy_protocol"

    try:
        assert register_prior(Toy) is Toy
        assert list(PRIORS)[-1] == "toy_protocol"
        assert isinstance(make_prior("toy_protocol", 3), Toy)
    finally:
        PRIORS.pop("toy_protocol", None)


@pytest.mark.parametrize("name", BUILTIN)
def test_sample_from_noise_inverts_the_standardisation(name):
    model = _tiny(name)
    prior, p = model.prior, model.params
    n = 12
    noise = prior.draw_noise(n, np.random.default_rng(5))
    z = prior.sample_from_noise(p, noise)
    assert z.shape == (n, 2)
    comps = prior.mixture_components(p)
    if comps is not None:
        means, log_vars, _ = comps
        k = noise["index"]
        np.testing.assert_array_equal(np.bincount(k, minlength=prior.K), np.full(prior.K, n // prior.K))
        np.testing.assert_allclose((z - means[k]) * np.exp(-0.5 * log_vars[k]), noise["eps"],
                                   rtol=1e-13, atol=1e-13)
    elif name == "flow":
        u, _ = prior.transform(p, z)
        np.testing.assert_allclose(u, noise["eps"], rtol=1e-12, atol=1e-12)
    else:
        np.testing.assert_array_equal(z, noise["eps"])


@pytest.mark.parametrize("name", ("mog", "gtm"))
def test_sample_from_noise_rejects_bad_indices(name):
    model = _tiny(name)
    noise = model.prior.draw_noise(6, np.random.default_rng(0))
    bad = dict(noise, index=noise["index"] + model.prior.K)
    with pytest.raises(ValueError, match=r"noise\['index'\] must hold 6 component indices"):
        model.prior.sample_from_noise(model.params, bad)
    with pytest.raises(TypeError, match="noise must be a dict"):
        model.prior.sample_from_noise(model.params, noise["eps"])


@pytest.mark.parametrize("name", BUILTIN)
def test_support_box_holds_the_mass(name):
    model = _tiny(name)
    lo, hi, h, outside = model.prior.support_box(model.params)
    assert 0.0 <= outside < 1e-10
    axes = [np.arange(lo[i], hi[i] + h, h) for i in range(2)]
    assert max(len(a) for a in axes) < 3000, "the test grid is meant to stay small"
    Z = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)
    dens = np.exp(model.prior.log_prob(Z)).reshape(len(axes[0]), len(axes[1]))
    mass = np.trapezoid(np.trapezoid(dens, axes[1], axis=1), axes[0])
    # the trapezoid rule on a smooth density resolved by h (<= sd/4, mixtures) is far below 1e-6;
    # the flow's density has kinks (leaky-ReLU couplings), so its error is O(h^2): 1.8e-6 at the
    # box's h. A density that misses mass (a log-determinant counted per dimension) is off by O(1).
    tol = 1e-5 if name == "flow" else 1e-6
    assert abs(mass - (1.0 - outside)) < tol, (name, mass)


def test_support_box_default_is_unknown():
    class Bare(Prior):
        name = "bare"

    assert Bare(2).support_box({}) is None
    assert Bare(2).mixture_components({}) is None
    assert Bare(2).cross_entropy_closed_form({}, np.zeros((1, 2)), np.zeros((1, 2))) is None
    with pytest.raises(NotImplementedError, match="does not map given draws"):
        Bare(2).sample_from_noise({}, {"eps": np.zeros((1, 2))})


def test_standard_cross_entropy_closed_form_against_monte_carlo():
    rng = np.random.default_rng(11)
    mu, lv = rng.normal(size=(3, 4)), rng.uniform(-1, 1, size=(3, 4))
    prior = StandardPrior(4)
    ce = prior.cross_entropy_closed_form({}, mu, lv)
    S = 200_000
    for b in range(3):
        z = mu[b] + np.exp(0.5 * lv[b]) * rng.standard_normal((S, 4))
        v = -prior.log_prob(z)
        se = v.std(ddof=1) / np.sqrt(S)
        assert abs(v.mean() - ce[b]) < 5 * se, (b, v.mean(), ce[b], se)
    for name in BUILTIN[1:]:
        m = _tiny(name)
        assert m.prior.cross_entropy_closed_form(m.params, mu[:, :2], lv[:, :2]) is None


@pytest.mark.parametrize("name", BUILTIN)
def test_settings_build_every_prior(name):
    from refvae.tools.report import PROFILES
    from refvae.vae import VAE
    for kw in [PRIORS[name].settings(p) for p in PROFILES.values()] + \
            [PRIORS[name].tiny_settings("tanh", (0.0, 4.0))]:
        model = VAE(6, 2, (5,), "tanh", "categorical", 5, name, rng=np.random.default_rng(0),
                    prior_kwargs=kw)
        assert model.prior.name == name


def test_randomize_params_moves_only_what_it_says():
    for name in BUILTIN:
        from refvae.vae import VAE
        rng = np.random.default_rng(3)
        model = VAE(6, 2, (5,), "leaky_relu", "bernoulli", 5, name, rng=rng,
                    prior_kwargs=PRIORS[name].tiny_settings("leaky_relu", (0.0, 1.0)))
        before = {k: v.copy() for k, v in model.params.items()}
        model.prior.randomize_params(model.params, np.random.default_rng(4))
        moved = {k for k in before if not np.array_equal(before[k], model.params[k])}
        assert all(k.startswith("prior.") for k in moved), (name, moved)
        if "prior.logits" in before:
            assert "prior.logits" in moved


def test_kl_closed_form_default_is_ce_minus_entropy():
    from refvae import gaussian

    class ClosedCE(Prior):
        name = "closed_ce"

        def cross_entropy_closed_form(self, params, mu, log_var):
            zero = np.zeros(np.shape(mu)[-1])
            return gaussian.cross_entropy(mu, log_var, zero, zero)

    rng = np.random.default_rng(2)
    mu, lv = rng.normal(size=(4, 3)), rng.uniform(-1, 1, size=(4, 3))
    zero = np.zeros(3)
    kl_default = ClosedCE(3).kl_closed_form({}, mu, lv)
    np.testing.assert_array_equal(kl_default, gaussian.cross_entropy(mu, lv, zero, zero)
                                  - gaussian.entropy(lv))
    # the standard prior's own closed form agrees to rounding (and is gaussian.kl itself)
    kl_std = StandardPrior(3).kl_closed_form({}, mu, lv)
    np.testing.assert_array_equal(kl_std, gaussian.kl(mu, lv, zero, zero))
    np.testing.assert_allclose(kl_std, kl_default, rtol=1e-13, atol=1e-13)
    assert Prior.kl_closed_form(StandardPrior(3), {}, mu, lv) is not None
    for name in BUILTIN[1:]:
        m = _tiny(name)
        assert m.prior.kl_closed_form(m.params, mu[:, :2], lv[:, :2]) is None
