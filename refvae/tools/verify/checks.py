r"""The checks on the adapter's own functions that need no golden value: the gradient against
finite differences, a mixture prior's density against its definition, the NLL against the
references, and the prior sample from given draws."""

from __future__ import annotations

import math

import numpy as np

from ..._validation import check_positive_int
from ...tolerances import tolerance
from ..golden.reference import _noise
from .adapters import _check_args, _Sub, call_adapter
from .comparison import _as_array, _c, _conform, _u, compare_case
from .results import CheckResult

__all__ = ["check_gradient", "check_mixture", "check_nll"]


def _loss_of(out):
    if "loss" in out:
        return float(np.ravel(_as_array(out["loss"]))[0])
    return float(np.mean(_as_array(out["neg_elbo"])))


#: points of the least-squares fit along each direction (the gradient's, a random one)
FIT_POINTS = {"gradient": 25, "random": 13}
#: the half-width of the fit interval in units of eps^(1/3) * max(1, rms(param))
FIT_WIDTH = 8.0
#: the degree of the polynomial fitted (its truncation error, O(h^6), is far below the noise)
FIT_DEGREE = 5


def _fit_slope(values, t, h):
    """``(slope, se)`` at 0 of a degree-:data:`FIT_DEGREE` least-squares polynomial through
    ``(t, values)``, the standard error from the fit's residuals (``values`` carry the rounding
    noise of a float32 function: about 0.5 eps |f| per evaluation on the committed cases)."""
    A = np.vander(t / h, FIT_DEGREE + 1, increasing=True)
    coef, *_ = np.linalg.lstsq(A, values, rcond=None)
    r = values - A @ coef
    dof = len(t) - (FIT_DEGREE + 1)
    sigma2 = float(np.sum(r * r)) / dof
    cov = np.linalg.inv(A.T @ A) * sigma2
    return float(coef[1]) / h, math.sqrt(max(float(cov[1, 1]), 0.0)) / h


def _kink_limit(case):
    """``limit(name, u) -> h``: half the step along ``u`` (in parameter ``name``) at which refvae's
    first leaky-ReLU pre-activation of the case reaches its kink (linearised; the fit interval must
    not contain a kink, where the loss is not a polynomial). ``inf`` where no pre-activation moves."""
    from ..golden.kinks import _kinked_layers
    model = case.model()
    base = {k: v.copy() for k, v in model.params.items()}

    def trace(p):
        return dict(model.forward(case.x, case.eps, p).trace)

    t0 = trace(base)
    layers = [pre for pre, _ in _kinked_layers(list(t0))]

    def limit(name, u):
        if not layers or name not in base:
            return math.inf
        d = 1e-6
        moved = [dict(base, **{name: base[name] + s * d * u}) for s in (1.0, -1.0)]
        tp, tm = trace(moved[0]), trace(moved[1])
        h = math.inf
        for pre in layers:
            rate = np.abs(tp[pre] - tm[pre]) / (2 * d)
            with np.errstate(divide="ignore"):
                h = min(h, float(np.min(np.abs(t0[pre]) / rate)))
        return 0.5 * h
    return limit


def _directional_check(f, grads, params, rng, eps, k, limit=None):
    """The gradient check of a float32 function: per parameter, the reported gradient's
    directional derivative ``<g, u>`` against the slope at 0 of a least-squares polynomial through
    the function's values along ``u`` (tolerances["verify_gradient_float32"]: ``|<g, u> - slope| <=
    k se + 64 eps sum |g u|``, se the slope's standard error from the fit's residuals), along two
    directions: ``u = g / rms(g)`` (the largest directional derivative: the precise entry, named
    after the parameter) and a random normal ``u`` (``"<param> (random direction)"``: errors
    orthogonal to g). ``entry.allowed / |<g, u>|`` is the entry's *resolution*: the smallest
    relative error of the gradient it catches."""
    from ...gradcheck import GradcheckEntry, GradcheckReport
    report = GradcheckReport(method=f"least-squares slopes (eps = {eps:.3g}, k = {k:g})", rtol=0.0)
    base_h = FIT_WIDTH * eps ** (1 / 3)
    for name, g in grads.items():
        x = params[name]
        fin = x[np.isfinite(x)]
        h = base_h * max(1.0, float(np.sqrt(np.mean(fin * fin)))) if fin.size else base_h
        rms_g = float(np.sqrt(np.mean(g * g))) if g.size else 0.0
        dirs = [("gradient", g / rms_g)] if rms_g > 0 else []
        dirs.append(("random", rng.standard_normal(x.shape)))
        for kind, u in dirs:
            hu = h if limit is None else min(h, limit(name, u))
            t = np.linspace(-hu, hu, FIT_POINTS[kind])
            values = np.empty(t.size)
            for i, ti in enumerate(t):
                moved = dict(params)
                moved[name] = x + ti * u
                values[i] = f(moved)
            num, se = _fit_slope(values, t, hu)
            ana = float(np.sum(g * u))
            allowed = k * se + 64 * eps * float(np.sum(np.abs(g * u)))
            err = abs(ana - num)
            scale = max(abs(ana), abs(num))
            label = name if kind == "gradient" else f"{name} (random direction)"
            report.entries.append(GradcheckEntry(label, ana, num, err, err / scale if scale > 0 else 0.0,
                                                 allowed, hu, bool(err <= allowed)))
    return report


def _resolution(rep):
    """``(worst resolution, parameter)`` over the entries along the gradient (allowed / |<g, u>|)."""
    res = [(e.allowed / abs(e.analytic), e.name) for e in rep.entries
           if "(random direction)" not in e.name and e.analytic != 0]
    return max(res, default=(0.0, None))


def _outputs_or_run(adapter, case, outputs):
    """``outputs`` if given, else the adapter's outputs for the case ({} if it cannot run)."""
    if outputs is not None:
        return outputs
    try:
        return call_adapter(adapter, case)
    except Exception:  # noqa: BLE001 - the checks that need outputs then say so
        return {}


def check_gradient(adapter, case, profile="float64", seed=0, outputs=None):
    """The adapter's ``grad.*`` against central differences of its own ``loss`` (or the mean of
    its ``neg_elbo``), one random direction per parameter."""
    from ...gradcheck import check_vjp
    from .adapters import is_prior_only
    _check_args(adapter, case, profile, seed, outputs)
    if is_prior_only(adapter):
        return CheckResult("gradient", "skip", "a prior-only adapter has no run(): no loss to "
                           "differentiate")
    out = call_adapter(adapter, case) if outputs is None else outputs
    names = [k for k in case.params if f"grad.{k}" in out]
    if not names or ("loss" not in out and "neg_elbo" not in out):
        return CheckResult("gradient", "skip", "needs 'loss' (or 'neg_elbo') and grad.* outputs")
    grads = {}
    for k in names:
        g, note = _conform(f"grad.{k}", _as_array(out[f"grad.{k}"]), case.params[k].shape)
        if g is None:
            return CheckResult("gradient", "fail", f"grad.{k}: {note}")
        grads[k] = g

    def f(p):
        return _loss_of(call_adapter(adapter, case, params=p))

    def f_mean(p):
        return float(np.mean(_as_array(call_adapter(adapter, case, params=p)["neg_elbo"])))

    def check(fn):
        rng = np.random.default_rng(seed)
        base = {k: np.array(v) for k, v in case.params.items()}
        if profile == "float64":
            return check_vjp(fn, lambda g, p: {k: g * grads[k] for k in names}, base, rng=rng,
                             wrt=names)
        tol = tolerance("verify_gradient_float32")
        return _directional_check(fn, grads, base, rng, 2.0 * _u(profile), tol.k, _kink_limit(case))

    rep, note = check(f), ""
    if rep.entries and not all(e.passed for e in rep.entries) and _loss_is_batch_sum(out, profile):
        rep_mean = check(f_mean)     # are they the gradients of SPEC's loss, the batch mean?
        if rep_mean.entries and all(e.passed for e in rep_mean.entries):
            rep = rep_mean
            note = ("your reported loss is the batch sum of your neg_elbo, while your gradients are "
                    "those of the batch mean (SPEC's loss): checked against the mean; the gradients "
                    "are right, the reported loss is not")
    if not rep.entries:     # a check that checked nothing never passes
        return CheckResult("gradient", "fail",
                           f"nothing was checked ({getattr(rep, 'reason', None) or 'no entries'})")
    worst = rep.worst
    failed = [e.name for e in rep.entries if not e.passed]
    details = {"method": rep.method, "rtol": rep.rtol,
               "entries": [{"param": e.name, "analytic": e.analytic, "numeric": e.numeric,
                            "abs_err": e.abs_err, "rel_err": e.rel_err, "allowed": e.allowed,
                            "passed": e.passed} for e in rep.entries]}
    if failed:
        summary = (f"grad.{worst.name} disagrees with finite differences of your own loss: "
                   f"directional derivative {worst.analytic:.6e} (your gradient) vs {worst.numeric:.6e} "
                   f"(differences), |diff| {worst.abs_err:.2e} > allowed {worst.allowed:.2e}"
                   + (f"; also {', '.join('grad.' + n for n in failed if n != worst.name)}"
                      if len(failed) > 1 else ""))
        return CheckResult("gradient", "fail", summary, worst.abs_err, worst.allowed, details)
    if profile == "float64":
        text = (f"{len(rep.entries)} parameters agree with finite differences (worst rel err "
                f"{rep.max_rel_err:.1e}, {rep.method})")
    else:
        res, where = _resolution(rep)
        details["resolution"] = {"worst": res, "param": where}
        text = (f"{len(names)} parameters agree with {rep.method} of your own loss along the gradient "
                f"and a random direction (worst rel err {rep.max_rel_err:.1e}); a gradient off by "
                f"{100 * res:.2g}% or more is caught on every parameter (worst: grad.{where})")
    return CheckResult("gradient", "pass", text + (f"; {note}" if note else ""),
                       rep.max_rel_err, rep.rtol, details, diagnosis=note or None)


def _loss_is_batch_sum(out, profile):
    """True when the reported ``loss`` is the sum (not the mean) of a batch of > 1 ``neg_elbo``."""
    if "loss" not in out or "neg_elbo" not in out:
        return False
    neg = np.ravel(_as_array(out["neg_elbo"]))
    loss = float(np.ravel(_as_array(out["loss"]))[0])
    if neg.size < 2 or not np.all(np.isfinite(neg)):
        return False
    tol = _c() * _u(profile) * float(np.sum(np.abs(neg)))
    return abs(loss - float(np.sum(neg))) <= tol and abs(loss - float(np.mean(neg))) > tol



def _is_mixture(case):
    """True when the case's prior is a Gaussian mixture (its ``mixture_components`` say so)."""
    model = case.model()
    return model.prior.mixture_components(model.params) is not None


def check_mixture(adapter, case, profile="float64", outputs=None, n_points=256, seed=0):
    """A mixture prior's ``prior_log_prob`` equals its definition (SPEC 4):
    ``logsumexp_k [log pi_k + log N(z | mu_k, log_var_k)]`` over L-dimensional components.

    The components are the adapter's own ``prior.means``/``prior.log_vars`` (from ``run``) when it
    reports them, else refvae's for the case's parameters; ``log pi = log_softmax(prior.logits)``
    or -ln K. Points: the batch's z, the component means, means +- 3 sd along each axis, and
    ``n_points`` uniform points in the box of means +- 6 sd. Per point the allowed difference is
    ``c u (|f| + sum_k r_k |t_k| + sum_l |df/dz_l| |z_l| + component term)`` with the component
    term ``sum_k r_k (|dt_k/dmu_k| S_mu + |dt_k/dv_k| S_v)`` (golden scales) when refvae's
    components are used. If the adapter reports ``prior.log_weights``, they must be normalised.
    A prior that is not a Gaussian mixture (``mixture_components`` is None) is skipped.
    """
    from ...primitives import log_softmax
    _check_args(adapter, case, profile, seed, outputs)
    n_points = check_positive_int(n_points, "n_points", minimum=1)
    model = case.model()
    ref = model.prior.mixture_components(model.params)
    if ref is None:
        return CheckResult("mixture", "skip", f"not a mixture prior ({case.prior})")
    if not callable(getattr(adapter, "prior_log_prob", None)):
        return CheckResult("mixture", "skip", "the adapter has no prior_log_prob()")
    out = _outputs_or_run(adapter, case, outputs)
    means, lv, own, source = _mixture_components_used(out, ref)
    K = means.shape[0]
    logits = case.params.get("prior.logits")
    log_w = log_softmax(logits) if logits is not None else np.full(K, -math.log(K))
    u, c = _u(profile), _c()
    problems = _log_weight_problems(out, K, c * u)
    z = _mixture_points(case, means, lv, n_points, np.random.default_rng(seed))
    config, params = case.inputs()[:2]
    got = _as_array(adapter.prior_log_prob(config, params, z.copy()))
    if got.shape != (z.shape[0],):
        return CheckResult("mixture", "fail", f"prior_log_prob returned shape {got.shape} for "
                           f"{z.shape[0]} points")
    f, scale, parts = _mixture_definition(z, means, lv, log_w)
    if not own:
        scale = scale + _component_term(case, parts)
    allowed = c * u * scale
    err = np.where(np.isfinite(got), np.abs(got - f), np.inf)
    i = int(np.argmax(err / allowed))
    details = {"components": source, "points": int(z.shape[0]), "worst_z": z[i].tolist(),
               "expected": float(f[i]), "got": float(got[i]), "allowed": float(allowed[i]),
               "max_abs": float(err.max())}
    if np.any(err > allowed):
        n_bad = int(np.sum(err > allowed))
        summary = (f"prior_log_prob differs from the mixture's definition at {n_bad} of {z.shape[0]} "
                   f"points (worst z = {np.round(z[i], 4).tolist()}: definition {f[i]:.10g}, got "
                   f"{got[i]:.10g}, |diff| {err[i]:.2e} > allowed {allowed[i]:.1e}); components: "
                   f"{source}")
        problems.insert(0, summary + _mixture_diagnosis(got, log_w, logits, lv, parts))
    if problems:
        diag = [t.split("; ")[-1].strip() for t in problems if "it equals" in t or "float32" in t]
        diag = [d[d.index("it equals"):] if "it equals" in d else d for d in diag]
        return CheckResult("mixture", "fail", "; ".join(problems), float(err[i]), float(allowed[i]),
                           details, diagnosis="; ".join(diag) or None)
    return CheckResult("mixture", "pass", f"prior_log_prob equals the definition at {z.shape[0]} points "
                       f"(worst |diff| / allowed = {float(np.max(err / allowed)):.2g}; components: {source})",
                       float(err[i]), float(allowed[i]), details)


def _mixture_components_used(out, ref):
    """``(means, log_vars, own, source)``: the adapter's reported components when finite and of
    refvae's shapes, else refvae's (``ref``, from ``mixture_components``)."""
    ref_means, ref_lv, _ = ref
    if "prior.means" in out and "prior.log_vars" in out:
        m, _ = _conform("prior.means", _as_array(out["prior.means"]), ref_means.shape)
        v, _ = _conform("prior.log_vars", _as_array(out["prior.log_vars"]), ref_lv.shape)
        if m is not None and v is not None and np.all(np.isfinite(m)) and np.all(np.isfinite(v)):
            return m, v, True, "the adapter's own prior.means and prior.log_vars"
    return (ref_means, ref_lv, False,
            "refvae's components (the adapter does not report prior.means and prior.log_vars)")


def _log_weight_problems(out, K, cu):
    """``[message]`` when the adapter reports ``prior.log_weights`` that are not normalised."""
    from ...primitives import logsumexp
    if "prior.log_weights" not in out:
        return []
    lw_user, _ = _conform("prior.log_weights", _as_array(out["prior.log_weights"]), (K,))
    if lw_user is None:
        return []
    total = float(logsumexp(lw_user)) if np.all(np.isfinite(lw_user)) else float("nan")
    if not abs(total) <= cu * (1 + float(np.max(np.abs(lw_user)))):
        if abs(total) <= 1e-6:   # normalised to float32's rounding (2^-24 ~ 6e-8 per term), not to 1e-16
            k32 = float(np.float32(np.log(np.float32(K))))
            hint = (f" (log 1/K computed in float32: -ln {K} = {-math.log(K):.17g}, in float32 "
                    f"{-k32:.17g})" if np.allclose(lw_user, -k32, rtol=0, atol=cu * 4)
                    else " (a log computed in float32?)")
            return [f"prior.log_weights are normalised only to float32 rounding: logsumexp = "
                    f"{total:.3g}{hint}"]
        return [f"prior.log_weights are not normalised: logsumexp = {total:.6g} "
                f"(mixture logits used without log_softmax?)"]
    return []


def _mixture_points(case, means, lv, n_points, rng):
    """The batch's z, the means, the means +- 3 sd along each axis, and ``n_points`` uniform
    points in the box of means +- 6 sd."""
    sd = np.exp(0.5 * lv)
    L = means.shape[1]
    lo, hi = (means - 6 * sd).min(axis=0), (means + 6 * sd).max(axis=0)
    pts = [case.values["z"], means]
    for j in range(L):
        for sgn in (-3.0, 3.0):
            p = means.copy()
            p[:, j] += sgn * sd[:, j]
            pts.append(p)
    pts.append(lo + (hi - lo) * rng.random((n_points, L)))
    return np.concatenate(pts)


def _mixture_definition(z, means, lv, log_w):
    """``(f, scale, parts)``: the definition ``f = logsumexp_k t_k`` at the points, its rounding
    scale (the docstring of :func:`check_mixture`, without the component term), and the
    intermediates (diff, q, comp, t, r) the component term and the diagnosis use."""
    from ...primitives import logsumexp
    diff = z[:, None, :] - means[None]
    q = diff * diff * np.exp(-lv)[None]
    comp = -0.5 * np.sum(math.log(2 * math.pi) + lv[None] + q, axis=-1)
    t = log_w[None] + comp
    f = logsumexp(t, axis=-1)
    r = np.exp(t - f[:, None])
    dfdz = -np.sum(r[:, :, None] * diff * np.exp(-lv)[None], axis=1)
    scale = (np.abs(f) + np.sum(r * np.abs(t), axis=1) + np.sum(np.abs(dfdz * z), axis=1)
             + np.sum(r * (np.abs(log_w)[None]), axis=1))
    return f, scale, {"diff": diff, "q": q, "comp": comp, "r": r, "lv": lv}


def _component_term(case, parts):
    """``sum_k r_k (|dt_k/dmu_k| S_mu + |dt_k/dv_k| S_v)`` with the golden scales of refvae's
    components (used when the adapter does not report its own)."""
    diff, q, r, lv = parts["diff"], parts["q"], parts["r"], parts["lv"]
    s_mu = case.scales["prior.means"] + np.abs(case.values["prior.means"])
    s_v = case.scales["prior.log_vars"] + np.abs(case.values["prior.log_vars"])
    dt_dmu = np.abs(diff * np.exp(-lv)[None])
    dt_dv = 0.5 * np.abs(q - 1)
    return np.sum(r[:, :, None] * (dt_dmu * s_mu[None] + dt_dv * s_v[None]), axis=(1, 2))


def _mixture_diagnosis(got, log_w, logits, lv, parts):
    """Name two common slips when the adapter's density equals them: a product of per-dimension
    mixtures, and unnormalised logits."""
    from ...primitives import logsumexp
    q, comp = parts["q"], parts["comp"]
    K = comp.shape[1]
    text = ""
    per_dim = np.sum(logsumexp(log_w[None, :, None] - 0.5 * (math.log(2 * math.pi) + lv[None]
                                                             + q), axis=1), axis=-1)
    if np.max(np.abs(got - per_dim)) <= 1e-6 * (1 + np.max(np.abs(per_dim))):
        text += ("; it equals a product of per-dimension mixtures (logsumexp over k per l, "
                 "then a sum over l)")
    unnorm = logsumexp((logits if logits is not None else np.zeros(K))[None] + comp, axis=-1)
    if logits is not None and np.max(np.abs(got - unnorm)) <= 1e-6 * (1 + np.max(np.abs(unnorm))):
        text += "; it equals the mixture with unnormalised logits (log_softmax missing)"
    return text


def check_nll(adapter, case, profile="float64", outputs=None, seed=0):
    """A reported NLL against the exact -ln p(x), refvae's importance-sampled estimate, and the
    expected negative ELBO.

    References stored with the case: ``reference.nll`` (exact for L = 2: the trapezoid rule over
    the prior's box, to 1e-4 nats), ``reference.nll_is`` with ``nll_is_se`` (refvae's
    importance-sampled estimate, S = 20000 proposals from q(z|x)) and
    ``reference.neg_elbo_expectation`` (E_q[neg_elbo], Monte Carlo over the same draws).
    Compared as batch means. The NLL passes when ``|nll - exact| <= k sqrt(2) se + slack``
    (``tolerances["verify_nll"]``: k = 5, se the standard error of refvae's estimate of the batch
    mean, sqrt(2) for an estimate of the same size on the adapter's side, slack for the upward
    bias of an importance-sampled NLL with fewer proposals). A value that equals the adapter's own
    single-sample ``neg_elbo`` to rounding, or that is closer to the expected negative ELBO than
    to the NLL, is reported as a negative ELBO labelled NLL.
    """
    _check_args(adapter, case, profile, seed, outputs)
    out = _outputs_or_run(adapter, case, outputs)
    config, params, x = case.inputs()[:3]
    if "nll" in out:
        src = "run()['nll']"
        nll = out["nll"]
    elif callable(getattr(adapter, "nll", None)):
        src = "nll()"
        nll = adapter.nll(config, params, x, seed)
    else:
        return CheckResult("nll", "skip", "the adapter reports no 'nll' and has no nll()")
    nll, note = _conform("nll", _as_array(nll), (case.x.shape[0],))
    if nll is None:
        return CheckResult("nll", "fail", f"nll: {note}")
    if not np.all(np.isfinite(nll)):
        return CheckResult("nll", "fail", f"nll is not finite: {nll.tolist()}")
    ref = case.references
    tol = tolerance("verify_nll")
    B = nll.size
    se = float(np.sqrt(np.sum(ref["nll_is_se"] ** 2))) / B
    allowed = tol.k * math.sqrt(2.0) * se + tol.slack
    m_user, m_ref = float(np.mean(nll)), float(np.mean(ref["nll"]))
    m_is, m_elbo = float(np.mean(ref["nll_is"])), float(np.mean(ref["neg_elbo_expectation"]))
    refs = (f"exact NLL {m_ref:.4f}, refvae's importance-sampled {m_is:.4f} +- {se:.4f}, "
            f"expected negative ELBO {m_elbo:.4f}")
    details = {"source": src, "nll": nll.tolist(), "exact_nll": ref["nll"].tolist(),
               "importance_sampled_nll": ref["nll_is"].tolist(),
               "importance_sampled_se": ref["nll_is_se"].tolist(),
               "expected_neg_elbo": ref["neg_elbo_expectation"].tolist(), "mean": m_user,
               "exact_mean": m_ref, "importance_sampled_mean": m_is, "expected_neg_elbo_mean": m_elbo,
               "allowed": allowed}
    if "neg_elbo" in out:
        own = _conform("neg_elbo", _as_array(out["neg_elbo"]), (B,))[0]
        if own is not None and np.allclose(nll, own, rtol=_c() * _u(profile), atol=0.0):
            return CheckResult("nll", "fail",
                               f"'nll' (mean {m_user:.4f}) equals this implementation's own single-sample "
                               f"neg_elbo: a negative ELBO reported as an NLL ({refs})",
                               abs(m_user - m_ref), allowed, details)
    d_nll, d_elbo = abs(m_user - m_ref), abs(m_user - m_elbo)
    if d_nll > allowed and abs(m_user + m_ref) <= allowed:
        text = "the NLL has the wrong sign: it is ln p(x), not -ln p(x)"
        return CheckResult("nll", "fail", f"'nll' (mean {m_user:.4f}) is minus the exact NLL: {text} "
                           f"({refs})", d_nll, allowed, details, diagnosis=text)
    if d_nll <= allowed:
        summary = f"mean nll {m_user:.4f}, |diff| {d_nll:.3f} <= {allowed:.3f} ({refs})"
        if m_elbo - m_ref < 2 * allowed:
            summary += "; here the NLL and the negative ELBO are too close to tell a mislabelled ELBO apart"
        return CheckResult("nll", "pass", summary, d_nll, allowed, details)
    if d_elbo < d_nll:
        what = ("matches the expected negative ELBO" if d_elbo <= allowed
                else "is closer to the expected negative ELBO than to the NLL")
        return CheckResult("nll", "fail",
                           f"'nll' (mean {m_user:.4f}) is a negative ELBO, not an NLL: it {what} "
                           f"(|diff| {d_elbo:.3f}; {refs}; |nll - exact| = {d_nll:.3f} > {allowed:.3f}). "
                           "An importance-sampled estimate with too few proposals drifts the same way",
                           d_nll, allowed, details)
    return CheckResult("nll", "fail", f"'nll' (mean {m_user:.4f}) differs from the exact NLL by "
                       f"{d_nll:.3f} > {allowed:.3f} ({refs})", d_nll, allowed, details)


def _check_prior_sample_from(adapter, case, profile, pos):
    """The adapter's ``prior_sample_from`` on the case's draws against ``prior_sample.z``."""
    name = "prior_sample.z"
    noise = {k: v.copy() for k, v in _noise(case.draws).items()}
    config, params = case.inputs()[:2]
    q = compare_case({name: adapter.prior_sample_from(config, params, noise)}, _Sub(case, name),
                     profile)[0]
    q.position = pos
    return q
