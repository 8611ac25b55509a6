r"""The condition scale S_q of every element of every quantity, and the cancellation terms M_q
(module docstring of :mod:`refvae.tools.golden`, *Tolerances*)."""

from __future__ import annotations

import numpy as np

from .case import N_PROBES, PROBE_STEP
from .reference import reference_outputs


def _condition_scales(model, x, eps, draws, rng, perturb_x):
    """S_q for every quantity by random-sign probes (module docstring, *Tolerances*)."""
    p0 = model.params
    base = reference_outputs(model, x, eps, draws, p0)
    acc = {k: np.zeros_like(v) for k, v in base.items()}
    h = PROBE_STEP
    for _ in range(N_PROBES):
        rp = {k: rng.choice([-1.0, 1.0], size=v.shape) for k, v in p0.items()}
        re = rng.choice([-1.0, 1.0], size=eps.shape)
        rx = rng.choice([-1.0, 1.0], size=x.shape) if perturb_x else np.zeros_like(x)
        rd = rng.choice([-1.0, 1.0], size=draws["prior_sample.eps"].shape)
        outs = []
        for sgn in (1.0, -1.0):
            p = {k: v * (1 + sgn * h * rp[k]) for k, v in p0.items()}
            d = dict(draws)
            d["prior_sample.eps"] = draws["prior_sample.eps"] * (1 + sgn * h * rd)
            outs.append(reference_outputs(model, x * (1 + sgn * h * rx), eps * (1 + sgn * h * re), d, p))
        for k in acc:
            acc[k] += ((outs[0][k] - outs[1][k]) / (2 * h)) ** 2
    return base, {k: np.sqrt(v / N_PROBES) for k, v in acc.items()}


def _cancellation_terms(values):
    """M_q for the quantities whose last operation subtracts separately rounded parts that an
    identity ties together (module docstring, *Tolerances*); {} entries are added to S_q."""
    v = values
    parts = np.abs(v["log_qz_x"]) + np.abs(v["log_pz"])
    out = {"kl": parts, "neg_elbo": parts + np.abs(v["log_px_z"])}
    out["loss"] = np.array(float(np.mean(out["neg_elbo"])))
    if "grad.prior.logits" in v and "prior.component_log_prob" in v:
        # d loss / d logits_k = mean_b (pi_k - r_bk): responsibilities and weights of size ~1/K
        # cancel to a small difference; each is computed from exp() of a sum of log-terms
        log_w = v["prior.log_weights"]
        r = np.exp(log_w[None] + v["prior.component_log_prob"] - v["prior.log_p"][:, None])
        out["grad.prior.logits"] = np.mean(r + np.exp(log_w)[None], axis=0)
    return out

