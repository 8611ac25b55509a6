"""Estimators of section 4.4.1 against identities, closed forms and known answers.

Every statistical comparison uses a tolerance of k standard errors with k = 5.5, so that one
comparison fails by chance with probability P(|N(0,1)| > 5.5) = 3.8e-8 under the normal
approximation (the estimators are means of many i.i.d. terms with finite variance); a test with m
comparisons fails by chance with probability < m * 3.8e-8, stated per test, always <= 1e-6. Seeds
are fixed.
"""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from refvae import estimators as est

from refvae.priors.mixtures import AggregatedPosterior, MoGPrior
from refvae.vae import VAE

K_SE = 5.5  # P(|Z| > 5.5) = 3.8e-8


def within(a, b, se, k=K_SE):
    return abs(a - b) <= k * se


def small_model(prior="standard", seed=0, L=2, D=5, **kw):
    rng = np.random.default_rng(seed)
    return VAE(D, L, (8,), "tanh", "gaussian", prior=prior, rng=rng, **kw)


@pytest.fixture
def data():
    return np.random.default_rng(1).normal(size=(40, 5))


def test_elbo_is_re_plus_omega_to_rounding(data):
    model = small_model("mog")
    t = est.elbo_terms(model, data, np.random.default_rng(2), n_samples=3)
    assert t["elbo"].value == pytest.approx(t["re"].value + t["omega"].value, rel=1e-13, abs=1e-13)
    assert t["neg_elbo"].value == -t["elbo"].value


def test_elbo_terms_agree_with_the_model_neg_elbo(data):
    """With S = 1, elbo_terms draws eps as rng.standard_normal((N, 1, L)); replaying that eps
    through VAE.neg_elbo gives the same value (two code paths, one definition)."""
    model = small_model("vamp")
    t = est.elbo_terms(model, data, np.random.default_rng(3), n_samples=1)
    eps = np.random.default_rng(3).standard_normal((data.shape[0], 1, 2))[:, 0]
    ref = model.neg_elbo(data, eps)
    assert t["neg_elbo"].value == pytest.approx(ref.value, rel=1e-13)
    assert t["re"].value == pytest.approx(float(np.mean(ref.log_px_z)), rel=1e-13)


def test_omega_mc_agrees_with_minus_ce_plus_h(data):
    """Eq. (4.43). Two comparisons (MoG and flow priors): false-failure probability < 7.6e-8."""
    for prior in ("mog", "flow"):
        model = small_model(prior, prior_kwargs={"hidden": (6,)} if prior == "flow" else None)
        t = est.elbo_terms(model, data, np.random.default_rng(4), n_samples=400)
        d = est.omega_decomposition(model, data, np.random.default_rng(5), n_samples=400)
        se = math.hypot(t["omega"].se, d["omega"].se)
        assert within(t["omega"].value, d["omega"].value, se), (prior, t["omega"], d["omega"])


def test_standard_prior_ce_mc_agrees_with_closed_form(data):
    """CE[q(z)||N(0,I)]: Monte Carlo (stratified, S = 500) vs closed form; one comparison,
    false-failure probability 3.8e-8. A missing -1/2 ln 2 pi (0.92 per dimension) is > 50 se."""
    model = small_model("standard")
    closed = est.cross_entropy(model, data, np.random.default_rng(0))
    assert closed.se == 0.0
    mc = est.aggregated_posterior_stats(model, data, np.random.default_rng(6), n_samples=500)
    assert within(mc["cross_entropy"].value, closed.value, mc["cross_entropy"].se)
    assert mc["cross_entropy"].se < 0.92 / 50  # a missing -1/2 ln 2 pi would be > 50 se away


def test_elbo_surgery_and_bounds_on_mutual_information(data):
    """E_x KL[q(z|x)||p] = I + KL[q(z)||p]; 0 <= I <= ln N. Three comparisons at 5.5 se:
    false-failure probability < 1.2e-7."""
    for prior in ("standard", "mog"):
        model = small_model(prior)
        s = est.aggregated_posterior_stats(model, data, np.random.default_rng(7), n_samples=300)
        se = math.hypot(s["avg_kl"].se, s["avg_kl_split"].se)
        assert within(s["avg_kl"].value, s["avg_kl_split"].value, se), (prior, s["avg_kl"], s["avg_kl_split"])
        mi = s["mutual_information"]
        assert -K_SE * mi.se <= mi.value <= math.log(data.shape[0]) + K_SE * mi.se, mi


def test_gibbs_and_the_aggregated_posterior_is_the_optimal_prior(data):
    """CE[q(z)||p] >= H[q(z)], with equality when p = q(z); Omega is then largest.

    With p = q(z) the same draws give ln p = ln q exactly, so KL[q(z)||p] = 0 to rounding. For the
    standard prior the Monte Carlo KL is compared with 0 at 5.5 se (one one-sided comparison,
    false-failure probability 1.9e-8)."""
    base = small_model("standard")
    mu, lv = est.encode_all(base, data)
    agg = AggregatedPosterior(2, mu, lv)
    optimal = VAE(5, 2, (8,), "tanh", "gaussian", prior=agg, rng=np.random.default_rng(0))
    for k in optimal.params:
        optimal.params[k] = base.params[k]
    s_opt = est.aggregated_posterior_stats(optimal, data, np.random.default_rng(8), n_samples=50,
                                           aggregated=agg)
    assert s_opt["kl_qz_p"].value == pytest.approx(0.0, abs=1e-12)
    assert s_opt["cross_entropy"].value == pytest.approx(s_opt["entropy_qz"].value, rel=1e-13)
    s_std = est.aggregated_posterior_stats(base, data, np.random.default_rng(8), n_samples=50,
                                           aggregated=agg)
    assert s_std["kl_qz_p"].value > -K_SE * s_std["kl_qz_p"].se
    assert s_std["cross_entropy"].value >= s_opt["cross_entropy"].value
    # Omega = -CE + H[q(z|x)] is largest for the optimal prior (same draws, same H)
    assert -s_opt["cross_entropy"].value >= -s_std["cross_entropy"].value


# --------------------------------------------------------------------------- known answers

def linear_gaussian_model(prior, seed=0, D=3, L=2, sigma2=0.25, inflate=1.5):
    """Linear decoder x = W^T z + b + noise (Gaussian likelihood, fixed variance sigma2), and an
    encoder set to the exact posterior mean of the standard-prior model with variances inflated by
    ``inflate`` (a good, slightly wide proposal)."""
    rng = np.random.default_rng(seed)
    model = VAE(D, L, (), "tanh", "gaussian", prior=prior, rng=rng, decoder_log_var=math.log(sigma2))
    W = rng.normal(size=(L, D))
    b = rng.normal(size=D)
    model.params["decoder.0.W"] = W
    model.params["decoder.0.b"] = b
    prec = np.eye(L) + W @ W.T / sigma2
    cov = np.linalg.inv(prec)
    A = (cov @ W / sigma2).T            # mu = (x - b) @ A
    enc_W = np.zeros((D, 2 * L))
    enc_W[:, :L] = A
    enc_b = np.concatenate([-b @ A, np.log(inflate * np.diag(cov))])
    model.params["encoder.0.W"] = enc_W
    model.params["encoder.0.b"] = enc_b
    return model, W, b, sigma2


def test_importance_sampled_log_likelihood_standard_prior_known_answer():
    """ln p(x) = ln N(x | b, W^T W + sigma^2 I). 6 examples compared at 5.5 se: false-failure
    probability < 2.3e-7. Jensen: ln p_hat >= the mean log-weight (the ELBO) for every example,
    exactly, since both use the same draws."""
    model, W, b, s2 = linear_gaussian_model("standard")
    x = np.random.default_rng(9).normal(size=(6, 3)) * 2
    res = est.log_likelihood(model, x, np.random.default_rng(10), n_samples=4000, max_rows=1000)
    exact = stats.multivariate_normal(b, W.T @ W + s2 * np.eye(3)).logpdf(x)
    for n in range(6):
        assert within(res["log_px"][n], exact[n], res["se"][n]), (n, res["log_px"][n], exact[n], res["se"][n])
    assert np.all(res["log_px"] >= res["elbo"])
    assert np.all((res["ess"] > 1) & (res["ess"] <= 4000))
    assert np.all(res["se"] < 0.05)


def test_importance_sampled_log_likelihood_mog_prior_known_answer():
    """With a MoG prior, p(x) = sum_k pi_k N(x | W^T mu_k + b, W^T Sigma_k W + sigma^2 I).
    5 examples at 5.5 se: false-failure probability < 1.9e-7."""
    prior = MoGPrior(2, num_components=3)
    model, W, b, s2 = linear_gaussian_model(prior, seed=3, inflate=3.0)
    rng = np.random.default_rng(11)
    model.params["prior.means"] = rng.normal(size=(3, 2))
    model.params["prior.log_vars"] = rng.normal(size=(3, 2)) * 0.3 - 0.5
    model.params["prior.logits"] = rng.normal(size=3)
    x = rng.normal(size=(5, 3)) * 2
    res = est.log_likelihood(model, x, np.random.default_rng(12), n_samples=5000)
    logits = model.params["prior.logits"]
    log_pi = logits - np.log(np.sum(np.exp(logits)))
    comps = []
    for k in range(3):
        Sk = np.diag(np.exp(model.params["prior.log_vars"][k]))
        mean = model.params["prior.means"][k] @ W + b
        comps.append(log_pi[k] + stats.multivariate_normal(mean, W.T @ Sk @ W + s2 * np.eye(3)).logpdf(x))
    exact = np.logaddexp.reduce(np.array(comps), axis=0)
    for n in range(5):
        assert within(res["log_px"][n], exact[n], res["se"][n]), (n, res["log_px"][n], exact[n], res["se"][n])
    assert np.all(res["log_px"] >= res["elbo"])


def test_log_likelihood_is_not_the_negative_elbo():
    """A negative ELBO is not an NLL: for the linear-Gaussian model the ELBO is strictly below
    ln p(x) (the proposal is not the posterior), by more than the IS error."""
    model, W, b, s2 = linear_gaussian_model("standard", inflate=3.0)
    x = np.random.default_rng(13).normal(size=(4, 3))
    res = est.log_likelihood(model, x, np.random.default_rng(14), n_samples=3000)
    assert np.all(res["log_px"] - res["elbo"] > K_SE * res["se"])


# --------------------------------------------------------------------------- holes

def hole_case(means, sd):
    model = small_model("standard", D=5, L=2)
    lv = np.full_like(means, 2 * math.log(sd))
    return model, AggregatedPosterior(2, means, lv)


def test_holes_single_narrow_component_closed_form():
    """q(z) = N(0, s^2 I), p = N(0, I) in L = 2: ln q - ln p = -2 ln s - |z|^2 (1/s^2 - 1) / 2, so
    q/p < tau iff |z|^2 > r^2 and the hole mass is chi2(2).sf(r^2); KL[p||q] = (1/s^2 - 1 + 2 ln s)
    (L = 2). 3 comparisons at 5.5 se with M = 200000: false-failure probability < 1.2e-7."""
    s = 0.5
    model, agg = hole_case(np.zeros((1, 2)), s)
    h = est.hole_metrics(model, None, np.random.default_rng(15), n_samples=200000, taus=(0.1, 0.01),
                         aggregated=agg)
    kl_exact = 1 / s ** 2 - 1 + 2 * math.log(s)
    assert within(h["reverse_kl"].value, kl_exact, h["reverse_kl"].se)
    for tau in (0.1, 0.01):
        r2 = 2 * (-2 * math.log(s) - math.log(tau)) / (1 / s ** 2 - 1)
        exact = stats.chi2(2).sf(r2)
        m = h["hole_mass"][tau]
        assert within(m.value, exact, m.se), (tau, m, exact)


def test_holes_two_far_apart_narrow_components_known_answer():
    """q = 1/2 N((-a, 0), s^2 I) + 1/2 N((a, 0), s^2 I), p = N(0, I). Given z1, q/p < tau iff
    z2^2 > R(z1) = 2 (A(z1) - ln tau) / (1/s^2 - 1) with A(z1) = -2 ln s + ln(1/2) + z1^2/2 +
    ln(e^{-(z1-a)^2/2s^2} + e^{-(z1+a)^2/2s^2}); so the hole mass is a 1-D integral
    int phi(z1) P(Z^2 > R(z1)) dz1 (scipy quad, error < 1e-10), and KL[p||q] a 2-D integral
    (trapezoid rule on a fine grid). 3 comparisons at 5.5 se: false-failure probability < 1.2e-7."""
    a, s = 3.0, 0.3
    model, agg = hole_case(np.array([[-a, 0.0], [a, 0.0]]), s)
    h = est.hole_metrics(model, None, np.random.default_rng(16), n_samples=200000, taus=(0.1, 0.01),
                         aggregated=agg)

    def A(z1):
        return (-2 * math.log(s) + math.log(0.5) + z1 * z1 / 2
                + np.logaddexp(-(z1 - a) ** 2 / (2 * s * s), -(z1 + a) ** 2 / (2 * s * s)))

    for tau in (0.1, 0.01):
        def integrand(z1):
            R = 2 * (A(z1) - math.log(tau)) / (1 / s ** 2 - 1)
            inside = 1.0 if R <= 0 else 2 * stats.norm.sf(math.sqrt(R))
            return stats.norm.pdf(z1) * inside
        exact = integrate.quad(integrand, -12, 12, points=[-a, a], limit=400, epsabs=1e-12)[0]
        m = h["hole_mass"][tau]
        assert within(m.value, exact, m.se), (tau, m, exact)
    assert h["hole_mass"][0.1].value > 0.9  # almost all of the prior's mass is a hole

    # KL[p||q] = int p (ln p - ln q): smooth and decaying like a Gaussian, so the trapezoid rule on
    # [-9, 9]^2 with spacing 0.015 is exact to far below the Monte Carlo error (spectral accuracy for
    # smooth integrands; the mass outside the box is < 1e-17).
    g = np.linspace(-9, 9, 1201)
    Z1, Z2 = np.meshgrid(g, g)
    pts = np.column_stack([Z1.ravel(), Z2.ravel()])
    lp = -0.5 * (2 * math.log(2 * math.pi) + np.sum(pts * pts, axis=1))
    f = (np.exp(lp) * (lp - agg.log_prob(pts))).reshape(Z1.shape)
    kl_exact = integrate.trapezoid(integrate.trapezoid(f, g, axis=1), g)
    assert within(h["reverse_kl"].value, kl_exact, h["reverse_kl"].se)


def test_density_grid_matches_the_densities():
    model = small_model("mog")
    data = np.random.default_rng(17).normal(size=(20, 5))
    g = est.density_grid(model, data, n=7)
    Z1, Z2 = np.meshgrid(g["z1"], g["z2"])
    pts = np.column_stack([Z1.ravel(), Z2.ravel()])
    mu, lv = est.encode_all(model, data)
    np.testing.assert_allclose(g["log_p"].ravel(), model.prior.log_prob(pts), rtol=1e-15)
    np.testing.assert_allclose(g["log_q"].ravel(), AggregatedPosterior(2, mu, lv).log_prob(pts), rtol=1e-15)
    np.testing.assert_allclose(g["log_ratio"], g["log_q"] - g["log_p"], rtol=1e-15)


@pytest.mark.parametrize("call, match", [
    (lambda m, x, r: est.elbo_terms(m, x, r, n_samples=0), "n_samples"),
    (lambda m, x, r: est.elbo_terms(m, x[:, :3], r), "x"),
    (lambda m, x, r: est.hole_metrics(m, x, r, taus=(-0.1,)), "taus"),
    (lambda m, x, r: est.log_likelihood(m, x, r, n_samples=1), "n_samples"),
    (lambda m, x, r: est.cross_entropy(m, x, 0), "rng"),
    (lambda m, x, r: est.density_grid(small_model(L=3), x), "latent_dim"),
])
def test_bad_input_is_named(call, match):
    model = small_model("standard")
    x = np.random.default_rng(0).normal(size=(4, 5))
    with pytest.raises((ValueError, TypeError), match=match):
        call(model, x, np.random.default_rng(0))


# =========================================================================== the ln q(z) evaluator

def test_log_qz_evaluator_is_the_source_of_ln_qz(data):
    """``log_qz`` (a callable, or an object with ``log_prob``) replaces the built-in q(z): the
    aggregated posterior's own ``log_prob`` gives the default to the bit; a shifted evaluator moves
    exactly the terms through ln q(z) (H[q(z)], KL[q(z)||p], I, the split, the reverse KL) and
    leaves the others identical."""
    model = small_model("mog")
    mu, lv = est.encode_all(model, data)
    agg = AggregatedPosterior(2, mu, lv)
    want = est.aggregated_posterior_stats(model, data, np.random.default_rng(3), 2)
    for q in (agg, agg.log_prob, lambda z: agg.log_prob(z)):
        assert est.aggregated_posterior_stats(model, data, np.random.default_rng(3), 2, log_qz=q) == want
    holes = est.hole_metrics(model, data, np.random.default_rng(4), 300)
    assert est.hole_metrics(model, data, np.random.default_rng(4), 300, log_qz=agg) == holes
    shifted = est.aggregated_posterior_stats(model, data, np.random.default_rng(3), 2,
                                             log_qz=lambda z: agg.log_prob(z) + 1.0)
    for k, d in (("entropy_qz", -1.0), ("kl_qz_p", 1.0), ("mutual_information", -1.0),
                 ("avg_kl_split", 0.0)):
        assert shifted[k].value == pytest.approx(want[k].value + d, abs=1e-12), k
    for k in ("cross_entropy", "conditional_entropy", "avg_kl"):
        assert shifted[k] == want[k], k
    h = est.hole_metrics(model, data, np.random.default_rng(4), 300, log_qz=lambda z: agg.log_prob(z) - 2.0)
    assert h["reverse_kl"].value == pytest.approx(holes["reverse_kl"].value + 2.0, abs=1e-12)


@pytest.mark.parametrize("kw, err, match", [
    ({"log_qz": "q"}, TypeError, "log_qz"),
    ({"log_qz": lambda z: np.zeros((len(z), 2))}, ValueError, "log_qz returned shape"),
    ({"log_qz": lambda z: np.zeros(len(z)), "aggregated": "A"}, ValueError, "not both"),
])
def test_bad_log_qz_is_named(data, kw, err, match):
    model = small_model("mog")
    if kw.get("aggregated") == "A":
        kw = dict(kw, aggregated=AggregatedPosterior(2, *est.encode_all(model, data)))
    for call in (est.aggregated_posterior_stats, est.hole_metrics):
        with pytest.raises(err, match=match):
            call(model, data, np.random.default_rng(0), **kw)


class _CEOnly:
    """Mixin: the standard prior without its own closed-form KL (the protocol's default: CE - H)."""

    def kl_closed_form(self, params, mu, log_var):
        from refvae.priors import Prior
        return Prior.kl_closed_form(self, params, mu, log_var)


class _NoClosedForm(_CEOnly):
    """Mixin: the standard prior without any closed form."""

    def cross_entropy_closed_form(self, params, mu, log_var):
        return None


def _with_prior_mixin(model, mixin):
    cls = type(model.prior)
    model.prior.__class__ = type(f"{mixin.__name__}{cls.__name__}", (mixin, cls), {})
    return model


def test_closed_forms_come_from_the_prior(data):
    """CE and E_x KL[q(z|x)||p] are exact (se = 0) when the prior has a closed form:
    ``kl_closed_form`` (the standard prior: ``gaussian.kl``), else ``CE - H`` from
    ``cross_entropy_closed_form``; Monte Carlo otherwise, with the same draws for everything else."""
    from refvae import gaussian
    model = small_model("standard")
    mu, lv = est.encode_all(model, data)
    zero = np.zeros(2)
    assert np.array_equal(model.prior.kl_closed_form(model.params, mu, lv), gaussian.kl(mu, lv, zero, zero))
    full = est.aggregated_posterior_stats(model, data, np.random.default_rng(8), 3)
    assert full["avg_kl"] == est.Estimate(float(np.mean(gaussian.kl(mu, lv, zero, zero))), 0.0, 40)
    ce = est.cross_entropy(model, data, np.random.default_rng(8))
    assert ce == est.Estimate(float(np.mean(gaussian.cross_entropy(mu, lv, zero, zero))), 0.0, 40)
    ce_only = est.aggregated_posterior_stats(_with_prior_mixin(small_model("standard"), _CEOnly),
                                             data, np.random.default_rng(8), 3)
    assert ce_only["avg_kl"].se == 0.0
    assert ce_only["avg_kl"].value == pytest.approx(full["avg_kl"].value, rel=1e-13, abs=1e-13)
    mc_model = _with_prior_mixin(small_model("standard"), _NoClosedForm)
    mc = est.aggregated_posterior_stats(mc_model, data, np.random.default_rng(8), 3)
    assert mc["avg_kl"].se > 0 and mc["avg_kl"].n == 120
    assert within(mc["avg_kl"].value, full["avg_kl"].value, mc["avg_kl"].se)  # 3.8e-8
    for k in ("entropy_qz", "cross_entropy", "conditional_entropy", "kl_qz_p", "mutual_information",
              "avg_kl_split"):
        assert mc[k] == full[k] == ce_only[k], k
    mc_ce = est.cross_entropy(mc_model, data, np.random.default_rng(8), n_samples=50)
    assert mc_ce.se > 0 and within(mc_ce.value, ce.value, mc_ce.se)  # 3.8e-8
