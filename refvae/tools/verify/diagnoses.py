r"""Cheap diagnoses: when a reported quantity differs from its golden value, test a handful of
common slips by recomputing the quantity the slipped way from the case's own values, and name the
slip when the reported value equals it within the element's tolerance.

Each diagnosis is a test of equality with a specific wrong formula, so it fires on its bug only
(tests/test_verify_diagnoses.py plants each bug and checks that no other diagnosis fires, and that
none fires on a correct implementation):

============================  ===============================================================
diagnosis                     reported value equals
============================  ===============================================================
sign flip                     ``-expected`` (any quantity; the flow's ``log_det``: named so)
batch sum for a mean          ``loss``: ``sum_b neg_elbo_b``; ``grad.*``: ``B x expected``
constant ln 2 pi offset       ``expected + k/2 ln 2 pi`` for one integer k != 0 on every element
log of a count in float32     ``expected + m (float32(ln n) - ln n)`` for a count n <= 4096 and
                              an integer 0 < |m| <= 64, the same on every element
log-det per dimension         ``prior.flow.<t>.log_det``: ``L x expected``
variance used as sd           ``z``: ``mu + exp(log_var) eps``; ``prior_sample.z``: the mixture
                              sample with ``exp(log_var)`` as the standard deviation
tanh(log_var) in a sampler    the same with ``exp(tanh(log_var) / 2)`` as the standard deviation
analytic KL in an MC case     ``kl``: ``KL[q || p]`` in closed form at the reported mu, log_var
MC KL in an analytic case     ``kl``: ``log_qz_x - log_pz`` (the single-sample estimate)
============================  ===============================================================

With the KL convention named, ``neg_elbo``, ``loss`` and the gradients are recomputed by refvae with
the adapter's convention; those that then agree get the status ``consistent`` (not a failure: the
one failing quantity is ``kl``, with the hint to run the cases of the other convention).
"""

from __future__ import annotations

import math

import numpy as np

from .comparison import _as_array, _conform

HALF_LN_2PI = 0.5 * math.log(2.0 * math.pi)


def _reported(out, name, shape):
    if name not in out:
        return None
    try:
        a, _ = _conform(name, _as_array(out[name]), shape)
    except TypeError:
        return None
    return a if a is not None and np.all(np.isfinite(a)) else None


def _equal(a, b, allowed):
    return a is not None and b is not None and np.shape(a) == np.shape(b) and \
        bool(np.all(np.abs(np.asarray(a) - np.asarray(b)) <= allowed))


def _constant_offset(got, want, allowed):
    """The common difference ``got - want`` when it is the same on every element (to the
    tolerance), else None."""
    d = np.ravel(got - want)
    if d.size == 0:
        return None
    mid = 0.5 * (float(d.max()) + float(d.min()))
    if np.all(np.abs(d - mid) <= np.ravel(allowed)) and abs(mid) > float(np.max(allowed)):
        return mid
    return None


def _float32_log_count(offset, allowed):
    """``(n, m)`` when ``offset = m (float32(ln n) - ln n)`` (n a count <= 4096, 0 < |m| <= 64)."""
    n = np.arange(2, 4097)
    delta = np.log(n.astype(np.float32)).astype(np.float64) - np.log(n.astype(np.float64))
    ok = np.abs(delta) > 0
    for m in range(1, 65):
        for sgn in (1, -1):
            hit = ok & (np.abs(sgn * m * delta - offset) <= allowed)
            if np.any(hit):
                return int(n[np.argmax(hit)]), sgn * m
    return None


def _quantity_diagnosis(case, name, got, want, allowed, out):
    """A one-line diagnosis of a failing quantity (``got`` of the golden shape, finite), or None."""
    tiny = float(np.max(allowed))
    if np.any(np.abs(want) > np.asarray(allowed)) and _equal(got, -want, allowed):
        if ".log_det" in name and name.startswith("prior.flow."):
            return "the log-determinant has the wrong sign (got = -expected)"
        return "the sign is flipped (got = -expected)"
    B = case.x.shape[0]
    if name == "loss" and "neg_elbo" in case.values:
        if _equal(got, np.sum(case.values["neg_elbo"]), np.asarray(allowed) * B):
            return (f"loss is the batch sum of neg_elbo ({B} x the mean); SPEC's loss is the batch "
                    "mean")
    if name.startswith("grad.") and B > 1 and _equal(got, B * want, np.asarray(allowed) * B):
        return (f"the gradient is {B} x the expected one: the gradient of the batch sum, not of the "
                "mean (SPEC's loss)")
    if name.startswith("prior.flow.") and name.endswith(".log_det"):
        L = case.config["latent_dim"]
        if _equal(got, L * want, np.asarray(allowed) * L):
            return (f"the log-determinant is counted once per latent dimension ({L} x expected); it "
                    "is one sum over the transformed coordinates")
    text = _sampler_diagnosis(case, name, got, allowed, out)
    if text:
        return text
    offset = _constant_offset(got, want, allowed)
    if offset is not None:
        k = offset / HALF_LN_2PI
        if abs(k - round(k)) * HALF_LN_2PI <= tiny and round(k) != 0:
            k = int(round(k))
            return (f"got - expected = {offset:+.10g} on every element = {k:+d} x 1/2 ln 2 pi: a "
                    f"ln 2 pi term {'dropped' if k > 0 else 'added'} ({abs(k)} x 1/2 ln 2 pi; "
                    "1/2 ln 2 pi per dimension of each Gaussian)")
        hit = _float32_log_count(offset, tiny)
        if hit is not None:
            n, m = hit
            return (f"got - expected = {offset:+.3e} on every element = {m:+d} x (float32(ln {n}) - "
                    f"ln {n}): a log of a count (ln {n}) computed in float32")
    return None


def _sampler_diagnosis(case, name, got, allowed, out):
    """``z`` and ``prior_sample.z``: the log-variance used as a log-sd, or tanh(log_var)."""
    variants = (("exp(log_var)", lambda lv: np.exp(lv),
                 "the variance used as the standard deviation (SPEC: sd = exp(log_var / 2))"),
                ("exp(tanh(log_var) / 2)", lambda lv: np.exp(0.5 * np.tanh(lv)),
                 "tanh applied to the log-variance (SPEC: sd = exp(log_var / 2))"))
    if name == "z" and "mu" in case.values:
        shape = case.values["mu"].shape
        mu = _reported(out, "mu", shape)
        lv = _reported(out, "log_var", shape)
        mu = case.values["mu"] if mu is None else mu
        lv = case.values["log_var"] if lv is None else lv
        for form, sd, text in variants:
            if _equal(got, mu + sd(lv) * case.eps, allowed):
                return f"z = mu + {form} * eps: {text}"
        return None
    if name != "prior_sample.z":
        return None
    from ..golden.reference import _noise
    model = case.model()
    comps = model.prior.mixture_components(model.params)
    noise = _noise(case.draws)
    if comps is None or "index" not in noise:
        return None
    means, log_vars, _ = comps
    idx, eps = np.asarray(noise["index"], np.int64), noise["eps"]
    for form, sd, text in variants:
        if _equal(got, means[idx] + sd(log_vars[idx]) * eps, allowed):
            return f"the prior sample is mean_k + {form.replace('log_var', 'log_var_k')} * eps: {text}"
    return None


def _kl_convention(case, out, profile):
    """``(text, other)`` when the reported ``kl`` follows the other KL convention than the case
    (``other`` is ``"analytic"`` or ``"mc"``), else None."""
    from .comparison import _c, _u
    if "kl" not in out or "kl" not in case.values:
        return None
    B = case.x.shape[0]
    got = _reported(out, "kl", (B,))
    if got is None:
        return None
    allowed = case.allowed("kl", profile)
    mode = case.config.get("kl", "mc")
    if mode == "mc":
        shape = case.values["mu"].shape
        mu = _reported(out, "mu", shape)
        lv = _reported(out, "log_var", shape)
        mu = case.values["mu"] if mu is None else mu
        lv = case.values["log_var"] if lv is None else lv
        model = case.model()
        closed = model.prior.kl_closed_form(model.params, mu, lv)
        if closed is None:
            return None
        allowed = allowed + _c() * _u(profile) * np.abs(closed)
        if _equal(got, closed, allowed):
            twin = f"{case.prior}-{case.likelihood}-analytic_kl"
            return (f"your kl is the analytic KL[q(z|x) || p(z)] of your mu and log_var, this case "
                    f"uses the single-sample Monte Carlo KL (log_qz_x - log_pz): use the "
                    f"analytic-KL cases ({twin}; refvae verify --case '*-analytic_kl')"), "analytic"
        return None
    mc = case.values["log_qz_x"] - case.values["log_pz"]
    if _equal(got, mc, allowed):
        base = case.name.replace("-analytic_kl", "")
        return (f"your kl is the single-sample Monte Carlo KL (log_qz_x - log_pz), this case uses the "
                f"analytic KL: use the Monte Carlo cases ({base})"), "mc"
    return None


def _other_convention_values(case, convention):
    """refvae's values of the case with the other KL convention (the same parameters, data and
    draws): the trace, ``loss`` and ``grad.*``."""
    from ..golden.reference import reference_model, reference_outputs
    config = dict(case.config)
    config["kl"] = convention
    model = reference_model(config, case.params)
    return reference_outputs(model, case.x, case.eps)
