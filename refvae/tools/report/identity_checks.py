"""The identities of SPEC section 5 for one run of the report, from the estimates it stored
(the list and tolerances are in :mod:`refvae.tools.report`)."""

from __future__ import annotations

import math

from ..._validation import check_positive_int
from ...tolerances import tolerance

__all__ = ["identities"]


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
    """The identities of SPEC section 5 for one run (a dict), from whatever parts it has (list of
    dicts); ``n_train`` is an integer >= 1."""
    if not isinstance(run, dict):
        raise TypeError(f"run must be a dict (one entry of a report's runs), got {type(run).__name__}")
    n_train = check_positive_int(n_train, "n_train")
    k = tolerance("monte_carlo_k_sigma").k
    out = []

    def add(name, where, tol_name, values=None, note=""):
        """values = (lhs, rhs, diff, allowed, passed), or None when a needed part is missing."""
        entry = {"identity": name, "data": where, "tolerance": tol_name}
        if values is None:
            entry.update(lhs=None, rhs=None, diff=None, allowed=None, passed=None,
                         note="missing: needs a part that was not computed")
        else:
            lhs, rhs, diff, allowed, passed = values
            entry.update(lhs=lhs, rhs=rhs, diff=diff, allowed=allowed, passed=bool(passed), note=note)
        out.append(entry)

    t = run.get("test") or {}
    a = run.get("train_set") or {}
    ll = run.get("log_likelihood") or {}
    re_, om, elbo = _e(t, "re"), _e(t, "omega"), _e(t, "elbo")
    ce, h = _e(t, "cross_entropy"), _e(t, "conditional_entropy")
    avg, split = _e(a, "avg_kl"), _e(a, "avg_kl_split")
    mi = _e(a, "mutual_information")
    ce_a, hq, klq = _e(a, "cross_entropy"), _e(a, "entropy_qz"), _e(a, "kl_qz_p")

    vals = None
    if re_ and om and elbo:
        tol = tolerance("report_elbo_split")
        diff = elbo[0] - (re_[0] + om[0])
        allowed = tol.atol + tol.rtol * (abs(re_[0]) + abs(om[0]))
        vals = (elbo[0], re_[0] + om[0], diff, allowed, abs(diff) <= allowed)
    add("ELBO = RE + Omega", "test", "report_elbo_split", vals,
        "same draws: rounding only; allowed = rtol (|RE| + |Omega|)")

    vals = None
    if om and ce and h:
        rhs = -ce[0] + h[0]
        allowed = k * math.hypot(om[1], ce[1])
        vals = (om[0], rhs, om[0] - rhs, allowed, abs(om[0] - rhs) <= allowed)
    add("Omega (MC) = -CE + H[q(z|x)]", "test", "monte_carlo_k_sigma", vals,
        f"independent draws: allowed = k sqrt(se_1^2 + se_2^2), k = {k:g}")

    vals = None
    if avg and split:
        allowed = k * (avg[1] + split[1])
        vals = (avg[0], split[0], avg[0] - split[0], allowed, abs(avg[0] - split[0]) <= allowed)
    add("E_x KL[q(z|x)||p] = I + KL[q(z)||p]", "train", "monte_carlo_k_sigma", vals,
        f"same draws: se of the difference <= se_1 + se_2; allowed = k (se_1 + se_2), k = {k:g}")

    vals = None
    if mi:
        ln_n = math.log(n_train)
        allowed = k * mi[1]
        margin = min(mi[0], ln_n - mi[0])
        vals = (mi[0], ln_n, margin, allowed, margin >= -allowed)
    add("0 <= I(x; z) <= ln N", "train", "monte_carlo_k_sigma", vals,
        f"lhs = I, rhs = ln N (N = {n_train}); diff = min(I, ln N - I) >= -allowed, allowed = k se, "
        f"k = {k:g}")

    vals = None
    if ce_a and hq and klq:
        allowed = k * klq[1]
        vals = (ce_a[0], hq[0], klq[0], allowed, klq[0] >= -allowed)
    add("Gibbs: CE[q(z)||p] >= H[q(z)]", "train", "monte_carlo_k_sigma", vals,
        f"same draws: diff = KL_hat[q(z)||p] = CE - H >= -allowed, allowed = k se, k = {k:g}")

    vals = None
    if ll.get("jensen_min_margin") is not None:
        vals = (ll["mean"]["value"], ll["mean_log_weight"], ll["jensen_min_margin"],
                ll["jensen_allowed"], ll["jensen_violations"] == 0)
    add("Jensen: ln p_hat(x) >= mean_s log-weight", "test", "report_jensen", vals,
        "per test point, exact up to rounding; lhs, rhs = test-set averages; diff = min_n "
        f"(ln p_hat(x_n) - mean_s lw_ns); {ll.get('jensen_violations')} violation(s)")
    return out


