r"""Generation: build one golden case in memory (:func:`build_case`) and its manifest."""

from __future__ import annotations

import numpy as np

from ..._validation import check_positive_int
from ...priors import PRIORS
from ...tolerances import tolerance
from .case import (ACTIVATION, ARRAYS_FILE, CASE_LIKELIHOODS, CONFIDENT_LOGIT, DATA_RANGE,
                   DEFAULT_SEED, FORMAT, FORMAT_VERSION, KINK_MARGIN, N_PROBES, NLL_SAMPLES,
                   PROBE_STEP, PROFILE_ROUNDOFF, SIZES, GoldenCase, _case_priors, case_name)
from .conventions import _case_conventions
from .kinks import _clear_kinks, _min_kink_distance
from .quadrature import _quadrature_nll
from .reference import _draws
from .scales import _cancellation_terms, _condition_scales

__all__ = ["build_case"]


def build_case(prior, likelihood, seed=DEFAULT_SEED, kl="mc", confident=False) -> GoldenCase:
    """Build one golden case in memory (deterministic given ``seed``).

    ``prior`` is a name in :data:`refvae.priors.PRIORS` (a prior registered from outside refvae
    too), ``likelihood`` one of :data:`CASE_LIKELIHOODS`. Generators: ``default_rng([seed, i, j])``
    for the model, data and draws (i, j the positions of ``prior`` in the registry and of
    ``likelihood`` in :data:`CASE_LIKELIHOODS`), ``default_rng([seed, i, j, 1])`` for the condition
    probes and ``[seed, i, j, 2]`` for the reference NLL.

    ``kl="analytic"`` (standard prior only) builds the same model, data and draws with the VAE's
    closed-form KL (``VAE(kl="analytic")``: ``kl = KL[q(z|x) || N(0, I)]``, ``neg_elbo =
    -(log_px_z - kl)``; ``log_pz`` and ``log_qz_x`` stay in the trace). ``confident=True``
    (categorical and Bernoulli) adds :data:`CONFIDENT_LOGIT` to the decoder's output bias (Bernoulli:
    +20 on even pixels, -20 on odd ones; categorical: +20 on category d mod C of pixel d), so that
    every decoder probability is within ~1e-7 of 0 or 1, and the data disagree with some of them
    (log-probabilities near -20): a probability clamp (which SPEC forbids) changes ``log_px_z``.
    The name carries the variant (:func:`case_name`).
    """
    from ...estimators import log_likelihood
    from ..provenance import provenance
    name = case_name(prior, likelihood, kl, confident)
    seed = check_positive_int(seed, "seed", minimum=0)
    ip, il = _case_priors().index(prior), CASE_LIKELIHOODS.index(likelihood)
    rng = np.random.default_rng([seed, ip, il])
    model, x, eps, draws = _model_and_draws(prior, likelihood, rng, kl)
    if confident:
        _make_confident(model, likelihood)
    shifts = _clear_kinks(model, x, eps)
    values, scales = _condition_scales(model, x, eps, draws, np.random.default_rng([seed, ip, il, 1]),
                                       perturb_x=likelihood == "gaussian")
    for k, m in _cancellation_terms(values).items():
        scales[k] = scales[k] + m
    ll = log_likelihood(model, x, np.random.default_rng([seed, ip, il, 2]), n_samples=NLL_SAMPLES)
    references = {"nll": _quadrature_nll(model, x), "neg_elbo_expectation": -ll["elbo"],
                  "nll_is": -ll["log_px"], "nll_is_se": ll["se"], "nll_is_ess": ll["ess"]}
    config = dict(model.config())
    config["batch_size"] = SIZES["batch_size"]
    manifest = _manifest(name, config, model, x, eps, draws, values, seed, (ip, il), shifts,
                         provenance())
    if confident:
        manifest["description"] += (f"; confident: decoder output bias +-{CONFIDENT_LOGIT:g}, every "
                                    "decoder probability within 1e-7 of 0 or 1")
    return GoldenCase(name, config, {k: v.copy() for k, v in model.params.items()}, x, eps, draws,
                      values, scales, references, manifest)


def _make_confident(model, likelihood):
    """Add :data:`CONFIDENT_LOGIT` to the decoder's output bias (docstring of :func:`build_case`)."""
    from ...vae import VAE  # noqa: F401 - the model's layout: decoder.<last>.b
    n = sum(1 for k in model.params if k.startswith("decoder.") and k.endswith(".W"))
    b = model.params[f"decoder.{n - 1}.b"]
    D = SIZES["x_dim"]
    if likelihood == "bernoulli":
        b += CONFIDENT_LOGIT * np.where(np.arange(D) % 2 == 0, 1.0, -1.0)
    else:
        C = SIZES["num_vals"]
        for d in range(D):
            b[d * C + d % C] += CONFIDENT_LOGIT


def _model_and_draws(prior, likelihood, rng, kl="mc"):
    """The case's model (refvae's initialisers, then the changes that make every convention
    visible: module docstring of :mod:`refvae.tools.golden`), data batch, eps and prior-sample
    draws, all from ``rng`` in this order."""
    from ...vae import VAE
    S = SIZES
    D, L, B, C = S["x_dim"], S["latent_dim"], S["batch_size"], S["num_vals"]
    model = VAE(D, L, S["hidden"], ACTIVATION, likelihood, C, prior, rng=rng,
                prior_kwargs=_case_config(prior, likelihood), decoder_log_var="learned", kl=kl)
    p = model.params
    p[f"encoder.{len(S['hidden'])}.b"][L:] += 1.0
    if likelihood == "gaussian":
        p["decoder.log_var"][:] = rng.uniform(-1.0, 0.5, size=D)
    model.prior.randomize_params(p, rng)
    x = _draw_data(likelihood, rng, B, D, C)
    eps = rng.standard_normal((B, L))
    draws = _draws(model.prior.draw_noise(S["prior_sample_n"], rng))
    return model, x, eps, draws


def _case_config(prior, likelihood):
    """The prior's constructor options in a case: its ``tiny_settings``."""
    return PRIORS[prior].tiny_settings(ACTIVATION, DATA_RANGE[likelihood])


def _draw_data(likelihood, rng, B, D, C):
    if likelihood == "categorical":
        return rng.integers(0, C, size=(B, D)).astype(np.float64)
    if likelihood == "bernoulli":
        return rng.integers(0, 2, size=(B, D)).astype(np.float64)
    return rng.standard_normal((B, D))


def _manifest(name, config, model, x, eps, draws, values, seed, idx, shifts, prov):
    ip, il = idx
    trace_names = [n for n in values if n != "loss" and not n.startswith(("grad.", "prior_sample."))]
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "name": name,
        "description": (f"refvae golden case: prior {config['prior']}, likelihood "
                        f"{config['likelihood']}, D = {config['x_dim']}, L = {config['latent_dim']}, "
                        f"hidden {tuple(config['hidden'])}, batch {config['batch_size']}"),
        "config": config,
        "conventions": _case_conventions(type(model.prior)),
        "kink_margin": KINK_MARGIN,
        "kink_margin_observed": _min_kink_distance(values),
        "kink_bias_shifts": shifts,
        "arrays": {"file": ARRAYS_FILE, "read_with": "numpy.load(path, allow_pickle=False)",
                   "prefixes": {"param.": "parameters (SPEC names)", "input.": "x and eps",
                                "draw.": "other random draws", "value.": "quantities, see order",
                                "scales": "condition scales S_q of all quantities (float32), "
                                          "ravelled and concatenated in the order below",
                                "reference.": "nll (exact, quadrature), nll_is, nll_is_se, "
                                              "nll_is_ess (importance sampling), "
                                              "neg_elbo_expectation (Monte Carlo)"}},
        "parameters": {k: list(v.shape) for k, v in model.params.items()},
        "inputs": {"x": list(x.shape), "eps": list(eps.shape)},
        "draws": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in draws.items()},
        "order": [{"name": k, "shape": list(np.shape(v)),
                   "group": ("trace" if k in trace_names else "loss" if k == "loss"
                             else "gradient" if k.startswith("grad.") else "prior_sample")}
                  for k, v in values.items()],
        "references": {
            "nll": "exact -ln p(x) per example: trapezoid rule for int p(x|z) p(z) dz over the "
                   "prior's box, converged to 1e-4 nats (refvae.tools.golden._quadrature_nll)",
            "nll_is": f"refvae.estimators.log_likelihood with {NLL_SAMPLES} proposals from q(z|x); "
                      "nll_is_se its standard error, nll_is_ess its effective sample size",
            "neg_elbo_expectation": f"E_q[neg_elbo], the mean over the same {NLL_SAMPLES} draws"},
        "tolerances": {
            "formula": "|actual - expected| <= c * u * (scale + |expected|) + tiny, per element",
            "c": tolerance("verify_golden").c,
            "c_reason": tolerance("verify_golden").reason,
            "unit_roundoff": {"float64": PROFILE_ROUNDOFF["float64"],
                              "float32": PROFILE_ROUNDOFF["float32"]},
            "tiny": {"float64": float(np.finfo(np.float64).tiny),
                     "float32": float(np.finfo(np.float32).tiny)},
            "scale": (f"S_q = RMS over {N_PROBES} random-sign probes r of J_q (theta * r), "
                      f"theta = every input (parameters, eps, prior-sample draws, x if Gaussian), "
                      f"by central differences with relative step {PROBE_STEP}"),
            "regeneration": {"c": tolerance("golden_regeneration").c,
                             "reason": tolerance("golden_regeneration").reason},
        },
        "provenance": {**prov, "seed": seed,
                       "rng": {"model_data_draws": f"numpy.random.default_rng([{seed}, {ip}, {il}])",
                               "condition_probes": f"numpy.random.default_rng([{seed}, {ip}, {il}, 1])",
                               "reference_nll": f"numpy.random.default_rng([{seed}, {ip}, {il}, 2])"},
                       "generated_by": "refvae.tools.golden.write_case"},
    }

