r"""Prior-only adapters: the quantities a prior alone is compared on, and the check of its gradient.

A *prior-only* adapter has no ``run``; it has any of ``prior_log_prob(config, params, z)``,
``prior_sample(config, params, n, seed)``, ``prior_sample_from(config, params, noise)``,
``prior_trace(config, params, z) -> dict`` (``prior.*`` intermediates) and
``prior_log_prob_grad(config, params, z) -> {"z": (n, L), "<param>": the parameter's shape}``
(the gradient of ``sum(log_prob)``). It is compared with the golden values of ``log_pz``,
``prior.log_p``, the ``prior.*`` intermediates and ``prior_sample.z`` at the case's golden z and
draws (:func:`prior_quantities`), and runs the prior checks (normalisation, sampler, mixture) and
:func:`check_prior_gradient`.
"""

from __future__ import annotations

import numpy as np

from .. import golden as _golden
from .adapters import _check_args, _prior_inputs
from .comparison import _as_array, _c, _conform, _u
from .results import CheckResult

__all__ = ["prior_quantities", "check_prior_gradient"]


def prior_quantities(case):
    """The quantities of ``case`` a prior-only adapter is compared on, in data-flow order:
    ``prior.*`` (the prior's intermediates), ``log_pz`` and ``prior_sample.z``."""
    from .adapters import _check_case
    _check_case(case)
    return [n for n in case.order if n.startswith("prior.") or n in ("log_pz", "prior_sample.z")]


def _reference_gradient(model, z, names):
    """refvae's ``d sum_b log p(z_b) / d(z, params)`` restricted to ``names`` (plus ``z``)."""
    log_p, cache = model.prior.forward(model.params, z)
    dz, grads = model.prior.backward(np.ones_like(log_p), cache)
    out = {"z": np.asarray(dz, np.float64)}
    for k in names:
        out[k] = np.asarray(grads.get(k, np.zeros_like(model.params[k])), np.float64)
    return out, cache


def _gradient_scales(case, names, rng):
    """The condition scale of refvae's prior gradient (module :mod:`refvae.tools.golden`,
    *Tolerances*: RMS over random-sign relative probes of every parameter and of z, central
    differences), plus the cancellation term of ``prior.logits`` (softmax weights minus
    responsibilities: ``sum_b (r_bk + pi_k)``). Returns ``(reference, scales)``."""
    model = case.model()
    z0 = np.array(case.values["z"], dtype=np.float64)
    p0 = {k: v.copy() for k, v in model.params.items()}
    ref, cache = _reference_gradient(model, z0, names)
    acc = {k: np.zeros_like(v) for k, v in ref.items()}
    h = _golden.PROBE_STEP
    for _ in range(_golden.N_PROBES):
        rp = {k: rng.choice([-1.0, 1.0], size=v.shape) for k, v in p0.items()}
        rz = rng.choice([-1.0, 1.0], size=z0.shape)
        outs = []
        for sgn in (1.0, -1.0):
            for k, v in p0.items():
                model.params[k] = v * (1 + sgn * h * rp[k])
            outs.append(_reference_gradient(model, z0 * (1 + sgn * h * rz), names)[0])
        for k in acc:
            acc[k] += ((outs[0][k] - outs[1][k]) / (2 * h)) ** 2
    for k, v in p0.items():
        model.params[k] = v
    scales = {k: np.sqrt(v / _golden.N_PROBES) for k, v in acc.items()}
    trace = dict(cache.get("trace", [])) if isinstance(cache, dict) else {}
    if "prior.logits" in scales and {"prior.log_weights", "prior.component_log_prob",
                                     "prior.log_p"} <= set(trace):
        lw = trace["prior.log_weights"]
        r = np.exp(lw[None] + trace["prior.component_log_prob"] - trace["prior.log_p"][:, None])
        scales["prior.logits"] = scales["prior.logits"] + np.sum(r + np.exp(lw)[None], axis=0)
    return ref, scales


def check_prior_gradient(adapter, case, profile="float64", seed=0):
    """The adapter's ``prior_log_prob_grad(config, params, z)`` at the case's golden z.

    Two comparisons: (1) against refvae's gradient of ``sum_b log p(z_b)`` per element,
    ``|g - g_ref| <= c u (S + |g_ref|)`` with S the condition scale computed here the way the
    golden scales are (16 random-sign relative probes of every parameter and of z, plus the
    softmax-minus-responsibility magnitude for ``prior.logits``); (2) when the adapter has
    ``prior_log_prob``: against central differences of ``sum(prior_log_prob)`` along one random
    direction per reported input (:func:`refvae.gradcheck.check_vjp`; float32: the harness's
    float32 directional check). The summary says which of the two departs: a gradient that
    matches finite differences of the adapter's own density but not refvae's gradient is the
    gradient of a wrong density.
    """
    from ...gradcheck import check_vjp
    from ...tolerances import tolerance
    from .checks import _directional_check
    _check_args(adapter, case, profile, seed)
    fn = getattr(adapter, "prior_log_prob_grad", None)
    if not callable(fn):
        return CheckResult("prior_gradient", "skip", "the adapter has no prior_log_prob_grad()")
    config, params, z = _prior_inputs(case)
    got = fn(config, params, z.copy())
    if not isinstance(got, dict):
        return CheckResult("prior_gradient", "fail", f"prior_log_prob_grad returned "
                           f"{type(got).__name__}; expected a dict with 'z' and parameter names")
    names = [k for k in got if k in case.params]
    unknown = sorted(k for k in got if k != "z" and k not in case.params)
    keys = (["z"] if "z" in got else []) + names
    if not keys:
        return CheckResult("prior_gradient", "fail", f"prior_log_prob_grad reported none of 'z' or "
                           f"the case's parameters (it returned {sorted(got)[:8]})")
    ref, scales = _gradient_scales(case, names, np.random.default_rng([seed, 7]))
    u, c = _u(profile), _c()
    grads, bad, worst = {}, [], None
    for k in keys:
        g, note = _conform(k, _as_array(got[k]), ref[k].shape)
        if g is None:
            return CheckResult("prior_gradient", "fail", f"prior_log_prob_grad[{k!r}]: {note}")
        grads[k] = g
        allowed = c * u * (scales[k] + np.abs(ref[k])) + float(np.finfo(np.float64).tiny)
        err = np.where(np.isfinite(g), np.abs(g - ref[k]), np.inf)
        ratio = float(np.max(err / allowed))
        if worst is None or ratio > worst[1]:
            worst = (k, ratio, float(np.max(err)))
        if ratio > 1:
            bad.append(k)
    own = None
    if callable(getattr(adapter, "prior_log_prob", None)):
        base = {"z": z.copy(), **{k: np.array(params[k]) for k in names}}

        def f(p):
            pp = dict(params)
            pp.update({k: p[k] for k in names})
            return float(np.sum(_as_array(adapter.prior_log_prob(config, pp, np.array(p["z"])))))

        rng = np.random.default_rng(seed)
        if profile == "float64":
            own = check_vjp(f, lambda g, p: {k: g * grads[k] for k in keys}, base, rng=rng, wrt=keys)
        else:
            own = _directional_check(f, grads, {k: base[k] for k in keys}, rng, 2.0 * u,
                                     tolerance("verify_gradient_float32").k)
    own_bad = [e.name for e in own.entries if not e.passed] if own is not None else []
    details = {"reported": keys, "ignored": unknown, "against_refvae_failed": bad,
               "against_own_density_failed": own_bad, "worst": list(worst)}
    tail = f" (ignored: {', '.join(unknown)})" if unknown else ""
    if not bad and not own_bad:
        what = "and finite differences of your own prior_log_prob" if own is not None else ""
        return CheckResult("prior_gradient", "pass",
                           f"{len(keys)} gradients agree with refvae's {what} (worst: {worst[0]} at "
                           f"{worst[1]:.2g} of allowed){tail}", worst[1], 1.0, details)
    parts = []
    if bad:
        parts.append(f"differs from refvae's gradient of sum log p(z) at {', '.join(bad)} (worst "
                     f"{worst[0]}: max |diff| {worst[2]:.2e}, {worst[1]:.2g} x allowed)")
    if own_bad:
        parts.append(f"disagrees with finite differences of your own prior_log_prob at "
                     f"{', '.join(own_bad)}: the gradient is wrong for your own density")
    elif own is not None:
        parts.append("but agrees with finite differences of your own prior_log_prob: the gradient "
                     "is right for your density, so the density itself departs (see log_pz)")
    return CheckResult("prior_gradient", "fail", "; ".join(parts) + tail, worst[1], 1.0, details)
