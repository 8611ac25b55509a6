r"""The L = 2 density grid and the checks on it: the prior density integrates to one
(:func:`check_normalisation`) and the sampler follows it (:func:`check_sampler`)."""

from __future__ import annotations

import math

import numpy as np

from ..._validation import check_positive_int
from ...tolerances import tolerance
from .. import golden as _golden
from .adapters import _check_args, _check_grid
from .comparison import _as_array, _c, _u
from .results import CheckResult

__all__ = ["check_normalisation", "check_sampler"]

MAX_SAMPLER_DRAWS = 10 ** 8  #: the largest ``n`` of :func:`check_sampler` (1.6 GB of draws at L = 2)


def _grid_spec(case):
    """(lo, hi, h, outside) of the reference prior: :func:`refvae.tools.golden.prior_box`."""
    return _golden.prior_box(case.model())


def _density_grid(adapter, case, chunk=1 << 16):
    lo, hi, h, outside = _grid_spec(case)
    xs = lo[0] + h * np.arange(int(math.ceil((hi[0] - lo[0]) / h)) + 1)
    ys = lo[1] + h * np.arange(int(math.ceil((hi[1] - lo[1]) / h)) + 1)
    X, Y = np.meshgrid(xs, ys, indexing="ij")
    pts = np.stack([X.ravel(), Y.ravel()], axis=1)
    config, params = case.inputs()[:2]
    logp = np.empty(pts.shape[0])
    for i in range(0, pts.shape[0], chunk):
        v = _as_array(adapter.prior_log_prob(config, params, pts[i:i + chunk].copy()))
        if v.shape != (min(chunk, pts.shape[0] - i),):
            raise ValueError(f"prior_log_prob returned shape {v.shape} for {min(chunk, pts.shape[0] - i)} "
                             "points; expected one value per row of z")
        logp[i:i + chunk] = v
    return {"xs": xs, "ys": ys, "h": h, "logp": logp.reshape(X.shape), "outside": outside}


def _trapezoid(dens, h):
    wx = np.r_[0.5, np.ones(dens.shape[0] - 2), 0.5]
    wy = np.r_[0.5, np.ones(dens.shape[1] - 2), 0.5]
    return float(wx @ dens @ wy) * h * h


def _needs_l2(case, method, adapter):
    if case.config["latent_dim"] != 2:
        return f"needs L = 2 (the case has L = {case.config['latent_dim']})"
    if not callable(getattr(adapter, method, None)):
        return f"the adapter has no {method}()"
    return None


def check_normalisation(adapter, case, profile="float64", grid=None):
    """The adapter's prior density integrates to one (L = 2, trapezoid rule on a grid).

    Tolerance: ``|I - 1| <= floor + factor |I_h - I_2h| + outside + c u sum p |log p| h^2``, i.e. a
    floor (``tolerances["verify_normalisation"].floor``), the rule's error estimate times
    ``factor`` = 10 (the rule's error is below |I_h - I_2h|: spectral convergence for Gaussian
    mixtures, O(h^2) with |I_h - I_2h| ~ 3x the error where leaky-ReLU MLPs make the density
    piecewise smooth), the reference prior's mass outside the box (<= 4 Phi(-R), R = 10 sd for
    mixtures, f^-1([-7, 7]^2) for the flow), and the rounding of exp(log p).
    """
    _check_args(adapter, case, profile)
    _check_grid(grid)
    why = _needs_l2(case, "prior_log_prob", adapter)
    if why:
        return CheckResult("normalisation", "skip", why)
    g = _density_grid(adapter, case) if grid is None else grid
    logp, h = g["logp"], g["h"]
    if np.any(np.isnan(logp)) or np.any(logp == np.inf):
        return CheckResult("normalisation", "fail", "prior_log_prob returned NaN or +inf on the grid")
    dens = np.exp(logp)
    integral = _trapezoid(dens, h)
    coarse = _trapezoid(dens[::2, ::2], 2 * h)
    rule = abs(integral - coarse)
    tol = tolerance("verify_normalisation")
    with np.errstate(invalid="ignore"):
        rounding = _c() * _u(profile) * float(np.nansum(dens * np.abs(np.where(dens > 0, logp, 0.0)))) * h * h
    allowed = tol.floor + tol.factor * rule + g["outside"] + rounding
    dev = abs(integral - 1.0)
    details = {"integral": integral, "integral_2h": coarse, "rule_estimate": rule,
               "outside_bound": g["outside"], "rounding": rounding, "h": h,
               "box": [[float(g["xs"][0]), float(g["xs"][-1])], [float(g["ys"][0]), float(g["ys"][-1])]],
               "nodes": int(logp.size)}
    if rule > 1e-3:
        return CheckResult("normalisation", "fail",
                           f"integral {integral:.6f}, but the quadrature did not converge (|I_h - I_2h| = "
                           f"{rule:.1e}): the density is not smooth at the grid scale h = {h:.3g}",
                           dev, allowed, details)
    status = "pass" if dev <= allowed else "fail"
    summary = f"integral of exp(prior_log_prob) over R^2 = {integral:.9f}; |I - 1| = {dev:.2e} "
    summary += f"{'<=' if status == 'pass' else '>'} allowed {allowed:.1e}"
    if status == "fail" and abs(integral - 2 * math.pi) < 0.05 * 2 * math.pi:
        summary += " (the integral is ~2 pi: a dropped -1/2 ln 2 pi per dimension?)"
    return CheckResult("normalisation", status, summary, dev, allowed, details)


def _snapped_edges(marginal, G):
    """Bin edges (node indices) at the marginal's G-quantiles, snapped to node boundaries."""
    cum = np.cumsum(marginal) / max(float(np.sum(marginal)), 1e-300)
    edges = np.unique(np.searchsorted(cum, np.arange(1, G) / G))
    return edges[(edges > 0) & (edges < marginal.size)]


def check_sampler(adapter, case, profile="float64", grid=None, n=20000, seed=0):
    """Pearson chi-square of ``prior_sample`` draws against refvae's density of the case's
    parameters and against the adapter's own density (L = 2); says which of the two (the
    adapter's sampler, the adapter's density) departs.

    Cells: 8 x 8 bins at the quantiles of the density's marginals (snapped to grid-node boundaries;
    the outer bins extend to infinity); cell probabilities are the density's node sums over each
    cell, normalised to total 1 (normalisation is the other check). Cells with expected count < 20
    are pooled. Under a correct sampler the statistic is ~chi^2(cells - 1). The verdict is the test
    against **refvae's** density (the mathematics): it fails when its p-value is below
    ``tolerances["verify_chi_square"].alpha`` = 1e-6 (the false-failure probability; the test
    against the adapter's own density is reported, not judged). The adapter's density is compared
    with refvae's on the grid by the total-variation distance of the normalised node masses; above
    :data:`DENSITY_TV` it *departs* (a per-dimension mixture: ~0.2; a flow log-determinant counted
    per dimension or with the wrong sign: > 0.1; rounding: < 1e-10; a constant offset such as a
    dropped ln 2 pi does not change the normalised shape and is the normalisation check's). So a
    right sampler beside a wrong density passes, with the density named; a sampler that uses
    exp(log_var) as the standard deviation fails (chi-square 4000-18000 on 63 degrees of freedom on
    the committed cases, p = 0). Needs ``prior_sample``; ``prior_log_prob`` is optional. ``grid``:
    the adapter's density grid, if already computed. ``n``: 2 <= n <= :data:`MAX_SAMPLER_DRAWS`.
    """
    from scipy import stats
    from .adapters import RefvaeAdapter
    _check_args(adapter, case, profile, seed)
    _check_grid(grid)
    n = check_positive_int(n, "n", minimum=2)
    if n > MAX_SAMPLER_DRAWS:
        raise ValueError(f"n = {n} draws is more than the {MAX_SAMPLER_DRAWS} the sampler check "
                         f"allows ({16 * n / 1e9:.1f} GB of (n, 2) draws)")
    why = _needs_l2(case, "prior_sample", adapter)
    if why:
        return CheckResult("sampler", "skip", why)
    own = None
    if callable(getattr(adapter, "prior_log_prob", None)):
        own = _density_grid(adapter, case) if grid is None else grid
    ref = _density_grid(RefvaeAdapter(), case)
    config, params = case.inputs()[:2]
    z = _as_array(adapter.prior_sample(config, params, n, seed))
    L = config["latent_dim"]
    if z.shape != (n, L):
        return CheckResult("sampler", "fail", f"prior_sample returned shape {z.shape}, expected ({n}, {L})")
    if not np.all(np.isfinite(z)):
        return CheckResult("sampler", "fail", "prior_sample returned non-finite values")
    alpha = tolerance("verify_chi_square").alpha
    r = _chi_square(ref, z, n, stats)
    details = {"n": n, "seed": seed, "alpha": alpha, "against_refvae": r}
    o = None
    tv = None
    if own is not None and np.all(np.isfinite(own["logp"]) | (own["logp"] == -np.inf)):
        o = _chi_square(own, z, n, stats)
        tv = _total_variation(own["logp"], ref["logp"])
        details.update({"against_own_density": o, "density_tv": tv})
    sampler_ok = r["p_value"] >= alpha
    density_departs = tv is not None and tv > DENSITY_TV
    status = "pass" if sampler_ok else "fail"
    head = (f"chi-square {r['statistic']:.1f} on {r['dof']} dof against refvae's density, p = "
            f"{r['p_value']:.2e} {'>=' if sampler_ok else '<'} {alpha:.0e} (n = {n}, seed {seed})")
    if o is not None:
        head += f"; against your prior_log_prob: chi-square {o['statistic']:.1f}, p = {o['p_value']:.2e}"
    if sampler_ok and density_departs:
        tail = (f"; the samples follow refvae's density of your parameters but your prior_log_prob "
                f"departs from it (total variation {tv:.3f} on the grid): your density is wrong, "
                "your sampler right")
    elif sampler_ok:
        tail = ""
    elif density_departs and o is not None and o["p_value"] >= alpha:
        tail = (f"; the samples follow your own prior_log_prob, which departs from refvae's density "
                f"(total variation {tv:.3f}): sampler and density share the mistake")
    elif density_departs:
        tail = (f"; both depart: the samples follow neither density, and your prior_log_prob "
                f"departs from refvae's (total variation {tv:.3f})")
    else:
        w = r["worst_cell"]
        tail = (f"; your sampler departs (worst cell: {w['observed']:.0f} samples, "
                f"{w['expected']:.1f} expected)"
                + ("; your prior_log_prob agrees with refvae's density" if tv is not None else ""))
    return CheckResult("sampler", status, head + tail, r["p_value"], alpha, details)


#: total-variation distance on the grid above which the adapter's density departs from refvae's
DENSITY_TV = 1e-3


def _total_variation(logp_a, logp_b):
    """``1/2 sum |p_a - p_b|`` of the two grids' node masses, each normalised to total 1."""
    def mass(lp):
        lp = np.where(np.isfinite(lp), lp, -np.inf)
        m = np.exp(lp - np.max(lp))
        return m / m.sum()
    return float(0.5 * np.sum(np.abs(mass(logp_a) - mass(logp_b))))


def _chi_square(g, z, n, stats):
    """The chi-square test of samples ``z`` against the grid density ``g`` (a dict of floats)."""
    e, o = _cell_counts(g, z, n)
    stat = float(np.sum((o - e) ** 2 / e))
    dof = e.size - 1
    worst = int(np.argmax((o - e) ** 2 / e))
    return {"cells": int(e.size), "statistic": stat, "dof": dof,
            "p_value": float(stats.chi2.sf(stat, dof)),
            "worst_cell": {"observed": float(o[worst]), "expected": float(e[worst])}}


def _cell_counts(g, z, n):
    """``(expected, observed)`` counts of the n samples ``z`` in the 8 x 8 cells at the quantiles of
    the grid density's marginals (snapped to node boundaries), cells with expected count < 20
    pooled (and the pool merged into the smallest kept cell when it is below 20 itself)."""
    lp = g["logp"]
    mass = np.exp(lp - np.max(lp))
    mass = mass / mass.sum()
    ex = _snapped_edges(mass.sum(axis=1), 8)
    ey = _snapped_edges(mass.sum(axis=0), 8)
    h, xs, ys = g["h"], g["xs"], g["ys"]
    bx = np.searchsorted(ex, np.arange(xs.size), side="right")
    by = np.searchsorted(ey, np.arange(ys.size), side="right")
    nbx, nby = ex.size + 1, ey.size + 1
    probs = np.zeros((nbx, nby))
    np.add.at(probs, (bx[:, None], by[None, :]), mass)
    ix = np.clip(np.floor((z[:, 0] - (xs[0] - h / 2)) / h).astype(np.int64), 0, xs.size - 1)
    iy = np.clip(np.floor((z[:, 1] - (ys[0] - h / 2)) / h).astype(np.int64), 0, ys.size - 1)
    counts = np.zeros((nbx, nby))
    np.add.at(counts, (bx[ix], by[iy]), 1.0)
    expected, observed = n * probs.ravel(), counts.ravel()
    keep = expected >= 20
    e = np.r_[expected[keep], expected[~keep].sum()]
    o = np.r_[observed[keep], observed[~keep].sum()]
    if e[-1] < 20:  # the pooled cell is too small: merge it into the smallest kept cell
        j = int(np.argmin(e[:-1]))
        e[j] += e[-1]
        o[j] += o[-1]
        e, o = e[:-1], o[:-1]
    return e, o
