"""The report's gradient check: ``check_vjp`` of the batch-mean negative ELBO w.r.t. every
parameter of a trained model, on a training batch chosen away from the kinks of relu/leaky_relu
(part 4 of the run, :mod:`refvae.tools.report`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...gradcheck import GradcheckEntry, GradcheckReport
from ..._validation import as_float_array, check_positive_int, check_real, check_rng
from ...tolerances import EPS, U, tolerance

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


#: the report's paragraph above the gradient-check table (rendered by :mod:`.markdown`)
PROSE = (
    "For every parameter array W (random direction u ~ N(0, I)), the analytic ⟨g, u⟩ against the "
    "Richardson-extrapolated central difference D_R = (4 D(h/2) − D(h)) / 3 of φ(t) = loss(W + t u), "
    "h = ε^(1/3) max(1, rms W), on a small training batch. **Kinks**: at each of the four points ±h, "
    "±h/2 the sign of every relu/leaky_relu pre-activation (encoder, decoder, the prior's networks) "
    "is compared with t = 0; if one changes, h is halved (column *halved*: arrays that needed it), "
    "so every quotient is taken inside one linear piece, where φ is analytic; a pre-activation "
    "exactly on a kink fails. **Allowance** = rounding floor + truncation bound, nothing else (no "
    "relative tolerance, no 2|D(h) − D(h/2)| estimate, which grows near a kink and once let a 5% "
    "error pass): rounding 3 δ / h with δ = 64 u mean(|ln p(x|z)| + |ln p(z)| + |ln q(z|x)|) the "
    "rounding of one loss evaluation (`gradcheck_rounding`), plus 64 u Σ|g u| for ⟨g, u⟩; "
    "truncation |D_R| (2Δ/π)⁴ / 4, Δ the largest measured move of any intermediate over the step "
    "(φ is analytic within (π/2) h / Δ; Cauchy's estimate of φ⁽⁵⁾), ~1e-15 relative here. "
    "Each array is checked in two directions, a random one and the analytic gradient's own "
    "(scaled to the same length: it makes ⟨g, u⟩ as large as any direction can, so a scale error "
    "of an array with a small gradient still shows); it passes when both pass. "
    "Columns: worst relative error / largest error ÷ allowed (< 1 passes) per group, and *detects*: "
    "the largest over the group's arrays of the smallest relative error that fails the array "
    "(allowed / |⟨g, u⟩|): an error of that size in any one array of the group fails the check.")

#: halvings of the step allowed when an evaluation point crosses a kink (h down to 2^-24 of the start)
MAX_HALVINGS = 24


def _kinked_layers(model, trace):
    """Names of the relu/leaky_relu pre-activations of a trace (the hidden layers of every MLP)."""
    names = []
    for name in trace:
        if not name.endswith(".pre"):
            continue
        prefix, _, idx = name[:-4].rpartition(".")
        if idx.isdigit() and f"{prefix}.{idx}.out" in trace and f"{prefix}.{int(idx) + 1}.pre" in trace \
                and _mlp_activation(model, name) in KINKED:
            names.append(name)
    return names


def _scale(a):
    """max(1, RMS of a): the length over which the loss changes along a random direction."""
    a = np.asarray(a, dtype=np.float64)
    return max(1.0, float(np.sqrt(np.mean(a * a)))) if a.size else 1.0


class _Point:
    """One evaluation of the batch-mean negative ELBO: value, rounding scale, trace."""

    def __init__(self, model, x, eps, params):
        c = model.forward(x, eps, params=params)
        self.f = float(np.mean(c.per_example))
        #: the magnitude of the summed terms (the scale of f's rounding error)
        self.mag = float(np.mean(np.abs(c.log_px_z) + np.abs(c.log_pz) + np.abs(c.log_qz_x)))
        self.trace = dict(c.trace)


@dataclass
class ReportGradEntry(GradcheckEntry):
    """A :class:`~refvae.gradcheck.GradcheckEntry` with the parts of its allowance."""

    floor: float = 0.0          #: rounding floor of the extrapolated quotient and of <g, u>
    truncation: float = 0.0     #: truncation bound (2 Delta / pi)^4 / 4 |D_R|
    max_move: float = 0.0       #: Delta: largest move of any intermediate between t = 0 and t = +-h
    halvings: int = 0           #: step halvings needed so that no pre-activation crosses a kink
    detects: float = math.inf   #: allowed / |analytic|: the smallest relative error this entry fails
    direction: str = "random"   #: the direction whose result this entry shows ("random" or "gradient")


def _check_array(model, x, eps, params, name, g, u, base, kinked, c_round):
    """One entry of :func:`gradcheck_model` (see its docstring for the derivation)."""
    arr = params[name]
    ana = float(np.sum(g * u))
    h0 = EPS ** (1 / 3) * _scale(arr)
    patterns = {k: base.trace[k] > 0 for k in kinked}
    on_kink = any(np.any(base.trace[k] == 0) for k in kinked)
    for halvings in range(MAX_HALVINGS + 1):
        h = h0 / 2 ** halvings
        pts, crossed = {}, on_kink
        for t in (h, -h, h / 2, -h / 2):
            if crossed:
                break
            moved = dict(params)
            moved[name] = arr + t * u
            pts[t] = _Point(model, x, eps, moved)
            crossed = any(not np.array_equal(pts[t].trace[k] > 0, patterns[k]) for k in kinked)
        if not crossed:
            break
    if crossed:
        reason = ("a pre-activation is exactly 0" if on_kink
                  else f"a kink is crossed at every step down to {h:.1e}")
        return ReportGradEntry(name, ana, math.nan, math.inf, math.inf, 0.0, h, False, halvings=halvings,
                               floor=math.nan, truncation=math.nan, max_move=math.nan), reason
    d1 = (pts[h].f - pts[-h].f) / (2 * h)
    d2 = (pts[h / 2].f - pts[-h / 2].f) / h
    num = (4 * d2 - d1) / 3
    delta = c_round * U * max(p.mag for p in pts.values())
    floor = 3 * delta / h + c_round * U * float(np.sum(np.abs(g * u)))
    move = 0.0
    for t in (h, -h):
        for k, a0 in base.trace.items():
            a1 = pts[t].trace[k]
            if a1 is not a0 and np.shape(a1) == np.shape(a0) and np.size(a0):
                move = max(move, float(np.max(np.abs(np.asarray(a1, float) - np.asarray(a0, float)))))
    trunc = abs(num) * (2 * move / math.pi) ** 4 / 4
    allowed = floor + trunc
    err = abs(ana - num)
    scale = max(abs(ana), abs(num))
    return ReportGradEntry(name, ana, num, err, err / scale if scale > 0 else 0.0, allowed, h,
                           bool(err <= allowed), floor=floor, truncation=trunc, max_move=move,
                           halvings=halvings, detects=allowed / abs(ana) if ana else math.inf), ""


def _ratio(e):
    """err / allowed of an entry (inf when nothing is allowed and something differs)."""
    if e.allowed > 0:
        return float(e.abs_err / e.allowed)
    return 0.0 if e.abs_err == 0 else math.inf


def gradcheck_model(model, x, eps, rng, near_kink_fixed=0):
    r"""Check the analytic gradient of the batch-mean negative ELBO w.r.t. every parameter array of
    ``model`` at the batch ``(x, eps)``; returns a :class:`~refvae.gradcheck.GradcheckReport`
    (method ``"richardson, kink-free steps"``) whose entries carry the parts of their allowance.

    What is compared (one entry per array ``W`` of n numbers, in two directions: a random
    ``u ~ N(0, I)`` of W's shape from ``rng``, and ``u_g = g sqrt(n) / |g|``, the analytic
    gradient's own direction at the random direction's expected length): the analytic ``<g, u>``
    against the Richardson-extrapolated central difference ``D_R = (4 D(h/2) - D(h)) / 3`` of
    ``phi(t) = f(W + t u)``, ``D(h) = (phi(h) - phi(-h)) / 2h``, ``h = eps^(1/3) max(1, rms(W))``.
    The random direction sees an error in any direction; the gradient's direction makes
    ``<g, u>`` as large as a direction of that length can (``|g| sqrt(n)``), so a scale error of
    an array whose gradient is small beside the loss's rounding (a flow's first coupling, say)
    is still seen. The entry shows the worse of the two (``direction``); it passes when both do;
    its ``detects`` is the smaller of the two.

    Kinks. relu/leaky_relu make phi piecewise smooth. At each of the four points ``+-h, +-h/2`` the
    sign of every pre-activation of a relu/leaky_relu layer (of every MLP: encoder, decoder, the
    prior's networks) is compared with that at t = 0; if any differs, the step is halved (up to
    :data:`MAX_HALVINGS` times) and the array checked again. So every accepted quotient is taken
    where all activations are in the same linear piece as at t = 0 and phi is analytic on
    [-h, h] (a crossing out and back between two sampled points would need the pre-activation to
    turn within h ~ 1e-5: not excluded in principle, see ``max_move``). No term of the allowance
    grows near a kink: a pre-activation that is exactly 0 at t = 0, or a kink crossed at every
    step, fails the entry.

    Allowance = rounding floor + truncation bound, both from the step and the evaluations:

    - rounding: each phi(t) is the mean of per-example sums whose terms have magnitude
      ``mag = mean(|ln p(x|z)| + |ln p(z)| + |ln q(z|x)|)``; its rounding error is taken as
      ``delta = c u mag`` (c of ``gradcheck_rounding``); the extrapolated quotient carries
      ``(4 (2 delta / h) + 2 delta / (2 h)) / 3 = 3 delta / h``, and ``<g, u>`` adds ``c u sum |g u|``;
    - truncation: ``D_R - phi'(0) = -h^4 phi^(5)(xi) / 480``. Within one linear piece phi is a
      composition of affine maps and analytic functions (exp, log-softmax, log-sum-exp, tanh,
      sigmoid, Gaussian log-densities) that are analytic in a strip of half-width >= pi/2 around
      the real axis. If no intermediate moves by more than ``Delta`` (measured: ``max_move``, the
      largest change of any traced intermediate between t = 0 and t = +-h), phi continues
      analytically to the complex disc |t| < rho = (pi / 2) h / Delta, and Cauchy's estimate with
      ``|phi(t) - phi(0)| ~ rho |phi'(0)|`` on that disc gives ``|phi^(5)| <= 5! |phi'| / rho^4``,
      hence a relative truncation ``<= (h / rho)^4 / 4 = (2 Delta / (pi))^4 / 4``; Delta ~ 1e-4 to
      1e-3 makes it ~1e-15 relative, far below the rounding floor.

    There is no relative tolerance and no difference-based truncation estimate (the former
    ``2 |D(h) - D(h/2)|`` grew to the size of the error near a kink: a 5% error passed). Each
    entry's ``detects = allowed / |<g, u>|`` is the smallest relative error of that array's
    gradient that fails it. ``near_kink_fixed`` (an integer >= 0, the count of pre-activations of
    a prior's fixed-input networks near a kink, from :func:`choose_gradcheck_batch`) is accepted for
    the report's record; the halving handles those kinks like any other. ``report.halved`` lists
    the arrays whose step was halved.
    """
    _check_model(model)
    near_kink_fixed = check_positive_int(near_kink_fixed, "near_kink_fixed", minimum=0)
    check_rng(rng)
    x = as_float_array(x, "x", ndim=2)
    eps = as_float_array(eps, "eps", ndim=2)
    params = dict(model.params)
    _, grads = model.neg_elbo_and_grad(x, eps, params=params)
    base = _Point(model, x, eps, params)
    kinked = _kinked_layers(model, base.trace)
    c_round = tolerance("gradcheck_rounding").c
    report = GradcheckReport(method="richardson, kink-free steps", rtol=0.0)
    report.halved, report.failed_reasons = [], {}
    for name in params:
        if params[name].size == 0:
            continue
        g = np.asarray(grads[name], float)
        u = rng.standard_normal(params[name].shape)
        entry, reason = _check_array(model, x, eps, params, name, g, u, base, kinked, c_round)
        norm = float(np.sqrt(np.sum(g * g)))
        if norm > 0 and math.isfinite(norm):
            # the analytic gradient's own direction, scaled to the random direction's expected length
            # sqrt(n): <g, u> = |g| sqrt(n), the largest for that length, so a relative error of g's
            # size (a scale error) shows as plainly as any step can show it
            ua = g * (math.sqrt(g.size) / norm)
            ea, ra = _check_array(model, x, eps, params, name, g, ua, base, kinked, c_round)
            ea.direction = "gradient"
            detects = min(entry.detects, ea.detects)
            if (not ea.passed and entry.passed) or (ea.passed == entry.passed and
                                                    _ratio(ea) > _ratio(entry)):
                entry, reason = ea, ra
            entry.detects = detects
        report.entries.append(entry)
        if entry.halvings:
            report.halved.append(name)
        if reason:
            report.failed_reasons[name] = reason
    report.kink_rechecked = list(report.halved)   # the former name of the list
    return report


def group_of(name):
    return name.split(".", 1)[0]


def gradcheck_summary(report):
    """Per parameter group (encoder, decoder, prior) of a GradcheckReport: the worst relative
    error, the largest err / allowed, and ``detects``, the largest over the group's arrays of the
    smallest relative error that fails the array (``allowed / |analytic|``; ``detects_worst`` names
    the array): an error of that relative size in **any one** array of the group fails the check."""
    groups = {}
    for e in report.entries:
        g = groups.setdefault(group_of(e.name), {"max_rel_err": 0.0, "worst": None, "n": 0,
                                                "max_err_ratio": 0.0, "passed": True,
                                                "detects": math.inf, "detects_worst": None,
                                                "halved": 0})
        g["n"] += 1
        g["passed"] = g["passed"] and bool(e.passed)
        g["max_err_ratio"] = max(g["max_err_ratio"], float(e.abs_err / e.allowed) if e.allowed > 0 else
                                 (0.0 if e.abs_err == 0 else math.inf))
        d = float(getattr(e, "detects", math.inf))
        if math.isfinite(d) and (g["detects_worst"] is None or d > g["detects"]):
            # (an array whose analytic gradient is exactly 0 carries no relative error: skipped)
            g["detects"], g["detects_worst"] = d, e.name
        g["halved"] += int(getattr(e, "halvings", 0) > 0)
        if g["worst"] is None or e.rel_err >= g["max_rel_err"]:
            g["max_rel_err"], g["worst"] = float(e.rel_err), e.name
    entries = [{"name": e.name, "analytic": e.analytic, "numeric": e.numeric, "abs_err": e.abs_err,
                "rel_err": e.rel_err, "allowed": e.allowed, "passed": bool(e.passed), "step": e.step,
                "floor": getattr(e, "floor", None), "truncation": getattr(e, "truncation", None),
                "max_move": getattr(e, "max_move", None), "halvings": getattr(e, "halvings", 0),
                "detects": getattr(e, "detects", None), "direction": getattr(e, "direction", "random")}
               for e in report.entries]
    return {"method": report.method, "rtol": report.rtol, "passed": bool(report.passed),
            "groups": groups, "entries": entries,
            "failed_reasons": dict(getattr(report, "failed_reasons", {}))}
