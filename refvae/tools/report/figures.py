"""The figure of one run: L = 2: prior density with the encoded test points, the holes, training
curves, decoded prior samples; L > 2: curves and samples. matplotlib (Agg) is imported only here,
when a figure is drawn. The figure asks of the prior only ``sample`` and ``forward``, which every
prior has."""

from __future__ import annotations

import math
import os

import numpy as np

from ... import estimators as est
from ...io import _atomic_write

__all__ = []  # used by single_run and runner; nothing here is public API


def _mosaic(images, side=8, rows=8):
    n = images.shape[0]
    cols = int(math.ceil(n / rows))
    out = np.full((rows * (side + 1) - 1, cols * (side + 1) - 1), np.nan)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (side + 1):r * (side + 1) + side, c * (side + 1):c * (side + 1) + side] = \
            images[i].reshape(side, side)
    return out


def plot_run(path, run, model, data, aggregated, profile, rng):
    """Write the run's figure (PNG) and return its file name; matplotlib (Agg) imported here."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    L = model.latent_dim
    two_d = L == 2
    fig = Figure(figsize=(12, 10) if two_d else (12, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2) if two_d else np.array([fig.subplots(1, 2)])
    title = f"{run['prior']} prior, L = {L} ({profile.name} profile)"
    fig.suptitle(title, fontsize=13)
    if two_d:
        _density_panels(fig, axes[0, 0], axes[0, 1], run, model, data, aggregated, profile, rng)
        ax_curve, ax_samp = axes[1, 0], axes[1, 1]
    else:
        ax_curve, ax_samp = axes[0, 0], axes[0, 1]
    _curves_panel(ax_curve, run["training"])
    _samples_panel(ax_samp, model, profile, rng)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    _atomic_write(path, lambda fh: fig.savefig(fh, format="png"))  # never a half-written PNG
    return os.path.basename(path)


def _density_panels(fig, ax_p, ax_holes, run, model, data, aggregated, profile, rng):
    """L = 2: ln p(z) with the encoded test points, and the holes, on a grid over the box holding
    prior draws and the encoded means (quantiles 0.002..0.998, padded)."""
    mu_test, _ = est.encode_all(model, data["test"])
    zp = model.prior.sample(model.params, 2000, rng)
    pts = np.vstack([zp, aggregated.means])
    lo = np.quantile(pts, 0.002, axis=0)
    hi = np.quantile(pts, 0.998, axis=0)
    pad = 0.15 * (hi - lo) + 0.5
    lims = ((lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1]))
    g = est.density_grid(model, None, n=profile.grid_n, lims=lims, aggregated=aggregated)
    Z1, Z2 = np.meshgrid(g["z1"], g["z2"])
    top = float(np.max(g["log_p"]))
    levels = np.linspace(top - 12.0, top, 13)
    cs = ax_p.contourf(Z1, Z2, np.maximum(g["log_p"], top - 12.0), levels=levels, cmap="Blues")
    fig.colorbar(cs, ax=ax_p, label="ln p(z)")
    ax_p.scatter(mu_test[:, 0], mu_test[:, 1], s=4, c="tab:orange", alpha=0.7, lw=0,
                 label="encoded test points (mean of q(z|x))")
    ax_p.set_title("prior density ln p(z) and encoded test points")
    ax_p.legend(loc="upper right", fontsize=8)
    ax_p.set_xlabel("z1")
    ax_p.set_ylabel("z2")
    # the prior's 99% highest-density region: ln p above the 1% quantile of ln p(z), z ~ p
    hpd = float(np.quantile(model.prior.forward(model.params, zp)[0], 0.01))
    hole_mass = (run.get("holes") or {}).get("hole_mass") or {}
    _holes_panel(ax_holes, Z1, Z2, g, levels, hpd, profile.taus, hole_mass)


def _holes_panel(ax, Z1, Z2, g, levels, hpd, taus, hole_mass):
    """Contours of ln q(z) and ln p(z), and the regions q(z)/p(z) < tau inside the prior's 99%
    highest-density region (ln p >= hpd)."""
    from matplotlib.patches import Patch

    qtop = float(np.max(g["log_q"]))
    ax.contour(Z1, Z2, g["log_q"], levels=np.linspace(qtop - 10.0, qtop, 6), colors="0.3",
               linewidths=0.8, linestyles="solid")
    ax.contour(Z1, Z2, g["log_p"], levels=levels[::3], colors="tab:blue", linewidths=0.8,
               linestyles="solid")
    mass = g["log_p"] >= hpd
    colors = ["#f4a582", "#b2182b"]
    handles = []
    for tau, col in zip(sorted(taus, reverse=True), colors):
        region = ((g["log_ratio"] < math.log(tau)) & mass).astype(float)
        if region.any():
            ax.contourf(Z1, Z2, region, levels=[0.5, 1.5], colors=[col], alpha=0.8)
        m = hole_mass.get(str(tau)) or {}
        lab = f"q(z)/p(z) < {tau:g}"
        if m.get("value") is not None:
            lab += f" (prior mass {m['value']:.3f})"
        handles.append(Patch(color=col, label=lab))
    handles.append(Patch(facecolor="none", edgecolor="0.4", label="ln q(z) contours"))
    handles.append(Patch(facecolor="none", edgecolor="tab:blue", label="ln p(z) contours"))
    ax.contour(Z1, Z2, g["log_p"], levels=[hpd], colors="k", linewidths=1.0, linestyles="dashed")
    handles.append(Patch(facecolor="none", edgecolor="k", ls="--",
                         label="99% highest-density region of p(z)"))
    ax.legend(handles=handles, loc="upper right", fontsize=8)
    ax.set_title("holes: q(z)/p(z) < tau inside the prior's 99% HPD region\n"
                 "(q(z): aggregated posterior of the training encodings)", fontsize=10)
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")


def _curves_panel(ax, hist):
    """Training and validation negative ELBO per epoch, with the best epoch."""
    ep = np.arange(1, len(hist["train_loss"]) + 1)
    if len(ep):
        ax.plot(ep, hist["train_loss"], label="training (minibatch mean)")
        ax.plot(ep, hist["val_loss"], label="validation (fixed noise)")
        if hist["best_epoch"]:
            ax.axvline(hist["best_epoch"], color="0.5", ls="--", lw=0.8,
                       label=f"best epoch {hist['best_epoch']}")
        vals = np.concatenate([hist["train_loss"], hist["val_loss"]])
        lo, hi = float(np.min(vals)), float(np.quantile(vals, 0.9))
        if hi > lo:
            ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.1 * (hi - lo))
        ax.legend(fontsize=8)
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


