r"""The correctness rows of one run of the report: each reported quantity against a second,
independent computation of it (SPEC section 5).

Kinds of row
------------
Every row has a ``kind``:

- ``"independent"``: two computations that share no code on the quantity's path (another
  estimator, other draws, another evaluator of the density, mpmath). A planted error
  in the report's computation moves one side only, so the row fails once the error exceeds the
  row's ``allowed``; only these rows are evidence that a number is right.
- ``"arithmetic"``: the same numbers combined two ways (``ELBO = RE + Omega`` from the same draws,
  Jensen per test point); they catch a dropped or double-counted term in the combination, nothing
  about the terms themselves.
- ``"bound"``: an inequality (``0 <= I <= ln N``, Gibbs); it holds with margins of nats, so it
  cannot see a +1 nat error in the value. Bounds are not checks of the value.

Each row: ``lhs`` and ``rhs`` with their standard errors ``lhs_se`` and ``rhs_se`` (0 for an
exact value), ``diff = lhs - rhs`` (for a bound: the margin), ``allowed`` and how it was derived
(``allowance``), ``passed`` and ``kind``. For Monte Carlo rows ``allowed = k sqrt(se_1^2 +
se_2^2)`` (+ a stated bias bound), k = 5 (``monte_carlo_k_sigma``: false-failure probability
5.7e-7 per row, CLT); for exact rows a rounding bound ``c u scale``.

The independent computations
----------------------------
:func:`extra_inputs` computes them from the trained model (seconds per run; they are stored in
the run as ``identity_inputs``) and :func:`identities` compares them with the run's estimates:

1. ``ln q(z)`` at 6 points (3 drawn from q(z), 3 from the prior: hole regions): the report's
   evaluator (``AggregatedPosterior.log_prob``, the streaming kernel) vs mpmath at >= 208 bits
   over all N components; allowed (c + 1) u (|f| + S) with c of ``mixture_kernel_c``.
2. ``H[q(z)]`` (training set): the report's Monte Carlo estimate (kernel) vs an independent Monte
   Carlo estimate, other draws, ln q(z) by the plain-NumPy twin (``mixture_log_prob_numpy``).
3. ELBO surgery with ``ln q(z)`` on both sides, not cancelling: ``E_x KL[q(z|x)||p] -
   KL[q(z)||p]`` (report, kernel) vs ``I_2 = H_2[q(z)] - H[q(z|x)]`` (independent, twin).
4. ``CE[q(z)||p]`` (test set): the report's estimator (closed form for N(0, I), else Monte Carlo)
   vs Monte Carlo with other draws (min(n_elbo, 25) per test point, as for rows 6 and 7) and,
   for a Gaussian-mixture prior, ln p(z) by the NumPy twin over the prior's components (else the
   prior's own ``forward``: then the row checks the estimator, not the prior's density).
5. ``H[q(z|x)]`` (test set): the report's closed form vs the closed form evaluated again from the
   encoder's outputs in extended precision (``numpy.longdouble``); exact, allowed 64 u scale.
6. ``Omega`` (test set, eq. 4.43): the report's Monte Carlo ``E[ln p(z) - ln q(z|x)]`` vs
   ``-CE_2 + H_2[q(z|x)]`` from rows 4 and 5.
7. ``RE`` (test set): the report's Monte Carlo vs Monte Carlo with other draws.
8. ``ln p(x)`` at 4 test points: the report's importance sampler (``estimators.log_likelihood``,
   S = max(S of the profile, 2000)) vs an importance sampler of this module with a proposal
   1 + 1/sqrt(L) times as wide (other draws, proposal density and log-sum-exp; S = 2000).
   Allowed: k se plus the two estimators' downward bias, ``se_n^2 / 2`` per point (delta method).

What they detect: a row fails once a planted error exceeds its ``allowed`` (by ``|diff|`` at
most). Measured on trained standard, mog and flow models (quick profile, L = 2): ln q(z) ~5e-15
nats (c <= 5 in units of u (|f| + S)); H[q(z|x)] 4e-14; CE 0.04-0.07; H[q(z)] 0.06-0.08; ELBO
surgery 0.06-0.10; Omega 0.09; RE 0.13-0.18; ln p(x) 0.11-0.29 nats (tests/test_report_mutations.py
plants each).
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..._validation import check_positive_int, check_rng
from ...tolerances import U, tolerance

__all__ = ["identities", "extra_inputs"]

KINDS = ("independent", "arithmetic", "bound")
#: points of the ln q(z) row (half from q(z), half from the prior) and test points of ln p(x)
N_LOGQ_POINTS = 6
N_LOGPX_POINTS = 4
#: importance samples of the report's sampler at those points (at least) and of the second
#: sampler (whose proposal width is :func:`_is2_width`)
IS_SAMPLES = 2000
IS2_SAMPLES = 2000
#: draws per test point of the second CE, RE and Omega estimates (the profile's n_elbo, at most this)
MAX_DRAWS_PER_POINT = 25
_LN_2PI_E = math.log(2 * math.pi) + 1.0


def _is2_width(latent_dim):
    """The second sampler's proposal width, a multiple of the encoder's sigma: 1 + 1/sqrt(L) (1.71
    at L = 2, 1.25 at L = 16). For a Gaussian posterior the weights' second moment grows by
    w^2 / sqrt(2 w^2 - 1) per dimension: a fixed factor 2 costs 1.51^16 ~ 700 at L = 16, this one
    ~3 (it stays wider than q, so heavier tails than q's are still reached)."""
    return 1.0 + 1.0 / math.sqrt(latent_dim)


#: the report's paragraph above the identity table (rendered by :mod:`.markdown`)
PROSE = (
    "Each row compares a reported number with a second computation of it. **independent**: the two "
    "share no code on the quantity's path (other draws, another evaluator of the density, mpmath, a "
    "closed form in extended precision, a second importance sampler); only these rows are evidence "
    "that a number is right, and a planted error larger than the row's *allowed* fails it. "
    "**arithmetic**: the same numbers combined two ways (ELBO = RE + Ω from the same draws; Jensen "
    "per test point): they check the combination, not the terms. **bound**: an inequality that holds "
    "with margins of nats (0 ≤ I ≤ ln N, Gibbs); it cannot see a +1 nat error and is not a check of "
    "the value. Monte Carlo rows allow k √(se₁² + se₂²) with k = 5 (false-failure probability 5.7e-7 "
    "per row, CLT; the ln p(x) row adds the two samplers' downward bias, se²/2 per point); exact rows "
    "a rounding bound (ln q(z) against mpmath: c ≤ c_kernel + 1 in units of u (|f| + S); H[q(z|x)]: "
    "64 u Σ|terms|). The ln q(z) row catches any error in the report's evaluator above ~1e-14 nats; "
    "the Monte Carlo rows catch errors above their *allowed* (a few hundredths to tenths of a nat).")


# =========================================================================== extra inputs

def _estimate(v):
    """{"value", "se", "n"} of the mean of v (N, S) (this module's own averaging, so that the rows
    do not share it with the estimators they check): se^2 = sum_n var_s(v_n.) / S / N^2 for
    S >= 2 (within-row variances), var(v) / N for S = 1 (conservative)."""
    v = np.asarray(v, dtype=np.float64)
    v = v.reshape(v.shape[0], -1)
    rows, per_row = v.shape
    if v.size < 2:
        return {"value": float(np.mean(v)), "se": math.inf, "n": int(v.size)}
    spread = (np.var(v, axis=1, ddof=1).sum() / per_row if per_row > 1
              else np.var(v[:, 0], ddof=1) * rows)
    return {"value": float(np.mean(v)), "se": math.sqrt(float(spread)) / rows, "n": int(v.size)}


def _encode(model, x, chunk=1024):
    mus, lvs = [], []
    for i in range(0, x.shape[0], chunk):
        mu, lv, _ = model.encoder.forward(model.params, x[i:i + chunk])
        mus.append(mu)
        lvs.append(lv)
    return np.concatenate(mus), np.concatenate(lvs)


def _conditional_entropy_ld(log_var):
    """H[q(z|x)] = mean_n 1/2 sum_l (ln 2 pi e + v_nl) in numpy.longdouble, and the rounding scale
    mean_n 1/2 sum_l (ln 2 pi e + |v_nl|) of the float64 evaluation it is compared with."""
    v = np.asarray(log_var, dtype=np.longdouble)
    c = np.longdouble(2) * np.pi
    h = 0.5 * np.sum(np.log(c) + 1 + v, axis=1)
    scale = 0.5 * np.sum(_LN_2PI_E + np.abs(np.asarray(log_var, dtype=np.float64)), axis=1)
    return float(np.mean(h)), float(np.mean(scale))


def _draw(mu, lv, S, rng):
    """(N, S, L) draws z_ns ~ N(mu_n, e^{lv_n}) (stratified over n)."""
    eps = rng.standard_normal((mu.shape[0], S, mu.shape[1]))
    return mu[:, None, :] + np.exp(0.5 * lv)[:, None, :] * eps


def _log_prior_second(model, z):
    """ln p(z) by a second evaluator: the NumPy twin over the prior's Gaussian components when the
    prior states them, else the prior's own forward. Returns (values, how)."""
    from ...kernels.mixture import mixture_log_prob_numpy
    comp = model.prior.mixture_components(model.params)
    if comp is not None:
        means, log_vars, log_w = comp
        return mixture_log_prob_numpy(z, means, log_vars, log_w), "NumPy twin over the prior's components"
    return model.prior.forward(model.params, z)[0], "the prior's forward (same density code)"


def _log_qz_points(model, aggregated, rng):
    """ln q(z) at N_LOGQ_POINTS points by the report's evaluator and its error against mpmath."""
    half = N_LOGQ_POINTS // 2
    means, lvs = aggregated.means, aggregated.log_vars
    pick = rng.integers(0, means.shape[0], half)
    z = np.vstack([means[pick] + np.exp(0.5 * lvs[pick]) * rng.standard_normal((half, means.shape[1])),
                   model.prior.sample(model.params, N_LOGQ_POINTS - half, rng)])
    got = np.asarray(aggregated.log_prob(z), dtype=np.float64)
    out = {"z": z.tolist(), "report": got.tolist(), "c_allowed": tolerance("mixture_kernel_c").c}
    try:
        import mpmath
    except ImportError:
        out.update(available=False, note="mpmath is not installed (pip install mpmath: a dependency of refvae)")
        return out
    from .kernel_check import _exact_c
    c, prec = _exact_c(mpmath, z, means, lvs, None, got)
    out.update(available=True, c=[float(x) if math.isfinite(x) else None for x in c], prec_bits=prec)
    return out


def _loglik_points(model, x, profile, rng):
    """ln p(x) at N_LOGPX_POINTS test points: the report's importance sampler
    (``estimators.log_likelihood``, S = max(S of the profile, IS_SAMPLES)) and a second sampler of
    this module (a proposal :func:`_is2_width` times as wide, other draws, its own log-sum-exp)."""
    from ... import estimators as est
    idx = np.sort(rng.choice(x.shape[0], size=min(N_LOGPX_POINTS, x.shape[0]), replace=False))
    xs = x[idx]
    S = max(int(profile.n_importance), IS_SAMPLES)
    ll = est.log_likelihood(model, xs, rng, n_samples=S, max_rows=profile.max_rows)
    width = _is2_width(model.latent_dim)
    lp, se = _importance_wide(model, xs, rng, IS2_SAMPLES, width)
    return {"indices": idx.tolist(), "report": ll["log_px"].tolist(), "report_se": ll["se"].tolist(),
            "report_S": S, "second": lp.tolist(), "second_se": se.tolist(), "second_slack": 0.0,
            "method": f"importance sampling from N(mu, ({width:.3g} sigma)^2), S = {IS2_SAMPLES}"}


def _importance_wide(model, x, rng, S, width):
    """ln p(x) per row by importance sampling from N(mu(x), (width sigma(x))^2): its own draws,
    proposal density and log-sum-exp (not estimators.log_likelihood). Returns (log_px, se)."""
    p = model.params
    mu, lv = _encode(model, x)
    lvw = lv + 2 * math.log(width)
    lp, se = np.empty(x.shape[0]), np.empty(x.shape[0])
    for n in range(x.shape[0]):
        eps = rng.standard_normal((S, mu.shape[1]))
        z = mu[n] + np.exp(0.5 * lvw[n]) * eps
        lq = -0.5 * np.sum(math.log(2 * math.pi) + lvw[n] + eps * eps, axis=1)
        out = model.decoder.forward(p, z)[0]
        lw = model.decoder.log_prob(p, np.repeat(x[n:n + 1], S, axis=0), out) \
            + model.prior.forward(p, z)[0] - lq
        m = float(np.max(lw))
        w = np.exp(lw - m)
        lp[n] = m + math.log(float(np.mean(w)))
        se[n] = float(np.std(w, ddof=1)) / math.sqrt(S) / float(np.mean(w))
    return lp, se


def extra_inputs(model, data, aggregated, profile, rng):
    """The independent computations of the identity rows (module docstring), for one run.

    ``model``: the trained :class:`refvae.vae.VAE`; ``data``: the dict with ``train`` and
    ``test`` arrays; ``aggregated``: the run's
    :class:`~refvae.priors.mixtures.AggregatedPosterior` of the training encodings; ``profile``:
    the run's :class:`~refvae.tools.profiles.Profile` (sample sizes); ``rng``: a
    ``numpy.random.Generator`` of its own (not shared with the estimates it checks).
    Returns a small JSON-able dict, stored as ``run["identity_inputs"]`` and read by
    :func:`identities`.
    """
    from ...vae import VAE
    from ..profiles import _check_profile
    if not isinstance(model, VAE):
        raise TypeError(f"model must be a refvae.VAE, got {type(model).__name__}")
    if not isinstance(data, dict) or "train" not in data or "test" not in data:
        raise TypeError("data must be a dict with 'train' and 'test' arrays (a profile's data)")
    if not callable(getattr(aggregated, "log_prob", None)) or not hasattr(aggregated, "means"):
        raise TypeError(f"aggregated must be a refvae.priors.mixtures.AggregatedPosterior, got "
                        f"{type(aggregated).__name__}")
    _check_profile(profile)
    check_rng(rng)
    from ...kernels.mixture import mixture_log_prob_numpy
    t0 = time.perf_counter()
    p = model.params
    xtr, xte = np.asarray(data["train"], np.float64), np.asarray(data["test"], np.float64)
    out = {"version": 1}

    # ---- test set: CE_2, H_2[q(z|x)], RE_2 from draws of their own
    S2 = min(check_positive_int(profile.n_elbo, "profile.n_elbo"), MAX_DRAWS_PER_POINT)
    mu, lv = _encode(model, xte)
    z = _draw(mu, lv, S2, rng)
    N, _, L = z.shape
    flat = z.reshape(N * S2, L)
    lpz, how = _log_prior_second(model, flat)
    lpx = np.empty(N * S2)
    rows = max(1, profile.max_rows)
    for i in range(0, N * S2, rows):
        dec = model.decoder.forward(p, flat[i:i + rows])[0]
        lpx[i:i + rows] = model.decoder.log_prob(p, np.repeat(xte, S2, axis=0)[i:i + rows], dec)
    h_te, h_scale = _conditional_entropy_ld(lv)
    out["test"] = {"cross_entropy": _estimate(-lpz.reshape(N, S2)), "ln_p_by": how,
                   "re": _estimate(lpx.reshape(N, S2)),
                   "conditional_entropy": {"value": h_te, "se": 0.0, "scale": h_scale},
                   "n_samples_per_point": S2}

    # ---- training set: H_2[q(z)] by the NumPy twin, H[q(z|x)] in extended precision
    mu_tr, lv_tr = aggregated.means, aggregated.log_vars
    S3 = 2
    ztr = _draw(mu_tr, lv_tr, S3, rng)
    lq = mixture_log_prob_numpy(ztr.reshape(-1, L), mu_tr, lv_tr, None).reshape(-1, S3)
    h_tr, _ = _conditional_entropy_ld(lv_tr)
    out["train_set"] = {"entropy_qz": _estimate(-lq), "conditional_entropy": h_tr,
                        "n_samples_per_point": S3}

    # ---- ln q(z) at points against mpmath; ln p(x) at test points
    out["log_qz_points"] = _log_qz_points(model, aggregated, rng)
    out["log_px_points"] = _loglik_points(model, xte, profile, rng)
    out["seconds"] = time.perf_counter() - t0
    return out


# =========================================================================== rows

def _e(d, *keys):
    """(value, se) of a stored estimate, or None."""
    for k in keys:
        if d is None:
            return None
        d = d.get(k)
    if d is None or d.get("value") is None:
        return None
    return float(d["value"]), float(d["se"] if d.get("se") is not None else math.nan)


def identities(run, n_train):
    """The correctness rows of one run (a dict; list of dicts, module docstring), from whatever
    parts it has; ``n_train`` is an integer >= 1. Rows whose inputs are missing have
    ``passed = None``. The independent rows need ``run["identity_inputs"]``
    (:func:`extra_inputs`)."""
    if not isinstance(run, dict):
        raise TypeError(f"run must be a dict (one entry of a report's runs), got {type(run).__name__}")
    n_train = check_positive_int(n_train, "n_train")
    k = tolerance("monte_carlo_k_sigma").k
    out = []

    def add(name, where, kind, tol_name, values=None, allowance="", note=""):
        """values = (lhs, lhs_se, rhs, rhs_se, diff, allowed, passed), or None when missing."""
        entry = {"identity": name, "data": where, "kind": kind, "tolerance": tol_name,
                 "allowance": allowance}
        if values is None:
            entry.update(lhs=None, lhs_se=None, rhs=None, rhs_se=None, diff=None, allowed=None,
                         passed=None, note="missing: needs a part that was not computed")
        else:
            lhs, lse, rhs, rse, diff, allowed, passed = values
            entry.update(lhs=lhs, lhs_se=lse, rhs=rhs, rhs_se=rse, diff=diff, allowed=allowed,
                         passed=bool(passed), note=note)
        out.append(entry)

    def mc(a, b, extra=0.0):
        """Two independent estimates (value, se): |a - b| <= k sqrt(se_a^2 + se_b^2) + extra."""
        allowed = k * math.hypot(a[1], b[1]) + extra
        return (a[0], a[1], b[0], b[1], a[0] - b[0], allowed, abs(a[0] - b[0]) <= allowed)

    ksig = f"k sqrt(se_1^2 + se_2^2), k = {k:g} (independent draws; false-failure probability 5.7e-7)"
    t = run.get("test") or {}
    a = run.get("train_set") or {}
    ll = run.get("log_likelihood") or {}
    x = run.get("identity_inputs") or {}
    xt, xa = x.get("test") or {}, x.get("train_set") or {}

    # 1. ln q(z) pointwise against mpmath
    pts = x.get("log_qz_points") or {}
    vals = None
    note = ""
    if pts.get("available") and pts.get("c"):
        cs = [math.inf if c is None else c for c in pts["c"]]
        worst = int(np.argmax(cs))
        allowed_c = pts["c_allowed"] + 1.0
        vals = (pts["report"][worst], 0.0, None, 0.0, cs[worst], allowed_c, max(cs) <= allowed_c)
        note = (f"{len(cs)} points (half from q(z), half from the prior); diff = the largest error "
                f"c = |f_hat - f| / (u (|f| + S)), at z = {np.round(pts['z'][worst], 3).tolist()}")
    elif pts:
        note = pts.get("note", "")
    add("ln q(z): report's kernel vs mpmath over all N components", "train", "independent",
        "mixture_kernel_c", vals, "c <= c_kernel + 1 (the kernel's tested bound; +1 for rounding f "
        "to float64 and the oracle)", note)
    if vals is None and note:
        out[-1]["note"] = note

    # 2. H[q(z)]
    hq, hq2 = _e(a, "entropy_qz"), _e(xa, "entropy_qz")
    add("H[q(z)]: report (kernel) vs independent draws, NumPy twin", "train", "independent",
        "monte_carlo_k_sigma", mc(hq, hq2) if hq and hq2 else None, ksig)

    # 3. ELBO surgery with ln q(z) on both sides
    avg, klq = _e(a, "avg_kl"), _e(a, "kl_qz_p")
    vals = None
    if avg and klq and hq2 and xa.get("conditional_entropy") is not None:
        lhs = (avg[0] - klq[0], avg[1] + klq[1])
        rhs = (hq2[0] - xa["conditional_entropy"], hq2[1])
        vals = mc(lhs, rhs)
    add("ELBO surgery: E_x KL[q(z|x)||p] - KL[q(z)||p] = H_2[q(z)] - H[q(z|x)]", "train", "independent",
        "monte_carlo_k_sigma", vals, ksig + "; se_1 <= se(E KL) + se(KL) (same draws)",
        "lhs from the report (ln q(z) by the kernel), rhs = I(x; z) with H[q(z)] from independent "
        "draws and the NumPy twin: ln q(z) does not cancel")

    # 4. CE[q(z)||p] on the test set
    ce, ce2 = _e(t, "cross_entropy"), _e(xt, "cross_entropy")
    add("CE[q(z)||p]: report vs independent draws", "test", "independent", "monte_carlo_k_sigma",
        mc(ce, ce2) if ce and ce2 else None, ksig,
        f"second: Monte Carlo, ln p(z) by {xt.get('ln_p_by', '?')}")

    # 5. H[q(z|x)] on the test set
    h = _e(t, "conditional_entropy")
    h2 = xt.get("conditional_entropy")
    vals = None
    c_cf = tolerance("report_closed_form_rounding").c
    if h and h2:
        allowed = c_cf * U * h2["scale"]
        vals = (h[0], 0.0, h2["value"], 0.0, h[0] - h2["value"], allowed, abs(h[0] - h2["value"]) <= allowed)
    add("H[q(z|x)]: report vs closed form in extended precision", "test", "independent",
        "report_closed_form_rounding", vals, f"{c_cf:g} u mean_n 1/2 sum_l (ln 2 pi e + |log_var|)")

    # 6. Omega (4.43)
    om = _e(t, "omega")
    vals = None
    if om and ce2 and h2:
        vals = mc(om, (-ce2[0] + h2["value"], ce2[1]))
    add("Omega (4.43): report's E[ln p(z) - ln q(z|x)] = -CE_2 + H_2[q(z|x)]", "test", "independent",
        "monte_carlo_k_sigma", vals, ksig)

    # 7. RE
    re_, re2 = _e(t, "re"), _e(xt, "re")
    add("RE: report vs independent draws", "test", "independent", "monte_carlo_k_sigma",
        mc(re_, re2) if re_ and re2 else None, ksig)

    # 8. ln p(x) at test points
    lp = x.get("log_px_points") or {}
    vals = None
    if lp.get("report") and lp.get("second"):
        r, rs = np.array(lp["report"]), np.array(lp["report_se"])
        s, ss = np.array(lp["second"]), np.array(lp["second_se"])
        m = len(r)
        bias = float(np.mean(rs ** 2 + ss ** 2)) / 2
        vals = mc((float(np.mean(r)), float(np.sqrt(np.sum(rs ** 2))) / m),
                  (float(np.mean(s)), float(np.sqrt(np.sum(ss ** 2))) / m),
                  extra=bias + lp.get("second_slack", 0.0))
    add(f"ln p(x): report's importance sampler vs {lp.get('method', 'a second computation')}", "test",
        "independent", "monte_carlo_k_sigma", vals,
        ksig + " + the samplers' downward bias (mean se_n^2 / 2 each, delta method)",
        f"mean over test points {lp.get('indices')} (S = {lp.get('report_S')})")

    # arithmetic rows
    elbo = _e(t, "elbo")
    vals = None
    if re_ and om and elbo:
        tol = tolerance("report_elbo_split")
        diff = elbo[0] - (re_[0] + om[0])
        allowed = tol.atol + tol.rtol * (abs(re_[0]) + abs(om[0]))
        vals = (elbo[0], elbo[1], re_[0] + om[0], None, diff, allowed, abs(diff) <= allowed)
    add("ELBO = RE + Omega (same draws)", "test", "arithmetic", "report_elbo_split", vals,
        "rtol (|RE| + |Omega|): rounding only", "checks the sum, not its terms")
    vals = None
    if ll.get("jensen_min_margin") is not None:
        vals = (ll["mean"]["value"], ll["mean"].get("se"), ll["mean_log_weight"], None,
                ll["jensen_min_margin"], ll["jensen_allowed"], ll["jensen_violations"] == 0)
    add("Jensen: ln p_hat(x) >= mean_s log-weight, per test point", "test", "arithmetic",
        "report_jensen", vals, "64 eps |mean_s lw|: rounding only",
        "holds for any log-weights (AM-GM): checks the log-sum-exp, not ln p(x)")

    # bounds
    mi = _e(a, "mutual_information")
    vals = None
    if mi:
        ln_n = math.log(n_train)
        margin = min(mi[0], ln_n - mi[0])
        vals = (mi[0], mi[1], ln_n, 0.0, margin, k * mi[1], margin >= -k * mi[1])
    add("0 <= I(x; z) <= ln N (bound)", "train", "bound", "monte_carlo_k_sigma", vals,
        f"diff = min(I, ln N - I) >= -k se, k = {k:g}",
        f"N = {n_train}; a bound, not a check of the value (margins of nats)")
    ce_a, hqa = _e(a, "cross_entropy"), _e(a, "entropy_qz")
    vals = None
    if ce_a and hqa and klq:
        vals = (ce_a[0], ce_a[1], hqa[0], hqa[1], klq[0], k * klq[1], klq[0] >= -k * klq[1])
    add("Gibbs: CE[q(z)||p] >= H[q(z)] (bound)", "train", "bound", "monte_carlo_k_sigma", vals,
        f"diff = KL_hat[q(z)||p] >= -k se (same draws), k = {k:g}",
        "a bound, not a check of the value")
    return out
