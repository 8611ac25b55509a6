"""The report's gradient check: ``check_vjp`` of the batch-mean negative ELBO w.r.t. every
parameter of a trained model, on a training batch chosen away from the kinks of relu/leaky_relu
(part 4 of the run, :mod:`refvae.tools.report`)."""

from __future__ import annotations

import math

import numpy as np

from ...gradcheck import check_vjp
from ..._validation import as_float_array, check_positive_int, check_real, check_rng
from ...tolerances import tolerance

__all__ = ["near_kink", "choose_gradcheck_batch", "gradcheck_model"]

KINKED = ("relu", "leaky_relu")


def _check_model(model, name="model"):
    from ...vae import VAE
    if not isinstance(model, VAE):
        raise TypeError(f"{name} must be a refvae.VAE, got {type(model).__name__}")
    return model


def _mlp_activation(model, name):
    if name.startswith(("prior.gtm.", "prior.flow.")):
        return getattr(model.prior, "activation", model.activation)
    return model.activation


def near_kink(model, x, eps, margin=None):
    """Pre-activations of relu/leaky_relu hidden layers within ``margin`` of 0 on a batch.

    A hidden layer is a ``<prefix>.<i>.pre`` entry of the model's trace that has an ``.out``
    partner and a following ``<prefix>.<i+1>.pre`` (the last layer of an MLP has no kink).
    Returns ``(count, batch_independent, names)``; ``batch_independent`` counts those inside the
    networks of a prior whose ``net_inputs_fixed`` is true (GTM MLP at the fixed grid, the encoder
    at pseudo-inputs), which no choice of batch can move.
    """
    _check_model(model)
    margin = (tolerance("gradcheck_kink_margin").d if margin is None
              else check_real(margin, "margin", lo=0.0))
    trace = dict(model.forward(x, eps).trace)
    count = fixed = 0
    names = []
    for name, arr in trace.items():
        if not name.endswith(".pre"):
            continue
        prefix, _, idx = name[:-4].rpartition(".")
        if not idx.isdigit() or f"{prefix}.{idx}.out" not in trace or \
                f"{prefix}.{int(idx) + 1}.pre" not in trace:
            continue
        if _mlp_activation(model, name) not in KINKED:
            continue
        n = int(np.sum(np.abs(arr) < margin))
        if n:
            count += n
            names.append(name)
            if name.startswith("prior.") and model.prior.net_inputs_fixed:
                fixed += n
    return count, fixed, names


def choose_gradcheck_batch(model, x_pool, rng, batch_size, candidates):
    """The first of ``candidates`` random batches (x, eps) with no pre-activation near a kink,
    else the one with the fewest. Returns (x, eps, info dict).

    ``x_pool``: a non-empty finite (N, D) array; ``batch_size``, ``candidates``: integers >= 1."""
    _check_model(model)
    x_pool = as_float_array(x_pool, "x_pool", ndim=2)
    if x_pool.shape[0] == 0 or x_pool.shape[1] != model.x_dim:
        raise ValueError(f"x_pool must have shape (N >= 1, {model.x_dim}), got {x_pool.shape}")
    check_rng(rng)
    batch_size = check_positive_int(batch_size, "batch_size")
    candidates = check_positive_int(candidates, "candidates")
    best = None
    for c in range(1, candidates + 1):
        idx = np.sort(rng.choice(len(x_pool), size=min(batch_size, len(x_pool)), replace=False))
        eps = rng.standard_normal((len(idx), model.latent_dim))
        count, fixed, names = near_kink(model, x_pool[idx], eps)
        if best is None or count < best[0]:
            best = (count, fixed, names, idx, eps, c)
        if count == 0:
            break
    count, fixed, names, idx, eps, chosen = best
    info = {"batch_indices": idx.tolist(), "candidates_tried": c, "chosen_candidate": chosen,
            "near_kink": count, "near_kink_batch_independent": fixed, "near_kink_layers": names,
            "kink_margin": tolerance("gradcheck_kink_margin").d}
    return x_pool[idx], eps, info


#: step used to re-check, when a pre-activation that no batch choice can move (a prior's component
#: network) lies near a kink: 1000x smaller than eps**(1/3), so a step crosses the kink only if the
#: pre-activation is within ~1e-8 of it; the rounding floor of the check grows by the same factor.
KINK_RECHECK_STEP = 1e-3 * 2.0 ** (-52 / 3)


def gradcheck_model(model, x, eps, rng, near_kink_fixed=0):
    """check_vjp of the batch-mean neg_elbo w.r.t. every parameter; returns the GradcheckReport.

    If it fails while ``near_kink_fixed`` pre-activations sit near a leaky-ReLU kink that the
    batch cannot avoid, the failing arrays are checked again with :data:`KINK_RECHECK_STEP`
    (central differences across a kink measure the average of two slopes, not the derivative);
    the re-check replaces their entries and the report says so (``kink_rechecked``).
    ``near_kink_fixed`` is an integer >= 0.
    """
    _check_model(model)
    near_kink_fixed = check_positive_int(near_kink_fixed, "near_kink_fixed", minimum=0)
    def f(params):
        return np.asarray(model.neg_elbo(x, eps, params=params).value)

    def vjp(g, params):
        _, grads = model.neg_elbo_and_grad(x, eps, params=params)
        g = float(np.asarray(g))
        return {k: g * v for k, v in grads.items()}

    report = check_vjp(f, vjp, dict(model.params), rng=rng)
    report.kink_rechecked = []
    if not report.passed and near_kink_fixed:
        failing = [e.name for e in report.entries if not e.passed]
        again = check_vjp(f, vjp, dict(model.params), rng=rng, wrt=failing, step=KINK_RECHECK_STEP)
        redo = {e.name: e for e in again.entries}
        report.entries = [redo.get(e.name, e) for e in report.entries]
        report.kink_rechecked = failing
    return report


def group_of(name):
    return name.split(".", 1)[0]


def gradcheck_summary(report):
    """Worst relative error per parameter group (encoder, decoder, prior) of a GradcheckReport."""
    groups = {}
    for e in report.entries:
        g = groups.setdefault(group_of(e.name), {"max_rel_err": 0.0, "worst": None, "n": 0,
                                                "max_err_ratio": 0.0, "passed": True})
        g["n"] += 1
        g["passed"] = g["passed"] and bool(e.passed)
        g["max_err_ratio"] = max(g["max_err_ratio"], float(e.abs_err / e.allowed) if e.allowed > 0 else
                                 (0.0 if e.abs_err == 0 else math.inf))
        if g["worst"] is None or e.rel_err >= g["max_rel_err"]:
            g["max_rel_err"], g["worst"] = float(e.rel_err), e.name
    entries = [{"name": e.name, "analytic": e.analytic, "numeric": e.numeric, "abs_err": e.abs_err,
                "rel_err": e.rel_err, "allowed": e.allowed, "passed": bool(e.passed)}
               for e in report.entries]
    return {"method": report.method, "rtol": report.rtol, "passed": bool(report.passed),
            "groups": groups, "entries": entries}


