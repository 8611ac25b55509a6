"""The prior and the aggregated posterior *during training* (the text's Figs. 4.6-4.7), for L = 2.

:class:`Snapshots` is a callback for :func:`refvae.train.fit`: after the chosen epochs (and after
every epoch, for "the last one") it keeps a copy of the parameters -- a copy of arrays, nothing
else: it draws nothing from the training generator and computes nothing, so training is
bit-identical with and without it. :meth:`Snapshots.finalize`, called with the trained model (the
best epoch's parameters restored), adds that state and evaluates, for every kept state, on one
grid over one box (the same axes for every panel):

- ``log_p``: ln p(z) of the prior at that state's parameters;
- ``log_q``: ln q(z) of the aggregated posterior ``q(z) = 1/N sum_n q(z|x_n)`` of the training
  encodings at that state (the streaming mixture kernel, :class:`~refvae.priors.mixtures.AggregatedPosterior`);
- ``mass_p``, ``mass_q``: the Riemann sums (grid points times cell area) of the integrals of exp(log_p) and exp(log_q) over the box
  (near 1 when the box holds the densities: a check of the grid, stated beside the figure).

The box, unless given: every state's encoded means +- 3 posterior standard deviations and the
0.001..0.999 quantiles of 2000 prior draws per state (from a generator of the snapshot's own seed),
padded by 5%. Memory: one parameter copy per kept state and one (n, n) pair of arrays per state.
"""

from __future__ import annotations

import numpy as np

from ..._validation import as_float_array, check_positive_int, check_rng

__all__ = ["Snapshots"]


def _check_epochs(epochs):
    if isinstance(epochs, (str, bytes)) or not hasattr(epochs, "__iter__"):
        raise TypeError(f"epochs must be a sequence of epoch numbers >= 1, got {epochs!r}")
    out = tuple(sorted({check_positive_int(e, "epochs") for e in epochs}))
    return out


def _copy(params):
    return {k: np.array(v, copy=True) for k, v in params.items()}


class Snapshots:
    """Callback ``fit(..., callback=Snapshots(x_train))``: the densities of the Figs. 4.6-4.7.

    Parameters
    ----------
    x : array_like (N, D)
        The training data whose encodings make the aggregated posterior.
    epochs : sequence of int >= 1
        The epochs to keep (those beyond the epochs run are simply absent).
    grid_n : int >= 2
        The grid is grid_n x grid_n.
    box : ((z1_lo, z1_hi), (z2_lo, z2_hi)) or None
        Fixed axes; None: chosen at :meth:`finalize` to hold every kept state (module docstring).
    seed : int >= 0
        The seed of the generator that draws the prior samples for the box (never the
        training generator).

    After :meth:`finalize`: ``records`` (a list of dicts ``label, epoch, log_p, log_q, mass_p,
    mass_q``, in epoch order; the best epoch's state is the trained model's, labelled "(best)"),
    ``z1``, ``z2`` (grid axes) and ``box``.
    For a model with L != 2 the callback keeps nothing and ``records`` stays empty.
    """

    def __init__(self, x, epochs=(1, 10, 50), *, grid_n=101, box=None, seed=0):
        self.x = as_float_array(x, "x", ndim=2)
        self.epochs = _check_epochs(epochs)
        self.grid_n = check_positive_int(grid_n, "grid_n", minimum=2)
        if box is not None:
            box = as_float_array(box, "box", shape=(2, 2))
            if not np.all(box[:, 1] > box[:, 0]):
                raise ValueError(f"box must be ((lo, hi), (lo, hi)) with lo < hi, got {box.tolist()}")
        self.box = box
        self.seed = check_positive_int(seed, "seed", minimum=0)
        self._states = []          # (label, epoch, params copy)
        self._last = None          # (epoch, params copy) of the latest epoch
        self.records = []
        self.z1 = self.z2 = None

    def __call__(self, epoch, model, result=None):
        if getattr(model, "latent_dim", None) != 2:
            return
        epoch = check_positive_int(epoch, "epoch")
        params = _copy(model.params)
        self._last = (epoch, params)
        if epoch in self.epochs:
            self._states.append((f"epoch {epoch}", epoch, params))

    def finalize(self, model, result=None):
        """Add the trained model's state ("best", epoch ``result.best_epoch`` when given) and the
        last epoch's (if not kept already), choose the box and evaluate every state (module
        docstring). Returns ``self``; a second call recomputes from the kept states."""
        if getattr(model, "latent_dim", None) != 2:
            self.records = []
            return self
        best_epoch = None if result is None else int(result.best_epoch)
        states = [(lab + (" (best)" if e == best_epoch else ""), e, p) for lab, e, p in self._states]
        kept = {e for _, e, _ in states}
        if self._last is not None and self._last[0] not in kept:
            last = self._last[0]
            states.append((f"last epoch ({last})" + (" (best)" if last == best_epoch else ""),
                           last, self._last[1]))
            kept.add(last)
        if best_epoch is None or best_epoch not in kept:
            label = "trained (best epoch)" if best_epoch is None else f"best epoch ({best_epoch})"
            states.append((label, best_epoch, _copy(model.params)))
        states.sort(key=lambda s: (s[1] is None, s[1] or 0))
        enc = [self._encode(model, p) for _, _, p in states]
        box = self.box if self.box is not None else self._auto_box(model, states, enc)
        n = self.grid_n
        self.z1 = np.linspace(box[0, 0], box[0, 1], n)
        self.z2 = np.linspace(box[1, 0], box[1, 1], n)
        Z1, Z2 = np.meshgrid(self.z1, self.z2)
        pts = np.column_stack([Z1.ravel(), Z2.ravel()])
        cell = (self.z1[1] - self.z1[0]) * (self.z2[1] - self.z2[0])
        from ...priors.mixtures import AggregatedPosterior
        self.records = []
        for (lab, ep, p), (mu, lv) in zip(states, enc):
            log_p = model.prior.forward(p, pts)[0].reshape(n, n)
            log_q = AggregatedPosterior(2, mu, lv).log_prob(pts).reshape(n, n)
            self.records.append({"label": lab, "epoch": ep, "log_p": log_p, "log_q": log_q,
                                 "mass_p": float(_box_mass(log_p, cell)),
                                 "mass_q": float(_box_mass(log_q, cell))})
        self.box = box
        return self

    def _encode(self, model, params):
        from ... import estimators as est
        return est.encode_all(model, self.x, params)

    def _auto_box(self, model, states, enc):
        rng = check_rng(np.random.default_rng([self.seed, 4607]))
        lo, hi = np.full(2, np.inf), np.full(2, -np.inf)
        for (_, _, p), (mu, lv) in zip(states, enc):
            sd = np.exp(0.5 * lv)
            zp = model.prior.sample(p, 2000, rng)
            lo = np.minimum(lo, np.minimum((mu - 3 * sd).min(axis=0), np.quantile(zp, 0.001, axis=0)))
            hi = np.maximum(hi, np.maximum((mu + 3 * sd).max(axis=0), np.quantile(zp, 0.999, axis=0)))
        pad = 0.05 * (hi - lo)
        return np.array([[lo[0] - pad[0], hi[0] + pad[0]], [lo[1] - pad[1], hi[1] + pad[1]]])

    def summary(self):
        """A JSON-able summary (no grids): box, grid size, and per state label, epoch, masses."""
        return {"box": None if self.box is None else np.asarray(self.box).tolist(),
                "grid_n": self.grid_n,
                "states": [{"label": r["label"], "epoch": r["epoch"], "mass_p": r["mass_p"],
                            "mass_q": r["mass_q"]} for r in self.records]}


def _box_mass(log_d, cell):
    """The integral of exp(log_d) over the box: the sum over the grid points times the cell area."""
    m = float(np.max(log_d))
    return float(np.exp(m) * np.sum(np.exp(log_d - m)) * cell)
