r"""The figure of one run, and the numbers behind it.

For L = 2 one PNG shows the text's figures of section 4.4.1 for this prior:

- the prior ln p(z) (filled, labelled contours) with the encoded test means;
- Fig. 4.5: individual posteriors q(z|x_n) as 2-sigma ellipses (semi-axes ``2 exp(1/2 log_var)``)
  over the labelled contours of the aggregated posterior q(z);
- Fig. 4.8: the holes -- the regions q(z)/p(z) < tau -- with encoder **samples** z ~ q(z|x_n) (one
  per training point, not the means); the legend's mass of each shaded region is the grid integral
  of p(z) over exactly the shaded mask (:func:`hole_regions`), beside the Monte Carlo hole mass
  of the report (prior draws, no grid);
- Figs. 4.6-4.7 (when :class:`~refvae.tools.report.snapshots.Snapshots` were recorded): q(z) and
  p(z) at a few epochs of training on the same axes;
- images decoded from prior draws that fall in a hole vs from draws where q(z) >= p(z), side by
  side, with the numbers of :func:`hole_decodes`;
- the training curves and 64 decoded prior samples.

For L != 2: the decodes from holes and covered regions, the curves and the samples. Every 2-D panel has an equal aspect ratio (N(0, I) contours
are circles) and the legends sit outside the axes. matplotlib (Agg) is imported only when a figure
is drawn; :func:`hole_decodes` and :func:`hole_regions` need only NumPy.
"""

from __future__ import annotations

import math
import os

import numpy as np

from ... import estimators as est
from ..._validation import as_float_array, check_positive_int, check_real, check_rng
from ...io import _atomic_write

__all__ = ["hole_decodes", "hole_regions"]

#: prior draws made by :func:`hole_decodes` to find n draws in the holes
HOLE_DRAWS = 20000
#: decoded images shown per group in the figure
SHOWN = 16


# =========================================================================== numbers

def hole_regions(log_p, log_ratio, cell, taus, hpd=-np.inf):
    r"""The shaded hole regions of the figure and their prior mass, from one mask each.

    ``log_p`` and ``log_ratio = ln q(z) - ln p(z)`` on a grid (same shape), ``cell`` the area of one
    grid cell, ``taus`` the thresholds, ``hpd`` a level of ln p (the figure passes the prior's
    99.9% highest-density level, so that the far corners where p is negligible are not shaded).
    For each tau: ``mask = (log_ratio < ln tau) & (log_p >= hpd)`` (the region the figure shades)
    and ``mass = sum_mask p(z) * cell`` (its prior mass by a Riemann sum; the legend prints this
    number, so legend and shading cannot disagree). Returns ``{tau: (mask, mass)}``. The Monte
    Carlo hole mass ``P_p[q/p < tau]`` of the report estimates the same integral over the whole
    plane: the two differ by at most the prior mass outside the HPD region and the box (0.001
    plus a sliver) besides the Monte Carlo and grid errors.
    """
    log_p = as_float_array(log_p, "log_p", ndim=2, allow_neg_inf=True)
    log_ratio = as_float_array(log_ratio, "log_ratio", ndim=2, finite=False)
    if log_p.shape != log_ratio.shape:
        raise ValueError(f"log_p and log_ratio must be grids of one shape, got {log_p.shape} "
                         f"and {log_ratio.shape}")
    if np.isnan(log_ratio).any():
        raise ValueError("log_ratio has NaN entries (ln q - ln p must be a number or +-inf)")
    cell = check_real(cell, "cell", lo=0.0, lo_open=True)
    if isinstance(hpd, (bool, np.bool_)) or not isinstance(hpd, (int, float, np.floating, np.integer)) \
            or math.isnan(hpd) or hpd == math.inf:
        raise (TypeError if not isinstance(hpd, (int, float, np.floating, np.integer))
               or isinstance(hpd, (bool, np.bool_)) else ValueError)(
            f"hpd must be a level of ln p (a real number or -inf), got {hpd!r}")
    hpd = float(hpd)
    if isinstance(taus, (str, bytes)) or not hasattr(taus, "__iter__") or not len(taus):
        raise ValueError(f"taus must be a non-empty sequence of thresholds > 0, got {taus!r}")
    out = {}
    for tau in taus:
        tau = check_real(tau, "taus", lo=0.0, lo_open=True)
        mask = (log_ratio < math.log(tau)) & (log_p >= hpd)
        out[tau] = (mask, float(np.sum(np.exp(log_p[mask])) * cell))
    return out


def _group_numbers(model, z, x_ref, rng, n_importance, log_ratio):
    """Decoded images of the latents z and their numbers (module docstring of hole_decodes)."""
    p = model.params
    out = model.decode(z)
    x_mean = model.likelihood.mean(p, out)
    x_draw = model.likelihood.sample(p, out, rng)
    ll = est.log_likelihood(model, x_draw, rng, n_samples=n_importance)
    lp = ll["log_px"]
    res = {"n": int(len(z)),
           "log_px": _mean_se(lp),
           "log_px_mc_se_max": float(np.max(ll["se"])),
           "log_ratio": _mean_se(log_ratio)}
    if x_ref is not None:
        res["nn_rms"] = _mean_se(_nn_rms(x_mean, x_ref))
    return res, x_mean


def _nn_rms(x, x_ref):
    """Per row of x: the RMS per-pixel distance to the nearest row of x_ref (an exact image of
    x_ref gives 0: the rows of x_ref are not excluded)."""
    d2 = np.sum(x ** 2, 1)[:, None] - 2 * x @ x_ref.T + np.sum(x_ref ** 2, 1)[None, :]
    return np.sqrt(np.maximum(d2.min(axis=1), 0.0) / x_ref.shape[1])


def _mean_se(v):
    v = np.asarray(v, dtype=float)
    n = len(v)
    return {"value": float(np.mean(v)), "se": float(np.std(v, ddof=1) / math.sqrt(n)) if n > 1
            else None, "n": int(n)}


def _diff(a, b):
    if a is None or b is None or a["se"] is None or b["se"] is None:
        return None
    return {"value": a["value"] - b["value"], "se": math.hypot(a["se"], b["se"])}


def hole_decodes(model, aggregated, rng, n=64, tau=0.1, *, x_ref=None, x_data=None,
                 n_importance=100, n_draws=HOLE_DRAWS):
    r"""Decode prior draws from the holes and from the well-covered region, with numbers.

    ``n_draws`` draws ``z ~ p(z)`` (``model.prior.sample``), ``r = ln q(z) - ln p(z)`` with q the
    ``aggregated`` posterior; the first ``n`` draws with ``q/p < tau`` form the group ``"hole"``,
    the first ``n`` with ``q/p >= 1`` the group ``"covered"``. Each latent is decoded:
    ``x_mean = E[x|z]`` (shown) and ``x_draw ~ p(x|z)``. Per group:

    - ``log_px``: the mean over the group of ``ln p(x_draw)`` under the model (importance sampling
      with ``n_importance`` draws per image, :func:`refvae.estimators.log_likelihood`), with the SE
      over images (the images' spread; ``log_px_mc_se_max``: the largest per-image Monte Carlo SE);
    - ``nn_rms`` (when ``x_ref``, e.g. the training set, is given): the RMS pixel distance from
      ``x_mean`` to its nearest image of ``x_ref`` -- a model-free measure of "looks like data";
    - ``log_ratio``: the mean ln q/p of the group's latents (how deep in the hole).

    With ``x_data`` (e.g. the test set) a third entry ``"data"`` gives the same numbers for its
    first ``n`` real images (``x_draw = x_mean = x``) as a yardstick: what an image of the data
    scores. Both numbers favour confident, sharp images (ln p of a low-entropy image is high; a
    blurry mean image is far from every training image), so read them against the yardstick.

    Plus ``fraction``: the share of the ``n_draws`` prior draws in each group (the hole group's
    is a Monte Carlo hole mass at tau), ``difference`` (hole minus covered, SEs combined as
    independent), and ``z_shown``: the first :data:`SHOWN` latents of each group (the figure decodes
    exactly these). JSON-able; NumPy only. A group with fewer than 2 draws has ``None`` numbers.

    ``model`` a VAE with L >= 1; ``aggregated`` an AggregatedPosterior of the model's latent
    dimension; ``rng`` a Generator; ``n >= 2``, ``tau`` in (0, 1), ``n_importance >= 2``,
    ``n_draws >= n`` (``ValueError``/``TypeError`` naming the argument otherwise).
    """
    res, _ = _hole_decodes(model, aggregated, rng, n, tau, x_ref, x_data, n_importance, n_draws)
    return res


def _hole_decodes(model, aggregated, rng, n, tau, x_ref, x_data, n_importance, n_draws):
    """:func:`hole_decodes` and the decoded mean images of the shown latents per group."""
    check_rng(rng)
    n = check_positive_int(n, "n", minimum=2)
    tau = check_real(tau, "tau", lo=0.0, lo_open=True, hi=1.0, hi_open=True)
    n_importance = check_positive_int(n_importance, "n_importance", minimum=2)
    n_draws = check_positive_int(n_draws, "n_draws", minimum=n)
    if not (hasattr(model, "prior") and hasattr(model, "decode") and hasattr(model, "params")):
        raise TypeError(f"model must be a refvae.vae.VAE, got {type(model).__name__}")
    if not (callable(getattr(aggregated, "log_prob", None))
            and getattr(aggregated, "latent_dim", None) == model.latent_dim):
        raise TypeError(f"aggregated must be an AggregatedPosterior with latent_dim = "
                        f"{model.latent_dim}, got {type(aggregated).__name__}")
    if x_ref is not None:
        x_ref = as_float_array(x_ref, "x_ref", shape=(None, model.x_dim), ndim=2)
    if x_data is not None:
        x_data = as_float_array(x_data, "x_data", shape=(None, model.x_dim), ndim=2)
    z = model.prior.sample(model.params, n_draws, rng)
    log_ratio = aggregated.log_prob(z) - model.prior.forward(model.params, z)[0]
    groups = {"hole": log_ratio < math.log(tau), "covered": log_ratio >= 0.0}
    res = {"tau": tau, "n_draws": n_draws, "n_importance": n_importance, "groups": {},
           "nn_reference": None if x_ref is None else f"{len(x_ref)} reference images (RMS per pixel)"}
    images = {}
    for g, mask in groups.items():
        idx = np.flatnonzero(mask)[:n]
        entry = {"fraction": _mean_se(mask.astype(float))}
        entry["fraction"]["se"] = math.sqrt(entry["fraction"]["value"]
                                            * (1 - entry["fraction"]["value"]) / n_draws)
        if len(idx) >= 2:
            nums, x_mean = _group_numbers(model, z[idx], x_ref, rng, n_importance, log_ratio[idx])
            entry.update(nums)
            images[g] = x_mean[:SHOWN]
        else:
            entry.update({"n": int(len(idx)), "log_px": None, "log_ratio": None})
            if x_ref is not None:
                entry["nn_rms"] = None
            images[g] = None
        entry["z_shown"] = z[idx[:SHOWN]].tolist()
        res["groups"][g] = entry
    if x_data is not None and len(x_data) >= 2:
        xd = x_data[:n]
        ll = est.log_likelihood(model, xd, rng, n_samples=n_importance)
        entry = {"n": int(len(xd)), "log_px": _mean_se(ll["log_px"]),
                 "log_px_mc_se_max": float(np.max(ll["se"]))}
        if x_ref is not None:
            entry["nn_rms"] = _mean_se(_nn_rms(xd, x_ref))
        res["data"] = entry
    h, c = res["groups"]["hole"], res["groups"]["covered"]
    res["difference"] = {k: _diff(h.get(k), c.get(k)) for k in ("log_px", "nn_rms")
                         if k in h}
    return res, images


# =========================================================================== drawing

def _mosaic(images, side=8, rows=8):
    n = images.shape[0]
    cols = int(math.ceil(n / rows))
    out = np.full((rows * (side + 1) - 1, cols * (side + 1) - 1), np.nan)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (side + 1):r * (side + 1) + side, c * (side + 1):c * (side + 1) + side] = \
            images[i].reshape(side, side)
    return out


def plot_run(path, run, model, data, aggregated, profile, rng, snapshots=None):
    """Write the run's figure (PNG) and return its file name; matplotlib (Agg) imported here.

    Stores ``run["hole_decodes"]`` (:func:`hole_decodes` with ``rng``, tau the largest of
    ``profile.taus``, the training set as reference) when the run has none, and decodes the
    latents of ``run["hole_decodes"]`` for the figure (any L); for L = 2 ``snapshots`` (a :class:`Snapshots` that was passed to
    ``fit``) is finalised with ``model`` and drawn, and its summary stored as
    ``run["snapshots"]``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    L = model.latent_dim
    title = f"{run['prior']} prior, L = {L} ({profile.name} profile)"
    if not run.get("hole_decodes"):
        run["hole_decodes"] = hole_decodes(model, aggregated, rng, tau=max(profile.taus),
                                           x_ref=data["train"], x_data=data["test"])
    if L != 2:
        fig = Figure(figsize=(22, 6.5), dpi=90, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 4)
        fig.suptitle(title, fontsize=14)
        _decodes_panels(axes[0], axes[1], model, run["hole_decodes"], profile)
        _curves_panel(axes[2], run["training"])
        _samples_panel(axes[3], model, profile, rng)
        _atomic_write(path, lambda fh: fig.savefig(fh, format="png"))
        return os.path.basename(path)

    snaps = None
    if snapshots is not None:
        snaps = snapshots.finalize(model, _Best(run["training"]["best_epoch"]))
        run["snapshots"] = snaps.summary()
        if not snaps.records:
            snaps = None
    n_snap = 0 if snaps is None else len(snaps.records)
    rows = 3 if n_snap else 2
    fig = Figure(figsize=(22, 6.2 * rows + 0.5), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    # a thin first row holds the title (a suptitle over equal-aspect panels overlaps their titles)
    head, *sub = fig.subfigures(rows + 1, 1, height_ratios=[0.5] + [6.2] * rows)
    head.text(0.5, 0.5, title, ha="center", va="center", fontsize=15)
    top = sub[0].subplots(1, 3)
    g, lims = _grid(model, data, aggregated, profile, rng)
    _prior_panel(sub[0], top[0], g, model, data)
    _ellipses_panel(top[1], g, model, data, rng)
    _holes_panel(top[2], g, model, data, run, profile, rng)
    if n_snap:
        _snapshot_panels(sub[1], snaps)
    bottom = sub[-1].subplots(1, 4)
    _decodes_panels(bottom[0], bottom[1], model, run["hole_decodes"], profile)
    _curves_panel(bottom[2], run["training"])
    _samples_panel(bottom[3], model, profile, rng)
    _atomic_write(path, lambda fh: fig.savefig(fh, format="png"))  # never a half-written PNG
    return os.path.basename(path)


class _Best:
    def __init__(self, best_epoch):
        self.best_epoch = best_epoch


def _grid(model, data, aggregated, profile, rng):
    """ln p, ln q, ln q/p on a grid over the box holding prior draws and the encoded means
    (quantiles 0.002..0.998, padded); the panels show it with equal axis scales."""
    zp = model.prior.sample(model.params, 2000, rng)
    pts = np.vstack([zp, aggregated.means])
    lo = np.quantile(pts, 0.002, axis=0)
    hi = np.quantile(pts, 0.998, axis=0)
    pad = 0.15 * (hi - lo) + 0.5
    lo, hi = lo - pad, hi + pad
    lims = ((lo[0], hi[0]), (lo[1], hi[1]))
    g = est.density_grid(model, None, n=profile.grid_n, lims=lims, aggregated=aggregated)
    g["Z1"], g["Z2"] = np.meshgrid(g["z1"], g["z2"])
    g["cell"] = float((g["z1"][1] - g["z1"][0]) * (g["z2"][1] - g["z2"][0]))
    g["lims"] = lims
    return g, lims


def _square(ax, lims):
    ax.set_xlim(*lims[0])
    ax.set_ylim(*lims[1])
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")


def _levels(top, depth=12.0, n=7):
    return np.linspace(top - depth, top, n)


def _prior_panel(subfig, ax, g, model, data):
    mu_test, _ = est.encode_all(model, data["test"])
    top = float(np.max(g["log_p"]))
    levels = _levels(top, 12.0, 13)
    cs = ax.contourf(g["Z1"], g["Z2"], np.maximum(g["log_p"], top - 12.0), levels=levels, cmap="Blues")
    lines = ax.contour(g["Z1"], g["Z2"], g["log_p"], levels=levels[::3], colors="navy", linewidths=0.6,
                       linestyles="solid")
    ax.clabel(lines, fmt="%.1f", fontsize=7)
    subfig.colorbar(cs, ax=ax, label="ln p(z)", shrink=0.8)
    ax.scatter(mu_test[:, 0], mu_test[:, 1], s=4, c="tab:orange", alpha=0.7, lw=0,
               label="encoded test points (means of q(z|x))")
    _square(ax, g["lims"])
    ax.set_title("prior ln p(z) (labelled contours) and encoded test means")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8, frameon=False,
              markerscale=4)


def _ellipses_panel(ax, g, model, data, rng, n_show=60):
    """Fig. 4.5: q(z|x_n) for n_show training points as 2-sigma ellipses over q(z)."""
    from matplotlib.patches import Ellipse
    qtop = float(np.max(g["log_q"]))
    levels = _levels(qtop, 10.0, 6)
    lines = ax.contour(g["Z1"], g["Z2"], g["log_q"], levels=levels, colors="0.35", linewidths=0.8,
                       linestyles="solid")
    ax.clabel(lines, fmt="%.1f", fontsize=7)
    idx = np.sort(rng.choice(len(data["train"]), size=min(n_show, len(data["train"])), replace=False))
    mu, lv = est.encode_all(model, data["train"][idx])
    radii = ellipse_radii(lv)
    for m, r in zip(mu, radii):
        ax.add_patch(Ellipse(m, 2 * r[0], 2 * r[1], fill=False, color="tab:red", lw=0.8, alpha=0.8))
    ax.plot(mu[:, 0], mu[:, 1], ".", color="tab:red", ms=2)
    _square(ax, g["lims"])
    ax.set_title(f"Fig. 4.5: q(z|x_n) of {len(idx)} training points (2σ ellipses)\n"
                 "under the aggregated posterior ln q(z) (labelled contours)", fontsize=10)


def ellipse_radii(log_var, k=2.0):
    """Semi-axes of the k-sigma ellipse of N(mu, diag exp(log_var)): ``k exp(log_var / 2)``
    (the standard deviation is exp(1/2 log_var), SPEC section 2)."""
    return k * np.exp(0.5 * np.asarray(log_var, dtype=float))


def _holes_panel(ax, g, model, data, run, profile, rng):
    """Fig. 4.8: regions q(z)/p(z) < tau shaded, with encoder samples z ~ q(z|x_n)."""
    from matplotlib.patches import Patch
    from matplotlib.lines import Line2D
    mu, lv = est.encode_all(model, data["train"])
    zs = mu + np.exp(0.5 * lv) * rng.standard_normal(mu.shape)
    hpd = float(np.quantile(model.prior.forward(model.params, model.prior.sample(
        model.params, 5000, rng))[0], 0.001))
    regions = hole_regions(g["log_p"], g["log_ratio"], g["cell"], profile.taus, hpd)
    colors = ["#f4a582", "#b2182b"]
    handles = []
    mc = (run.get("holes") or {}).get("hole_mass") or {}
    for (tau, (mask, mass)), col in zip(sorted(regions.items(), reverse=True), colors):
        if mask.any():
            ax.contourf(g["Z1"], g["Z2"], mask.astype(float), levels=[0.5, 1.5], colors=[col], alpha=0.85)
        lab = f"q(z)/p(z) < {tau:g}: prior mass of the shaded region {mass:.4f}"
        m = mc.get(str(tau)) or {}
        if m.get("value") is not None:
            lab += f"\n   (Monte Carlo, whole plane: {m['value']:.4f} ± {m.get('se') or 0:.4f})"
        handles.append(Patch(color=col, label=lab))
    ptop = float(np.max(g["log_p"]))
    lines = ax.contour(g["Z1"], g["Z2"], g["log_p"], levels=_levels(ptop, 12.0, 5), colors="tab:blue",
                       linewidths=0.8, linestyles="solid")
    ax.clabel(lines, fmt="%.1f", fontsize=7)
    ax.scatter(zs[:, 0], zs[:, 1], s=3, c="k", alpha=0.5, lw=0)
    handles.append(Line2D([], [], ls="", marker=".", color="k",
                          label=f"encoder samples z ~ q(z|x_n), {len(zs)} training points"))
    handles.append(Line2D([], [], color="tab:blue", lw=0.8, label="ln p(z) (labelled contours)"))
    ax.contour(g["Z1"], g["Z2"], g["log_p"], levels=[hpd], colors="k", linewidths=1.0,
               linestyles="dashed")
    handles.append(Line2D([], [], color="k", lw=1.0, ls="--",
                          label="the prior's 99.9% highest-density region (shading inside it)"))
    _square(ax, g["lims"])
    ax.set_title("Fig. 4.8: holes q(z)/p(z) < τ (inside the prior's 99.9% HPD region)\n"
                 "and encoder samples z ~ q(z|x_n)", fontsize=10)
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8,
              frameon=False)


def _snapshot_panels(subfig, snaps):
    """Figs. 4.6-4.7: q(z) (filled) and p(z) (lines) at the kept epochs, same axes."""
    recs = snaps.records
    axes = np.atleast_1d(subfig.subplots(1, len(recs)))
    Z1, Z2 = np.meshgrid(snaps.z1, snaps.z2)
    lims = ((snaps.z1[0], snaps.z1[-1]), (snaps.z2[0], snaps.z2[-1]))
    for ax, r in zip(axes, recs):
        qtop = float(np.max(r["log_q"]))
        ax.contourf(Z1, Z2, np.maximum(r["log_q"], qtop - 10.0), levels=_levels(qtop, 10.0, 11),
                    cmap="Greys")
        ptop = float(np.max(r["log_p"]))
        lines = ax.contour(Z1, Z2, r["log_p"], levels=_levels(ptop, 9.0, 4), colors="tab:blue",
                           linewidths=0.9, linestyles="solid")
        ax.clabel(lines, fmt="%.1f", fontsize=7)
        _square(ax, lims)
        ax.set_title(f"{r['label']}\n∫q = {r['mass_q']:.3f}, ∫p = {r['mass_p']:.3f} over the box",
                     fontsize=9)
    subfig.suptitle("Figs. 4.6-4.7 during training: aggregated posterior q(z) (grey, filled) and "
                    "prior ln p(z) (blue, labelled), same axes", fontsize=11)


def _decodes_panels(ax_h, ax_c, model, hd, profile):
    side = int(round(math.sqrt(model.x_dim)))
    for ax, g, what in ((ax_h, "hole", f"from holes (q/p < {hd['tau']:g})"),
                        (ax_c, "covered", "from covered regions (q/p ≥ 1)")):
        e = hd["groups"][g]
        z = np.asarray(e["z_shown"], dtype=float).reshape(-1, model.latent_dim)
        ax.set_axis_off()
        if len(z) and side * side == model.x_dim:
            x = model.likelihood.mean(model.params, model.decode(z))
            ax.imshow(_mosaic(x, side, rows=4), cmap="gray_r", vmin=0, vmax=profile.num_vals - 1,
                      interpolation="nearest")
        lines = [f"E[x|z], z ~ p(z) {what}", f"{e['fraction']['value']:.3f} of prior draws"]
        if e.get("log_px"):
            lines.append(f"ln p(x̂) = {e['log_px']['value']:.1f} ± {e['log_px']['se']:.1f} "
                         f"(x̂ ~ p(x|z), n = {e['log_px']['n']})")
        if e.get("nn_rms"):
            lines.append(f"RMS distance to nearest training image {e['nn_rms']['value']:.2f} "
                         f"± {e['nn_rms']['se']:.2f}")
        if g == "hole" and hd.get("data"):
            d = hd["data"]
            ref = f"yardstick, {d['n']} test images: ln p(x) = {d['log_px']['value']:.1f}"
            if d.get("nn_rms"):
                ref += f", RMS to nearest training image {d['nn_rms']['value']:.2f}"
            lines.append(ref)
        ax.set_title("\n".join(lines), fontsize=9)


def _curves_panel(ax, hist):
    """Training and validation negative ELBO per epoch, with the best epoch."""
    ep = np.arange(1, len(hist["train_loss"]) + 1)
    if len(ep):
        ax.plot(ep, hist["train_loss"], label="training (minibatch mean)")
        ax.plot(ep, hist["val_loss"], label="validation")
        if hist["best_epoch"]:
            ax.axvline(hist["best_epoch"], color="0.5", ls="--", lw=0.8,
                       label=f"best epoch {hist['best_epoch']}")
        vals = np.concatenate([hist["train_loss"], hist["val_loss"]])
        lo, hi = float(np.min(vals)), float(np.quantile(vals, 0.9))
        if hi > lo:
            ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.1 * (hi - lo))
        ax.legend(fontsize=8, loc="upper right")
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative ELBO (nats)")
    ax.set_title("training and validation curves")


def _samples_panel(ax, model, profile, rng):
    """64 samples E[x | z], z ~ p(z), as a mosaic (when x is a square image)."""
    x_samples = model.sample(64, rng, mode="mean")
    side = int(round(math.sqrt(model.x_dim)))
    if side * side == model.x_dim:
        ax.imshow(_mosaic(x_samples, side), cmap="gray_r", vmin=0, vmax=profile.num_vals - 1,
                  interpolation="nearest")
    ax.set_axis_off()
    ax.set_title("64 samples decoded from the prior: E[x | z], z ~ p(z)")


def have_matplotlib():
    """True when matplotlib can be imported (figures are drawn only then)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
