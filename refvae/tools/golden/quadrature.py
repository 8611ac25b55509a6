r"""The exact reference NLL of an L = 2 case: -ln p(x) by the trapezoid rule over the prior's box."""

from __future__ import annotations

import math

import numpy as np

from .reference import prior_box


def _grid_logsumexp(fn, lo, hi, h, B, chunk=1 << 15):
    """Per example b, log of the trapezoid sum h^2 sum_nodes exp(fn(z)[b]) over the box (nodes
    spaced h), for nodes and for every other node (spacing 2h); fn(z) -> (B, n) log-integrand."""
    from ...primitives import logsumexp
    xs = lo[0] + h * np.arange(int(math.ceil((hi[0] - lo[0]) / h)) + 1)
    ys = lo[1] + h * np.arange(int(math.ceil((hi[1] - lo[1]) / h)) + 1)
    X, Y = np.meshgrid(xs, ys, indexing="ij")
    wx = np.r_[0.5, np.ones(xs.size - 2), 0.5]
    wy = np.r_[0.5, np.ones(ys.size - 2), 0.5]
    lw = np.log(np.outer(wx, wy)).ravel()
    cx = np.zeros(xs.size, bool)
    cx[::2] = True
    cy = np.zeros(ys.size, bool)
    cy[::2] = True
    coarse = np.outer(cx, cy).ravel()
    wx2 = np.r_[0.5, np.ones(cx.sum() - 2), 0.5]
    wy2 = np.r_[0.5, np.ones(cy.sum() - 2), 0.5]
    lw2 = np.full(X.size, -np.inf)
    lw2[coarse] = np.log(np.outer(wx2, wy2)).ravel()
    pts = np.stack([X.ravel(), Y.ravel()], axis=1)
    fine, crs = [], []
    for i in range(0, pts.shape[0], chunk):
        v = fn(pts[i:i + chunk])
        fine.append(logsumexp(v + lw[None, i:i + chunk], axis=-1))
        crs.append(logsumexp(v + lw2[None, i:i + chunk], axis=-1))
    fine = logsumexp(np.stack(fine, axis=1), axis=-1) + 2 * math.log(h)
    crs = logsumexp(np.stack(crs, axis=1), axis=-1) + 2 * math.log(2 * h)
    return fine, crs


def _quadrature_nll(model, x, max_halvings=4, atol=1e-4):
    """Exact (L = 2) -ln p(x) per example: -ln int p(x|z) p(z) dz by the trapezoid rule.

    A coarse grid (150 intervals along the longer side) over the prior's box (:func:`prior_box`)
    locates the integrand; the fine grid covers the nodes within e^-40 of its maximum, padded by
    three coarse cells (the coarse estimate of the mass left outside must be < 1e-9 relative;
    p(x|z) is bounded, so the prior's mass outside its box is negligible too). The fine spacing
    starts at 1/200 of the fine box and is halved until the rule at h and 2h agrees to ``atol``
    = 1e-4 nats (the trapezoid rule's error is below |I_h - I_2h|; the NLL check's tolerance is
    >= 0.02 nats).
    """
    p = model.params
    lo, hi, _, _ = prior_box(model)
    h0 = float(np.max(hi - lo)) / 150
    xs = lo[0] + h0 * np.arange(int(math.ceil((hi[0] - lo[0]) / h0)) + 1)
    ys = lo[1] + h0 * np.arange(int(math.ceil((hi[1] - lo[1]) / h0)) + 1)
    X, Y = np.meshgrid(xs, ys, indexing="ij")
    nodes = np.stack([X.ravel(), Y.ravel()], axis=1)

    def log_joint(b):
        def fn(z):
            out = model.decoder.forward(p, z)[0]
            return (model.decoder.log_prob(p, np.repeat(x[b:b + 1], z.shape[0], 0), out)
                    + model.prior.forward(p, z)[0])[None]
        return fn

    nll = np.empty(x.shape[0])
    for b in range(x.shape[0]):
        fn = log_joint(b)
        v = np.concatenate([fn(nodes[i:i + 65536])[0] for i in range(0, nodes.shape[0], 65536)])
        keep = v >= v.max() - 40.0
        blo = np.maximum(nodes[keep].min(axis=0) - 3 * h0, lo)
        bhi = np.minimum(nodes[keep].max(axis=0) + 3 * h0, hi)
        inside = np.all((nodes >= blo) & (nodes <= bhi), axis=1)
        w = np.exp(v - v.max())
        if w[~inside].sum() > 1e-9 * w.sum():
            raise RuntimeError("the NLL quadrature box leaves too much mass outside")
        h = float(np.max(bhi - blo)) / 200
        for _ in range(max_halvings + 1):
            fine, crs = _grid_logsumexp(fn, blo, bhi, h, 1)
            if abs(fine[0] - crs[0]) <= atol:
                break
            h /= 2
        else:
            raise RuntimeError(f"the NLL quadrature did not converge (|I_h - I_2h| = "
                               f"{abs(fine[0] - crs[0]):.1e})")
        nll[b] = -fine[0]
    return nll

