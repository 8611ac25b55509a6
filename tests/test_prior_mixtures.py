"""The mixture priors (refvae.priors.mixtures): mog, vamp, gtm, gtm_vamp, aggregated.

What is checked, and how each check could fail
----------------------------------------------
* **Normalisation** (L = 2): the density integrates to one (:func:`normalisation_error`).
* **Sampler vs density**: a chi-square test of sample counts over 2-D cells whose probabilities
  are integrated from the density (:func:`chi_square_pvalue`).
* **Definition**: ``log_prob`` equals the mixture of L-dimensional Gaussians evaluated in mpmath
  (dps 50), with the components recomputed from their definitions (:func:`mpmath_error`).
* **Gradients**: ``check_vjp`` (central differences and Richardson) with respect to z and every
  parameter, standalone and inside ``VAE.neg_elbo_and_grad``; for the VampPrior the encoder's
  gradient is checked as the sum of its q(z|x) path and its prior path.
* **Planted bugs** (meta-tests): broken subclasses, each overriding one method, must make the
  corresponding check above fail: (1) a sampler using exp(log_var) as the sd, (2) a mixture
  evaluated per latent dimension, (4) a dropped -1/2 ln 2 pi. ((3), the flow's log-determinant,
  belongs to the flow prior's tests.)

Statistical tests state their false-failure probability and use fixed seeds. Tolerances come from
``refvae.tolerances`` (block ``# --- mixture priors``).
"""

from __future__ import annotations

import json
import math
import time

import mpmath
import numpy as np
import pytest
from hypothesis import example, given, settings
from scipy import stats

import refvae.priors
from refvae import gaussian
from refvae.gradcheck import check_vjp
from refvae.layers import mlp_forward
from refvae.kernels.mixture import mixture_log_prob_numpy
from refvae.priors.mixtures import (AggregatedPosterior, GTMPrior, GTMVampPrior, MoGPrior, VampPrior,
                                   component_log_densities, gtm_grid)
from refvae.primitives import sigmoid
from refvae.tolerances import U, tolerance
from refvae.vae import VAE, Encoder

from strategies import mog_parameters

LN_2PI = math.log(2.0 * math.pi)
L = 2
D = 6
HIDDEN = (7, 5)
ACT = "tanh"
NAMES = ["mog", "vamp", "vamp_learned", "gtm", "gtm_vamp", "aggregated"]
CLASSES = {"mog": MoGPrior, "vamp": VampPrior, "gtm": GTMPrior, "gtm_vamp": GTMVampPrior,
           "aggregated": AggregatedPosterior}


# =========================================================================== fixtures

def _encoder_params(rng):
    """A tiny tanh encoder whose outputs are spread out: means over a few units, log-variances
    away from 0 (so that exp(log_var) and exp(log_var / 2) differ by a factor ~1.5-2)."""
    enc = Encoder(D, L, HIDDEN, ACT)
    p = enc.init_params(rng)
    p["encoder.2.W"][:, :L] *= 4.0
    p["encoder.2.b"][L:] += np.array([-1.0, 0.6])
    return enc, p


def build(name, seed=0, cls=None, **kw):
    """(prior, params) for L = 2 with non-trivial parameters; params hold every key the prior
    reads (its own and, for the VampPrior family, the encoder's). ``cls`` replaces the class
    (mog and aggregated only: the broken copies of the meta-tests)."""
    rng = np.random.default_rng(seed)
    if name == "mog":
        K = kw.pop("K", 3)
        prior = (cls or MoGPrior)(L, K, **kw)
        params = {"prior.means": rng.uniform(-3, 3, (K, L)),
                  "prior.log_vars": rng.uniform(-1.2, 1.0, (K, L)),
                  "prior.logits": rng.normal(size=K)}
        return prior, params
    if name in ("vamp", "vamp_learned"):
        enc, params = _encoder_params(rng)
        prior = VampPrior(L, kw.pop("K", 3), encoder=enc, x_dim=D, data_range=(-2.0, 2.0),
                          learn_weights=(name == "vamp_learned"), **kw)
        params.update(prior.init_params(rng))
        if name == "vamp_learned":
            params["prior.logits"] = rng.normal(size=prior.K)
        return prior, params
    if name == "gtm":
        prior = GTMPrior(L, kw.pop("grid_size", 2), u_min=-1.0, u_max=1.0, hidden=(8,), activation=ACT, **kw)
        params = prior.init_params(rng)
        params["prior.gtm.1.W"][:, :L] *= 6.0
        params["prior.gtm.1.b"][L:] += np.array([-0.8, 0.5])
        params["prior.logits"] = rng.normal(size=prior.K)
        return prior, params
    if name == "gtm_vamp":
        enc, params = _encoder_params(rng)
        prior = GTMVampPrior(L, kw.pop("grid_size", 2), encoder=enc, x_dim=D, u_min=-1.0, u_max=1.0,
                             hidden=(8,), activation=ACT, data_range=(-2.0, 2.0), **kw)
        params.update(prior.init_params(rng))
        params["prior.gtm.1.W"] *= 4.0
        params["prior.logits"] = rng.normal(size=prior.K)
        return prior, params
    if name == "aggregated":
        enc, ep = _encoder_params(rng)
        x = rng.normal(size=(kw.pop("N", 40), D))
        return (cls or AggregatedPosterior).from_model(enc, x, batch_size=16, params=ep, **kw), {}
    raise KeyError(name)


def reference_components(prior, params):
    """(means, log_vars, logits or None) recomputed from the definitions in SPEC section 4, not
    through prior_mixtures' plumbing (the grid by the text's double loop, the encoder split by hand)."""
    if isinstance(prior, MoGPrior):
        return params["prior.means"], params["prior.log_vars"], params["prior.logits"]
    if isinstance(prior, AggregatedPosterior):
        return prior.means, prior.log_vars, None
    logits = params.get("prior.logits")
    if isinstance(prior, (GTMPrior, GTMVampPrior)):
        g = prior.grid_size
        a = np.linspace(prior.u_min, prior.u_max, g)
        grid = np.array([[a[i], a[j]] for i in range(g) for j in range(g)])
        if isinstance(prior, GTMPrior):
            h, _ = mlp_forward(params, "prior.gtm", grid, prior.activation)
            return h[:, :L], h[:, L:], logits
        lo, hi = prior.data_range
        pre, _ = mlp_forward(params, "prior.gtm", grid, prior.activation)
        u = lo + (hi - lo) * sigmoid(pre)
    else:
        u = params["prior.pseudo_inputs"]
    h, _ = mlp_forward(params, "encoder", u, ACT)
    return h[:, :L], h[:, L:], logits


# =========================================================================== check functions
# (each used by a real test and by a meta-test on a broken copy)

def normalisation_error(prior, params):
    r"""``|integral of p over R^2 - 1|`` by the tensor-product trapezoid rule (L = 2).

    Rule: a lattice with step ``h = min_k sigma_k / 2`` on a box containing every component's
    mean +- 12 sd in each coordinate; ``I_h = h^2 sum_ij p(x_i, y_j)``.

    Error bound, for a mixture of Gaussians (what the prior should be): I_h is the weighted mean,
    with weights pi_k, of the lattice sums of the components. For one component, the lattice sum
    over all of Z^2 factorises into two 1-D sums, and by Poisson summation
    ``h sum_j N(x_0 + j h | mu, sigma^2) = 1 + 2 sum_{m>=1} exp(-2 pi^2 m^2 sigma^2 / h^2) cos(.)``,
    so each factor is within ``2 exp(-2 pi^2 sigma^2 / h^2) / (1 - ...) <= 2 e^{-8 pi^2} ~ 1e-34``
    of 1 for ``h <= sigma / 2``. The lattice points outside the box (beyond 12 sd) add at most
    ``2 (Phi(-12) + h phi(12) / sigma) ~ 1e-32`` per axis (Gaussian tail bound). Rounding in the
    sum of ~1e5 positive terms is ~1e-14. Hence any |I_h - 1| above 1e-12 is the density's error,
    not the rule's; the tolerance is ``mixture_prior_normalisation`` (1e-6).
    """
    means, log_vars, _ = prior.mixture_components(params)
    sd = np.exp(0.5 * log_vars)
    h = float(sd.min()) / 2.0
    lo = (means - 12 * sd).min(axis=0)
    hi = (means + 12 * sd).max(axis=0)
    axes = [lo[d] + h * np.arange(int(np.ceil((hi[d] - lo[d]) / h)) + 1) for d in range(L)]
    X, Y = np.meshgrid(*axes, indexing="ij")
    pts = np.stack([X.ravel(), Y.ravel()], axis=1)
    total = 0.0
    for c0 in range(0, len(pts), 1 << 18):
        total += float(np.sum(np.exp(prior.forward(params, pts[c0:c0 + (1 << 18)])[0])))
    return abs(total * h * h - 1.0)


def _gauss_legendre_axis(edges, h, order=8):
    """Nodes, weights and cell index of a composite Gauss-Legendre rule on each interval of
    ``edges``, panels of width <= h."""
    x0, w0 = np.polynomial.legendre.leggauss(order)
    nodes, weights, cell = [], [], []
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        n = max(1, int(np.ceil((b - a) / h)))
        pe = np.linspace(a, b, n + 1)
        for p0, p1 in zip(pe[:-1], pe[1:]):
            nodes.append(0.5 * (p1 - p0) * x0 + 0.5 * (p1 + p0))
            weights.append(0.5 * (p1 - p0) * w0)
            cell.append(np.full(order, i))
    return np.concatenate(nodes), np.concatenate(weights), np.concatenate(cell)


def chi_square_pvalue(prior, params, seed, n=20000, m=8, min_expected=20.0):
    r"""p-value of Pearson's chi-square test of ``prior.sample`` against ``prior.log_prob`` (L = 2).

    Cells: an m x m grid of equal rectangles on the box [min_k(mu_k - 3 sd_k), max_k(mu_k + 3 sd_k)]
    plus everything outside it; cells with expected count below ``min_expected`` are pooled with
    the outside. Cell probabilities: composite 8-point Gauss-Legendre per coordinate with panels of
    width <= min_k sd_k / 2 (error ~ (1/2)^16 / 16! relative, i.e. below rounding, for Gaussian
    components); the outside cell gets 1 - sum(inner), which is exact when the density is
    normalised (checked separately). Under the null, the statistic is asymptotically chi-square with
    (#cells - 1) degrees of freedom; the test fails when the p-value is below
    ``mixture_prior_chi_square`` (1e-6), which is its false-failure probability.
    """
    means, log_vars, _ = prior.mixture_components(params)
    sd = np.exp(0.5 * log_vars)
    lo = (means - 3 * sd).min(axis=0)
    hi = (means + 3 * sd).max(axis=0)
    h = float(sd.min()) / 2.0
    edges = [np.linspace(lo[d], hi[d], m + 1) for d in range(L)]
    (x, wx, cx), (y, wy, cy) = (_gauss_legendre_axis(e, h) for e in edges)
    X, Y = np.meshgrid(x, y, indexing="ij")
    dens = np.exp(prior.forward(params, np.stack([X.ravel(), Y.ravel()], axis=1))[0]).reshape(X.shape)
    contrib = dens * wx[:, None] * wy[None, :]
    P = np.zeros((m, m))
    np.add.at(P, (np.repeat(cx, len(cy)), np.tile(cy, len(cx))), contrib.ravel())
    p_out = 1.0 - P.sum()

    z = prior.sample(params, n, np.random.default_rng(seed))
    ix = np.searchsorted(edges[0], z[:, 0], side="right") - 1
    iy = np.searchsorted(edges[1], z[:, 1], side="right") - 1
    inside = (ix >= 0) & (ix < m) & (iy >= 0) & (iy < m)
    O = np.zeros((m, m))
    np.add.at(O, (ix[inside], iy[inside]), 1.0)
    o_out = float(n - inside.sum())

    E = n * P.ravel()
    Oc = O.ravel()
    small = E < min_expected
    e_pool, o_pool = n * p_out + E[small].sum(), o_out + Oc[small].sum()
    E, Oc = list(E[~small]), list(Oc[~small])
    if e_pool >= min_expected or not E:
        E.append(e_pool)
        Oc.append(o_pool)
    else:  # pool too small on its own: merge it into the smallest remaining cell
        j = int(np.argmin(E))
        E[j] += e_pool
        Oc[j] += o_pool
    E, Oc = np.array(E), np.array(Oc)
    stat = float(np.sum((Oc - E) ** 2 / E))
    return float(stats.chi2.sf(stat, len(E) - 1))


def mp_log_prob(z_row, means, log_vars, logits):
    """The definition in mpmath (dps 50): log sum_k pi_k prod_l N(z_l | mu_kl, e^{v_kl}), with
    pi = softmax(logits) (uniform if None); also the error-bound scale S (refvae.kernels.mixture)."""
    with mpmath.workdps(50):
        K = len(means)
        if logits is None:
            logw = [-mpmath.log(K)] * K
        else:
            lse = mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(float(a))) for a in logits))
            logw = [mpmath.mpf(float(a)) - lse for a in logits]
        ln2pi = mpmath.log(2 * mpmath.pi)
        terms, mags = [], []
        for k in range(K):
            t, mag = logw[k], abs(logw[k])
            for l_ in range(len(z_row)):
                v = mpmath.mpf(float(log_vars[k][l_]))
                q = (mpmath.mpf(float(z_row[l_])) - mpmath.mpf(float(means[k][l_]))) ** 2 * mpmath.exp(-v)
                t -= (ln2pi + v + q) / 2
                mag += (ln2pi + abs(v) + q) / 2
            terms.append(t)
            mags.append(mag)
        mx = max(terms)
        f = mx + mpmath.log(mpmath.fsum(mpmath.exp(t - mx) for t in terms))
        S = mpmath.fsum(mpmath.exp(t - f) * mg for t, mg in zip(terms, mags))
        return f, S


def mpmath_error(prior, params, z):
    """max_b |log_prob(z_b) - exact| / (rtol (|exact| + S_b)): <= 1 passes ``mixture_prior_vs_mpmath``."""
    means, log_vars, logits = reference_components(prior, params)
    got = prior.forward(params, z)[0]
    tol = tolerance("mixture_prior_vs_mpmath").rtol
    worst = 0.0
    for b in range(z.shape[0]):
        f, S = mp_log_prob(z[b], means, log_vars, logits)
        err = abs(mpmath.mpf(float(got[b])) - f)
        worst = max(worst, float(err / (tol * (abs(f) + S))))
    return worst


def query_points(prior, params, seed=1):
    """A few z: the component means, random points, a point far in the tail."""
    means, _, _ = prior.mixture_components(params)
    rng = np.random.default_rng(seed)
    return np.concatenate([means[:3], rng.normal(scale=3.0, size=(3, L)), [[9.0, -8.0], [40.0, 35.0]]])


def standalone_report(prior, params, z, seed, method="central", **kw):
    """check_vjp of z, params -> prior.forward(params, z)[0] (B,), w.r.t. z and every param."""
    args = {"z": z, **params}

    def f(a):
        a = dict(a)
        return prior.forward(a, a.pop("z"))[0]

    def vjp(g, a):
        a = dict(a)
        _, cache = prior.forward(a, a.pop("z"))
        dz, grads = prior.backward(g, cache)
        return {"z": dz, **grads}

    return check_vjp(f, vjp, args, rng=np.random.default_rng(seed), method=method, **kw)


def loss_report(model, x, eps, seed, method="central", reduction="mean"):
    """check_vjp of params -> the VAE's reduced neg_elbo (a scalar), w.r.t. every parameter."""
    def f(params):
        return model.neg_elbo(x, eps, reduction, params=params).value

    def vjp(g, params):
        _, grads = model.neg_elbo_and_grad(x, eps, reduction, params=params)
        return {k: g * v for k, v in grads.items()}

    return check_vjp(f, vjp, dict(model.params), rng=np.random.default_rng(seed), method=method)


# =========================================================================== planted bugs

class SamplerExpLogVar(MoGPrior):
    """Planted bug (1): ``mu + exp(log_var) * eps`` (exp(log_var) used as the standard deviation)."""

    def _draw(self, means, log_vars, log_weights, n, rng):
        p = np.exp(log_weights)
        idx = rng.choice(means.shape[0], size=n, p=p / p.sum())
        return means[idx] + np.exp(log_vars[idx]) * rng.standard_normal((n, means.shape[1]))


class AggregatedSamplerExpLogVar(AggregatedPosterior):
    """Planted bug (1) in the aggregated posterior's sampler."""

    def _draw(self, means, log_vars, log_weights, n, rng):
        idx = rng.integers(0, means.shape[0], size=n)
        return means[idx] + np.exp(log_vars[idx]) * rng.standard_normal((n, means.shape[1]))


class PerDimensionMixture(MoGPrior):
    """Planted bug (2): logsumexp over components of per-dimension densities, then a sum over L
    (a product of 1-D mixtures: normalised, but not the mixture of SPEC section 4)."""

    def _log_density(self, z, means, log_vars, log_weights):
        t = (log_weights[:, None, None]
             - 0.5 * (LN_2PI + log_vars[:, None, :]
                      + (z[None] - means[:, None, :]) ** 2 * np.exp(-log_vars[:, None, :])))  # (K, B, L)
        mx = t.max(axis=0)
        return np.sum(mx + np.log(np.sum(np.exp(t - mx), axis=0)), axis=-1)


class MissingHalfLog2Pi(MoGPrior):
    """Planted bug (4): the mixture density without one -1/2 ln 2 pi term."""

    def _log_density(self, z, means, log_vars, log_weights):
        t = (log_weights[None, :]
             - 0.5 * np.sum(log_vars[None] + (z[:, None, :] - means[None]) ** 2 * np.exp(-log_vars[None]),
                            axis=-1) - 0.5 * (L - 1) * LN_2PI)
        mx = t.max(axis=1)
        return mx + np.log(np.sum(np.exp(t - mx[:, None]), axis=1))


def broken(cls, name="mog"):
    """The broken copy ``cls`` with the parameters of ``build(name)``."""
    return build(name, cls=cls)


# =========================================================================== tests: statistics

@pytest.mark.parametrize("name", NAMES)
def test_density_integrates_to_one(name):
    """L = 2: |integral - 1| <= 1e-6 (mixture_prior_normalisation); the quadrature error bound is
    in :func:`normalisation_error` (Poisson summation + Gaussian tails), ~1e-32."""
    prior, params = build(name)
    err = normalisation_error(prior, params)
    assert err <= tolerance("mixture_prior_normalisation").atol, f"{name}: |integral - 1| = {err:.3e}"
    assert err < 1e-12, f"{name}: |integral - 1| = {err:.3e} exceeds the rounding level"


@pytest.mark.parametrize("name", NAMES)
def test_samples_agree_with_density(name):
    """Chi-square test, n = 20000, seed 2024: false-failure probability 1e-6
    (``mixture_prior_chi_square``; asymptotic chi-square law with expected counts >= 20)."""
    prior, params = build(name)
    p = chi_square_pvalue(prior, params, seed=2024)
    assert p >= tolerance("mixture_prior_chi_square").alpha, f"{name}: chi-square p-value {p:.3e}"


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_equals_definition_in_mpmath(name):
    """log_prob at the component means, random points and far-tail points equals the mixture of
    L-dimensional Gaussians in mpmath (dps 50) within 32 u (|f| + S)."""
    prior, params = build(name)
    worst = mpmath_error(prior, params, query_points(prior, params))
    assert worst <= 1.0, f"{name}: error {worst:.2f} x the allowed 32 u (|f| + S)"


# =========================================================================== tests: planted bugs

def test_meta_sampler_with_exp_log_var_fails_the_chi_square_test():
    """Planted bug (1): the same chi-square check (seed 2024) must reject; density checks cannot see it."""
    prior, params = broken(SamplerExpLogVar)
    assert chi_square_pvalue(prior, params, seed=2024) < tolerance("mixture_prior_chi_square").alpha
    assert normalisation_error(prior, params) <= tolerance("mixture_prior_normalisation").atol
    assert mpmath_error(prior, params, query_points(prior, params)) <= 1.0
    agg, p2 = broken(AggregatedSamplerExpLogVar, "aggregated")
    assert chi_square_pvalue(agg, p2, seed=2024) < tolerance("mixture_prior_chi_square").alpha


def test_meta_per_dimension_mixture_fails_the_definition_check():
    """Planted bug (2): integrates to one (so normalisation passes), but mpmath must disagree."""
    prior, params = broken(PerDimensionMixture)
    assert normalisation_error(prior, params) <= tolerance("mixture_prior_normalisation").atol
    assert mpmath_error(prior, params, query_points(prior, params)) > 1.0


def test_meta_missing_half_log_2pi_fails_the_normalisation_check():
    """Planted bug (4): the density integrates to sqrt(2 pi); the normalisation check must fail."""
    prior, params = broken(MissingHalfLog2Pi)
    err = normalisation_error(prior, params)
    assert err > tolerance("mixture_prior_normalisation").atol
    assert abs(err - (math.sqrt(2 * math.pi) - 1)) < 1e-9


# =========================================================================== tests: gradients

@pytest.mark.parametrize("method", ["central", "richardson"])
@pytest.mark.parametrize("name", NAMES)
def test_standalone_gradients_every_input(name, method):
    """VJP of log p(z) w.r.t. z and every parameter the prior reads (for vamp/gtm_vamp including
    encoder.* through the prior), random directions, tolerances vjp_central_difference/richardson."""
    prior, params = build(name)
    z = np.random.default_rng(3).normal(scale=2.0, size=(5, L))
    report = standalone_report(prior, params, z, seed=4, method=method)
    assert report.passed, str(report)
    assert {e.name for e in report.entries} == {"z", *params}
    _, cache = prior.forward(params, z)
    _, grads = prior.backward(np.ones(5), cache)
    assert set(grads) == set(params) - {"z"}, "the gradient dict must have every key the prior reads"
    assert all(grads[k].shape == np.shape(params[k]) for k in grads)


def test_standalone_gradients_default_gtm_leaky_relu():
    """The defaults (g = 4, [-10, 10], hidden (256, 256), leaky_relu): central differences with a
    step small enough (1e-7 * scale) that no pre-activation crosses a kink (each is >= 1e-3 away)."""
    prior = GTMPrior(L)
    params = prior.init_params(np.random.default_rng(5))
    params["prior.logits"] = np.random.default_rng(6).normal(size=prior.K)
    z = np.random.default_rng(7).normal(size=(4, L))
    pre = [a for n, a in prior.forward(params, z)[1]["trace"] if n.endswith(".pre")][:-1]
    assert min(float(np.abs(a).min()) for a in pre) > 1e-3, "seed puts a pre-activation near a kink"
    report = standalone_report(prior, params, z, seed=8, step=1e-7)
    assert report.passed, str(report)


@pytest.mark.parametrize("name", ["vamp_learned", "mog", "gtm", "gtm_vamp"])
def test_learned_weights_gradient_by_the_complex_step(name):
    """d log p(z) / d prior.logits by the prior's hand VJP (responsibilities through log_softmax)
    against the complex-step derivative of the definition logsumexp_k [log_softmax(logits)_k +
    log N(z | mu_k, v_k)] (the kernel's NumPy twin and log_softmax evaluated on complex logits: no
    subtraction, agreement to rounding; tolerance ``complex_step``). The components are held fixed:
    only the weights' path is checked here (the other paths: the finite-difference tests above)."""
    from refvae.gradcheck import check_vjp_complex
    from refvae.primitives import log_softmax
    prior, params = build(name)
    z = np.random.default_rng(3).normal(scale=2.0, size=(5, L))
    means, log_vars, _ = prior.mixture_components(params)

    def f(a):
        return mixture_log_prob_numpy(z, means, log_vars, log_softmax(a["logits"]))

    def vjp(g, a):
        _, cache = prior.forward({**params, "prior.logits": a["logits"]}, z)
        return {"logits": prior.backward(g, cache)[1]["prior.logits"]}

    report = check_vjp_complex(f, vjp, {"logits": params["prior.logits"]}, rng=np.random.default_rng(4))
    assert report.passed, str(report)
    assert report.entries and report.entries[0].name == "logits"


def test_vamp_learned_weights_default_off_and_trained_through_the_vae(monkeypatch):
    """learn_weights=False (the default) has no prior.logits and samples with rng.integers (the
    golden cases' bits); learn_weights=True adds prior.logits (K,), zeros at init, and one Adamax
    step on a VAE moves them (their gradient reaches the optimiser)."""
    from refvae.optim import make_optimizer
    prior, _ = build("vamp")
    assert "prior.logits" not in prior.param_shapes and prior.config()["kwargs"]["learn_weights"] is False
    model = tiny_vae("vamp_learned", monkeypatch)
    model.params["prior.logits"][...] = 0.0
    assert model.prior.param_shapes["prior.logits"] == (3,)
    rng = np.random.default_rng(9)
    x, eps = rng.normal(size=(4, D)), rng.standard_normal((4, L))
    _, grads = model.neg_elbo_and_grad(x, eps)
    assert np.any(grads["prior.logits"] != 0) and abs(float(np.sum(grads["prior.logits"]))) < 1e-12
    make_optimizer("adamax", model.params, 1e-2).step(grads)
    assert np.any(model.params["prior.logits"] != 0)


def test_settings_read_the_companion_fields_of_a_profile():
    """The priors' settings(profile): defaults unchanged for a profile without the companion fields
    (no learn_weights key, the encoder's activation, data_range (0, num_vals - 1)); with them,
    learned VampPrior weights, the pseudo-input range and a separate GTM activation."""
    import dataclasses
    import types
    from refvae.priors.flow import FlowPrior
    from refvae.tools.profiles import PROFILES
    base = PROFILES["quick"]
    assert VampPrior.settings(base) == {"num_components": 16}
    assert GTMPrior.settings(base)["activation"] == base.activation == "leaky_relu"
    assert GTMVampPrior.settings(base)["data_range"] == (0.0, 16.0)
    assert "init" not in FlowPrior.settings(base)
    comp = types.SimpleNamespace(**{**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)},
                                    "vamp_learn_weights": True, "pseudo_input_range": (0.0, 17.0),
                                    "gtm_activation": "tanh", "flow_init": "random"})
    assert VampPrior.settings(comp) == {"num_components": 16, "learn_weights": True,
                                        "data_range": (0.0, 17.0)}
    assert GTMPrior.settings(comp)["activation"] == "tanh"
    assert GTMVampPrior.settings(comp)["activation"] == "tanh"
    assert GTMVampPrior.settings(comp)["data_range"] == (0.0, 17.0)
    assert FlowPrior.settings(comp)["init"] == "random"
    assert FlowPrior.settings(comp)["activation"] == "leaky_relu"   # the companion's s/t nets


def _registered(monkeypatch):
    for cls in CLASSES.values():
        monkeypatch.setitem(refvae.priors.PRIORS, cls.name, cls)


def tiny_vae(name, monkeypatch, seed=0):
    """D = 6, L = 2, hidden (7, 5), tanh, Gaussian likelihood, K = 3 (gtm family: g = 2, K = 4)."""
    _registered(monkeypatch)
    rng = np.random.default_rng(seed)
    kwargs = {"mog": ("mog", {"num_components": 3}),
              "vamp": ("vamp", {"num_components": 3, "data_range": [-2.0, 2.0]}),
              "vamp_learned": ("vamp", {"num_components": 3, "data_range": [-2.0, 2.0],
                                        "learn_weights": True}),
              "gtm": ("gtm", {"grid_size": 2, "hidden": [8], "activation": ACT, "u_min": -1.0, "u_max": 1.0}),
              "gtm_vamp": ("gtm_vamp", {"grid_size": 2, "hidden": [8], "activation": ACT,
                                        "data_range": [-2.0, 2.0]})}
    if name == "aggregated":
        agg, _ = build("aggregated", N=3)
        model = VAE(D, L, HIDDEN, ACT, "gaussian", prior=agg, rng=rng)
    else:
        pname, kw = kwargs[name]
        model = VAE(D, L, HIDDEN, ACT, "gaussian", prior=pname, prior_kwargs=kw, rng=rng)
    for k in model.params:  # non-trivial prior parameters (logits away from uniform)
        if k == "prior.logits":
            model.params[k][...] = rng.normal(size=model.params[k].shape)
    return model


@pytest.mark.parametrize("method", ["central", "richardson"])
@pytest.mark.parametrize("name", NAMES)
def test_neg_elbo_gradient_every_parameter(name, method, monkeypatch):
    """Inside VAE.neg_elbo_and_grad, w.r.t. every parameter of the model (prior.* included)."""
    model = tiny_vae(name, monkeypatch)
    rng = np.random.default_rng(9)
    x, eps = rng.normal(size=(4, D)), rng.standard_normal((4, L))
    report = loss_report(model, x, eps, seed=10, method=method)
    assert report.passed, str(report)
    assert {e.name for e in report.entries} == set(model.params)
    assert set(model.prior.param_shapes) <= set(model.params)


class FrozenEncoder:
    """The encoder with its parameters frozen at a copy: the prior path's encoder gradient is cut,
    the pseudo-input gradient still flows."""

    def __init__(self, encoder, params):
        self.encoder, self.latent_dim, self.x_dim = encoder, encoder.latent_dim, encoder.x_dim
        self.frozen = {k: v.copy() for k, v in params.items() if k.startswith("encoder.")}

    def forward(self, params, x):
        return self.encoder.forward({**params, **self.frozen}, x)

    def backward(self, dmu, dlog_var, cache):
        return self.encoder.backward(dmu, dlog_var, cache)[0], {}


@pytest.mark.parametrize("name", ["vamp", "vamp_learned", "gtm_vamp"])
def test_encoder_gradient_is_the_sum_of_the_posterior_and_prior_paths(name, monkeypatch):
    """encoder.* gradient of the VAE = (q(z|x) path: the same VAE with the prior's encoder frozen)
    + (prior path: prior.backward at z held fixed). Each path is checked by finite differences on
    its own, and their sum against the full gradient (``mixture_prior_path_sum``)."""
    model = tiny_vae(name, monkeypatch)
    rng = np.random.default_rng(11)
    x, eps = rng.normal(size=(4, D)), rng.standard_normal((4, L))
    _, full = model.neg_elbo_and_grad(x, eps)
    enc_keys = [k for k in model.params if k.startswith("encoder.")]

    # prior path: -mean_b log p(z_b) with z fixed, as a function of the encoder's parameters
    cache = model.forward(x, eps)
    z = cache.z
    _, prior_grads = model.prior.backward(np.full(4, -0.25), cache.prior)

    def f_prior(p):
        return -np.mean(model.prior.forward({**model.params, **p}, z)[0])

    def vjp_prior(g, p):
        return {k: g * prior_grads[k] for k in p}

    rep = check_vjp(f_prior, vjp_prior, {k: model.params[k] for k in enc_keys},
                    rng=np.random.default_rng(12), method="richardson")
    assert rep.passed, "prior path\n" + str(rep)

    # q(z|x) path: the same model with the prior's encoder frozen (pseudo-inputs still move)
    kw = model.prior.config()["kwargs"]
    cls = type(model.prior)
    q_prior = cls(L, **{k: v for k, v in kw.items()}, encoder=FrozenEncoder(model.encoder, model.params),
                  x_dim=D)
    q_model = VAE(D, L, HIDDEN, ACT, "gaussian", prior=q_prior, rng=np.random.default_rng(0))
    q_model.params.update({k: v.copy() for k, v in model.params.items()})
    rep = loss_report(q_model, x, eps, seed=13, method="richardson")
    assert rep.passed, "q path\n" + str(rep)
    _, q_grads = q_model.neg_elbo_and_grad(x, eps)

    tol = tolerance("mixture_prior_path_sum")
    for k in enc_keys:
        both = q_grads[k] + prior_grads[k]
        assert np.all(tol.check(full[k], both)), f"{k}: max |diff| {np.max(np.abs(full[k] - both)):.3e}"
        assert np.max(np.abs(prior_grads[k])) > 1e-3 * np.max(np.abs(full[k])), f"{k}: no prior path?"
    for k in model.params:
        if not k.startswith("encoder."):
            assert np.all(tol.check(full[k], q_grads[k])), k


# =========================================================================== tests: behaviour

@given(mog_parameters())
@example((1, {"prior.means": np.zeros((1, 1)), "prior.log_vars": np.zeros((1, 1)),
              "prior.logits": np.zeros(1)}))
@example((2, {"prior.means": np.array([[0.0, 0.0], [50.0, -50.0]]),
              "prior.log_vars": np.array([[-8.0, -8.0], [8.0, 8.0]]),
              "prior.logits": np.array([0.0, -800.0])}))
@settings(max_examples=30)
def test_mog_matches_numpy_twin_and_trace(case):
    """log_prob = the NumPy twin of the kernel with log_softmax weights (mixture_vs_twin), the
    trace's component matrix reproduces it, and gradients are finite (weights down to e^-800)."""
    Ld, params = case
    K = params["prior.logits"].shape[0]
    prior = MoGPrior(Ld, K)
    z = np.random.default_rng(0).normal(scale=3.0, size=(4, Ld))
    log_p, cache = prior.forward(params, z)
    _, _, log_w = prior.mixture_components(params)
    twin = mixture_log_prob_numpy(z, params["prior.means"], params["prior.log_vars"], log_w)
    tol = tolerance("mixture_vs_twin")
    scale = np.abs(twin) + 100.0
    assert np.all(np.abs(log_p - twin) <= tol.atol + tol.rtol * scale)
    tr = dict(cache["trace"])
    comp = tr["prior.component_log_prob"]
    assert comp.shape == (4, K)
    ref = gaussian.log_prob(z[:, None, :], params["prior.means"][None], params["prior.log_vars"][None])
    assert np.allclose(comp, ref, rtol=1e-13, atol=1e-13)
    dz, grads = prior.backward(np.ones(4), cache)
    assert np.all(np.isfinite(dz)) and all(np.all(np.isfinite(g)) for g in grads.values())


@pytest.mark.parametrize("name", NAMES)
def test_trace_names_order_and_consistency(name):
    """Trace: prior.* names, data-flow order (components, log-weights, component matrix, log_p),
    and log_p = logsumexp_k(log_weights_k + component_log_prob_bk). The aggregated posterior
    leaves the (B, N) matrix out by default (N is a data set's size); it is asked for here."""
    prior, params = build(name, **({"component_trace_limit": 4096} if name == "aggregated" else {}))
    z = np.random.default_rng(14).normal(size=(5, L))
    log_p, cache = prior.forward(params, z)
    names = [n for n, _ in cache["trace"]]
    assert all(n.startswith("prior.") for n in names), names
    order = ["prior.means", "prior.log_vars", "prior.log_weights", "prior.component_log_prob", "prior.log_p"]
    assert [n for n in names if n in order] == order
    assert names[-1] == "prior.log_p"
    if name in ("vamp", "vamp_learned", "gtm_vamp"):
        assert "prior.encoder.0.pre" in names
        assert names.index("prior.pseudo_inputs") < names.index("prior.encoder.0.pre")
    if name in ("gtm", "gtm_vamp"):
        assert names[:2] == ["prior.grid", "prior.gtm.0.pre"]
    if "prior.logits" in names:
        assert names.index("prior.logits") == names.index("prior.log_weights") - 1
    tr = dict(cache["trace"])
    t = tr["prior.log_weights"][None, :] + tr["prior.component_log_prob"]
    mx = t.max(axis=1)
    assert np.allclose(mx + np.log(np.exp(t - mx[:, None]).sum(axis=1)), log_p, rtol=1e-13, atol=1e-13)
    assert np.array_equal(tr["prior.log_p"], log_p)


def test_component_trace_limit():
    """The (B, K) component matrix is left out of the trace when K > component_trace_limit."""
    prior, params = build("mog", component_trace_limit=2)
    names = [n for n, _ in prior.forward(params, np.zeros((2, L)))[1]["trace"]]
    assert "prior.component_log_prob" not in names and names[-1] == "prior.log_p"


def test_vamp_defaults_init_and_needs():
    """Defaults K = 16, uniform weights (no logits), pseudo-inputs U(0, 16); init_data copies points;
    the VAE hands the encoder over through ``needs``."""
    enc = Encoder(D, L, HIDDEN, ACT)
    prior = VampPrior(L, encoder=enc, x_dim=D)
    assert prior.K == 16 and VampPrior.needs == ("encoder", "x_dim") == GTMVampPrior.needs
    assert prior.param_shapes == {"prior.pseudo_inputs": (16, D)}
    u = prior.init_params(np.random.default_rng(0))["prior.pseudo_inputs"]
    assert u.min() >= 0.0 and u.max() <= 16.0 and u.max() > 12.0
    pts = np.arange(3 * D, dtype=float).reshape(3, D)
    p2 = VampPrior(L, 3, encoder=enc, init_data=pts)
    assert p2.init == "data"
    assert np.array_equal(p2.init_params(np.random.default_rng(0))["prior.pseudo_inputs"], pts)
    gtm = GTMPrior(L)
    assert gtm.K == 16 and gtm.activation == "leaky_relu" and gtm.param_shapes["prior.gtm.0.W"] == (2, 256)
    assert np.array_equal(gtm_grid(2, -10, 10), [[-10, -10], [-10, 10], [10, -10], [10, 10]])
    mog = MoGPrior(L)
    p = mog.init_params(np.random.default_rng(0))
    assert mog.K == 16 and not p["prior.log_vars"].any() and not p["prior.logits"].any()


@pytest.mark.parametrize("name", ["mog", "vamp", "gtm", "gtm_vamp"])
def test_config_round_trip_through_the_vae(name, monkeypatch):
    """config() is JSON-able and VAE.from_config rebuilds a model with the same parameter shapes
    and the same log p(z) once the parameters are copied."""
    model = tiny_vae(name, monkeypatch)
    cfg = json.loads(json.dumps(model.config()))
    clone = VAE.from_config(cfg, rng=np.random.default_rng(1))
    assert {k: v.shape for k, v in clone.params.items()} == {k: v.shape for k, v in model.params.items()}
    clone.params.update(model.params)
    z = np.random.default_rng(2).normal(size=(3, L))
    assert np.array_equal(clone.prior.log_prob(z), model.prior.log_prob(z))


def test_sample_draw_order_is_reproducible():
    """Same seed, same samples; samples have shape (n, L)."""
    prior, params = build("vamp_learned")
    a = prior.sample(params, 7, np.random.default_rng(3))
    b = prior.sample(params, 7, np.random.default_rng(3))
    assert a.shape == (7, L) and np.array_equal(a, b)


# =========================================================================== aggregated posterior

def test_aggregated_from_model_matches_encoder_and_chunking():
    """from_model(batch_size=...) holds the encoder's (mu, log_var) of every row, for any chunking."""
    rng = np.random.default_rng(15)
    model = VAE(D, L, HIDDEN, ACT, "gaussian", rng=rng)
    x = rng.normal(size=(37, D))
    mu, lv = model.encode(x)
    for bs in (1, 5, 37, 1000):
        agg = AggregatedPosterior.from_model(model, x, batch_size=bs)
        assert agg.param_shapes == {} and agg.K == 37
        assert np.allclose(agg.means, mu, rtol=1e-14, atol=1e-14)
        assert np.allclose(agg.log_vars, lv, rtol=1e-14, atol=1e-14)
    z = rng.normal(size=(4, L))
    direct = AggregatedPosterior(L, means=mu, log_vars=lv)
    assert np.allclose(agg.log_prob(z), direct.log_prob(z), rtol=1e-14, atol=1e-14)
    dz, grads = direct.log_prob_vjp(np.ones(4), z)
    assert grads == {} and dz.shape == (4, L)


def test_aggregated_large_n_streams():
    """N = 10^5 components: agrees with the NumPy twin (mixture_vs_twin), no (B, N) matrix in the
    trace, dz finite; a few seconds at most."""
    rng = np.random.default_rng(16)
    N = 100_000
    agg = AggregatedPosterior(L, means=rng.normal(scale=3.0, size=(N, L)),
                              log_vars=rng.uniform(-2.0, 1.0, size=(N, L)))
    z = rng.normal(scale=3.0, size=(16, L))
    t0 = time.perf_counter()
    log_p, cache = agg.forward({}, z)
    dz, grads = agg.backward(np.ones(16), cache)
    elapsed = time.perf_counter() - t0
    twin = mixture_log_prob_numpy(z, agg.means, agg.log_vars)
    tol = tolerance("mixture_vs_twin")
    assert np.all(np.abs(log_p - twin) <= tol.atol + tol.rtol * (np.abs(twin) + 100.0))
    assert "prior.component_log_prob" not in dict(cache["trace"])
    assert grads == {} and np.all(np.isfinite(dz))
    assert elapsed < 30.0, f"forward + backward took {elapsed:.1f} s"


@pytest.mark.slow
def test_aggregated_million_components():
    """N = 10^6: forward and dz still work in O(B + N L) memory."""
    rng = np.random.default_rng(17)
    N = 1_000_000
    agg = AggregatedPosterior(L, means=rng.normal(scale=3.0, size=(N, L)),
                              log_vars=rng.uniform(-2.0, 1.0, size=(N, L)))
    z = rng.normal(size=(64, L))
    log_p, cache = agg.forward({}, z)
    dz, _ = agg.backward(np.ones(64), cache)
    assert np.all(np.isfinite(log_p)) and np.all(np.isfinite(dz))
    assert agg.sample(None, 10, rng).shape == (10, L)


# =========================================================================== bad input

def test_bad_input_raises_value_error_naming_the_argument():
    prior, params = build("mog")
    prior.bind(params)
    with pytest.raises(ValueError, match="z"):
        prior.log_prob(np.zeros((3, L + 1)))
    with pytest.raises(ValueError, match="z"):
        prior.forward(params, np.zeros(L))
    with pytest.raises(ValueError, match="z"):
        prior.log_prob(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="num_components"):
        MoGPrior(L, 0)
    with pytest.raises(ValueError, match="grid_size"):
        GTMPrior(L, 0)
    enc = Encoder(D, L, HIDDEN, ACT)
    with pytest.raises(ValueError, match="num_components"):
        VampPrior(L, 0, encoder=enc)
    with pytest.raises(ValueError, match="init"):
        VampPrior(L, 3, encoder=enc, init="kmeans")
    with pytest.raises(ValueError, match="init_data"):
        VampPrior(L, 3, encoder=enc, init="data")
    with pytest.raises(ValueError, match="init_data"):
        VampPrior(L, 3, encoder=enc, init_data=np.zeros((2, D)))
    with pytest.raises(ValueError, match="encoder"):
        VampPrior(L, 3)
    with pytest.raises(ValueError, match="data_range"):
        VampPrior(L, 3, encoder=enc, data_range=(1.0, 1.0))
    with pytest.raises(ValueError, match="x_dim"):
        GTMVampPrior(L, 2, encoder=enc, x_dim=D + 1)
    with pytest.raises(ValueError, match="u_min"):
        GTMPrior(L, 2, u_min=1.0, u_max=-1.0)
    with pytest.raises(ValueError, match="activation"):
        GTMPrior(L, 2, activation="gelu")
    with pytest.raises(ValueError, match="means"):
        AggregatedPosterior(L)
    with pytest.raises(ValueError, match="means"):
        AggregatedPosterior(L, means=np.zeros((0, L)), log_vars=np.zeros((0, L)))
    with pytest.raises(ValueError, match="log_vars"):
        AggregatedPosterior(L, means=np.zeros((3, L)), log_vars=np.full((3, L), np.nan))
    with pytest.raises(ValueError, match="prior.logits"):
        prior.forward({**params, "prior.logits": np.zeros(5)}, np.zeros((1, L)))
    with pytest.raises(ValueError, match="prior.means"):
        prior.forward({k: v for k, v in params.items() if k != "prior.means"}, np.zeros((1, L)))
    with pytest.raises(ValueError, match="g"):
        prior.backward(np.ones(4), prior.forward(params, np.zeros((2, L)))[1])
    with pytest.raises(ValueError, match="batch_size"):
        AggregatedPosterior.from_model(VAE(D, L, HIDDEN, ACT, "gaussian", rng=np.random.default_rng(0)),
                                       np.zeros((3, D)), batch_size=0)


# =========================================================================== PyTorch twin

@pytest.mark.torch
@pytest.mark.parametrize("name", NAMES)
def test_same_prior_in_pytorch_float64(name):
    """Two engines: log p(z) and its gradients w.r.t. z and every parameter, refvae vs PyTorch
    float64 autograd (explicit (B, K) terms and torch.logsumexp) - ``mixture_prior_vs_torch``."""
    torch = pytest.importorskip("torch", reason="PyTorch not installed (extra 'torch')")
    prior, params = build(name)
    z = np.random.default_rng(18).normal(scale=2.0, size=(5, L))
    g = np.random.default_rng(19).normal(size=5)
    log_p, cache = prior.forward(params, z)
    dz, grads = prior.backward(g, cache)

    T = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    tz = torch.tensor(z, requires_grad=True)

    def mlp(prefix, x, act, out=None):
        n = len([k for k in T if k.startswith(prefix + ".") and k.endswith(".W")])
        f = {"tanh": torch.tanh, "leaky_relu": lambda a: torch.nn.functional.leaky_relu(a, 0.01)}[act]
        for i in range(n):
            x = x @ T[f"{prefix}.{i}.W"] + T[f"{prefix}.{i}.b"]
            if i < n - 1:
                x = f(x)
        return torch.sigmoid(x) if out == "sigmoid" else x

    logits = T.get("prior.logits")
    if isinstance(prior, MoGPrior):
        mu, lv = T["prior.means"], T["prior.log_vars"]
    elif isinstance(prior, AggregatedPosterior):
        mu, lv = torch.tensor(prior.means), torch.tensor(prior.log_vars)
    elif isinstance(prior, GTMPrior):
        h = mlp("prior.gtm", torch.tensor(prior.grid), prior.activation)
        mu, lv = h[:, :L], h[:, L:]
    else:
        if isinstance(prior, GTMVampPrior):
            lo, hi = prior.data_range
            u = lo + (hi - lo) * mlp("prior.gtm", torch.tensor(prior.grid), prior.activation, "sigmoid")
        else:
            u = T["prior.pseudo_inputs"]
        h = mlp("encoder", u, ACT)
        mu, lv = h[:, :L], h[:, L:]
    K = mu.shape[0]
    logw = (torch.log_softmax(logits, 0) if logits is not None
            else torch.full((K,), -math.log(K), dtype=torch.float64))
    quad = (tz[:, None] - mu[None]) ** 2 * torch.exp(-lv[None])
    t = logw[None] - 0.5 * (LN_2PI + lv[None] + quad).sum(-1)
    out = torch.logsumexp(t, 1)
    (out * torch.tensor(g)).sum().backward()
    tol = tolerance("mixture_prior_vs_torch")
    assert np.all(tol.check(log_p, out.detach().numpy()))
    assert np.all(tol.check(dz, tz.grad.numpy())), np.max(np.abs(dz - tz.grad.numpy()))
    for k, v in T.items():
        ref = v.grad.numpy() if v.grad is not None else np.zeros(v.shape)
        assert np.all(tol.check(grads[k], ref)), f"{k}: max |diff| {np.max(np.abs(grads[k] - ref)):.3e}"


def test_component_log_densities_helper():
    """The trace helper equals gaussian.log_prob broadcast over (B, K)."""
    rng = np.random.default_rng(20)
    z, m, v = rng.normal(size=(3, 4)), rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    assert np.allclose(component_log_densities(z, m, v), gaussian.log_prob(z[:, None], m[None], v[None]),
                       rtol=1e-14, atol=1e-14)
    assert U == 2.0 ** -53
